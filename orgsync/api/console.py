"""The web console: server-rendered pages for the people who look after the inventory, over the same services
as the CLI and the JSON API (one set of rules, one validation, one audit trail).

Signing in exchanges an API token for a session cookie (HttpOnly, SameSite=Strict); every form carries the
session's CSRF token, compared in constant time; refused sign-ins are counted per client address and stop
being checked after too many. Pages never hold a secret: a form's secret fields are always sent back blank,
and everything that comes from AWS or the database is escaped by the templates. Scripts and styles come from
/static only, so the Content-Security-Policy allows nothing inline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from domain.access import Outcome, Principal, Role
from domain.badges import ORG_BADGE, SYSTEM_PREFIX
from domain.config import (
    DEFAULT_SESSION_SECONDS,
    Checks,
    build_filters,
    build_registration,
    check_nickname,
    credentials_if_given,
)
from domain.errors import InvalidFields, InvalidInput, NotFound, OrgSyncError
from domain.live import check_events_queue_url
from domain.status import CloudStatus
from storage import access as access_store
from storage import listings
from storage.scheduling import current_leader

from .. import access, audit, services
from ..views import cloud_detail, org_detail
from .auth import SESSION_COOKIE, client_of
from .params import after_of, badge_of, cursor_of, status_of  # the API's syntax, for the same links
from .problems import field_errors

HERE = Path(__file__).parent
SIGNIN_CSRF_COOKIE = "orgsync_csrf_signin"
NOTICE_COOKIE = "orgsync_notice"  # a one-time message for the next page (what a write did)
FOLLOW_COOKIE = "orgsync_following"  # sync requests whose progress the Organizations page shows
MAX_REFUSED_SIGN_INS = 10
SIGN_IN_WINDOW = timedelta(minutes=15)
PAGE_SIZE = 50
MAX_FOLLOWED = 20
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"

# form fields that make up the stored credential block; the secret ones are never sent back to a browser
CREDENTIAL_FIELDS = (
    "org_role_arn",
    "org_session_name",
    "org_session_duration",
    "org_external_id",
    "member_role_name",
    "member_session_name",
    "member_session_duration",
    "member_external_id",
    "access_key_id",
    "secret_access_key",
)
SECRET_FIELDS = frozenset({"org_external_id", "member_external_id", "secret_access_key"})
DURATION_FIELDS = frozenset({"org_session_duration", "member_session_duration"})
LABELS = {
    "nickname": "Nickname",
    "org_role_arn": "Management role ARN",
    "org_session_name": "Management session name",
    "org_session_duration": "Management session duration",
    "org_external_id": "Management external id",
    "member_role_name": "Member role name",
    "member_session_name": "Member session name",
    "member_session_duration": "Member session duration",
    "member_external_id": "Member external id",
    "access_key_id": "Access key id",
    "secret_access_key": "Secret access key",
    "exclude_name_prefixes": "Exclude accounts whose name starts with",
    "limit_to_ou_ids": "Organizational unit ids",
    "auto_remove_suspended": "Auto-remove suspended accounts",
    "events_queue_url": "Events queue URL",
    "org": "Organization",
    "badge": "Badge",
    "status": "Status",
    "q": "Search",
}
# what a reader of the account listing should do about each status
STATUS_HINTS = {
    CloudStatus.PENDING: "Wait for the running sync to validate it, or press Sync now on its organization.",
    CloudStatus.OK: "Nothing to do.",
    CloudStatus.ASSUME_ROLE_DENIED: (
        "Create the member role in this account under the organization's role name, let its trust policy trust "
        "orgsync's caller, and match the member external id (orgsync roles template members writes it)."
    ),
    CloudStatus.SCP_DENIED: "Allow sts:AssumeRole for orgsync's caller in the service control policies that apply.",
    CloudStatus.DURATION_EXCEEDED: (
        "Raise the role's maximum session duration, or lower the organization's member session duration."
    ),
    CloudStatus.ACCOUNT_SUSPENDED: "Reinstate the account in AWS, or turn on auto-remove suspended accounts.",
    CloudStatus.REGION_DISABLED: (
        "In the caller's account, make the STS global endpoint's session tokens valid in all AWS Regions (IAM, "
        "Account settings), or activate the region."
    ),
    CloudStatus.AWS_ERROR: "Read the message; if AWS was only briefly unavailable, press Sync now.",
    CloudStatus.CREDENTIALS_UNREADABLE: (
        "Enter the organization's credentials again (Edit), or restore the encryption key they were sealed with."
    ),
}

Form = dict[str, list[str]]


class SignInFirst(Exception):
    """The request needs a console session it does not have: off to the sign-in page."""


class Refused(Exception):
    """A console request that is answered with an error page."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


