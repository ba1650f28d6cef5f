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
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aws.session import is_transient
from domain import events, status
from domain.config import AccessKey, RoleConfig, Secret
from domain.errors import AwsStepFailed, PermanentError, RetryLater
from storage import repository as repo
from storage.models import Cloud, Organization, ProcessedMessage
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable, row_context

from .deps import Deps, emit, unknown_org
from .middleware import failure_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """What validating one cloud needs, read in one query."""

    account_id: str
    aws_state: str | None
    cloud_credentials: bytes | None
    org_id: uuid.UUID | None
    org_credentials: bytes | None
    partition: str | None


def _load(session: Session, cloud_id: uuid.UUID, org_id: uuid.UUID | None, message_id: str) -> _Target | bool | None:
    """The cloud and its org; None when the cloud is gone; False when the message was handled before.

    Raises PermanentError when the message names an organization (`org_id`) that does not exist.
    """
    processed = select(ProcessedMessage.message_id).where(ProcessedMessage.message_id == uuid.UUID(message_id))
    row = session.execute(
        select(
            Cloud.account_id,
            Cloud.aws_state,
            Cloud.credentials,
            Cloud.organization_id,
            Organization.credentials,
            Organization.partition,
            processed.exists(),
        )
        .outerjoin(Organization, Organization.id == Cloud.organization_id)
        .where(Cloud.id == cloud_id)
    ).first()
    if row is None:
        if repo.already_processed(session, message_id):
            return False
        _require_org(session, org_id)
        return None
    if row[6]:
        return False
    if org_id is not None and row.organization_id != org_id:  # else the foreign key proves the org exists
        _require_org(session, org_id)
    return _Target(*row[:6])


def _require_org(session: Session, org_id: uuid.UUID | None) -> None:
    if org_id is not None and session.get(Organization, org_id) is None:
        raise unknown_org(org_id)


def _role_of(deps: Deps, cloud_id: uuid.UUID, target: _Target) -> tuple[RoleConfig, AccessKey | None]:
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


# Stamps the validation and returns the status it replaced, in one statement.
_RECORD = text(
    """
    UPDATE clouds c SET validated_at = now(), status = :status, status_message = :message
    FROM (SELECT id, status, status_message FROM clouds WHERE id = :id FOR UPDATE) old
    WHERE c.id = old.id
    RETURNING old.status, old.status_message, c.organization_id, c.account_id
    """
)


def validate_account(deps: Deps, envelope: events.Envelope, actor_name: str) -> None:
    """AccountDiscovered / AccountValidationDue -> cloud status (+ AccountValidated when it changed)."""
    event = envelope.event
    assert isinstance(event, events.AccountDiscovered | events.AccountValidationDue)
    cloud_uuid = uuid.UUID(event.cloud_id)
    org_uuid = None if event.org_id is None else uuid.UUID(event.org_id)
    with deps.sessions() as session:
        target = _load(session, cloud_uuid, org_uuid, envelope.id)
    if target is False:
        return
    outcome = None  # the cloud was removed (or replaced) since the message was sent: nothing to validate
    unreadable = False
    if isinstance(target, _Target) and target.account_id == event.account_id:
        outcome = status.suspended_outcome(target.aws_state)
        if outcome is None:
            try:
                role, access_key = _role_of(deps, cloud_uuid, target)
            except CredentialsUnreadable:
                if target.org_id is not None:  # the org's credentials: its sync shows the user
                    raise PermanentError(CREDENTIALS_UNREADABLE) from None
                outcome, unreadable = (status.CREDENTIALS_UNREADABLE, CREDENTIALS_UNREADABLE), True
            else:
                outcome = _assume(deps, role, access_key)
    elif target is None:
        log.info("cloud %s no longer exists: nothing to validate", cloud_uuid)
    emitted = False
    with deps.sessions.begin() as session:
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name) or outcome is None:
            return
        if unreadable:  # failed already, with the reason the dead letter gets: `--wait` never sees it done
            error = failure_reason(PermanentError(CREDENTIALS_UNREADABLE))
            repo.mark_processed(session, envelope.id, envelope.correlation_id, actor_name, status="failed", error=error)
        row = session.execute(_RECORD, {"id": cloud_uuid, "status": outcome[0], "message": outcome[1]}).first()
        if row is not None and (row.status, row.status_message) != outcome:
            org_id = None if row.organization_id is None else str(row.organization_id)
            emit(session, events.AccountValidated(org_id, str(cloud_uuid), row.account_id, outcome[0]), cause=envelope)
            emitted = True
    if emitted:
        deps.after_commit()
    if unreadable:
        raise PermanentError(CREDENTIALS_UNREADABLE)


def _assume(deps: Deps, role: RoleConfig, access_key: AccessKey | None) -> tuple[str, str]:
    try:
        deps.aws.assume_role_credentials(deps.aws.caller_sts(access_key), role, step="assume the member role")
    except AwsStepFailed as exc:
        if is_transient(exc):
            raise RetryLater(str(exc)) from None
        return status.classify_assume_role_error(exc.code, exc.message, role.role_arn, role.duration_seconds)
    return status.ok_outcome(role.role_arn)
