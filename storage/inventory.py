"""The inventory as the message handlers see it: one interface, and its Postgres implementation.

`Inventory` names every read and write a handler makes, in domain terms (ids are `uuid.UUID`, rows
are named records). `SqlInventory` implements it over one SQLAlchemy session, inside the transaction
a unit of work (`storage.unit_of_work`) opens; tests implement it in memory. Bulk writes go in
batches, and every write is the minimum: unchanged rows are not touched.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb
from sqlalchemy import Table, delete, event, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from domain.badges import ORG_PATH_BADGE, SYSTEM_PREFIX
from domain.events import Envelope
from domain.scp import Policy, ScpPlan, Target
from domain.status import CloudStatus, MessageOutcome, Outcome, SyncStatus
from domain.sync import BadgeWrite, CloudChange, CloudFields, NewCloud, StoredCloud, Takeover, UnitRow
from domain.tags import TagKey, TagWrite

from . import listings
from .models import (
    BadgeRow,
    Cloud,
    Organization,
    OrgUnitRow,
    OutboxMessage,
    ProcessedMessage,
    ResourceTag,
    ScpTarget,
    ServiceControlPolicy,
    SyncRun,
)

BATCH = 500
TAKEN_OVER_MESSAGE = "managed by an organization now; waiting for member-role validation"


def utcnow() -> datetime:
    return datetime.now(UTC)


T = TypeVar("T")


def table(model: type[Any]) -> Table:
    """The Core table of an ORM model: bulk writes go through Core (compiled once, executemany) rather
    than the ORM's bulk path or a multi-row VALUES clause, which compile a bind per value."""
    return cast(Table, model.__table__)


def batched(items: Sequence[T], size: int = BATCH) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass(frozen=True)
class OrgRecord:
    """What a handler reads of an organization (credentials still sealed)."""

    id: UUID
    cloud_org_id: str
    nickname: str
    partition: str
    credentials: bytes
    filters: dict[str, Any]
    events_queue_url: str | None = None  # live updates on
    management_account_id: str = ""
    permission_report: dict[str, Any] | None = None  # the last check of the management role's permissions


@dataclass(frozen=True)
class SyncRecord:
    """One organization sync, as `sync_runs` keeps it and the org's last-sync fields show it."""

    id: UUID
    org_id: UUID
    message_id: UUID
    correlation_id: UUID
    status: SyncStatus
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    aws_calls: dict[str, Any]
    throttles: int
    error: str | None = None
    accounts_seen: int = 0
    accounts_in_scope: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    rows_written: int = 0
    drift: dict[str, int] | None = None  # an org with live updates: what the sync corrected, by kind


@dataclass(frozen=True)
class ValidationTarget:
    """What validating one cloud needs, read in one query."""

    account_id: str
    aws_state: str | None
    cloud_credentials: bytes | None
    org_id: UUID | None
    org_credentials: bytes | None
    partition: str | None


@dataclass(frozen=True)
class ValidationLookup:
    """The clouds to validate that still exist, by id, and whether the message was handled before."""

    processed: bool
    targets: dict[UUID, ValidationTarget]


@dataclass(frozen=True)
class Recorded:
    """A cloud whose validation was stamped: the outcome it had before, and whose it is."""

    previous: Outcome
    org_id: UUID | None
    account_id: str