# -- rendering -------------------------------------------------------------------------------------


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "never"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.isoformat()


def _seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: AWS and the database fill these pages
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["seconds"] = _seconds
    env.globals["labels"] = LABELS
    return env


templates = Jinja2Templates(env=_environment())


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int, path: str = "/") -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=_https(request)
    )


def _forget(request: Request, response: Response, name: str, path: str = "/") -> None:
    response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=_https(request))


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return None


def _tell(request: Request, response: Response, text: str, kind: str = "ok") -> None:
    """Show `text` on the next page (once)."""
    _cookie(request, response, NOTICE_COOKIE, _encode({"text": text[:500], "kind": kind}), 120)


def _notice(request: Request) -> dict[str, str] | None:
    found = _decode(request.cookies.get(NOTICE_COOKIE))
    if not isinstance(found, dict) or not isinstance(found.get("text"), str):
        return None
    return {"text": found["text"], "kind": "error" if found.get("kind") == "error" else "ok"}


def _page(
    request: Request,
    name: str,
    session: access.ConsoleSession | None,
    *,
    status: int = 200,
    section: str = "",
    title: str = "",
    **context: Any,
) -> HTMLResponse:
    notice = _notice(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "who": None if session is None else session.who,
            "csrf": "" if session is None else session.csrf,
            "section": section,
            "title": title,
            "notice": notice,
            **context,
        },
        status_code=status,
    )
    if notice is not None:
        _forget(request, response, NOTICE_COOKIE)
    response.headers["Cache-Control"] = "no-store"
    return response


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


# -- who is asking ---------------------------------------------------------------------------------


def _rt(request: Request) -> Any:
    return request.app.state.rt


def _session(request: Request) -> access.ConsoleSession | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = access.session_of_cookie(_rt(request), cookie, client_of(request))
    request.state.console_session = session
    return session


def signed_in(request: Request) -> access.ConsoleSession:
    session = _session(request)
    if session is None:
        raise SignInFirst()
    return session


Reader = Annotated[access.ConsoleSession, Depends(signed_in)]


async def posted(request: Request) -> Form:
    """The fields of a posted form, each with its values in order (files are ignored)."""
    data = await request.form()
    fields: Form = {}
    for key, value in data.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    return fields


