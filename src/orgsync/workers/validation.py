"""Member-role validation: can the caller assume the org's member role in this account?

One message per account, fanned out over the `account-validation` pool. The outcome becomes the
cloud's status with a message saying what to fix. Throttling and connection errors are never a
status: they raise, and the message is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

from orgsync.aws.session import THROTTLE_CODES
from orgsync.domain import events, status
from orgsync.domain.config import AccessKey, RoleConfig, Secret
from orgsync.domain.errors import AwsStepFailed, OrgSyncError, PermanentError
from orgsync.storage import repository as repo
from orgsync.storage.models import Cloud, Organization
from orgsync.storage.vault import row_context

from .deps import Deps, emit

log = logging.getLogger(__name__)


class RetryLater(OrgSyncError):
    """A transient AWS condition (throttling after all retries, connection trouble): retry the message."""


def _role_of(deps: Deps, cloud: Cloud, org: Organization | None) -> tuple[RoleConfig, AccessKey | None]:
    ring = deps.keyring()
    if org is not None:
        creds = ring.open(org.credentials, "organizations", org.id)
        return creds.member.for_account(org.partition, cloud.account_id), creds.access_key
    if cloud.credentials is None:
        raise PermanentError(f"cloud {cloud.account_id} has no credentials and no organization")
    data = json.loads(ring.decrypt(cloud.credentials, row_context("clouds", cloud.id)))["role"]
    external = data.get("external_id")
    role = RoleConfig(
        role_arn=data["role_arn"],
        session_name=data["session_name"],
        duration_seconds=int(data["duration_seconds"]),
        external_id=Secret(external) if external else None,
    )
    return role, None


def validate_account(deps: Deps, envelope: events.Envelope, actor_name: str) -> None:
    """AccountDiscovered / AccountValidationDue -> cloud status (+ AccountValidated when it changed)."""
    event = envelope.event
    assert isinstance(event, events.AccountDiscovered | events.AccountValidationDue)
    try:
        cloud_uuid = uuid.UUID(event.cloud_id)
    except ValueError:
        raise PermanentError(f"cloud_id {event.cloud_id!r} is not a UUID") from None
    with deps.sessions() as session:
        if repo.already_processed(session, envelope.id):
            return
        cloud = session.get(Cloud, cloud_uuid)
        if cloud is None or cloud.account_id != event.account_id:
            outcome = None  # removed (or replaced) since the message was sent: nothing to validate
        else:
            org = session.get(Organization, cloud.organization_id) if cloud.organization_id else None
            role, access_key = _role_of(deps, cloud, org)
            outcome = status.suspended_outcome(cloud.aws_state) or _assume(deps, role, access_key)
    with deps.sessions.begin() as session:
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return
        if outcome is None:
            return
        cloud = session.get(Cloud, cloud_uuid, with_for_update=True)
        if cloud is None:
            return
        cloud.validated_at = datetime.now(UTC)
        if (cloud.status, cloud.status_message) != outcome:
            cloud.status, cloud.status_message = outcome
            emit(
                session,
                events.AccountValidated(
                    None if cloud.organization_id is None else str(cloud.organization_id),
                    str(cloud.id),
                    cloud.account_id,
                    outcome[0],
                ),
                cause=envelope,
            )
    deps.after_commit()


def _assume(deps: Deps, role: RoleConfig, access_key: AccessKey | None) -> tuple[str, str]:
    try:
        deps.aws.assume_role_credentials(deps.aws.caller_sts(access_key), role, step="assume the member role")
    except AwsStepFailed as exc:
        if exc.code is None or exc.code in THROTTLE_CODES:
            raise RetryLater(str(exc)) from None
        return status.classify_assume_role_error(exc.code, exc.message, role.role_arn, role.duration_seconds)
    return status.ok_outcome(role.role_arn)
