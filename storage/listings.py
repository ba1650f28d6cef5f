"""What the commands that only show the inventory read (`org list`, `org show`, `cloud list`, `cloud show`):
plain SQL on one psycopg connection, answered as small frozen dataclasses and the JSON-ready rows of the
listings.

Without SQLAlchemy, whose ORM alone would be most of such a command's run: those commands read on a
connection of their own (`Database.reading`). `storage.repository` answers the same questions for code that
holds an ORM session by running these functions on the session's connection, so each query is written once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from domain.errors import NotFound
from domain.scp import Policy, Target, scps_applying
from domain.status import CloudStatus, MessageOutcome

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "OrgView",
    "Progress",
    "SyncRunView",
    "find_org_id",
    "latest_sync_run",
    "list_clouds",
    "list_orgs",
    "member_role_failures",
    "of_session",
    "org_credentials",
    "org_scps",
    "org_view",
    "request_progress",
    "scps_for_cloud",
    "tags_of",
]

# what the queries run on: a read-only command's own connection (`Database.reading`) or an ORM session's
Connection: TypeAlias = psycopg.Connection[Any]


def of_session(session: Session) -> Connection:
    """The psycopg connection of `session`'s transaction, to read on with these functions, after writing
    what the session has pending (as an ORM query would first), the events it emitted included."""
    from .inventory import write_outbox  # SQLAlchemy's side, loaded by whoever holds a session

    write_outbox(session)
    session.flush()
    return cast(Connection, session.connection().connection.driver_connection)


@dataclass(frozen=True)
class OrgView:
    """An organization as the commands show it (never its credentials), with the accounts it manages."""

    id: uuid.UUID
    provider: str
    cloud_org_id: str
    nickname: str
    management_account_id: str
    filters: dict[str, Any]
    permission_report: dict[str, Any] | None
    created_at: datetime
    last_sync_status: str | None
    last_sync_started_at: datetime | None
    last_sync_finished_at: datetime | None
    last_sync_error: str | None
    account_count: int  # the clouds it manages
    events_queue_url: str | None  # live updates: the SQS queue of its AWS events, if any


@dataclass(frozen=True)
class SyncRunView:
    """One sync run as stored: a pass of a handler over an organization, its counts and AWS calls."""

    id: uuid.UUID
    organization_id: uuid.UUID
    kind: str
    message_id: uuid.UUID | None
    correlation_id: uuid.UUID | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    accounts_seen: int
    accounts_in_scope: int
    added: int
    updated: int
    removed: int
    rows_written: int
    aws_calls: dict[str, Any]
    throttles: int
    error: str | None
    drift: dict[str, int] | None  # an org with live updates: what the sync corrected that events missed


# -- organizations -------------------------------------------------------------------------------

_ORGS = """
    SELECT o.id, o.provider, o.cloud_org_id, o.nickname, o.management_account_id, o.filters, o.permission_report,
           o.created_at, o.last_sync_status, o.last_sync_started_at, o.last_sync_finished_at, o.last_sync_error,
           coalesce(n.clouds, 0) AS account_count, o.events_queue_url
    FROM organizations o
    LEFT JOIN (
        SELECT organization_id, count(*) AS clouds FROM clouds
        WHERE organization_id IS NOT NULL GROUP BY organization_id
    ) n ON n.organization_id = o.id
"""


def find_org_id(conn: Connection, ref: str) -> uuid.UUID:
    """The id of an organization given by id, cloud org id or nickname; raises NotFound."""
    org_id = None
    with contextlib.suppress(ValueError):
        org_id = uuid.UUID(ref)
    with conn.cursor() as cur:
        row = cur.execute(
            "SELECT id FROM organizations WHERE cloud_org_id = %(ref)s OR nickname = %(ref)s OR id = %(id)s LIMIT 1",
            {"ref": ref, "id": org_id},
        ).fetchone()
    if row is None:
        raise NotFound(f"no organization {ref!r} (give its id, cloud org id or nickname)")
    found: uuid.UUID = row[0]
    return found


def list_orgs(conn: Connection) -> list[OrgView]:
    """Every organization, by nickname."""
    with conn.cursor(row_factory=class_row(OrgView)) as cur:
        return cur.execute(_ORGS + " ORDER BY o.nickname").fetchall()


def org_view(conn: Connection, org_id: uuid.UUID) -> OrgView:
    """One organization; raises NotFound."""
    with conn.cursor(row_factory=class_row(OrgView)) as cur:
        org = cur.execute(_ORGS + " WHERE o.id = %s", (org_id,)).fetchone()
    if org is None:
        raise NotFound(f"organization {org_id} does not exist")
    return org


def org_credentials(conn: Connection, org_id: uuid.UUID) -> bytes:
    """An organization's sealed credential block (storage.vault opens it); raises NotFound."""
    with conn.cursor() as cur:
        row = cur.execute("SELECT credentials FROM organizations WHERE id = %s", (org_id,)).fetchone()
    if row is None:
        raise NotFound(f"organization {org_id} does not exist")
    return bytes(row[0])


