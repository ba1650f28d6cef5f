"""Queries and writes on the orgsync schema, as functions over a SQLAlchemy Session.

Handlers call these inside one unit of work (one transaction). Bulk writes go in batches; every
write is the minimum: unchanged rows are not touched.
"""

from __future__ import annotations

import contextlib
import uuid
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import delete, func, insert, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from domain.badges import SYSTEM_PREFIX
from domain.errors import NotFound
from domain.events import Envelope
from domain.scp import Policy, ScpPlan, Target, scps_applying
from domain.sync import CloudFields, StoredCloud, UnitRow

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def batched(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- organizations -------------------------------------------------------------------------------


def find_org(session: Session, ref: str) -> Organization:
    """An organization by id, cloud org id or nickname."""
    conditions = [Organization.cloud_org_id == ref, Organization.nickname == ref]
    with contextlib.suppress(ValueError):
        conditions.append(Organization.id == uuid.UUID(ref))
    org = session.scalars(select(Organization).where(or_(*conditions))).first()
    if org is None:
        raise NotFound(f"no organization {ref!r} (give its id, cloud org id or nickname)")
    return org


def get_org(session: Session, org_id: str | uuid.UUID, *, for_update: bool = False) -> Organization:
    stmt = select(Organization).where(Organization.id == uuid.UUID(str(org_id)))
    if for_update:
        stmt = stmt.with_for_update()
    org = session.scalars(stmt).first()
    if org is None:
        raise NotFound(f"organization {org_id} does not exist")
    return org


def lock_org(session: Session, org_id: str | uuid.UUID) -> None:
    """Serialise writers of one organization until the end of the transaction."""
    key = zlib.crc32(f"org:{org_id}".encode())
    session.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": 7291, "k2": key - 2**31})


def list_orgs(session: Session) -> list[tuple[Organization, int]]:
    counts = (
        select(Cloud.organization_id, func.count().label("n"))
        .where(Cloud.organization_id.is_not(None))
        .group_by(Cloud.organization_id)
        .subquery()
    )
    rows = session.execute(
        select(Organization, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.organization_id == Organization.id)
        .order_by(Organization.nickname)
    ).all()
    return [(org, int(n)) for org, n in rows]


def org_with_count(session: Session, org_id: str | uuid.UUID) -> tuple[Organization, int]:
    """One organization and how many clouds it manages."""
    org = get_org(session, org_id)
    count = session.scalar(select(func.count()).select_from(Cloud).where(Cloud.organization_id == org.id))
    return org, int(count or 0)


def org_by_cloud_org_id(session: Session, cloud_org_id: str, provider: str = "aws") -> Organization | None:
    return session.scalars(
        select(Organization).where(Organization.provider == provider, Organization.cloud_org_id == cloud_org_id)
    ).first()


# -- clouds --------------------------------------------------------------------------------------


def stored_clouds(session: Session, org_id: uuid.UUID, account_ids: Iterable[str]) -> list[StoredCloud]:
    ids = list(account_ids)
    rows = session.execute(
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
        ).where(or_(Cloud.organization_id == org_id, Cloud.account_id.in_(ids)))
    ).all()
    return [
        StoredCloud(
            cloud_id=str(r.id),
            account_id=r.account_id,
            organization_id=None if r.organization_id is None else str(r.organization_id),
            name=r.name,
            email=r.email,
            aws_state=r.aws_state,
            parent_id=r.parent_id,
            org_path_ids=None if r.org_path_ids is None else tuple(r.org_path_ids),
            org_path=r.org_path,
        )
        for r in rows
    ]


def _cloud_values(fields: CloudFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "email": fields.email,
        "aws_state": fields.aws_state,
        "parent_id": fields.parent_id,
        "org_path_ids": list(fields.org_path_ids),
        "org_path": fields.org_path,
    }


