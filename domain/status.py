"""A cloud's harvest status: the fixed set of values, and how an AssumeRole outcome maps onto them.

AWS answers AccessDenied both when the role does not exist and when its trust policy refuses the
caller or the external id, on purpose (so that roles cannot be probed from outside). orgsync cannot
tell those apart either, so they share one status whose message lists what to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .tree import SUSPENDED_STATES


class CloudStatus(StrEnum):
    """A cloud's harvest status, as stored and shown."""

    PENDING = "pending"
    OK = "ok"
    ASSUME_ROLE_DENIED = "assume_role_denied"
    SCP_DENIED = "scp_denied"
    DURATION_EXCEEDED = "duration_exceeded"
    ACCOUNT_SUSPENDED = "account_suspended"
    REGION_DISABLED = "sts_region_disabled"
    AWS_ERROR = "aws_error"
    CREDENTIALS_UNREADABLE = "credentials_unreadable"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    CloudStatus.PENDING: "not validated yet",
    CloudStatus.OK: "the member role was assumed",
    CloudStatus.ASSUME_ROLE_DENIED: "AssumeRole refused: role missing, trust policy or external id",
    CloudStatus.SCP_DENIED: "AssumeRole blocked by a service control policy",
    CloudStatus.DURATION_EXCEEDED: "session duration above the role's maximum",
    CloudStatus.ACCOUNT_SUSPENDED: "the account is suspended or closing in AWS",
    CloudStatus.REGION_DISABLED: "STS is not activated in the region used",
    CloudStatus.AWS_ERROR: "another AWS error",
    CloudStatus.CREDENTIALS_UNREADABLE: (
        "the stored credentials cannot be decrypted (tampered, copied or wrong key ring)"
    ),
}


class SyncStatus(StrEnum):
    """How an organization sync ended."""

    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # the walk was incomplete: nothing removed
    FAILED = "failed"


class MessageOutcome(StrEnum):
    """What `processed_messages` records of a handled message."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """A validation's result: the cloud's new status and what the user should know or do."""

    status: CloudStatus
    message: str


def suspended_outcome(aws_state: str | None) -> Outcome | None:
    """Suspended accounts are not asked to assume anything: AWS would refuse every call."""
    if aws_state in SUSPENDED_STATES:
        return Outcome(
            CloudStatus.ACCOUNT_SUSPENDED,
            f"the account is {aws_state} in AWS Organizations and cannot be harvested; reinstate it, or turn on "
            "auto-remove suspended for its organization",
        )
    return None


def ok_outcome(role_arn: str) -> Outcome:
    return Outcome(CloudStatus.OK, f"assumed {role_arn}")


def classify_assume_role_error(code: str | None, message: str, role_arn: str, duration: int) -> Outcome:
    """The status and what the user should do for a refused AssumeRole of `role_arn`."""
    lowered = message.lower()
    if code in ("AccessDenied", "AccessDeniedException") and "service control policy" in lowered:
        return Outcome(
            CloudStatus.SCP_DENIED,
            f"a service control policy denies sts:AssumeRole on {role_arn}; allow it for orgsync's caller in the SCPs "
            "that apply to the caller's or the member's account",
        )
    if code in ("AccessDenied", "AccessDeniedException"):
        return Outcome(
            CloudStatus.ASSUME_ROLE_DENIED,
            f"AWS refused AssumeRole on {role_arn}. Check that the role exists in the account with exactly this name "
            "and path, that its trust policy trusts orgsync's caller identity, and that its sts:ExternalId condition "
            "matches the member external id configured for the organization",
        )
    if code == "ValidationError" and "durationseconds" in lowered:
        return Outcome(
            CloudStatus.DURATION_EXCEEDED,
            f"the session duration {duration}s is above the maximum session duration of {role_arn}; raise the "
            "role's maximum session duration or lower the member session duration of the organization",
        )
    if code == "RegionDisabledException":
        return Outcome(
            CloudStatus.REGION_DISABLED,
            f"AWS refused AssumeRole on {role_arn} because STS is not active in a region it involves; in the account "
            "of orgsync's caller identity, open IAM → Account settings → Security Token Service (STS) and make the "
            "session tokens of the Global endpoint valid in all AWS Regions (AWS's guide: \"Managing AWS STS in an "
            'AWS Region"), or activate the region there',
        )
    return Outcome(CloudStatus.AWS_ERROR, f"AssumeRole on {role_arn} failed: {code or 'error'}: {message}".strip())
