"""Auto-badging, in two stages: tags from AWS into resource tags, then resource tags into badges.

TagRefreshDue without accounts fans out: one message per chunk of an org's accounts, spread over the
`tags` pool. A chunk reads each account's tags from the management account, writes only the
differences, and asks for a badge reconcile of exactly the clouds whose tags changed.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from aws.organizations import OrganizationsReader
from domain import events
from domain.errors import AccountNotInOrganization, AwsStepFailed, PermanentError
from domain.tags import chunks, plan_tags
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from .deps import Deps, unknown_org

log = logging.getLogger(__name__)
CHUNK = 200


def refresh_tags(deps: Deps, envelope: events.Envelope[events.TagRefreshDue], actor_name: str) -> None:
    """TagRefreshDue -> TagRefreshDue per chunk (fan-out), or -> resource tags + BadgeReconcileDue."""
    event = envelope.event
    if deps.uow.processed(envelope.id):
        return
    if event.org_id is None:
        _fan_out_orgs(deps, envelope, actor_name)
    elif event.account_ids is None:
        _fan_out_chunks(deps, envelope, actor_name, event.org_id)
    else:
        _refresh_chunk(deps, envelope, actor_name, event.org_id, event.account_ids)


def _fan_out_orgs(deps: Deps, envelope: events.Envelope[events.TagRefreshDue], actor_name: str) -> None:
    with deps.uow.processing(envelope, actor_name) as work:
        if work is None:
            return
        for org_id in work.inventory.org_ids():
            work.emit(events.TagRefreshDue(org_id))


def _fan_out_chunks(
    deps: Deps, envelope: events.Envelope[events.TagRefreshDue], actor_name: str, org_id: uuid.UUID
) -> None:
    with deps.uow.processing(envelope, actor_name) as work:
        if work is None:
            return
        if work.inventory.org(org_id) is None:
            raise unknown_org(org_id)  # rolls the claim back: the failure is recorded instead
        for chunk in chunks(sorted(work.inventory.managed_accounts(org_id)), CHUNK):
            work.emit(events.TagRefreshDue(org_id, tuple(chunk)))


def _refresh_chunk(
    deps: Deps,
    envelope: events.Envelope[events.TagRefreshDue],
    actor_name: str,
    org_id: uuid.UUID,
    account_ids: tuple[str, ...],
) -> None:
    with deps.uow.reading() as inventory:
        org = inventory.org(org_id)
        if org is None:
            raise unknown_org(org_id)
        managed = inventory.managed_accounts(org_id, account_ids)
    try:
        creds = deps.keyring().open(org.credentials, "organizations", org.id)
    except CredentialsUnreadable:
        raise PermanentError(CREDENTIALS_UNREADABLE) from None
    clouds = {a: managed[a] for a in account_ids if a in managed}
    aws_tags: dict[uuid.UUID, dict[str, str]] = {}
    if clouds:
        try:
            management = deps.aws.assume_role(
                deps.aws.caller_sts(creds.access_key), creds.management, step="assume the management role"
            )
        except AwsStepFailed as exc:
            _fail(deps, envelope, actor_name, str(exc))
            return
        reader = OrganizationsReader(deps.aws.client(management, "organizations"))

        def read(account_id: str) -> tuple[str, dict[str, str] | None]:
            try:
                return account_id, reader.account_tags(account_id)
            except AccountNotInOrganization:
                return account_id, None  # left the organization meanwhile; the next sync removes it

        # RetryLater (throttled, no connection) propagates: the message is retried with backoff
        try:
            with ThreadPoolExecutor(deps.walk_concurrency, thread_name_prefix="tags") as pool:
                for account_id, tags in pool.map(read, sorted(clouds)):
                    if tags is not None:
                        aws_tags[clouds[account_id]] = tags
        except AwsStepFailed as exc:  # refused: no retry helps until the role is fixed
            _fail(deps, envelope, actor_name, f"{exc.message}; the management role needs it")
            return
    with deps.uow.processing(envelope, actor_name, lock=org_id) as work:
        if work is None:
            return
        current = set(work.inventory.managed_accounts(org_id, sorted(clouds)).values())
        live = {cid: tags for cid, tags in aws_tags.items() if cid in current}
        plan = plan_tags(live, work.inventory.stored_tags(sorted(live)))
        work.inventory.write_tags(plan.upsert, plan.delete)
        if plan.changed_clouds:
            work.emit(events.BadgeReconcileDue(org_id, plan.changed_clouds))
    log.info("org %s: tags of %d accounts read, %d rows written", org_id, len(live), plan.rows)


def _fail(deps: Deps, envelope: events.Envelope[events.TagRefreshDue], actor_name: str, error: str) -> None:
    log.warning("tag refresh failed: %s", error)
    with deps.uow.processing(envelope, actor_name) as work:
        if work is not None:
            work.fail(error)


def reconcile(deps: Deps, envelope: events.Envelope[events.BadgeReconcileDue], actor_name: str) -> int:
    """BadgeReconcileDue -> badges follow resource tags (set-based SQL). Returns rows written."""
    event = envelope.event
    with deps.uow.processing(envelope, actor_name, lock=event.org_id) as work:
        if work is None:
            return 0
        if event.org_id is not None and work.inventory.org(event.org_id) is None:
            raise unknown_org(event.org_id)  # rolls the claim back: the failure is recorded instead
        rows = work.inventory.reconcile_badges(org_id=event.org_id, cloud_ids=event.cloud_ids)
    log.info("badges reconciled (org %s): %d rows written", event.org_id or "all", rows)
    return rows