def insert_clouds(session: Session, org_id: uuid.UUID, new: Sequence[tuple[str, CloudFields]]) -> dict[str, str]:
    """Insert new managed clouds; returns account id -> cloud id."""
    ids: dict[str, str] = {}
    rows = []
    now = utcnow()
    for account_id, fields in new:
        cloud_id = uuid.uuid4()
        ids[account_id] = str(cloud_id)
        rows.append(
            {
                "id": cloud_id,
                "account_id": account_id,
                "organization_id": org_id,
                "status": "pending",
                "created_at": now,
                "updated_at": now,
                **_cloud_values(fields),
            }
        )
    for chunk in batched(rows):
        session.execute(insert(Cloud), list(chunk))
    return ids


def update_clouds(session: Session, changed: Sequence[tuple[str, CloudFields]]) -> None:
    now = utcnow()
    rows = [{"id": uuid.UUID(cid), "updated_at": now, **_cloud_values(f)} for cid, f in changed]
    for chunk in batched(rows):
        session.execute(update(Cloud), list(chunk))


def take_over_clouds(session: Session, org_id: uuid.UUID, taken: Sequence[tuple[StoredCloud, CloudFields]]) -> None:
    """Existing clouds become managed by the org: their own credentials are dropped, status re-checked."""
    now = utcnow()
    rows = [
        {
            "id": uuid.UUID(stored.cloud_id),
            "organization_id": org_id,
            "credentials": None,
            "status": "pending",
            "status_message": "managed by an organization now; waiting for member-role validation",
            "updated_at": now,
            **_cloud_values(fields),
        }
        for stored, fields in taken
    ]
    for chunk in batched(rows):
        session.execute(update(Cloud), list(chunk))


def delete_clouds(session: Session, cloud_ids: Sequence[str]) -> None:
    for chunk in batched([uuid.UUID(c) for c in cloud_ids]):
        session.execute(delete(Cloud).where(Cloud.id.in_(chunk)))


def system_badges_of(session: Session, org_id: uuid.UUID) -> dict[str, dict[str, str]]:
    rows = session.execute(
        select(BadgeRow.cloud_id, BadgeRow.key, BadgeRow.value)
        .join(Cloud, Cloud.id == BadgeRow.cloud_id)
        .where(Cloud.organization_id == org_id, BadgeRow.key.startswith(SYSTEM_PREFIX))
    ).all()
    result: dict[str, dict[str, str]] = {}
    for cloud_id, key, value in rows:
        result.setdefault(str(cloud_id), {})[key] = value
    return result


def org_cloud_paths(session: Session, org_id: uuid.UUID) -> dict[str, str]:
    rows = session.execute(select(Cloud.id, Cloud.org_path).where(Cloud.organization_id == org_id)).all()
    return {str(cid): path or "" for cid, path in rows}


def upsert_badges(session: Session, writes: Sequence[tuple[str, str, str]], *, autogenerated: bool = False) -> None:
    rows = [{"cloud_id": uuid.UUID(c), "key": k, "value": v, "autogenerated": autogenerated} for c, k, v in writes]
    for chunk in batched(rows):
        stmt = pg_insert(BadgeRow).values(list(chunk))
        stmt = stmt.on_conflict_do_update(
            index_elements=[BadgeRow.cloud_id, BadgeRow.key],
            set_={"value": stmt.excluded.value, "autogenerated": stmt.excluded.autogenerated},
        )
        session.execute(stmt)


# -- OU tree -------------------------------------------------------------------------------------


def stored_units(session: Session, org_id: uuid.UUID) -> dict[str, UnitRow]:
    rows = session.scalars(select(OrgUnitRow).where(OrgUnitRow.organization_id == org_id)).all()
    return {r.id: UnitRow(r.id, r.parent_id, r.name, r.path) for r in rows}


