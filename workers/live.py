"""Live updates: apply what one AWS event of an organization says changed, reading AWS's state now.

`orgsync events` turns each AWS event into one of these messages (domain.live.read_event); the event
only says where to look. Each handler reads that one thing again from AWS and applies the rules of a
full sync to it (scope filters, name prefixes, suspended accounts, system badges, takeover) through
the unit of work, with the sync's follow-up events: an event that arrives late, twice or out of order
leaves what AWS says now.

- AccountRefreshDue: DescribeAccount + ListParents (and, for an OU not stored yet, its name and parent up
  to the first stored one); of an account stored already, only what the AWS event can have changed (a
  move: ListParents; a closing or a removal: DescribeAccount). The account appears, moves, changes state,
  or leaves the inventory. New accounts get their validation, their tags (TagRefreshDue of one account)
  and their attached SCPs read.
- UnitRefreshDue: DescribeOrganizationalUnit (+ ListParents of an OU not stored: AWS never moves an OU);
  the stored tree follows, and a rename rewrites the org path (and its system badge) of every account
  below it in one statement.
- PolicyRefreshDue: the one policy and the one target's attachments are read again, and the management
  role's permissions judged again.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping
from typing import Any
from uuid import UUID

from aws.organizations import OrganizationsReader, read_policies
from aws.permissions import check_management_role
from domain import events
from domain import permissions as rules
from domain.errors import AwsStepFailed, NotFound, PermanentError, RetryLater
from domain.scp import Policy, ScpPlan, Target, plan_scps
from domain.sync import StoredCloud, UnitRow, plan_sync, plan_system_badges, plan_units
from domain.tree import PATH_SEPARATOR, Account, OrgTree, OrgUnit, Scope, accounts_in_scope
from storage.inventory import Inventory
from storage.unit_of_work import Work
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from .deps import Deps
from .handlers import OrgSnapshot, emit_discovered, load_org

log = logging.getLogger(__name__)
# OUs read upwards from a changed account or OU until a stored one: a tree is at most 5 OUs deep below
# its root, so more means something is wrong (a cycle), never a real tree
MAX_DEPTH = 8


def _org_and_reader(deps: Deps, org_id: UUID) -> tuple[OrgSnapshot, OrganizationsReader]:
    """The org and a reader of its organization as the management role (AssumeRole reused for a while)."""
    try:
        org = load_org(deps, org_id)
    except CredentialsUnreadable:
        raise PermanentError(CREDENTIALS_UNREADABLE) from None
    caller = deps.aws.caller_sts(org.credentials.access_key)
    management = deps.aws.assume_role(caller, org.credentials.management, step="assume the management role")
    return org, OrganizationsReader(deps.aws.client(management, "organizations"), concurrency=deps.walk_concurrency)


def _failed(deps: Deps, envelope: events.Envelope[Any], actor_name: str, error: str) -> None:
    """A refusal no retry can help (the role may not read it): recorded on the message, nothing applied."""
    log.warning("live update %s failed: %s", envelope.event.TYPE, error)
    with deps.uow.processing(envelope, actor_name) as work:
        if work is not None:
            work.fail(error)


def _read_up(reader: OrganizationsReader, stored: Container[str], start: str | None) -> dict[str, OrgUnit]:
    """The units read from AWS from `start` upwards, until a stored one (or a root): those the inventory
    does not know yet."""
    read: dict[str, OrgUnit] = {}
    current: str | None = start
    for _ in range(MAX_DEPTH):
        if current is None or current in stored or current in read:
            return read
        if current.startswith("r-"):
            roots = {r["Id"]: r.get("Name", "Root") for r in reader.pages("list_roots", "Roots")}
            read[current] = OrgUnit(current, roots.get(current, "Root"), None)
            return read
        unit = reader.unit(current)
        if unit is None:  # deleted while we looked: whatever moved the account out of it comes as its own event
            raise RetryLater(f"organizational unit {current} vanished while reading the tree")
        read[current] = unit
        current = unit.parent_id
    raise RetryLater(f"no stored organizational unit within {MAX_DEPTH} levels above {start}")


def _tree_units(stored: Mapping[str, UnitRow], read: Mapping[str, OrgUnit]) -> dict[str, OrgUnit]:
    """The tree to apply a change with: the units as stored now (under the org's lock: other events' renames
    included), plus those read from AWS that are not stored; `read` wins only for units not stored."""
    units = {unit_id: OrgUnit(row.id, row.name, row.parent_id) for unit_id, row in stored.items()}
    for unit_id, unit in read.items():
        units.setdefault(unit_id, unit)
    return units


# -- accounts --------------------------------------------------------------------------------------


# what an AWS event can have changed of an account orgsync stores already, by the event's name: a move
# only its parent, a closing or a removal only its state (or its membership); anything else, all of it
PARENT_CAUSES = frozenset({"MoveAccount"})
STATE_CAUSES = frozenset({"CloseAccount", "RemoveAccountFromOrganization"})


def refresh_account(deps: Deps, envelope: events.Envelope[events.AccountRefreshDue], actor_name: str) -> None:
    """AccountRefreshDue -> the account stored as AWS describes it now (or removed), with AccountDiscovered,
    AccountValidationDue, TagRefreshDue or AccountRemoved as a sync would emit them."""
    event = envelope.event
    if deps.uow.processed(envelope.id):
        return
    try:
        org, reader = _org_and_reader(deps, event.org_id)
        with deps.uow.reading() as inventory:
            units = inventory.stored_units(org.id)
            rows = inventory.stored_clouds(org.id, [event.account_id], whole_org=False)
        known = next((c for c in rows if c.organization_id == org.id), None)
        account = _read_account(reader, event, known)
        read: dict[str, OrgUnit] = {}
        attached: list[str] | None = None  # the SCPs attached to an account new here (AWS attaches its default)
        if account is not None:
            read = _read_up(reader, units, account.parent_id)
            if known is None:
                attached = reader.policies_for_target(event.account_id)
    except AwsStepFailed as exc:
        _failed(deps, envelope, actor_name, str(exc))
        return
    with deps.uow.processing(envelope, actor_name, lock=org.id) as work:
        if work is not None:
            stored_units = work.inventory.stored_units(org.id)
            _apply_account(work, org, event.account_id, account, stored_units, read)
            if account is None or attached is not None:
                name = None if account is None else account.name
                _set_targets(work.inventory, org.id, event.account_id, "ACCOUNT", name, attached or [])


def _read_account(
    reader: OrganizationsReader, event: events.AccountRefreshDue, known: StoredCloud | None
) -> Account | None:
    """The account as AWS has it now, reading only what `event` can have changed of a stored one (`known`):
    its parent after a move (ListParents), its state after a closing or a removal (DescribeAccount); an
    account not stored here, or an event of another kind, is read whole. None: not in the organization."""
    if known is not None and known.parent_id and known.aws_state and known.email is not None:
        if event.cause in PARENT_CAUSES:
            parent = reader.parent(event.account_id)
            if parent is not None:
                return Account(event.account_id, known.name, known.email, known.aws_state, parent)
            # not in the organization any more: read whole below, which says so
        elif event.cause in STATE_CAUSES:
            return reader.account(event.account_id, parent_id=known.parent_id)
    return reader.account(event.account_id)


def _apply_account(
    work: Work[Inventory],
    org: OrgSnapshot,
    account_id: str,
    account: Account | None,
    stored_units: Mapping[str, UnitRow],
    read: Mapping[str, OrgUnit],
) -> None:
    """The account as `account` says (None: gone), on the stored tree plus the units `read` from AWS."""
    inventory = work.inventory
    stored = inventory.stored_clouds(org.id, [account_id], whole_org=False)
    mine = [c for c in stored if c.organization_id == org.id]
    reason = "no longer in the organization"
    tree = OrgTree(_tree_units(stored_units, read), () if account is None else (account,), complete=False)
    if account is not None:
        try:
            scope = accounts_in_scope(tree, org.filters)
        except NotFound as exc:  # a limited OU is gone: the periodic sync reports it on the org
            raise PermanentError(f"cannot apply the org's scope: {exc}") from None
        if account_id not in scope.excluded:
            _store_account(work, org, tree, scope, stored, stored_units)
            return
        reason = scope.excluded[account_id]
    if mine:  # out of scope, or out of the organization
        inventory.delete_clouds([c.cloud_id for c in mine])
        work.emit(events.AccountRemoved(org.id, account_id, reason))
        log.info("org %s: account %s removed (%s)", org.id, account_id, reason)


def _store_account(
    work: Work[Inventory],
    org: OrgSnapshot,
    tree: OrgTree,
    scope: Scope,
    stored: list[StoredCloud],
    stored_units: Mapping[str, UnitRow],
) -> None:
    """Store the one account in scope (`stored`: its rows, in any org) as a sync would, with its events."""
    inventory = work.inventory
    plan = plan_sync(org.id, scope, stored, complete=False)
    new_ids = inventory.insert_clouds(org.id, plan.new)
    inventory.update_clouds(plan.changed)
    inventory.take_over_clouds(org.id, plan.taken_over)
    units = plan_units(tree, stored_units)
    inventory.write_units(org.id, units.upsert, ())
    touched = [*new_ids.values(), *(c.cloud_id for c in plan.changed), *(t.stored.cloud_id for t in plan.taken_over)]
    if touched:
        inventory.upsert_badges(
            plan_system_badges(
                org.cloud_org_id,
                org.nickname,
                inventory.org_cloud_paths(org.id, touched),
                inventory.system_badges_of(org.id, touched),
            ),
            autogenerated=True,
        )
    discovered = emit_discovered(work, org.id, new_ids, plan)
    if discovered:
        work.emit(events.TagRefreshDue(org.id, tuple(discovered)))
    log.info("org %s: account changes applied: +%d ~%d", org.id, len(discovered), len(plan.changed))


def _set_targets(
    inventory: Inventory, org_id: UUID, target_id: str, kind: str, name: str | None, policies: list[str]
) -> None:
    """The stored SCP attachments of one account, OU or root (named `name`): exactly `policies` (of the
    stored ones; a policy not stored yet comes with its own event). None for `name`: it is gone, with its
    attachments."""
    stored_policies, stored_targets = inventory.stored_scps(org_id)
    known = {p.id for p in stored_policies}
    live = {Target(p, target_id, kind, name) for p in policies if p in known} if name is not None else set()
    current = {t for t in stored_targets if t.target_id == target_id}
    add = sorted(live - current, key=lambda t: t.policy_id)
    drop = sorted(current - live, key=lambda t: t.policy_id)
    if add or drop:
        inventory.write_scps(org_id, ScpPlan(add_targets=tuple(add), drop_targets=tuple(drop)))


# -- organizational units --------------------------------------------------------------------------


def refresh_unit(deps: Deps, envelope: events.Envelope[events.UnitRefreshDue], actor_name: str) -> None:
    """UnitRefreshDue -> the stored OU tree as AWS has it now; a rename carried into the org paths below it."""
    event = envelope.event
    if deps.uow.processed(envelope.id):
        return
    try:
        org, reader = _org_and_reader(deps, event.org_id)
        with deps.uow.reading() as inventory:
            known = inventory.stored_units(org.id)
        stored_unit = known.get(event.unit_id)
        unit = reader.unit(event.unit_id, parent_id=None if stored_unit is None else stored_unit.parent_id)
        read: dict[str, OrgUnit] = {}
        attached: list[str] | None = None  # the SCPs attached to a new OU (AWS attaches its default)
        if unit is not None:
            if stored_unit is None:
                attached = reader.policies_for_target(unit.id)
            read = _read_up(reader, known, unit.parent_id)
    except AwsStepFailed as exc:
        _failed(deps, envelope, actor_name, str(exc))
        return
    with deps.uow.processing(envelope, actor_name, lock=org.id) as work:
        if work is None:
            return
        inventory = work.inventory
        stored = inventory.stored_units(org.id)
        if unit is None:
            if event.unit_id in stored:  # AWS deletes only empty OUs: no account is below it
                inventory.write_units(org.id, (), (event.unit_id,))
                _set_targets(inventory, org.id, event.unit_id, "ORGANIZATIONAL_UNIT", None, [])
            return
        if attached is not None:
            _set_targets(inventory, org.id, unit.id, "ORGANIZATIONAL_UNIT", unit.name, attached)
        # the unit as AWS has it now; the others as stored now (the OUs below it too: their paths follow)
        tree = OrgTree({**_tree_units(stored, read), unit.id: unit}, ())
        plan = plan_units(tree, stored)
        inventory.write_units(org.id, plan.upsert, ())
        old = stored.get(unit.id)
        if old is not None and old.name != unit.name:  # its SCP attachments carry its name too
            _, targets = inventory.stored_scps(org.id)
            held = [t.policy_id for t in targets if t.target_id == unit.id]
            _set_targets(inventory, org.id, unit.id, "ORGANIZATIONAL_UNIT", unit.name, held)
        if old is not None:
            new_path = PATH_SEPARATOR.join(u.name for u in tree.path(unit.id))
            if new_path != old.path:
                renamed = inventory.rename_paths(org.id, unit.id, old.path, new_path)
                log.info("org %s: OU %s renamed; %d accounts below it", org.id, unit.id, renamed)


# -- policies --------------------------------------------------------------------------------------


def refresh_policies(deps: Deps, envelope: events.Envelope[events.PolicyRefreshDue], actor_name: str) -> None:
    """PolicyRefreshDue -> the one policy and the one target's attachments it names as AWS has them now (or
    every SCP when it names neither), and the management role's permissions judged again.

    SCPs never restrict the management account's own roles (AWS's rule), so a management role there keeps
    the probes' results whatever the SCPs say: its stored report is judged again against the SCPs as stored
    now, without a call. A role in another account (a delegated administrator) is probed again."""
    event = envelope.event
    if deps.uow.processed(envelope.id):
        return
    try:
        org, reader = _org_and_reader(deps, event.org_id)
        every: tuple[list[Policy], list[Target]] | None = None
        policy: Policy | None = None
        attached: list[str] | None = None
        if event.policy_id is None:
            every = read_policies(reader.client, concurrency=deps.walk_concurrency)
        else:
            policy = reader.policy(event.policy_id)
            if event.target_id is not None:
                attached = reader.policies_for_target(event.target_id)
        management = org.credentials.management
        report: rules.PermissionReport | None = None
        if management.account_id != org.management_account_id:
            caller = deps.aws.caller_sts(org.credentials.access_key)
            iam = deps.aws.client(deps.aws.assume_role(caller, management, step="assume the management role"), "iam")
            report = check_management_role(reader.client, iam, management.role_arn, org.management_account_id)
    except AwsStepFailed as exc:
        _failed(deps, envelope, actor_name, str(exc))
        return
    with deps.uow.processing(envelope, actor_name, lock=org.id) as work:
        if work is None:
            return
        inventory = work.inventory
        stored_policies, stored_targets = inventory.stored_scps(org.id)
        if every is not None:
            plan = plan_scps(*every, stored_policies, stored_targets)
        else:
            current = {p.id: p for p in stored_policies}
            if policy is None:  # deleted (its attachments go with it), or not an SCP
                plan = ScpPlan(delete=(event.policy_id,) if event.policy_id in current else ())
            else:
                plan = ScpPlan(upsert=(policy,) if current.get(policy.id) != policy else ())
        inventory.write_scps(org.id, plan)
        if attached is not None and event.target_id is not None:
            kind, name = _target(inventory, org.id, event.target_id)
            _set_targets(inventory, org.id, event.target_id, kind, name, attached)
        if report is None:
            record = inventory.org(org.id)
            scps = [(p.name, p.content) for p in inventory.stored_scps(org.id)[0]]
            report = rules.rejudge(None if record is None else record.permission_report, scps)
        if report is not None:
            inventory.set_permission_report(org.id, report.to_json())
        log.info("org %s: policies read again (%s), %d rows written", org.id, event.cause, plan.rows)


def _target(inventory: Inventory, org_id: UUID, target_id: str) -> tuple[str, str | None]:
    """A policy target's type as AWS names it, and its stored name (None: not stored, its attachments too)."""
    if target_id.startswith(("ou-", "r-")):
        row = inventory.stored_units(org_id).get(target_id)
        return ("ROOT" if target_id.startswith("r-") else "ORGANIZATIONAL_UNIT"), None if row is None else row.name
    stored = inventory.stored_clouds(org_id, [target_id], whole_org=False)
    names = [c.name for c in stored if c.organization_id == org_id]
    return "ACCOUNT", names[0] if names else None