class Inventory(Protocol):
    """Every read and write a message handler makes, within one transaction."""

    # the inbox, the outbox and the per-organization lock
    def lock_org(self, org_id: UUID) -> None: ...
    def claim(self, message_id: UUID, correlation_id: UUID, actor_name: str) -> bool: ...
    def mark_failed(self, message_id: UUID, correlation_id: UUID | None, actor_name: str, error: str) -> None: ...
    def processed(self, message_id: UUID) -> bool: ...
    def add_outbox(self, envelope: Envelope[Any], *, queue_name: str | None, actor_name: str | None) -> None: ...
    def in_outbox(self, message_ids: Sequence[UUID]) -> set[UUID]: ...

    # organizations
    def org(self, org_id: UUID) -> OrgRecord | None: ...
    def org_ids(self) -> list[UUID]: ...
    def record_sync(self, run: SyncRecord, permission_report: dict[str, Any] | None) -> None: ...
    def set_permission_report(self, org_id: UUID, permission_report: dict[str, Any]) -> None: ...

    # clouds, OUs, badges and SCPs of an organization
    def stored_clouds(
        self, org_id: UUID, account_ids: Sequence[str], *, whole_org: bool = True
    ) -> list[StoredCloud]: ...
    def insert_clouds(self, org_id: UUID, new: Sequence[NewCloud]) -> dict[str, UUID]: ...
    def update_clouds(self, changed: Sequence[CloudChange]) -> None: ...
    def take_over_clouds(self, org_id: UUID, taken: Sequence[Takeover]) -> None: ...
    def delete_clouds(self, cloud_ids: Sequence[UUID]) -> None: ...
    def managed_accounts(self, org_id: UUID, account_ids: Sequence[str] | None = None) -> dict[str, UUID]: ...
    def org_cloud_paths(self, org_id: UUID, cloud_ids: Sequence[UUID] | None = None) -> dict[UUID, str]: ...
    def system_badges_of(self, org_id: UUID, cloud_ids: Sequence[UUID] | None = None) -> dict[UUID, dict[str, str]]: ...
    def upsert_badges(self, writes: Sequence[BadgeWrite], *, autogenerated: bool) -> None: ...
    def stored_units(self, org_id: UUID) -> dict[str, UnitRow]: ...
    def write_units(self, org_id: UUID, upsert: Sequence[UnitRow], remove: Sequence[str]) -> None: ...
    def rename_paths(self, org_id: UUID, unit_id: str, old_path: str, new_path: str) -> int: ...
    def stored_scps(self, org_id: UUID) -> tuple[list[Policy], list[Target]]: ...
    def write_scps(self, org_id: UUID, plan: ScpPlan) -> None: ...

    # tags and badges
    def stored_tags(self, cloud_ids: Sequence[UUID]) -> dict[UUID, dict[str, str]]: ...
    def write_tags(self, upsert: Sequence[TagWrite], remove: Sequence[TagKey]) -> None: ...
    def reconcile_badges(self, *, org_id: UUID | None, cloud_ids: Sequence[UUID] | None) -> int: ...

    # validation
    def validation_targets(self, cloud_ids: Sequence[UUID], message_id: UUID) -> ValidationLookup: ...
    def record_validations(self, outcomes: dict[UUID, Outcome]) -> dict[UUID, Recorded]: ...


# a renamed OU's new path into the org paths below it and their system.cloud_org_path badges, at once
_RENAME_PATHS = """
    WITH renamed AS (
        UPDATE clouds SET org_path = :new || substr(org_path, length(:old) + 1), updated_at = now()
        WHERE organization_id = :org AND :unit = ANY(org_path_ids) AND left(org_path, length(:old)) = :old
        RETURNING id, org_path
    ), badged AS (
        UPDATE badges b SET value = renamed.org_path FROM renamed WHERE b.cloud_id = renamed.id AND b.key = :key
    )
    SELECT id FROM renamed
"""


def _cloud_values(fields: CloudFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "email": fields.email,
        "aws_state": fields.aws_state,
        "parent_id": fields.parent_id,
        "org_path_ids": list(fields.org_path_ids),
        "org_path": fields.org_path,
    }