def _one(form: Form, name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


def _lines(form: Form, name: str) -> list[str]:
    """A multi-value field: one value a line, in every value posted under `name`; blank lines dropped."""
    return [line.strip() for value in form.get(name, []) for line in value.splitlines() if line.strip()]


def _checked(form: Form, name: str) -> bool:
    return _one(form, name).lower() in ("on", "true", "1", "yes")


def _csrf_matches(form: Form, session: access.ConsoleSession) -> bool:
    return hmac.compare_digest(_one(form, "csrf").encode(), session.csrf.encode())


def form_of_session(request: Request, form: Annotated[Form, Depends(posted)]) -> tuple[access.ConsoleSession, Form]:
    """A posted form of a signed-in user with the session's CSRF token (else 403: nothing is done)."""
    session = signed_in(request)
    if not _csrf_matches(form, session):
        raise Refused(403, "Forbidden", "The form's security token does not match your session. Reload the page.")
    return session, form


def writer(
    posted_form: Annotated[tuple[access.ConsoleSession, Form], Depends(form_of_session)],
) -> tuple[access.ConsoleSession, Form]:
    """As form_of_session, from an admin (a viewer reads only: 403)."""
    session, _ = posted_form
    if not session.who.role.writes:
        raise Refused(403, "Forbidden", f"{session.who.name} is a viewer: the console is read-only for viewers.")
    return posted_form


Posted = Annotated[tuple[access.ConsoleSession, Form], Depends(form_of_session)]
Write = Annotated[tuple[access.ConsoleSession, Form], Depends(writer)]

router = APIRouter(include_in_schema=False)


# -- signing in and out ----------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> RedirectResponse:
    return _see_other("/orgs" if _session(request) is not None else "/signin")


def _sign_in_page(
    request: Request, *, status: int = 200, error: str | None = None, headers: dict[str, str] | None = None
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)  # double-submit: the form's field must equal this cookie
    response = _page(request, "signin.html", None, status=status, title="Sign in", signin_csrf=token, error=error)
    _cookie(request, response, SIGNIN_CSRF_COOKIE, token, 3600, path="/signin")
    response.headers.update(headers or {})
    return response


@router.get("/signin", response_model=None)
def sign_in_form(request: Request) -> Response:
    if _session(request) is not None:
        return _see_other("/orgs")
    return _sign_in_page(request)


@router.post("/signin", response_model=None)
def sign_in(request: Request, form: Annotated[Form, Depends(posted)]) -> Response:
    rt = _rt(request)
    client = client_of(request) or "unknown"
    if access.refused_sign_ins(rt, client, SIGN_IN_WINDOW) >= MAX_REFUSED_SIGN_INS:
        minutes = int(SIGN_IN_WINDOW.total_seconds() // 60)
        return _sign_in_page(
            request,
            status=429,
            error=f"Too many refused sign-ins from your address. Try again in {minutes} minutes.",
            headers={"Retry-After": str(int(SIGN_IN_WINDOW.total_seconds()))},
        )
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(_one(form, "csrf").encode(), expected.encode()):
        return _sign_in_page(request, status=403, error="The sign-in form had expired. Please try again.")
    token = _one(form, "token")
    who = access.principal_of_token(rt, token, kind="console", client=client)
    started = None
    if who is not None:
        with contextlib.suppress(NotFound):  # revoked in between
            started = access.start_session(rt, token)
    if who is None or started is None:
        with audit.acting_as(Principal("console", "unknown", Role.VIEWER, client)):
            audit.write(rt, "session.sign_in", None, Outcome.REFUSED, "unknown or revoked token")
        return _sign_in_page(request, status=401, error="That token is not valid: it is unknown, revoked or mistyped.")
    cookie, _csrf = started
    with audit.acting_as(Principal("console", who.name, who.role, client)):
        audit.write(rt, "session.sign_in", who.name, Outcome.OK)
    response = _see_other("/orgs")
    _cookie(request, response, SESSION_COOKIE, cookie, int(access.SESSION_LIFETIME.total_seconds()))
    _forget(request, response, SIGNIN_CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout")
def sign_out(request: Request, posted_form: Posted) -> RedirectResponse:
    session, _ = posted_form
    rt = _rt(request)
    access.end_session(rt, request.cookies.get(SESSION_COOKIE, ""))
    with audit.acting_as(session.who):
        audit.write(rt, "session.sign_out", session.who.name, Outcome.OK)
    response = _see_other("/signin")
    _forget(request, response, SESSION_COOKIE)
    _forget(request, response, FOLLOW_COOKIE)
    return response


# -- organizations ---------------------------------------------------------------------------------


def _followed(request: Request) -> dict[uuid.UUID, uuid.UUID]:
    """The sync requests (org id -> request id) this browser asked for and follows."""
    found = _decode(request.cookies.get(FOLLOW_COOKIE))
    out: dict[uuid.UUID, uuid.UUID] = {}
    if isinstance(found, dict):
        for org, req in list(found.items())[:MAX_FOLLOWED]:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                out[uuid.UUID(org)] = uuid.UUID(req)
    return out


def _follow(request: Request, response: Response, following: dict[uuid.UUID, uuid.UUID]) -> None:
    if following:
        pairs = {str(o): str(r) for o, r in list(following.items())[-MAX_FOLLOWED:]}
        _cookie(request, response, FOLLOW_COOKIE, _encode(pairs), 3600)
    elif FOLLOW_COOKIE in request.cookies:
        _forget(request, response, FOLLOW_COOKIE)


def _clouds_link(**query: str | None) -> str:
    given = {k: v for k, v in query.items() if v}
    return "/clouds" + ("?" + urlencode(given) if given else "")


def _card(org: listings.OrgView, progress: tuple[uuid.UUID, listings.Progress] | None) -> dict[str, Any]:
    took = None
    if org.last_sync_started_at and org.last_sync_finished_at:
        took = (org.last_sync_finished_at - org.last_sync_started_at).total_seconds()
    report = org.permission_report or {}
    return {
        "id": str(org.id),
        "nickname": org.nickname,
        "cloud_org_id": org.cloud_org_id,
        "management_account_id": org.management_account_id,
        "account_count": org.account_count,
        "clouds_link": _clouds_link(badge=f"{ORG_BADGE}={org.cloud_org_id}"),
        "filters": org.filters,
        "events_queue_url": org.events_queue_url,
        "warnings": report.get("warnings", []),
        "permission_errors": report.get("errors", []),
        "last_sync": {
            "status": org.last_sync_status,
            "started_at": org.last_sync_started_at,
            "finished_at": org.last_sync_finished_at,
            "took": took,
            "error": org.last_sync_error,
        },
        "progress": None
        if progress is None
        else {"request_id": str(progress[0]), "pending": progress[1].pending, "done": progress[1].done},
    }


@router.get("/orgs")
def orgs_page(request: Request, session: Reader) -> HTMLResponse:
    following = _followed(request)
    running: dict[uuid.UUID, tuple[uuid.UUID, listings.Progress]] = {}
    with _rt(request).reading() as conn:
        orgs = listings.list_orgs(conn)
        for org_id, request_id in following.items():
            progress = listings.request_progress(conn, request_id)
            if progress.pending:
                running[org_id] = (request_id, progress)
    cards = [_card(org, running.get(org.id)) for org in orgs]
    response = _page(request, "orgs.html", session, section="orgs", title="Organizations", cards=cards)
    _follow(request, response, {o: r for o, (r, _) in running.items()})
    return response


def _blank_form() -> dict[str, Any]:
    return {
        "nickname": "",
        "org_role_arn": "",
        "org_session_name": "orgsync",
        "org_session_duration": "",
        "member_role_name": "",
        "member_session_name": "orgsync",
        "member_session_duration": "",
        "access_key_id": "",
        "use_iam_user": False,
        "exclude_name_prefixes": "",
        "limit_to_ou_ids": "",
        "limit_scope": False,
        "auto_remove_suspended": False,
        "events_queue_url": "",
        "no_events": False,
    }


def _entered(form: Form) -> dict[str, Any]:
    """What the user entered, to show again: every field but the secret ones."""
    prefixes, ous = _lines(form, "exclude_name_prefixes"), _lines(form, "limit_to_ou_ids")
    return {
        "nickname": _one(form, "nickname"),
        **{name: _one(form, name) for name in CREDENTIAL_FIELDS if name not in SECRET_FIELDS},
        "use_iam_user": _checked(form, "use_iam_user") or bool(_one(form, "access_key_id")),
        "exclude_name_prefixes": "\n".join(prefixes),
        "limit_to_ou_ids": "\n".join(ous),
        "limit_scope": _checked(form, "limit_scope") or bool(ous),
        "auto_remove_suspended": _checked(form, "auto_remove_suspended"),
        "events_queue_url": _one(form, "events_queue_url"),
        "no_events": _checked(form, "no_events"),
    }


def _credential_values(form: Form) -> tuple[dict[str, Any], list[InvalidInput]]:
    """The credential fields as `build_credentials` takes them (blank: None), and the durations that are
    not whole numbers (reported with the other errors of the form)."""
    values: dict[str, Any] = {}
    wrong: list[InvalidInput] = []
    for name in CREDENTIAL_FIELDS:
        text = _one(form, name) or None
        if name in DURATION_FIELDS and text is not None:
            try:
                values[name] = int(text)
            except ValueError:
                wrong.append(InvalidInput(name.replace("_", "-"), f"a whole number of seconds, not {text!r}"))
                values[name] = None
            continue
        values[name] = text
    return values, wrong


def _errors(problems: Iterable[dict[str, str]]) -> tuple[dict[str, list[str]], list[str]]:
    """Errors by form field, and those about no field of the form (shown above it)."""
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for problem in problems:
        field, detail = problem["field"], problem["detail"]
        if field in LABELS:
            by_field.setdefault(field, []).append(detail)
        else:
            general.append(f"{field}: {detail}" if field else detail)
    return by_field, general


def _each(exc: InvalidInput) -> tuple[InvalidInput, ...]:
    return exc.errors if isinstance(exc, InvalidFields) else (exc,)


def _refusal(exc: OrgSyncError) -> tuple[dict[str, list[str]], list[str]]:
    """How a refused write is shown: each error beside its field, the others above the form."""
    problems = field_errors(exc)
    by_field, general = _errors(problems)
    if not problems:
        general.append(str(exc))
    return by_field, general


def _form_page(
    request: Request,
    session: access.ConsoleSession,
    *,
    mode: str,
    values: dict[str, Any],
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    general: list[str] | None = None,
    org: dict[str, Any] | None = None,
) -> HTMLResponse:
    title = "Add organization" if mode == "add" else f"Edit {org['nickname'] if org else 'organization'}"
    fields_of: dict[str, list[str]] = {}  # one line above the form for a message that several fields share
    for field, messages in (errors or {}).items():
        for message in messages:
            fields_of.setdefault(message, []).append(field)
    return _page(
        request,
        "org_form.html",
        session,
        template_links=_template_links(values),
        status=status,
        section="orgs",
        title=title,
        mode=mode,
        values=values,
        errors=errors or {},
        general=general or [],
        summary=[{"fields": fields, "message": message} for message, fields in fields_of.items()],
        org=org,
        action="/orgs/new" if mode == "add" else f"/orgs/{org['id'] if org else ''}/edit",
    )


def _duration(value: Any) -> int:
    """A role's maximum session for a form's session duration: at least what IAM allows, 3600."""
    try:
        return max(DEFAULT_SESSION_SECONDS, int(str(value or DEFAULT_SESSION_SECONDS).strip()))
    except ValueError:
        return DEFAULT_SESSION_SECONDS


def _template_links(values: dict[str, Any]) -> dict[str, str]:
    """The download links of the two roles' templates for what the form holds (the script keeps them in step
    as it changes): external ids as stored or entered (never their values), durations, the member role name."""
    management = {"max_session_duration": str(_duration(values.get("org_session_duration")))}
    if values.get("org_external_id_set") or values.get("org_external_id"):
        management["external_id"] = "1"
    members = {
        "role_name": str(values.get("member_role_name") or "OrgSyncMember"),
        "max_session_duration": str(_duration(values.get("member_session_duration"))),
    }
    if values.get("member_external_id_set") or values.get("member_external_id"):
        members["external_id"] = "1"
    return {
        "management": "/templates/management.yaml?" + urlencode(management),
        "members": "/templates/members.yaml?" + urlencode(members),
    }


@router.get("/templates/{kind}.yaml")
def role_template(
    request: Request,
    kind: str,
    session: Reader,
    role_name: str = "OrgSyncMember",
    max_session_duration: int = DEFAULT_SESSION_SECONDS,
    external_id: bool = False,
) -> Response:
    """A role's CloudFormation template, as `orgsync roles template` prints it, to download."""
    from domain import templates

    from ..cfn import render

    if kind == "management":
        template = templates.management_template(
            caller_arn=None, external_id=external_id, max_session_duration=max_session_duration
        )
        comments = [
            "orgsync's role in the management account; create a stack of it there (capability CAPABILITY_NAMED_IAM)"
        ]
    elif kind == "members":
        template = templates.members_template(
            role_name=role_name,
            caller_arn=None,
            external_id=external_id,
            max_session_duration=max_session_duration,
            managed_policy_arns=(),
        )
        comments = [
            "orgsync's member role: deploy it with a service-managed StackSet (auto-deployment on), and as a stack",
            "in the management account itself; `orgsync roles template members --help` says more",
        ]
    else:
        raise Refused(404, "Not found", f"There is no {kind!r} template: management or members.")
    return Response(
        render(template, comments),
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="orgsync-{kind}.yaml"'},
    )


@router.get("/orgs/new")
def add_form(request: Request, session: Reader) -> HTMLResponse:
    if not session.who.role.writes:
        raise Refused(403, "Forbidden", f"{session.who.name} is a viewer: only admins add organizations.")
    return _form_page(request, session, mode="add", values=_blank_form())


@router.post("/orgs/new", response_model=None)
def add_org(request: Request, posted_form: Write) -> Response:
    session, form = posted_form
    rt = _rt(request)
    credentials, wrong = _credential_values(form)
    entered = {**_blank_form(), **_entered(form)}
    queue = _one(form, "events_queue_url") or None
    try:
        with audit.acting_as(session.who):
            try:
                registration = build_registration(
                    nickname=_one(form, "nickname"),
                    credentials=credentials,
                    exclude_name_prefixes=_lines(form, "exclude_name_prefixes"),
                    limit_to_ou_ids=_lines(form, "limit_to_ou_ids"),
                    auto_remove_suspended=_checked(form, "auto_remove_suspended"),
                    events_queue_url=queue,
                )
            except InvalidInput as exc:
                raise InvalidFields([*wrong, *_each(exc)]) from None
            if wrong:
                raise InvalidFields(wrong)
            registered = services.register_org(rt, registration)
    except OrgSyncError as exc:
        errors, general = _refusal(exc)
        return _form_page(request, session, mode="add", values=entered, status=422, errors=errors, general=general)
    response = _see_other("/orgs")
    _tell(request, response, f"Added {registered.nickname} ({registered.cloud_org_id}); its first sync is running.")
    _follow(request, response, {**_followed(request), registered.org_id: registered.request_id})
    return response


def _org_uuid(org_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(org_id)
    except ValueError:
        raise Refused(404, "Not found", f"There is no organization {org_id!r}.") from None


def _stored(request: Request, org_id: uuid.UUID) -> tuple[dict[str, Any], bool]:
    rt = _rt(request)
    try:
        with rt.reading() as conn:
            return org_detail(rt, conn, org_id)
    except NotFound:
        raise Refused(404, "Not found", f"There is no organization {org_id}.") from None


def _stored_values(data: dict[str, Any]) -> dict[str, Any]:
    """The edit form of a stored organization: its non-secret settings."""
    management = data.get("management_role") or {}
    member = data.get("member_role") or {}
    filters = data.get("filters") or {}
    ous = filters.get("limit_to_ou_ids") or []
    return {
        **_blank_form(),
        "nickname": data["nickname"],
        "org_role_arn": management.get("role_arn") or "",
        "org_session_name": management.get("session_name") or "",
        "org_session_duration": str(management.get("session_duration") or ""),
        "member_role_name": member.get("role_name") or "",
        "member_session_name": member.get("session_name") or "",
        "member_session_duration": str(member.get("session_duration") or ""),
        "access_key_id": data.get("access_key_id") or "",
        "use_iam_user": bool(data.get("access_key_id")),
        "exclude_name_prefixes": "\n".join(filters.get("exclude_name_prefixes") or []),
        "limit_to_ou_ids": "\n".join(ous),
        "limit_scope": bool(ous),
        "auto_remove_suspended": bool(filters.get("auto_remove_suspended")),
        "events_queue_url": data.get("events_queue_url") or "",
    }


def _org_summary(data: dict[str, Any], unreadable: bool) -> dict[str, Any]:
    management = data.get("management_role") or {}
    member = data.get("member_role") or {}
    return {
        "id": data["id"],
        "nickname": data["nickname"],
        "cloud_org_id": data["cloud_org_id"],
        "unreadable": unreadable,
        "org_external_id_set": bool(management.get("external_id_set")),
        "member_external_id_set": bool(member.get("external_id_set")),
        "secret_access_key_set": bool(data.get("access_key_id")),
        "events_queue_url": data.get("events_queue_url"),
    }


@router.get("/orgs/{org_id}/edit")
def edit_form(request: Request, org_id: str, session: Reader) -> HTMLResponse:
    if not session.who.role.writes:
        raise Refused(403, "Forbidden", f"{session.who.name} is a viewer: only admins change organizations.")
    data, unreadable = _stored(request, _org_uuid(org_id))
    return _form_page(request, session, mode="edit", values=_stored_values(data), org=_org_summary(data, unreadable))


def _credentials_touched(values: dict[str, Any], stored: dict[str, Any], unreadable: bool) -> bool:
    """Does the form change the credentials? A secret entered, or a shown setting changed (a blank one is
    not a change: a form without credential fields keeps them too)."""
    for name, value in values.items():
        if value is None:
            continue
        if name in SECRET_FIELDS or unreadable:
            return True
        before = stored.get(name) or ""
        if name in DURATION_FIELDS and not before:
            before = str(DEFAULT_SESSION_SECONDS)
        if str(value) != str(before):
            return True
    return False


def _dropped_secrets(values: dict[str, Any], org: dict[str, Any]) -> list[InvalidInput]:
    """New credentials that would silently lose a stored external id: they must be entered again."""
    return [
        InvalidInput(
            name.replace("_", "-"),
            "one is stored: enter it again (new credentials replace the stored block as a whole)",
        )
        for name in ("org_external_id", "member_external_id")
        if org[f"{name}_set"] and values.get(name) is None
    ]


@router.post("/orgs/{org_id}/edit", response_model=None)
def edit_org(request: Request, org_id: str, posted_form: Write) -> Response:
    session, form = posted_form
    rt = _rt(request)
    wanted = _org_uuid(org_id)
    data, unreadable = _stored(request, wanted)
    org = _org_summary(data, unreadable)
    entered = {**_stored_values(data), **_entered(form)}
    values, wrong = _credential_values(form)
    touched = _credentials_touched(values, _stored_values(data), unreadable)
    if touched:
        wrong += _dropped_secrets(values, org)
    queue = _one(form, "events_queue_url") or None
    no_events = _checked(form, "no_events")
    try:
        with audit.acting_as(session.who):
            check = Checks()
            check.errors.extend(wrong)
            credentials = check(credentials_if_given, values) if touched else None
            nickname = check(check_nickname, _one(form, "nickname"))
            filters = check(
                build_filters,
                _lines(form, "exclude_name_prefixes"),
                _lines(form, "limit_to_ou_ids"),
                _checked(form, "auto_remove_suspended"),
            )
            checked_queue = None if queue is None or no_events else check(check_events_queue_url, queue)
            check.done()
            assert nickname is not None and filters is not None  # checked
            edit = services.OrgEdit(
                credentials=credentials,
                nickname=nickname,
                exclude_name_prefixes=filters.exclude_name_prefixes,
                limit_to_ou_ids=filters.limit_to_ou_ids,
                auto_remove_suspended=filters.auto_remove_suspended,
                events_queue_url=checked_queue,
                no_events=no_events and bool(data.get("events_queue_url")),
            )
            _, request_id, changed = services.edit_org(rt, str(wanted), edit)
    except OrgSyncError as exc:
        errors, general = _refusal(exc)
        return _form_page(
            request, session, mode="edit", values=entered, status=422, errors=errors, general=general, org=org
        )
    response = _see_other("/orgs")
    if request_id is None:
        _tell(request, response, f"Nothing changed in {entered['nickname']}.")
    else:
        _tell(request, response, f"Saved {', '.join(changed).replace('_', ' ')}; a sync is running.")
        _follow(request, response, {**_followed(request), wanted: request_id})
    return response


@router.post("/orgs/{org_id}/sync")
def sync_org(request: Request, org_id: str, posted_form: Write) -> RedirectResponse:
    session, _ = posted_form
    wanted = _org_uuid(org_id)
    try:
        with audit.acting_as(session.who):
            _, request_id = services.request_sync(_rt(request), wanted, f"requested by {session.who.label}")
    except NotFound:
        raise Refused(404, "Not found", f"There is no organization {org_id}.") from None
    response = _see_other("/orgs")
    _tell(request, response, "Sync requested.")
    _follow(request, response, {**_followed(request), wanted: request_id})
    return response


@router.post("/orgs/{org_id}/remove")
def remove_org(request: Request, org_id: str, posted_form: Write) -> RedirectResponse:
    session, _ = posted_form
    wanted = _org_uuid(org_id)
    try:
        with audit.acting_as(session.who):
            nickname, count = services.remove_org(_rt(request), str(wanted))
    except NotFound:
        raise Refused(404, "Not found", f"There is no organization {org_id}.") from None
    response = _see_other("/orgs")
    _tell(request, response, f"Removed {nickname} and the {count} accounts it managed (AWS was not touched).")
    following = _followed(request)
    following.pop(wanted, None)
    _follow(request, response, following)
    return response


# -- accounts --------------------------------------------------------------------------------------


@router.get("/clouds")
def clouds_page(request: Request, session: Reader) -> HTMLResponse:
    query = {name: (request.query_params.get(name) or "").strip() for name in ("org", "badge", "status", "q")}
    cursor = request.query_params.get("cursor") or None
    rows: list[dict[str, Any]] = []
    next_cursor = None
    problems: list[dict[str, str]] = []
    with _rt(request).reading() as conn:
        orgs = listings.list_orgs(conn)
        filters: dict[str, Any] = {}
        parsers: list[tuple[str, Callable[[str], Any]]] = [
            ("badge", badge_of),
            ("status", status_of),
            ("org", lambda ref: listings.find_org_id(conn, ref)),
            ("cursor", after_of),
        ]
        for name, parse in parsers:
            given = cursor if name == "cursor" else query[name] or None
            try:
                filters[name] = parse(given) if given else None
            except InvalidInput as exc:
                problems += field_errors(exc)
            except NotFound as exc:
                problems.append({"field": name, "detail": str(exc)})
        if len(query["q"]) > 256:
            problems.append({"field": "q", "detail": "at most 256 characters"})
        if not problems:
            rows, last = listings.clouds_page(
                conn,
                limit=PAGE_SIZE,
                after=filters["cursor"],
                org_id=filters["org"],
                badge=filters["badge"],
                status=filters["status"],
                search=query["q"] or None,
            )
            next_cursor = None if last is None else cursor_of(last)
    nicknames = {str(o.id): o.nickname for o in orgs}
    errors, general = _errors(problems)
    return _page(
        request,
        "clouds.html",
        session,
        status=422 if problems else 200,
        section="clouds",
        title="Accounts",
        query=query,
        orgs=orgs,
        statuses=list(CloudStatus),
        rows=rows,
        nicknames=nicknames,
        hints=STATUS_HINTS,
        errors=errors,
        general=general,
        paged=cursor is not None,
        first_link=_clouds_link(**query),
        next_link=None if next_cursor is None else _clouds_link(**query, cursor=next_cursor),
    )


@router.get("/clouds/{account_id}")
def cloud_page(request: Request, account_id: str, session: Reader) -> HTMLResponse:
    with _rt(request).reading() as conn:
        data = cloud_detail(conn, account_id)
        if data is None:
            raise Refused(404, "Not found", f"There is no account {account_id} in the inventory.")
        org = None if data["organization_id"] is None else listings.org_view(conn, uuid.UUID(data["organization_id"]))
    badges = [
        {
            "key": key,
            "value": detail["value"],
            "system": key.startswith(SYSTEM_PREFIX),
            "autogenerated": bool(detail["autogenerated"]),
        }
        for key, detail in data["badge_details"].items()
    ]
    status = None
    with contextlib.suppress(ValueError):
        status = CloudStatus(data["status"])
    return _page(
        request,
        "cloud.html",
        session,
        section="clouds",
        title=f"Account {data['account_id']}",
        cloud=data,
        org=org,
        badges=badges,
        status_meaning=status.meaning if status else "",
        hint=STATUS_HINTS.get(status, "") if status else "",
        org_link=None if org is None else _clouds_link(badge=f"{ORG_BADGE}={org.cloud_org_id}"),
    )


# -- operations ------------------------------------------------------------------------------------


@router.get("/operations")
def operations_page(request: Request, session: Reader) -> HTMLResponse:
    from workers.routes import QUEUES

    rt = _rt(request)
    settings = rt.settings
    queues: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []
    problems: list[str] = []
    if not settings.in_process_broker:
        from ..dead_letters import listing, queue_depths

        url = str(settings.external_broker_url)
        try:
            queues = queue_depths(settings, url)
            letters = listing(rt, url, QUEUES)
        except OrgSyncError as exc:
            problems.append(str(exc))
    with rt.sessions() as db:
        entries = access_store.audit_entries(db, limit=20)
        leader = current_leader(db)
    return _page(
        request,
        "operations.html",
        session,
        section="operations",
        title="Operations",
        in_process=settings.in_process_broker,
        queues=queues,
        letters=letters,
        problems=problems,
        entries=entries,
        leader=leader,
    )


@router.post("/operations/requeue")
def requeue(request: Request, posted_form: Write) -> RedirectResponse:
    from workers.routes import QUEUES

    from ..dead_letters import requeue as requeue_letters

    session, form = posted_form
    rt = _rt(request)
    response = _see_other("/operations")
    if rt.settings.in_process_broker:
        _tell(request, response, "No RabbitMQ: dead letters live inside the worker process.", "error")
        return response
    ids = [i for i in (_one(form, "id"),) if i] or None
    try:
        with audit.acting_as(session.who):
            done = requeue_letters(rt, str(rt.settings.external_broker_url), QUEUES, ids)
    except OrgSyncError as exc:
        _tell(request, response, str(exc), "error")
        return response
    text = f"Requeued {len(done.moved)} dead letter{'s' if len(done.moved) != 1 else ''}."
    if done.refused:
        text += " Left in place: " + "; ".join(f"{i} ({why})" for i, why in done.refused)
    _tell(request, response, text, "error" if done.refused else "ok")
    return response


# -- wiring ----------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the console's pages, its static files and its response headers to the app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith("/api/docs"):  # the API's documentation page loads its own scripts
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def sign_in_first(_: Request, __: Exception) -> Response:
        return _see_other("/signin")

    def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        session = getattr(request.state, "console_session", None)
        return _page(request, "error.html", session, status=exc.status, title=exc.title, detail=exc.detail)

    app.add_exception_handler(SignInFirst, sign_in_first)
    app.add_exception_handler(Refused, refused)