def write_units(session: Session, org_id: uuid.UUID, upsert: Sequence[UnitRow], remove: Sequence[str]) -> None:
    rows = [
        {"organization_id": org_id, "id": u.id, "parent_id": u.parent_id, "name": u.name, "path": u.path}
        for u in upsert
    ]
    for chunk in batched(rows):
        stmt = pg_insert(OrgUnitRow).values(list(chunk))
        stmt = stmt.on_conflict_do_update(
            index_elements=[OrgUnitRow.organization_id, OrgUnitRow.id],
            set_={"parent_id": stmt.excluded.parent_id, "name": stmt.excluded.name, "path": stmt.excluded.path},
        )
        session.execute(stmt)
    if remove:
        session.execute(delete(OrgUnitRow).where(OrgUnitRow.organization_id == org_id, OrgUnitRow.id.in_(list(remove))))


# -- messages ------------------------------------------------------------------------------------


def add_outbox(session: Session, envelope: Envelope, *, queue_name: str | None, actor_name: str | None) -> None:
    session.add(
        OutboxMessage(
            message_id=uuid.UUID(envelope.id),
            correlation_id=uuid.UUID(envelope.correlation_id),
            event_type=envelope.event.TYPE,
            queue_name=queue_name,
            actor_name=actor_name,
            envelope=envelope.to_json(),
        )
    )


def claim_processing(session: Session, message_id: str, correlation_id: str | None, actor_name: str) -> bool:
    """Record that `message_id` is handled in this transaction; False if it already was.

    A concurrent duplicate blocks on the primary key until the first transaction ends, then sees it.
    """
    stmt = (
        pg_insert(ProcessedMessage)
        .values(
            message_id=uuid.UUID(message_id),
            correlation_id=None if correlation_id is None else uuid.UUID(correlation_id),
            actor_name=actor_name,
            status="done",
        )
        .on_conflict_do_nothing(index_elements=[ProcessedMessage.message_id])
        .returning(ProcessedMessage.message_id)
    )
    # on the session's connection: a plain Core statement, not the ORM's bulk-insert path
    return session.connection().execute(stmt).first() is not None


def already_processed(session: Session, message_id: str) -> bool:
    return session.get(ProcessedMessage, uuid.UUID(message_id)) is not None


def mark_processed(
    session: Session, message_id: str, correlation_id: str | None, actor_name: str, *, status: str, error: str | None
) -> None:
    stmt = pg_insert(ProcessedMessage).values(
        message_id=uuid.UUID(message_id),
        correlation_id=None if correlation_id is None else uuid.UUID(correlation_id),
        actor_name=actor_name,
        status=status,
        error=error,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ProcessedMessage.message_id], set_={"status": status, "error": error}
        )
    )


def correlation_progress(session: Session, correlation_id: str) -> dict[str, Any]:
    """How far the work caused by one request has got."""
    cid = uuid.UUID(correlation_id)
    pending = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.correlation_id == cid,
            OutboxMessage.actor_name.is_not(None),
            ~select(ProcessedMessage.message_id)
            .where(ProcessedMessage.message_id == OutboxMessage.message_id)
            .exists(),
        )
    )
    failures = session.execute(
        select(ProcessedMessage.actor_name, ProcessedMessage.error).where(
            ProcessedMessage.correlation_id == cid, ProcessedMessage.status == "failed"
        )
    ).all()
    done = session.scalar(
        select(func.count()).select_from(ProcessedMessage).where(ProcessedMessage.correlation_id == cid)
    )
    return {"pending": int(pending or 0), "done": int(done or 0), "failures": [(a, e) for a, e in failures]}


def latest_sync_run(session: Session, org_id: uuid.UUID) -> SyncRun | None:
    return session.scalars(
        select(SyncRun).where(SyncRun.organization_id == org_id).order_by(SyncRun.started_at.desc()).limit(1)
    ).first()


# -- listings ------------------------------------------------------------------------------------