@dataclass(frozen=True)
class EventsSource:
    """An organization that reads its AWS events from an SQS queue (live updates)."""

    org_id: uuid.UUID
    nickname: str
    management_account_id: str
    queue_url: str
    credentials: bytes  # sealed (storage.vault)


def events_sources(conn: Connection) -> list[EventsSource]:
    """Every organization with an events queue, by nickname."""
    with conn.cursor() as cur:
        rows = cur.execute(
            "SELECT id, nickname, management_account_id, events_queue_url, credentials FROM organizations"
            " WHERE events_queue_url IS NOT NULL ORDER BY nickname"
        ).fetchall()
    return [EventsSource(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]


def latest_sync_run(conn: Connection, org_id: uuid.UUID) -> SyncRunView | None:
    """An organization's most recently started sync run, if it had one."""
    with conn.cursor(row_factory=class_row(SyncRunView)) as cur:
        return cur.execute(
            """
            SELECT id, organization_id, kind, message_id, correlation_id, status, started_at, finished_at,
                   duration_ms, accounts_seen, accounts_in_scope, added, updated, removed, rows_written, aws_calls,
                   throttles, error, drift
            FROM sync_runs WHERE organization_id = %s ORDER BY started_at DESC LIMIT 1
            """,
            (org_id,),
        ).fetchone()


# -- clouds --------------------------------------------------------------------------------------

# the statuses of accounts whose member role is missing or not as the organization is configured
MEMBER_ROLE_FAILURES = (CloudStatus.ASSUME_ROLE_DENIED, CloudStatus.DURATION_EXCEEDED)


def member_role_failures(conn: Connection, org_id: uuid.UUID) -> int:
    """How many accounts of an organization could not assume its member role as configured."""
    with conn.cursor() as cur:
        row = cur.execute(
            "SELECT count(*) FROM clouds WHERE organization_id = %s AND status = ANY(%s)",
            (org_id, [s.value for s in MEMBER_ROLE_FAILURES]),
        ).fetchone()
    return int(row[0]) if row else 0


_BADGES_OF = (
    "SELECT jsonb_object_agg(key, jsonb_build_object('value', value, 'autogenerated', autogenerated))"
    " FROM badges WHERE cloud_id = c.id"
)
_CLOUD_ROWS = """
    SELECT c.id, c.account_id, c.name, c.email, c.aws_state, c.status, c.status_message, c.org_path,
           c.organization_id, c.updated_at, c.validated_at, ({badges}) AS badges
    FROM clouds c
    WHERE {conditions}
    ORDER BY c.account_id
    {limit}
"""


def _cloud_conditions(
    org_id: uuid.UUID | None,
    badge: tuple[str, str] | None,
    status: CloudStatus | None,
    account_ids: Sequence[str] | None = None,
    search: str | None = None,
    after: str | None = None,
) -> tuple[list[sql.Composable], dict[str, Any]]:
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if org_id is not None:
        conditions.append(sql.SQL("c.organization_id = %(org_id)s"))
        params["org_id"] = org_id
    if status is not None:
        conditions.append(sql.SQL("c.status = %(status)s"))
        params["status"] = str(status)
    if account_ids is not None:
        conditions.append(sql.SQL("c.account_id = ANY(%(account_ids)s)"))
        params["account_ids"] = list(account_ids)
    if badge is not None:
        conditions.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM badges f WHERE f.cloud_id = c.id AND f.key = %(key)s AND f.value = %(value)s)"
            )
        )
        params["key"], params["value"] = badge
    if search:
        # an account id's start, or any part of the name (LIKE's wildcards in the text taken literally)
        conditions.append(sql.SQL("(c.account_id LIKE %(search)s || '%%' OR c.name ILIKE '%%' || %(search)s || '%%')"))
        params["search"] = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if after is not None:
        conditions.append(sql.SQL("c.account_id > %(after)s"))
        params["after"] = after
    return conditions, params


def _clouds(
    conn: Connection, conditions: list[sql.Composable], params: dict[str, Any], limit: int | None
) -> list[dict[str, Any]]:
    query = sql.SQL(_CLOUD_ROWS).format(
        badges=sql.SQL(_BADGES_OF),
        conditions=sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        limit=sql.SQL("LIMIT %(limit)s") if limit is not None else sql.SQL(""),
    )
    if limit is not None:
        params = {**params, "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return [
        {
            "id": str(row["id"]),
            "account_id": row["account_id"],
            "name": row["name"],
            "email": row["email"],
            "aws_state": row["aws_state"],
            "status": row["status"],
            "status_message": row["status_message"],
            "org_path": row["org_path"],
            "managed": row["organization_id"] is not None,
            "organization_id": None if row["organization_id"] is None else str(row["organization_id"]),
            "badges": dict(sorted((k, v["value"]) for k, v in (row["badges"] or {}).items())),
            "badge_details": dict(sorted((row["badges"] or {}).items())),
            "updated_at": row["updated_at"].isoformat(),
            "validated_at": None if row["validated_at"] is None else row["validated_at"].isoformat(),
        }
        for row in rows
    ]


