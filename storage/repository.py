"""The queries and writes of commands (the CLI, the demo, the metrics endpoint, key rotation), as
functions over a SQLAlchemy Session.

Message handlers go through `storage.inventory` inside a unit of work (`storage.unit_of_work`). A
command that writes and emits in one transaction opens `uow.transaction()` and runs the functions here
on `work.inventory.session`; one that only reads uses a session of `Runtime.sessions`. Ids are
`uuid.UUID` everywhere except where a person or another system typed them (`find_org`, the dead-letter
ids of `failure_reasons` and `forget_failures`), which are parsed here, once.

The reads that the read-only commands make too (organizations, clouds, tags, sync runs) are written once,
in plain SQL, in `storage.listings`; the functions here run them on the session's connection.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.errors import NotFound
from domain.status import CloudStatus, MessageOutcome, SyncStatus

from . import listings
from .errors import Duplicate
from .inventory import utcnow
from .listings import OrgView, Progress, SyncRunView
from .models import Cloud, Organization, ProcessedMessage, SyncRun


class Keep:
    """A field `update_org` leaves as it is (where None is a value: no events queue)."""


KEEP = Keep()

__all__ = [
    "CredentialBlock",
    "LastSync",
    "Progress",
    "accounts_per_status",
    "add_cloud",
    "add_org",
    "cloud_by_account",
    "clouds_to_validate",
    "correlation_progress",
    "credential_blocks",
    "delete_cloud",
    "delete_org",
    "failure_reasons",
    "find_org",
    "flush_or_duplicate",
    "forget_failures",
    "get_org",
    "last_successful_syncs",
    "latest_sync_run",
    "list_clouds",
    "list_orgs",
    "org_by_cloud_org_id",
    "org_by_nickname",
    "org_with_count",
    "replace_credentials",
    "set_cloud_role",
    "tags_of",
    "update_org",
    "utcnow",
]


def flush_or_duplicate(session: Session, duplicate: str) -> None:
    """Write what is pending now, so that a broken uniqueness rule raises Duplicate(`duplicate`) here."""
    try:
        session.flush()
    except IntegrityError:
        raise Duplicate(duplicate) from None


# -- organizations -------------------------------------------------------------------------------


def find_org(session: Session, ref: str) -> Organization:
    """An organization by id, cloud org id or nickname."""
    return get_org(session, listings.find_org_id(listings.of_session(session), ref))


def get_org(session: Session, org_id: uuid.UUID, *, for_update: bool = False) -> Organization:
    stmt = select(Organization).where(Organization.id == org_id)
    if for_update:
        stmt = stmt.with_for_update()
    org = session.scalars(stmt).first()
    if org is None:
        raise NotFound(f"organization {org_id} does not exist")
    return org


def list_orgs(session: Session) -> list[tuple[OrgView, int]]:
    """Every organization, by nickname, and how many clouds it manages."""
    return [(org, org.account_count) for org in listings.list_orgs(listings.of_session(session))]


def org_with_count(session: Session, org_id: uuid.UUID) -> tuple[OrgView, int]:
    """One organization and how many clouds it manages."""
    org = listings.org_view(listings.of_session(session), org_id)
    return org, org.account_count


def org_by_cloud_org_id(session: Session, cloud_org_id: str, provider: str = "aws") -> Organization | None:
    return session.scalars(
        select(Organization).where(Organization.provider == provider, Organization.cloud_org_id == cloud_org_id)
    ).first()


def org_by_nickname(session: Session, nickname: str) -> Organization | None:
    return session.scalars(select(Organization).where(Organization.nickname == nickname)).first()


def add_org(
    session: Session,
    *,
    org_id: uuid.UUID,
    cloud_org_id: str,
    nickname: str,
    management_account_id: str,
    partition: str,
    credentials: bytes,
    filters: dict[str, Any],
    permission_report: dict[str, Any],
    events_queue_url: str | None = None,
) -> None:
    """Store a new AWS organization; raises Duplicate when its cloud org id or nickname is stored already."""
    session.add(
        Organization(
            id=org_id,
            provider="aws",
            cloud_org_id=cloud_org_id,
            nickname=nickname,
            management_account_id=management_account_id,
            partition=partition,
            credentials=credentials,
            filters=filters,
            permission_report=permission_report,
            events_queue_url=events_queue_url,
        )
    )
    flush_or_duplicate(session, f"organization {cloud_org_id} or nickname {nickname!r} is already registered")


def update_org(
    session: Session,
    org_id: uuid.UUID,
    *,
    filters: dict[str, Any],
    nickname: str | None = None,
    credentials: bytes | None = None,
    permission_report: dict[str, Any] | None = None,
    events_queue_url: str | Keep | None = KEEP,
) -> None:
    """Change an organization (None keeps a field, but `events_queue_url=None` turns events off; KEEP keeps
    it), its row locked first; raises Duplicate when the new nickname is taken."""
    org = get_org(session, org_id, for_update=True)
    if credentials is not None:
        org.credentials = credentials
    if permission_report is not None:
        org.permission_report = permission_report
    if nickname is not None:
        org.nickname = nickname
    if not isinstance(events_queue_url, Keep):
        org.events_queue_url = events_queue_url
    org.filters = filters
    org.updated_at = utcnow()
    flush_or_duplicate(session, f"the nickname {nickname!r} is taken")


def delete_org(session: Session, org_id: uuid.UUID) -> None:
    """Remove an organization; its clouds, tags, badges, OU tree, SCPs and runs go with it (cascade)."""
    session.delete(get_org(session, org_id))


# -- messages ------------------------------------------------------------------------------------


def correlation_progress(session: Session, correlation_id: uuid.UUID) -> Progress:
    """How far the work caused by one request (every message correlated with it) has got."""
    return listings.request_progress(listings.of_session(session), correlation_id)


def latest_sync_run(session: Session, org_id: uuid.UUID) -> SyncRunView | None:
    return listings.latest_sync_run(listings.of_session(session), org_id)


@dataclass(frozen=True)
class LastSync:
    """When an organization last synced successfully."""

    org_id: uuid.UUID
    nickname: str
    finished_at: datetime


def last_successful_syncs(session: Session) -> list[LastSync]:
    """The last successful sync of every organization that had one."""
    last = (
        select(SyncRun.organization_id, func.max(SyncRun.finished_at).label("at"))
        .where(SyncRun.status == SyncStatus.SUCCEEDED)
        .group_by(SyncRun.organization_id)
        .subquery()
    )
    rows = session.execute(
        select(Organization.id, Organization.nickname, last.c.at)
        .join(last, last.c.organization_id == Organization.id)
        .order_by(Organization.nickname)
    ).all()
    return [LastSync(org_id, nickname, at) for org_id, nickname, at in rows]


# -- listings ------------------------------------------------------------------------------------


def list_clouds(
    session: Session,
    *,
    org_id: uuid.UUID | None = None,
    badge: tuple[str, str] | None = None,
    status: CloudStatus | None = None,
    account_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Clouds with their badges (key -> {value, autogenerated}), ordered by account id."""
    return listings.list_clouds(
        listings.of_session(session), org_id=org_id, badge=badge, status=status, account_ids=account_ids
    )


