"""The JSON API, version 1: organizations, the sync requests and what they caused, accounts, queues, dead
letters and the audit trail. The same services as the CLI do the work (one set of rules, one validation,
one error vocabulary); documents are those of the CLI's --json output."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from domain.access import Principal
from domain.config import build_filters, build_registration, check_nickname, credentials_if_given
from domain.errors import InvalidInput
from domain.live import check_events_queue_url
from storage import access as access_store
from storage import listings

from .. import audit, services
from ..views import audit_json, cloud_detail, org_detail, org_json
from .auth import admin, caller
from .params import after_of, badge_of, cursor_of, status_of
from .problems import ApiProblem

router = APIRouter(prefix="/api/v1")
Reader = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
MAX_PAGE = 500


def _rt(request: Request) -> Any:
    return request.app.state.rt


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class Credentials(BaseModel):
    """The credential fields of an organization (as `org add`'s options): secrets are write-only."""

    model_config = ConfigDict(extra="forbid")

    org_role_arn: str | None = None
    org_session_name: str | None = None
    org_session_duration: int | None = None
    org_external_id: SecretStr | None = None
    member_role_name: str | None = None
    member_session_name: str | None = None
    member_session_duration: int | None = None
    member_external_id: SecretStr | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    def values(self) -> dict[str, Any]:
        return {
            "org_role_arn": self.org_role_arn,
            "org_session_name": self.org_session_name,
            "org_session_duration": self.org_session_duration,
            "org_external_id": _secret(self.org_external_id) or None,
            "member_role_name": self.member_role_name,
            "member_session_name": self.member_session_name,
            "member_session_duration": self.member_session_duration,
            "member_external_id": _secret(self.member_external_id) or None,
            "access_key_id": self.access_key_id or None,
            "secret_access_key": _secret(self.secret_access_key) or None,
        }


class OrgIn(Credentials):
    """`org add`: every field of the CLI's command."""

    nickname: str
    exclude_name_prefixes: list[str] = Field(default_factory=list)
    limit_to_ou_ids: list[str] = Field(default_factory=list)
    auto_remove_suspended: bool = False
    events_queue_url: str | None = None


class OrgPatch(Credentials):
    """`org edit`: what is given changes; credentials as a whole or not at all (blank keeps them)."""

    nickname: str | None = None
    exclude_name_prefixes: list[str] | None = None
    limit_to_ou_ids: list[str] | None = None
    auto_remove_suspended: bool | None = None
    events_queue_url: str | None = None
    no_events: bool = False


class Requeue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = None
    ids: list[str] | None = None


# -- organizations ---------------------------------------------------------------------------------


@router.get("/orgs", summary="Every organization with its account count and last sync")
def list_orgs(request: Request, _: Reader) -> list[dict[str, Any]]:
    with _rt(request).reading() as conn:
        return [org_json(o) for o in listings.list_orgs(conn)]


@router.post("/orgs", status_code=201, summary="Register an organization (checked like `org add`), then sync it")
def add_org(request: Request, response: Response, body: OrgIn, who: Admin) -> dict[str, Any]:
    rt = _rt(request)
    with audit.acting_as(who):
        registration = build_registration(
            nickname=body.nickname,
            credentials=body.values(),
            exclude_name_prefixes=body.exclude_name_prefixes,
            limit_to_ou_ids=body.limit_to_ou_ids,
            auto_remove_suspended=body.auto_remove_suspended,
            events_queue_url=body.events_queue_url,
        )
        registered = services.register_org(rt, registration)
    with rt.reading() as conn:
        data, _unreadable = org_detail(rt, conn, registered.org_id)
    response.headers["Location"] = f"/api/v1/orgs/{registered.org_id}"
    return {**data, "request_id": str(registered.request_id)}


@router.get("/orgs/{org}", summary="One organization (id, cloud org id or nickname), as `org show`")
def get_org(request: Request, org: str, _: Reader) -> dict[str, Any]:
    rt = _rt(request)
    with rt.reading() as conn:
        data, _unreadable = org_detail(rt, conn, listings.find_org_id(conn, org))
    return data


@router.patch("/orgs/{org}", summary="Change an organization (as `org edit`)")
def edit_org(request: Request, org: str, body: OrgPatch, who: Admin) -> dict[str, Any]:
    if body.events_queue_url is not None and body.no_events:
        raise InvalidInput("events-queue-url", "give a queue URL or no_events, not both")
    with audit.acting_as(who):
        credentials = credentials_if_given(body.values())
        filters = build_filters(body.exclude_name_prefixes or (), body.limit_to_ou_ids or ())
        edit = services.OrgEdit(
            credentials=credentials,
            nickname=check_nickname(body.nickname) if body.nickname is not None else None,
            exclude_name_prefixes=None if body.exclude_name_prefixes is None else filters.exclude_name_prefixes,
            limit_to_ou_ids=None if body.limit_to_ou_ids is None else filters.limit_to_ou_ids,
            auto_remove_suspended=body.auto_remove_suspended,
            events_queue_url=None if body.events_queue_url is None else check_events_queue_url(body.events_queue_url),
            no_events=body.no_events,
        )
        org_id, request_id, changed = services.edit_org(_rt(request), org, edit)
    return {"id": str(org_id), "changed": changed, "request_id": None if request_id is None else str(request_id)}


@router.delete("/orgs/{org}", summary="Remove an organization and the accounts it manages (AWS is not touched)")
def remove_org(request: Request, org: str, who: Admin) -> dict[str, Any]:
    with audit.acting_as(who):
        nickname, count = services.remove_org(_rt(request), org)
    return {"nickname": nickname, "clouds_removed": count}


@router.post("/orgs/{org}/sync", status_code=202, summary="Request a sync now; follow it at /requests/{id}")
def sync_org(request: Request, response: Response, org: str, who: Admin) -> dict[str, Any]:
    with audit.acting_as(who):
        org_id, request_id = services.request_sync(_rt(request), org, f"requested by {who.label}")
    response.headers["Location"] = f"/api/v1/requests/{request_id}"
    return {"org_id": str(org_id), "request_id": str(request_id)}


@router.get("/requests/{request_id}", summary="How far a request and everything it caused have got")
def request_progress(request: Request, request_id: uuid.UUID, _: Reader) -> dict[str, Any]:
    with _rt(request).reading() as conn:
        progress = listings.request_progress(conn, request_id)
    if progress.pending == 0 and progress.done == 0:
        raise ApiProblem(404, "Not found", f"no request {request_id} (or none of its work is known yet)")
    finished = progress.pending == 0
    return {
        "request_id": str(request_id),
        "pending": progress.pending,
        "done": progress.done,
        "finished": finished,
        "ok": finished and not progress.failures,
        "failures": [{"actor": actor, "error": error} for actor, error in progress.failures],
    }


# -- accounts --------------------------------------------------------------------------------------


@router.get("/clouds", summary="Accounts, a page at a time (keyset by account id), with filters")
def list_clouds(
    request: Request,
    _: Reader,
    org: Annotated[str | None, Query(description="Only this organization's (id, cloud org id or nickname).")] = None,
    badge: Annotated[str | None, Query(description="KEY=VALUE: only accounts with this badge.")] = None,
    status: Annotated[str | None, Query(description="Only accounts with this status.")] = None,
    q: Annotated[str | None, Query(max_length=256, description="An account id's start or part of the name.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before.")] = None,
) -> dict[str, Any]:
    wanted_badge, wanted_status, after = badge_of(badge), status_of(status), after_of(cursor)
    with _rt(request).reading() as conn:
        org_id = listings.find_org_id(conn, org) if org else None
        rows, last = listings.clouds_page(
            conn, limit=limit, after=after, org_id=org_id, badge=wanted_badge, status=wanted_status, search=q
        )
    return {"items": rows, "next_cursor": None if last is None else cursor_of(last)}


@router.get("/clouds/{account_id}", summary="One account with its badges, tags and the SCPs that apply")
def get_cloud(request: Request, account_id: str, _: Reader) -> dict[str, Any]:
    with _rt(request).reading() as conn:
        data = cloud_detail(conn, account_id)
    if data is None:
        raise ApiProblem(404, "Not found", f"no cloud with account id {account_id}")
    return data


# -- operations ------------------------------------------------------------------------------------


def _broker_url(request: Request) -> str:
    settings = _rt(request).settings
    if settings.in_process_broker:
        raise ApiProblem(409, "No broker", "no ORGSYNC_BROKER_URL: messages live inside this process")
    return str(settings.external_broker_url)


@router.get("/queues", summary="Message counts of orgsync's queues")
def queues(request: Request, _: Reader) -> dict[str, Any]:
    from ..dead_letters import queue_depths

    settings = _rt(request).settings
    if settings.in_process_broker:
        return {"mode": "in-process", "queues": []}
    return {"mode": "rabbitmq", "queues": queue_depths(settings, _broker_url(request))}


@router.get("/scheduler", summary="Which scheduler instance leads (holds the leadership lock), if any")
def scheduler(request: Request, _: Reader) -> dict[str, Any]:
    from storage.scheduling import current_leader

    with _rt(request).sessions() as session:
        leader = current_leader(session)
    if leader is None:
        return {"leader": None}
    return {
        "leader": {
            "instance": leader.instance,
            "backend_pid": leader.backend_pid,
            "since": leader.connected_since.isoformat(),
        }
    }


@router.get("/dead-letters", summary="Messages that failed for good, and why")
def dead_letters(request: Request, _: Reader, queue: str | None = None) -> list[dict[str, Any]]:
    from ..dead_letters import listing, queues_named

    return listing(_rt(request), _broker_url(request), queues_named(queue))


@router.post("/dead-letters/requeue", summary="Put dead letters (those named, or all) back on their queue")
def requeue(request: Request, body: Requeue, who: Admin) -> dict[str, Any]:
    from ..dead_letters import queues_named
    from ..dead_letters import requeue as requeue_letters

    with audit.acting_as(who):
        done = requeue_letters(_rt(request), _broker_url(request), queues_named(body.queue), body.ids)
    return {"requeued": [m for m, _ in done.moved], "refused": [{"id": i, "reason": r} for i, r in done.refused]}


@router.get("/audit", summary="The audit trail, newest first")
def audit_trail(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[int | None, Query(description="Only entries older than this id.")] = None,
) -> list[dict[str, Any]]:
    with _rt(request).sessions() as session:
        entries = access_store.audit_entries(session, limit=limit, before=before)
    return [audit_json(e) for e in entries]