def list_clouds(
    session: Session,
    *,
    org_id: uuid.UUID | None = None,
    badge: tuple[str, str] | None = None,
    status: str | None = None,
    account_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Clouds with their badges (key -> {value, autogenerated}), ordered by account id."""
    badges = (
        select(
            BadgeRow.cloud_id,
            func.jsonb_object_agg(
                BadgeRow.key, func.jsonb_build_object("value", BadgeRow.value, "autogenerated", BadgeRow.autogenerated)
            ).label("badges"),
        )
        .group_by(BadgeRow.cloud_id)
        .subquery()
    )
    stmt = select(Cloud, badges.c.badges).outerjoin(badges, badges.c.cloud_id == Cloud.id).order_by(Cloud.account_id)
    if org_id is not None:
        stmt = stmt.where(Cloud.organization_id == org_id)
    if status is not None:
        stmt = stmt.where(Cloud.status == status)
    if account_ids is not None:
        stmt = stmt.where(Cloud.account_id.in_(list(account_ids)))
    if badge is not None:
        key, value = badge
        stmt = stmt.where(
            select(BadgeRow.cloud_id)
            .where(BadgeRow.cloud_id == Cloud.id, BadgeRow.key == key, BadgeRow.value == value)
            .exists()
        )
    result = []
    for cloud, cloud_badges in session.execute(stmt).all():
        result.append(
            {
                "id": str(cloud.id),
                "account_id": cloud.account_id,
                "name": cloud.name,
                "email": cloud.email,
                "aws_state": cloud.aws_state,
                "status": cloud.status,
                "status_message": cloud.status_message,
                "org_path": cloud.org_path,
                "managed": cloud.organization_id is not None,
                "organization_id": None if cloud.organization_id is None else str(cloud.organization_id),
                "badges": dict(sorted(((k, v["value"]) for k, v in (cloud_badges or {}).items()))),
                "badge_details": dict(sorted((cloud_badges or {}).items())),
                "updated_at": cloud.updated_at.isoformat(),
            }
        )
    return result


# -- tags and SCPs -------------------------------------------------------------------------------


def tags_of(session: Session, cloud_id: str) -> dict[str, str]:
    rows = session.execute(
        select(ResourceTag.key, ResourceTag.value).where(ResourceTag.cloud_id == uuid.UUID(cloud_id))
    ).all()
    return dict(sorted((k, v) for k, v in rows))


def stored_scps(session: Session, org_id: uuid.UUID) -> tuple[list[Policy], list[Target]]:
    policies = [
        Policy(p.id, p.name, p.description, p.aws_managed, p.content)
        for p in session.scalars(select(ServiceControlPolicy).where(ServiceControlPolicy.organization_id == org_id))
    ]
    targets = [
        Target(t.policy_id, t.target_id, t.target_type, t.target_name)
        for t in session.scalars(select(ScpTarget).where(ScpTarget.organization_id == org_id))
    ]
    return policies, targets


def write_scps(session: Session, org_id: uuid.UUID, plan: ScpPlan) -> None:
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
        session.execute(
            pg_insert(ScpTarget)
            .values(
                [
                    {
                        "organization_id": org_id,
                        "policy_id": t.policy_id,
                        "target_id": t.target_id,
                        "target_type": t.target_type,
                        "target_name": t.target_name,
                    }
                    for t in plan.add_targets
                ]
            )
            .on_conflict_do_nothing()
        )


def scps_for_cloud(session: Session, cloud_id: str) -> list[dict[str, Any]]:
    """The SCPs that apply to a managed cloud, root first, each with where it is attached."""
    cloud = session.get(Cloud, uuid.UUID(cloud_id))
    if cloud is None or cloud.organization_id is None:
        return []
    policies, targets = stored_scps(session, cloud.organization_id)
    return [
        {
            "id": a.policy.id,
            "name": a.policy.name,
            "description": a.policy.description,
            "aws_managed": a.policy.aws_managed,
            "attached_to": f"{a.target.target_type.lower()} {a.target.target_id}"
            + (f" ({a.target.target_name})" if a.target.target_name else ""),
            "inherited": a.inherited,
            "content": a.policy.content,
        }
        for a in scps_applying(cloud.account_id, cloud.org_path_ids or [], policies, targets)
    ]


def managed_accounts(session: Session, org_id: uuid.UUID) -> dict[str, str]:
    """account id -> cloud id of the clouds an organization manages."""
    rows = session.execute(select(Cloud.account_id, Cloud.id).where(Cloud.organization_id == org_id)).all()
    return {a: str(c) for a, c in rows}


def stored_tags(session: Session, cloud_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {c: {} for c in cloud_ids}
    for chunk in batched([uuid.UUID(c) for c in cloud_ids]):
        for cloud_id, key, value in session.execute(
            select(ResourceTag.cloud_id, ResourceTag.key, ResourceTag.value).where(ResourceTag.cloud_id.in_(chunk))
        ):
            result[str(cloud_id)][key] = value
    return result


def write_tags(session: Session, upsert: Sequence[tuple[str, str, str]], remove: Sequence[tuple[str, str]]) -> None:
    rows = [{"cloud_id": uuid.UUID(c), "key": k, "value": v} for c, k, v in upsert]
    for chunk in batched(rows):
        stmt = pg_insert(ResourceTag).values(list(chunk))
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[ResourceTag.cloud_id, ResourceTag.key], set_={"value": stmt.excluded.value}
            )
        )
    for chunk in batched(list(remove)):
        session.execute(
            delete(ResourceTag).where(
                tuple_(ResourceTag.cloud_id, ResourceTag.key).in_([(uuid.UUID(c), k) for c, k in chunk])
            )
        )


RECONCILE_DELETE = """
DELETE FROM badges b
USING clouds c
WHERE b.cloud_id = c.id AND {scope}
  AND NOT starts_with(b.key, 'system.')
  AND b.autogenerated
  AND NOT EXISTS (SELECT 1 FROM resource_tags t WHERE t.cloud_id = b.cloud_id AND t.key = b.key)
"""
RECONCILE_UPSERT = """
INSERT INTO badges (cloud_id, key, value, autogenerated)
SELECT t.cloud_id, t.key, t.value, true
FROM resource_tags t JOIN clouds c ON c.id = t.cloud_id
WHERE {scope} AND NOT starts_with(t.key, 'system.')
ON CONFLICT (cloud_id, key) DO UPDATE
SET value = excluded.value, autogenerated = true
WHERE badges.value IS DISTINCT FROM excluded.value OR NOT badges.autogenerated
"""


def reconcile_badges(
    session: Session, *, org_id: uuid.UUID | None = None, cloud_ids: Sequence[str] | None = None
) -> int:
    """The badge rule of domain.badges, set-based: returns the rows written (0 when all agree).

    Scope: the given clouds, else the clouds of `org_id`, else every cloud managed by an organization.
    """
    params: dict[str, Any] = {}
    if cloud_ids is not None:
        scope = "c.id = ANY(:cloud_ids) AND c.organization_id IS NOT NULL"
        params["cloud_ids"] = [uuid.UUID(c) for c in cloud_ids]
    elif org_id is not None:
        scope = "c.organization_id = :org_id"
        params["org_id"] = org_id
    else:
        scope = "c.organization_id IS NOT NULL"
    deleted = cast(CursorResult[Any], session.execute(text(RECONCILE_DELETE.format(scope=scope)), params))
    written = cast(CursorResult[Any], session.execute(text(RECONCILE_UPSERT.format(scope=scope)), params))
    return int(deleted.rowcount or 0) + int(written.rowcount or 0)


def failure_reasons(session: Session, message_ids: Sequence[str]) -> dict[str, str]:
    ids = []
    for m in message_ids:
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(m))
    rows = session.execute(
        select(ProcessedMessage.message_id, ProcessedMessage.error).where(
            ProcessedMessage.message_id.in_(ids), ProcessedMessage.status == "failed"
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
            delete(ProcessedMessage).where(ProcessedMessage.message_id.in_(ids), ProcessedMessage.status == "failed")
        )