def drift_totals(session: Session) -> dict[str, int]:
    """What the syncs of organizations with live updates ever corrected that events missed, by kind."""
    rows = session.execute(
        text(
            "SELECT d.key, sum(d.value::int) FROM sync_runs, jsonb_each_text(drift) AS d(key, value)"
            " WHERE jsonb_typeof(drift) = 'object' GROUP BY d.key ORDER BY d.key"
        )
    ).all()
    return {kind: int(total) for kind, total in rows}


def accounts_per_status(session: Session) -> dict[str, int]:
    """How many clouds have each harvest status (statuses with none are left out)."""
    rows = session.execute(select(Cloud.status, func.count()).group_by(Cloud.status).order_by(Cloud.status)).all()
    return {status: int(count) for status, count in rows}


# -- clouds --------------------------------------------------------------------------------------


def cloud_by_account(session: Session, account_id: str) -> Cloud | None:
    return session.scalars(select(Cloud).where(Cloud.account_id == account_id)).first()


def clouds_to_validate(
    session: Session, *, org_id: uuid.UUID | None = None, account_ids: Sequence[str] = ()
) -> list[Cloud]:
    """Clouds by account id: those of one organization, those with the given account ids, or all."""
    stmt = select(Cloud).order_by(Cloud.account_id)
    if org_id is not None:
        stmt = stmt.where(Cloud.organization_id == org_id)
    if account_ids:
        stmt = stmt.where(Cloud.account_id.in_(list(account_ids)))
    return list(session.scalars(stmt))