def storable(text: str) -> str:
    """`text` as a Postgres text column holds it: NUL and unpaired surrogates (a message may carry both)
    written as escapes instead of failing the insert."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def org_lock_key(org_id: UUID) -> int:
    """The second half of the advisory-lock key that serialises writers of one organization."""
    return zlib.crc32(f"org:{org_id}".encode()) - 2**31


HISTORY_KEPT = 50  # status changes kept per account (the newest)
# Stamps the validations of many clouds and returns the statuses they replaced, in one statement (the
# rows locked in id order, so that two batches sharing clouds cannot deadlock); a status (or message)
# that changed goes into the account's history, which keeps its newest HISTORY_KEPT changes.
_RECORD = text(
    f"""
    WITH stamped AS (
        UPDATE clouds c SET validated_at = now(), status = v.status, status_message = v.message
        FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:messages AS text[]))
                 AS v(id, status, message),
             (SELECT id, status, status_message FROM clouds WHERE id = ANY(CAST(:ids AS uuid[]))
              ORDER BY id FOR UPDATE) old
        WHERE c.id = v.id AND old.id = v.id
        RETURNING c.id, old.status AS old_status, old.status_message AS old_message, c.status, c.status_message,
                  c.organization_id, c.account_id
    ), changed AS (
        SELECT id, status, status_message FROM stamped
        WHERE (status, coalesce(status_message, '')) IS DISTINCT FROM (old_status, coalesce(old_message, ''))
    ), noted AS (
        INSERT INTO cloud_status_history (cloud_id, status, message)
        SELECT id, status, status_message FROM changed
    ), trimmed AS (  -- the statement's own insert is not seen here: keep one fewer of the older ones
        DELETE FROM cloud_status_history h USING changed
        WHERE h.cloud_id = changed.id AND h.id < (
            SELECT min(id) FROM (
                SELECT id FROM cloud_status_history WHERE cloud_id = changed.id
                ORDER BY id DESC LIMIT {HISTORY_KEPT - 1}
            ) newest
        )
    )
    SELECT id, old_status AS status, old_message AS status_message, organization_id, account_id FROM stamped
    """
)

_RECONCILE_DELETE = """
DELETE FROM badges b
USING clouds c
WHERE b.cloud_id = c.id AND {scope}
  AND NOT starts_with(b.key, 'system.')
  AND b.autogenerated
  AND NOT EXISTS (SELECT 1 FROM resource_tags t WHERE t.cloud_id = b.cloud_id AND t.key = b.key)