def list_clouds(
    conn: Connection,
    *,
    org_id: uuid.UUID | None = None,
    badge: tuple[str, str] | None = None,
    status: CloudStatus | None = None,
    account_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Clouds with their badges (key -> {value, autogenerated}), ordered by account id."""
    conditions, params = _cloud_conditions(org_id, badge, status, account_ids)
    return _clouds(conn, conditions, params, None)


def clouds_page(
    conn: Connection,
    *,
    limit: int,
    after: str | None = None,
    org_id: uuid.UUID | None = None,
    badge: tuple[str, str] | None = None,
    status: CloudStatus | None = None,
    search: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `list_clouds`' rows after the account id `after` (keyset: each page one index range
    scan, however deep), with `search` matching an account id's start or a part of the name; returns the
    rows and the account id to continue after (None: the last page)."""
    conditions, params = _cloud_conditions(org_id, badge, status, search=search, after=after)
    rows = _clouds(conn, conditions, params, limit + 1)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["account_id"]
    return rows, None


def tags_of(conn: Connection, cloud_id: uuid.UUID) -> dict[str, str]:
    """A cloud's AWS tags, by key."""
    with conn.cursor() as cur:
        rows = cur.execute("SELECT key, value FROM resource_tags WHERE cloud_id = %s", (cloud_id,)).fetchall()
    return dict(sorted((k, v) for k, v in rows))


def status_history(conn: Connection, cloud_id: uuid.UUID) -> list[dict[str, Any]]:
    """The changes of a cloud's status that its validations found, newest first (the newest 50 are kept)."""
    with conn.cursor() as cur:
        rows = cur.execute(
            "SELECT at, status, message FROM cloud_status_history WHERE cloud_id = %s ORDER BY id DESC", (cloud_id,)
        ).fetchall()
    return [{"at": at.isoformat(), "status": status, "message": message} for at, status, message in rows]


def org_scps(conn: Connection, org_id: uuid.UUID) -> tuple[list[Policy], list[Target]]:
    """An organization's stored SCPs and where each is attached."""
    with conn.cursor(row_factory=class_row(Policy)) as cur:
        policies = cur.execute(
            "SELECT id, name, description, aws_managed, content FROM service_control_policies"
            " WHERE organization_id = %s",
            (org_id,),
        ).fetchall()
    with conn.cursor(row_factory=class_row(Target)) as cur:
        targets = cur.execute(
            "SELECT policy_id, target_id, target_type, target_name FROM scp_targets WHERE organization_id = %s",
            (org_id,),
        ).fetchall()
    return policies, targets


def scps_for_cloud(conn: Connection, cloud_id: uuid.UUID) -> list[dict[str, Any]]:
    """The SCPs that apply to a managed cloud, root first, each with where it is attached. Only the
    attachments of the account and the units above it are read (an index range each), not the org's."""
    with conn.cursor() as cur:
        cloud = cur.execute(
            "SELECT account_id, organization_id, org_path_ids FROM clouds WHERE id = %s", (cloud_id,)
        ).fetchone()
    if cloud is None or cloud[1] is None:
        return []
    account_id, org_id, path_ids = cloud
    on_path = [*(path_ids or []), account_id]
    with conn.cursor(row_factory=class_row(Target)) as cur:
        targets = cur.execute(
            "SELECT policy_id, target_id, target_type, target_name FROM scp_targets"
            " WHERE organization_id = %s AND target_id = ANY(%s)",
            (org_id, on_path),
        ).fetchall()
    with conn.cursor(row_factory=class_row(Policy)) as cur:
        policies = cur.execute(
            "SELECT id, name, description, aws_managed, content FROM service_control_policies"
            " WHERE organization_id = %s AND id = ANY(%s)",
            (org_id, sorted({t.policy_id for t in targets})),
        ).fetchall()
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
        for a in scps_applying(account_id, path_ids or [], policies, targets)
    ]


# -- the work a request caused -------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """How far the work caused by one request has got."""

    pending: int  # messages written and not yet handled by their consumer
    done: int  # messages handled, successfully or not
    failures: list[tuple[str, str | None]]  # (actor, error) of each that failed


# one round trip, asked a few times a second by `--wait`: the messages correlated with the request that
# their consumer here has not finished, those it has, and the errors of those that failed
_PROGRESS = """
    SELECT
        (SELECT count(*) FROM outbox o
         WHERE o.correlation_id = %(id)s AND o.actor_name IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id)),
        (SELECT count(*) FROM processed_messages WHERE correlation_id = %(id)s),
        (SELECT coalesce(jsonb_agg(jsonb_build_array(actor_name, error) ORDER BY message_id), '[]')
         FROM processed_messages WHERE correlation_id = %(id)s AND status = %(failed)s)
"""


def request_progress(conn: Connection, correlation_id: uuid.UUID) -> Progress:
    """How far the work caused by one request (every message correlated with it) has got."""
    with conn.cursor() as cur:
        row = cur.execute(_PROGRESS, {"id": correlation_id, "failed": MessageOutcome.FAILED.value}).fetchone()
    assert row is not None  # an aggregate row always comes back
    pending, done, failures = row
    return Progress(pending, done, [(actor, error) for actor, error in failures])
