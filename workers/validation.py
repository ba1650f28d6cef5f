"""Member-role validation: can the caller assume the org's member role in this account?

One message per account, fanned out over the `account-validation` pool. The outcome becomes the
cloud's status with a message saying what to fix. Throttling and connection errors are never a
status: they raise, and the message is retried with backoff.

A message naming an organization that does not exist is dead-lettered. A cloud that does not exist
(any more) is skipped: organization syncs remove clouds while validations of them may be queued, so
that is the normal race, not a bad message. Credentials that cannot be decrypted are dead-lettered
(no retry can help); a standalone cloud also gets that as its status, for the user to see.
"""

from __future__ import annotations

import json
import logging
import uuid

from aws.session import is_transient
from domain import events, status
from domain.config import AccessKey, RoleConfig, Secret
from domain.errors import AwsStepFailed, PermanentError, RetryLater
from domain.status import CloudStatus, Outcome
from storage.inventory import ValidationTarget
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable, row_context

from .deps import Deps, unknown_org
from .middleware import failure_reason

log = logging.getLogger(__name__)

Validation = events.AccountDiscovered | events.AccountValidationDue


def validate_account(deps: Deps, envelope: events.Envelope[Validation], actor_name: str) -> None:
    """AccountDiscovered / AccountValidationDue -> cloud status (+ AccountValidated when it changed)."""
    event = envelope.event
    with deps.uow.reading() as inventory:
        lookup = inventory.validation_target(event.cloud_id, envelope.id)
        if lookup.processed:
            return
        target = lookup.target
        # an org that does not exist makes the message bad; the foreign key proves the cloud's own org
        named = event.org_id
        if named is not None and (target is None or target.org_id != named) and inventory.org(named) is None:
            raise unknown_org(named)
    outcome = None  # the cloud was removed (or replaced) since the message was sent: nothing to validate
    unreadable = False
    if target is not None and target.account_id == event.account_id:
        outcome = status.suspended_outcome(target.aws_state)
        if outcome is None:
            try:
                role, access_key = _role_of(deps, event.cloud_id, target)
            except CredentialsUnreadable:
                if target.org_id is not None:  # the org's credentials: its sync shows the user
                    raise PermanentError(CREDENTIALS_UNREADABLE) from None
                outcome, unreadable = Outcome(CloudStatus.CREDENTIALS_UNREADABLE, CREDENTIALS_UNREADABLE), True
            else:
                outcome = _assume(deps, role, access_key)
    elif target is None:
        log.info("cloud %s no longer exists: nothing to validate", event.cloud_id)
    with deps.uow.processing(envelope, actor_name) as work:
        if work is None or outcome is None:
            return
        if unreadable:  # failed already, with the reason the dead letter gets: `--wait` never sees it done
            work.fail(failure_reason(PermanentError(CREDENTIALS_UNREADABLE)))
        recorded = work.inventory.record_validation(event.cloud_id, outcome)
        if recorded is not None and recorded.previous != outcome:
            work.emit(events.AccountValidated(recorded.org_id, event.cloud_id, recorded.account_id, outcome.status))
    if unreadable:
        raise PermanentError(CREDENTIALS_UNREADABLE)


def _role_of(deps: Deps, cloud_id: uuid.UUID, target: ValidationTarget) -> tuple[RoleConfig, AccessKey | None]:
    ring = deps.keyring()
    if target.org_id is not None and target.org_credentials is not None:
        creds = ring.open(target.org_credentials, "organizations", target.org_id)
        return creds.member.for_account(target.partition or "aws", target.account_id), creds.access_key
    if target.cloud_credentials is None:
        raise PermanentError(f"cloud {target.account_id} has no credentials and no organization")
    data = json.loads(ring.decrypt(target.cloud_credentials, row_context("clouds", cloud_id)))["role"]
    external = data.get("external_id")
    role = RoleConfig(
        role_arn=data["role_arn"],
        session_name=data["session_name"],
        duration_seconds=int(data["duration_seconds"]),
        external_id=Secret(external) if external else None,
    )
    return role, None


def _assume(deps: Deps, role: RoleConfig, access_key: AccessKey | None) -> Outcome:
    try:
        deps.aws.assume_role_credentials(deps.aws.caller_sts(access_key), role, step="assume the member role")
    except AwsStepFailed as exc:
        if is_transient(exc):
            raise RetryLater(str(exc)) from None
        return status.classify_assume_role_error(exc.code, exc.aws_message, role.role_arn, role.duration_seconds)
    return status.ok_outcome(role.role_arn)