"""
_RECONCILE_UPSERT = """
INSERT INTO badges (cloud_id, key, value, autogenerated)
SELECT t.cloud_id, t.key, t.value, true
FROM resource_tags t JOIN clouds c ON c.id = t.cloud_id
WHERE {scope} AND NOT starts_with(t.key, 'system.')
ON CONFLICT (cloud_id, key) DO UPDATE
SET value = excluded.value, autogenerated = true
WHERE badges.value IS DISTINCT FROM excluded.value OR NOT badges.autogenerated
"""


# the hot bulk writes of a sync and a tag refresh, as driver SQL (see execute_many)
_CLOUD_COLUMNS = (
    "id",
    "account_id",
    "organization_id",
    "status",
    "created_at",
    "updated_at",
    "name",
    "email",
    "aws_state",
    "parent_id",
    "org_path_ids",
    "org_path",
)
_INSERT_CLOUDS = f"INSERT INTO clouds ({', '.join(_CLOUD_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_CLOUD_COLUMNS))})"
_UPSERT_BADGES = (
    "INSERT INTO badges (cloud_id, key, value, autogenerated) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (cloud_id, key) DO UPDATE SET value = excluded.value, autogenerated = excluded.autogenerated"
)
_UPSERT_TAGS = (
    "INSERT INTO resource_tags (cloud_id, key, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (cloud_id, key) DO UPDATE SET value = excluded.value"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (message_id, correlation_id, event_type, queue_name, actor_name, envelope) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
_OUTBOX_ROWS = "orgsync.outbox"  # Session.info key: the events emitted in the transaction, not yet inserted


def execute_many(session: Session, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """One driver-level statement for many rows (psycopg's executemany, pipelined), in `session`'s
    transaction: for thousands of rows SQLAlchemy's per-row parameter processing costs more than the
    statement itself."""
    if rows:
        session.connection().exec_driver_sql(statement, list(rows))


def write_outbox(session: Session) -> None:
    """Insert the events emitted so far in `session`'s transaction, in emit order, as one statement:
    before it commits (hooked on every Session below) and before anything reads the outbox in it. A sync
    emits one event per account, for which the ORM's per-object work would cost more than the insert."""
    execute_many(session, _INSERT_OUTBOX, session.info.pop(_OUTBOX_ROWS, ()))


def _drop_outbox(session: Session, *_: Any) -> None:
    session.info.pop(_OUTBOX_ROWS, None)  # rolled back: the events go with the data they described


event.listen(Session, "before_commit", write_outbox)
event.listen(Session, "after_soft_rollback", _drop_outbox)


class SqlInventory:
    """`Inventory` over one SQLAlchemy session (the caller owns the transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- inbox, outbox, lock ---------------------------------------------------------------------

    def lock_org(self, org_id: UUID) -> None:
        self.session.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": 7291, "k2": org_lock_key(org_id)})

    def claim(self, message_id: UUID, correlation_id: UUID, actor_name: str) -> bool:
        """Record that `message_id` is handled in this transaction; False if it already was.

        A concurrent duplicate blocks on the primary key until the first transaction ends, then sees it.
        """
        stmt = (
            pg_insert(ProcessedMessage)
            .values(
                message_id=message_id,
                correlation_id=correlation_id,
                actor_name=actor_name,
                status=MessageOutcome.DONE,
            )
            .on_conflict_do_nothing(index_elements=[ProcessedMessage.message_id])
            .returning(ProcessedMessage.message_id)
        )
        # on the session's connection: a plain Core statement, not the ORM's bulk-insert path
        return self.session.connection().execute(stmt).first() is not None

    def mark_failed(self, message_id: UUID, correlation_id: UUID | None, actor_name: str, error: str) -> None:
        error = storable(error)
        stmt = pg_insert(ProcessedMessage).values(
            message_id=message_id,
            correlation_id=correlation_id,
            actor_name=actor_name,
            status=MessageOutcome.FAILED,
            error=error,
        )
        self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[ProcessedMessage.message_id],
                set_={"status": MessageOutcome.FAILED.value, "error": error},
            )
        )

    def processed(self, message_id: UUID) -> bool:
        return self.session.get(ProcessedMessage, message_id) is not None

    def in_outbox(self, message_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these message ids the outbox holds already (this transaction's own events included)."""
        write_outbox(self.session)
        found = self.session.scalars(select(OutboxMessage.message_id).where(OutboxMessage.message_id.in_(message_ids)))
        return set(found)

    def add_outbox(self, envelope: Envelope[Any], *, queue_name: str | None, actor_name: str | None) -> None:
        """Queue an event for the outbox of this transaction (`write_outbox` inserts them all at once)."""
        row = (
            envelope.id,
            envelope.correlation_id,
            envelope.event.TYPE,
            queue_name,
            actor_name,
            Jsonb(envelope.to_json()),
        )
        self.session.info.setdefault(_OUTBOX_ROWS, []).append(row)

    # -- organizations ---------------------------------------------------------------------------

    def org(self, org_id: UUID) -> OrgRecord | None:
        org = self.session.get(Organization, org_id)
        if org is None:
            return None
        return OrgRecord(
            org.id,
            org.cloud_org_id,
            org.nickname,
            org.partition,
            org.credentials,
            org.filters,
            org.events_queue_url,
            org.management_account_id,
            org.permission_report,
        )

    def org_ids(self) -> list[UUID]:
        return list(self.session.scalars(select(Organization.id).order_by(Organization.id)))

    def record_sync(self, run: SyncRecord, permission_report: dict[str, Any] | None) -> None:
        self.session.add(
            SyncRun(
                id=run.id,
                organization_id=run.org_id,
                kind="org-sync",
                message_id=run.message_id,
                correlation_id=run.correlation_id,
                status=run.status,
                started_at=run.started_at,
                finished_at=run.finished_at,
                duration_ms=run.duration_ms,
                aws_calls=run.aws_calls,
                throttles=run.throttles,
                error=run.error,
                accounts_seen=run.accounts_seen,
                accounts_in_scope=run.accounts_in_scope,
                added=run.added,
                updated=run.updated,
                removed=run.removed,
                rows_written=run.rows_written,
                drift=run.drift,
            )
        )
        stamp: dict[str, Any] = {
            "last_sync_status": run.status,
            "last_sync_started_at": run.started_at,
            "last_sync_finished_at": run.finished_at,
            "last_sync_error": run.error,
        }
        if permission_report is not None:
            stamp["permission_report"] = permission_report
        self.session.execute(update(Organization).where(Organization.id == run.org_id).values(**stamp))

    def set_permission_report(self, org_id: UUID, permission_report: dict[str, Any]) -> None:
        self.session.execute(
            update(Organization).where(Organization.id == org_id).values(permission_report=permission_report)
        )

    # -- clouds ----------------------------------------------------------------------------------

    def stored_clouds(self, org_id: UUID, account_ids: Sequence[str], *, whole_org: bool = True) -> list[StoredCloud]:
        """The clouds of the org and any with these account ids (`whole_org=False`: only the latter)."""
        wanted = Cloud.account_id.in_(list(account_ids))
        rows = self.session.execute(
            select(
                Cloud.id,
                Cloud.account_id,
                Cloud.organization_id,
                Cloud.name,
                Cloud.email,
                Cloud.aws_state,
                Cloud.parent_id,
                Cloud.org_path_ids,
                Cloud.org_path,
            ).where(((Cloud.organization_id == org_id) | wanted) if whole_org else wanted)
        ).all()
        return [
            StoredCloud(
                cloud_id=r.id,
                account_id=r.account_id,
                organization_id=r.organization_id,
                name=r.name,
                email=r.email,
                aws_state=r.aws_state,
                parent_id=r.parent_id,
                org_path_ids=None if r.org_path_ids is None else tuple(r.org_path_ids),
                org_path=r.org_path,
            )
            for r in rows
        ]

    def insert_clouds(self, org_id: UUID, new: Sequence[NewCloud]) -> dict[str, UUID]:
        """Insert new managed clouds; returns account id -> cloud id."""
        ids: dict[str, UUID] = {}
        rows = []
        now = utcnow()
        for account_id, fields in new:
            cloud_id = ids[account_id] = uuid4()
            # a StrEnum's value: the driver would write an Enum's name
            row = {"id": cloud_id, "account_id": account_id, "organization_id": org_id}
            row |= {"status": CloudStatus.PENDING.value, "created_at": now, "updated_at": now}
            rows.append(row | _cloud_values(fields))
        execute_many(self.session, _INSERT_CLOUDS, [tuple(row[c] for c in _CLOUD_COLUMNS) for row in rows])
        return ids

    def update_clouds(self, changed: Sequence[CloudChange]) -> None:
        now = utcnow()
        rows = [{"id": cloud_id, "updated_at": now, **_cloud_values(fields)} for cloud_id, fields in changed]
        for chunk in batched(rows):
            self.session.execute(update(Cloud), list(chunk))

    def take_over_clouds(self, org_id: UUID, taken: Sequence[Takeover]) -> None:
        """Existing clouds become managed by the org: their own credentials are dropped, status re-checked."""
        now = utcnow()
        rows = [
            {
                "id": stored.cloud_id,
                "organization_id": org_id,
                "credentials": None,
                "status": CloudStatus.PENDING,
                "status_message": TAKEN_OVER_MESSAGE,
                "updated_at": now,
                **_cloud_values(fields),
            }
            for stored, fields in taken
        ]
        for chunk in batched(rows):
            self.session.execute(update(Cloud), list(chunk))

    def delete_clouds(self, cloud_ids: Sequence[UUID]) -> None:
        for chunk in batched(cloud_ids):
            self.session.execute(delete(Cloud).where(Cloud.id.in_(list(chunk))))

    def managed_accounts(self, org_id: UUID, account_ids: Sequence[str] | None = None) -> dict[str, UUID]:
        """account id -> cloud id of the clouds an organization manages (of those in `account_ids`, if given)."""
        query = select(Cloud.account_id, Cloud.id).where(Cloud.organization_id == org_id)
        if account_ids is not None:
            query = query.where(Cloud.account_id.in_(account_ids))
        return {a: c for a, c in self.session.execute(query).all()}

    def org_cloud_paths(self, org_id: UUID, cloud_ids: Sequence[UUID] | None = None) -> dict[UUID, str]:
        """cloud id -> org path of the org's clouds (of those in `cloud_ids`, if given)."""
        query = select(Cloud.id, Cloud.org_path).where(Cloud.organization_id == org_id)
        if cloud_ids is not None:
            query = query.where(Cloud.id.in_(cloud_ids))
        return {cid: path or "" for cid, path in self.session.execute(query).all()}

    def system_badges_of(self, org_id: UUID, cloud_ids: Sequence[UUID] | None = None) -> dict[UUID, dict[str, str]]:
        """cloud id -> its system badges, for the org's clouds (of those in `cloud_ids`, if given)."""
        query = (
            select(BadgeRow.cloud_id, BadgeRow.key, BadgeRow.value)
            .join(Cloud, Cloud.id == BadgeRow.cloud_id)
            .where(Cloud.organization_id == org_id, BadgeRow.key.startswith(SYSTEM_PREFIX))
        )
        if cloud_ids is not None:
            query = query.where(BadgeRow.cloud_id.in_(cloud_ids))
        rows = self.session.execute(query).all()
        result: dict[UUID, dict[str, str]] = {}
        for cloud_id, key, value in rows:
            result.setdefault(cloud_id, {})[key] = value
        return result

    def upsert_badges(self, writes: Sequence[BadgeWrite], *, autogenerated: bool) -> None:
        execute_many(self.session, _UPSERT_BADGES, [(c, k, v, autogenerated) for c, k, v in writes])

    # -- OU tree ---------------------------------------------------------------------------------

    def stored_units(self, org_id: UUID) -> dict[str, UnitRow]:
        rows = self.session.scalars(select(OrgUnitRow).where(OrgUnitRow.organization_id == org_id)).all()
        return {r.id: UnitRow(r.id, r.parent_id, r.name, r.path) for r in rows}

    def write_units(self, org_id: UUID, upsert: Sequence[UnitRow], remove: Sequence[str]) -> None:
        rows = [
            {"organization_id": org_id, "id": u.id, "parent_id": u.parent_id, "name": u.name, "path": u.path}
            for u in upsert
        ]
        stmt = pg_insert(table(OrgUnitRow))
        stmt = stmt.on_conflict_do_update(
            index_elements=[OrgUnitRow.organization_id, OrgUnitRow.id],
            set_={"parent_id": stmt.excluded.parent_id, "name": stmt.excluded.name, "path": stmt.excluded.path},
        )
        for chunk in batched(rows):
            self.session.execute(stmt, list(chunk))
        if remove:
            self.session.execute(
                delete(OrgUnitRow).where(OrgUnitRow.organization_id == org_id, OrgUnitRow.id.in_(list(remove)))
            )

    def rename_paths(self, org_id: UUID, unit_id: str, old_path: str, new_path: str) -> int:
        """Every cloud of the org below `unit_id` gets `new_path` instead of `old_path` at the head of its org
        path, and its system.cloud_org_path badge the same, in one statement; returns the clouds changed."""
        written = self.session.execute(
            text(_RENAME_PATHS),
            {"org": org_id, "unit": unit_id, "old": old_path, "new": new_path, "key": ORG_PATH_BADGE},
        )
        return len(written.all())

    # -- SCPs ------------------------------------------------------------------------------------

    def stored_scps(self, org_id: UUID) -> tuple[list[Policy], list[Target]]:
        return listings.org_scps(listings.of_session(self.session), org_id)

    def write_scps(self, org_id: UUID, plan: ScpPlan) -> None:
        session = self.session
        for policy in plan.upsert:
            stmt = pg_insert(ServiceControlPolicy).values(
                organization_id=org_id,
                id=policy.id,
                name=policy.name,
                description=policy.description,
                aws_managed=policy.aws_managed,
                content=policy.content,
            )
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ServiceControlPolicy.organization_id, ServiceControlPolicy.id],
                    set_={k: stmt.excluded[k] for k in ("name", "description", "aws_managed", "content")},
                )
            )
        if plan.delete:
            session.execute(
                delete(ScpTarget).where(ScpTarget.organization_id == org_id, ScpTarget.policy_id.in_(plan.delete))
            )
            session.execute(
                delete(ServiceControlPolicy).where(
                    ServiceControlPolicy.organization_id == org_id, ServiceControlPolicy.id.in_(plan.delete)
                )
            )
        for target in plan.drop_targets:
            session.execute(
                delete(ScpTarget).where(
                    ScpTarget.organization_id == org_id,
                    ScpTarget.policy_id == target.policy_id,
                    ScpTarget.target_id == target.target_id,
                )
            )
        if plan.add_targets:
            rows = [
                {
                    "organization_id": org_id,
                    "policy_id": t.policy_id,
                    "target_id": t.target_id,
                    "target_type": t.target_type,
                    "target_name": t.target_name,
                }
                for t in plan.add_targets
            ]
            stmt = pg_insert(table(ScpTarget)).on_conflict_do_nothing()
            for chunk in batched(rows):
                session.execute(stmt, list(chunk))

    # -- tags and badges -------------------------------------------------------------------------

    def stored_tags(self, cloud_ids: Sequence[UUID]) -> dict[UUID, dict[str, str]]:
        result: dict[UUID, dict[str, str]] = {c: {} for c in cloud_ids}
        for chunk in batched(cloud_ids):
            for cloud_id, key, value in self.session.execute(
                select(ResourceTag.cloud_id, ResourceTag.key, ResourceTag.value).where(
                    ResourceTag.cloud_id.in_(list(chunk))
                )
            ):
                result[cloud_id][key] = value
        return result

    def write_tags(self, upsert: Sequence[TagWrite], remove: Sequence[TagKey]) -> None:
        execute_many(self.session, _UPSERT_TAGS, [(c, k, v) for c, k, v in upsert])
        for keys in batched(remove):
            self.session.execute(
                delete(ResourceTag).where(tuple_(ResourceTag.cloud_id, ResourceTag.key).in_([tuple(k) for k in keys]))
            )

    def reconcile_badges(self, *, org_id: UUID | None, cloud_ids: Sequence[UUID] | None) -> int:
        """The badge rule of domain.badges, set-based: returns the rows written (0 when all agree).

        Scope: the given clouds, else the clouds of `org_id`, else every cloud managed by an organization.
        """
        params: dict[str, Any] = {}
        if cloud_ids is not None:
            scope = "c.id = ANY(:cloud_ids) AND c.organization_id IS NOT NULL"
            params["cloud_ids"] = list(cloud_ids)
        elif org_id is not None:
            scope = "c.organization_id = :org_id"
            params["org_id"] = org_id
        else:
            scope = "c.organization_id IS NOT NULL"
        deleted = cast(CursorResult[Any], self.session.execute(text(_RECONCILE_DELETE.format(scope=scope)), params))
        written = cast(CursorResult[Any], self.session.execute(text(_RECONCILE_UPSERT.format(scope=scope)), params))
        return int(deleted.rowcount or 0) + int(written.rowcount or 0)

    # -- validation ------------------------------------------------------------------------------

    def validation_targets(self, cloud_ids: Sequence[UUID], message_id: UUID) -> ValidationLookup:
        rows = self.session.execute(
            select(
                Cloud.id,
                Cloud.account_id,
                Cloud.aws_state,
                Cloud.credentials,
                Cloud.organization_id,
                Organization.credentials,
                Organization.partition,
            )
            .outerjoin(Organization, Organization.id == Cloud.organization_id)
            .where(Cloud.id.in_(cloud_ids))
        ).all()
        return ValidationLookup(self.processed(message_id), {row[0]: ValidationTarget(*row[1:]) for row in rows})

    def record_validations(self, outcomes: dict[UUID, Outcome]) -> dict[UUID, Recorded]:
        if not outcomes:
            return {}
        ids = sorted(outcomes)
        rows = self.session.execute(
            _RECORD,
            {
                "ids": ids,
                "statuses": [outcomes[i].status.value for i in ids],
                "messages": [outcomes[i].message for i in ids],
            },
        )
        recorded = {}
        for row in rows:
            previous = Outcome(CloudStatus(row.status), row.status_message or "")
            recorded[row.id] = Recorded(previous, row.organization_id, row.account_id)
        return recorded
