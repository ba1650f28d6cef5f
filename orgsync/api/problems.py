"""Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`), in the vocabulary the
CLI uses: the same error line, with each bad field named where a field is at fault."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from domain.errors import AwsStepFailed, Conflict, InvalidFields, InvalidInput, NotFound, OrgSyncError

PROBLEM = "application/problem+json"

# the CLI's option names in error lines -> the API's (and the console form's) field names
_FIELDS = {
    "secret-access-key-file": "secret_access_key",
    "org-external-id-file": "org_external_id",
    "member-external-id-file": "member_external_id",
    "exclude-name-prefix": "exclude_name_prefixes",
    "limit-to-ou": "limit_to_ou_ids",
}
# a refused AWS step -> the fields that decide it (shown beside each in the console's form)
_STEP_FIELDS = {
    "assume the management role": ("org_role_arn", "org_external_id"),
    "permission check": ("org_role_arn",),
    "read the events queue": ("events_queue_url",),
}


class ApiProblem(Exception):
    """A problem this API raises itself (401, 403, 429, ...)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers


def field_name(name: str) -> str:
    return _FIELDS.get(name, name.replace("-", "_"))


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type=PROBLEM,
    )


def field_errors(exc: OrgSyncError) -> list[dict[str, str]]:
    """The fields an error is about, each with its message (empty: not about a field)."""
    if isinstance(exc, InvalidFields):
        return [{"field": field_name(e.field), "detail": e.message} for e in exc.errors]
    if isinstance(exc, InvalidInput):
        return [{"field": field_name(exc.field), "detail": exc.message}]
    if isinstance(exc, AwsStepFailed):
        return [{"field": f, "detail": exc.message} for f in _STEP_FIELDS.get(exc.step, ())]
    return []


def of_error(exc: OrgSyncError) -> JSONResponse:
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc))
    if isinstance(exc, Conflict):
        return problem(409, "Conflict", str(exc))
    if isinstance(exc, InvalidInput | AwsStepFailed):
        title = "Invalid input" if isinstance(exc, InvalidInput) else "Refused by AWS"
        return problem(422, title, str(exc), errors=field_errors(exc))
    return problem(400, "Refused", str(exc))


def install(app: FastAPI) -> None:
    @app.exception_handler(OrgSyncError)
    async def orgsync_error(_: Request, exc: OrgSyncError) -> JSONResponse:
        return of_error(exc)

    @app.exception_handler(ApiProblem)
    async def api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        response = problem(exc.status, exc.title, exc.detail)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # never the input itself: it may be a secret
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "detail": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "detail": "not valid"}
        return problem(422, "Invalid input", f"{first['field']}: {first['detail']}", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        response = problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))
        response.headers.update(exc.headers or {})
        return response
