"""Member-role validation: can the caller assume the member role in each of these accounts?

One `AccountValidationDue` names a batch of clouds of one org (or standalone clouds): the sync, the
scheduler and `cloud validate` ask in batches (`events.AccountValidationDue.batches`). A batch
is read in one query, its roles assumed `deps.walk_concurrency` at a time within the process's
adaptive pace (one STS client per caller identity, reused), and its outcomes written in one
statement and one transaction: a cloud's status says what to fix, and `AccountValidated` is emitted
for every cloud whose outcome changed. Throttling and connection errors are never a status: they
raise, and the whole batch is retried with backoff (assuming a role again changes nothing).

A message naming an organization that does not exist is dead-lettered. A cloud that does not exist
(any more) is skipped: organization syncs remove clouds while validations of them may be queued, so
that is the normal race, not a bad message. Credentials that cannot be decrypted are dead-lettered (no
retry can help); a standalone cloud also gets that as its status, for the user to see.
"""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from aws.session import is_transient
from domain import events, status
from domain.config import AccessKey, Credentials, RoleConfig, Secret
from domain.errors import AwsStepFailed, PermanentError, RetryLater
from domain.status import CloudStatus, Outcome
from storage.inventory import ValidationTarget
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable, row_context

from .deps import Deps, unknown_org
from .middleware import failure_reason

log = logging.getLogger(__name__)

Validation = events.AccountValidationDue | events.AccountDiscovered


def validate_accounts(deps: Deps, envelope: events.Envelope[Validation], actor_name: str) -> None:
    """AccountValidationDue (or an AccountDiscovered an earlier version queued) -> cloud statuses, plus
    AccountValidated for each cloud whose outcome changed."""
    event = envelope.event
    org_id = event.org_id
    cloud_ids = (event.cloud_id,) if isinstance(event, events.AccountDiscovered) else event.cloud_ids
    with deps.uow.reading() as inventory:
        lookup = inventory.validation_targets(cloud_ids, envelope.id)
        if lookup.processed:
            return
        # an org that does not exist makes the message bad; the foreign key proves the clouds' own org
        proven = bool(lookup.targets) and all(t.org_id == org_id for t in lookup.targets.values())
        if org_id is not None and not proven and inventory.org(org_id) is None:
            raise unknown_org(org_id)
    gone = len(cloud_ids) - len(lookup.targets)
    if gone:
        log.info("%d of %d clouds no longer exist: nothing to validate for them", gone, len(cloud_ids))
    outcomes, unreadable = _outcomes(deps, lookup.targets)
    with deps.uow.processing(envelope, actor_name) as work:
        if work is None:
            return
        if unreadable:  # failed already, with the reason the dead letter gets: `--wait` never sees it done
            work.fail(failure_reason(PermanentError(CREDENTIALS_UNREADABLE)))
        for cloud_id, recorded in work.inventory.record_validations(outcomes).items():
            outcome = outcomes[cloud_id]
            if recorded.previous != outcome:
                work.emit(events.AccountValidated(recorded.org_id, cloud_id, recorded.account_id, outcome.status))
    if unreadable:
        raise PermanentError(CREDENTIALS_UNREADABLE)


def _outcomes(
    deps: Deps, targets: dict[uuid.UUID, ValidationTarget]
) -> tuple[dict[uuid.UUID, Outcome], list[uuid.UUID]]:
    """Each target's outcome, the roles assumed concurrently; and the standalone clouds whose own
    credentials could not be decrypted. RetryLater when AWS throttled or could not be reached."""
    outcomes: dict[uuid.UUID, Outcome] = {}
    roles: dict[uuid.UUID, tuple[RoleConfig, AccessKey | None]] = {}
    unreadable: list[uuid.UUID] = []
    opened: dict[uuid.UUID, Credentials] = {}  # each org's credentials, decrypted once per batch
    for cloud_id, target in sorted(targets.items()):
        suspended = status.suspended_outcome(target.aws_state)
        if suspended is not None:
            outcomes[cloud_id] = suspended
            continue
        try:
            if target.org_id is not None and target.org_credentials is not None:
                roles[cloud_id] = _org_role(deps, target.org_id, target.org_credentials, target, opened)
            elif target.cloud_credentials is not None:
                roles[cloud_id] = _own_role(deps, cloud_id, target.cloud_credentials), None
            else:
                log.warning("cloud %s has no credentials and no organization: nothing to check", target.account_id)
        except CredentialsUnreadable:
            if target.org_id is not None:  # the org's credentials: its sync shows the user
                raise PermanentError(CREDENTIALS_UNREADABLE) from None
            outcomes[cloud_id] = Outcome(CloudStatus.CREDENTIALS_UNREADABLE, CREDENTIALS_UNREADABLE)
            unreadable.append(cloud_id)
    if roles:
        with ThreadPoolExecutor(min(deps.walk_concurrency, len(roles)), thread_name_prefix="validate") as pool:
            assumed = pool.map(lambda role: _assume(deps, *role), roles.values())
            outcomes.update(zip(roles, assumed, strict=True))
    return outcomes, unreadable


def _org_role(
    deps: Deps, org_id: uuid.UUID, sealed: bytes, target: ValidationTarget, opened: dict[uuid.UUID, Credentials]
) -> tuple[RoleConfig, AccessKey | None]:
    """The org's member role in the target's account, and the caller's keys."""
    creds = opened.get(org_id)
    if creds is None:
        creds = opened[org_id] = deps.keyring().open(sealed, "organizations", org_id)
    return creds.member.for_account(target.partition or "aws", target.account_id), creds.access_key


def _own_role(deps: Deps, cloud_id: uuid.UUID, sealed: bytes) -> RoleConfig:
    """The role a standalone cloud was registered with."""
    data = json.loads(deps.keyring().decrypt(sealed, row_context("clouds", cloud_id)))["role"]
    external = data.get("external_id")
    return RoleConfig(
        role_arn=data["role_arn"],
        session_name=data["session_name"],
        duration_seconds=int(data["duration_seconds"]),
        external_id=Secret(external) if external else None,
    )


def _assume(deps: Deps, role: RoleConfig, access_key: AccessKey | None) -> Outcome:
    try:
        deps.aws.assume_role_credentials(deps.aws.caller_sts(access_key), role, step="assume the member role")
    except AwsStepFailed as exc:
        if is_transient(exc):
            raise RetryLater(str(exc)) from None
        return status.classify_assume_role_error(exc.code, exc.aws_message, role.role_arn, role.duration_seconds)
    return status.ok_outcome(role.role_arn)