def add_cloud(
    session: Session,
    *,
    cloud_id: uuid.UUID,
    account_id: str,
    name: str,
    credentials: bytes,
    status: CloudStatus,
    status_message: str,
) -> None:
    """Store a standalone cloud (with its own credentials); raises Duplicate when the account is stored."""
    session.add(
        Cloud(
            id=cloud_id,
            account_id=account_id,
            name=name,
            status=status,
            status_message=status_message,
            credentials=credentials,
        )
    )
    flush_or_duplicate(session, f"account {account_id} is already registered")


def set_cloud_role(session: Session, cloud: Cloud, credentials: bytes, status: CloudStatus, message: str) -> None:
    """Replace a standalone cloud's credentials, with the status the new role was checked to have."""
    cloud.credentials = credentials
    cloud.status, cloud.status_message = status, message
    cloud.updated_at = utcnow()


def delete_cloud(session: Session, cloud: Cloud) -> None:
    session.delete(cloud)


# -- credentials (key rotation) ------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialBlock:
    """One stored credential block and the row holding it (the vault binds the table and id in)."""

    table: str  # "organizations" or "clouds"
    row_id: uuid.UUID
    name: str  # the organization's nickname or the cloud's account id
    sealed: bytes


def credential_blocks(session: Session) -> list[CredentialBlock]:
    """Every stored credential block, organizations (by nickname) then clouds (by account id), their rows
    locked until the transaction ends."""
    orgs = session.scalars(select(Organization).order_by(Organization.nickname).with_for_update())
    blocks = [CredentialBlock("organizations", o.id, o.nickname, o.credentials) for o in orgs]
    clouds = session.scalars(
        select(Cloud).where(Cloud.credentials.is_not(None)).order_by(Cloud.account_id).with_for_update()
    )
    blocks += [CredentialBlock("clouds", c.id, c.account_id, c.credentials) for c in clouds if c.credentials]
    return blocks


def replace_credentials(session: Session, block: CredentialBlock, sealed: bytes) -> None:
    """Store `sealed` in place of `block` (same row, same table)."""
    row: Organization | Cloud | None
    if block.table == "organizations":
        row = session.get(Organization, block.row_id)
    else:
        row = session.get(Cloud, block.row_id)
    if row is None:
        raise NotFound(f"{block.table} row {block.row_id} does not exist")
    row.credentials = sealed


# -- tags and SCPs -------------------------------------------------------------------------------


def tags_of(session: Session, cloud_id: uuid.UUID) -> dict[str, str]:
    return listings.tags_of(listings.of_session(session), cloud_id)


def failure_reasons(session: Session, message_ids: Sequence[str]) -> dict[str, str]:
    ids = []
    for m in message_ids:
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(m))
    rows = session.execute(
        select(ProcessedMessage.message_id, ProcessedMessage.error).where(
            ProcessedMessage.message_id.in_(ids), ProcessedMessage.status == MessageOutcome.FAILED
        )
    ).all()
    return {str(m): e or "" for m, e in rows}


def forget_failures(session: Session, message_ids: Sequence[str]) -> None:
    """Requeued messages must run again: drop their failed marks (done marks stay: they dedupe)."""
    ids = []
    for m in message_ids:
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(m))
    if ids:
        session.execute(
            delete(ProcessedMessage).where(
                ProcessedMessage.message_id.in_(ids), ProcessedMessage.status == MessageOutcome.FAILED
            )
        )
