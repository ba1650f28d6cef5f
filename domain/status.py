"""A cloud's harvest status: the fixed set of values, and how an AssumeRole outcome maps onto them.

AWS answers AccessDenied both when the role does not exist and when its trust policy refuses the
caller or the external id, on purpose (so that roles cannot be probed from outside). orgsync cannot
tell those apart either, so they share one status whose message lists what to check.
"""

from __future__ import annotations

from .tree import SUSPENDED_STATES

PENDING = "pending"
OK = "ok"
ASSUME_ROLE_DENIED = "assume_role_denied"
SCP_DENIED = "scp_denied"
DURATION_EXCEEDED = "duration_exceeded"
ACCOUNT_SUSPENDED = "account_suspended"
REGION_DISABLED = "sts_region_disabled"
AWS_ERROR = "aws_error"
CREDENTIALS_UNREADABLE = "credentials_unreadable"

STATUSES = {
    PENDING: "not validated yet",
    OK: "the member role was assumed",
    ASSUME_ROLE_DENIED: "AssumeRole refused: role missing, trust policy or external id",
    SCP_DENIED: "AssumeRole blocked by a service control policy",
    DURATION_EXCEEDED: "session duration above the role's maximum",
    ACCOUNT_SUSPENDED: "the account is suspended or closing in AWS",
    REGION_DISABLED: "STS is not activated in the region used",
    AWS_ERROR: "another AWS error",
    CREDENTIALS_UNREADABLE: "the stored credentials cannot be decrypted (tampered, copied or wrong key ring)",
}


def suspended_outcome(aws_state: str | None) -> tuple[str, str] | None:
    """Suspended accounts are not asked to assume anything: AWS would refuse every call."""
    if aws_state in SUSPENDED_STATES:
        return (
            ACCOUNT_SUSPENDED,
            f"the account is {aws_state} in AWS Organizations and cannot be harvested; reinstate it, or turn on "
            "auto-remove suspended for its organization",
        )
    return None


def ok_outcome(role_arn: str) -> tuple[str, str]:
    return OK, f"assumed {role_arn}"


def classify_assume_role_error(code: str | None, message: str, role_arn: str, duration: int) -> tuple[str, str]:
    """(status, what the user should do) for a refused AssumeRole of `role_arn`."""
    lowered = message.lower()
    if code in ("AccessDenied", "AccessDeniedException") and "service control policy" in lowered:
        return (
            SCP_DENIED,
            f"a service control policy denies sts:AssumeRole on {role_arn}; allow it for orgsync's caller in the SCPs "
            "that apply to the caller's or the member's account",
        )
    if code in ("AccessDenied", "AccessDeniedException"):
        return (
            ASSUME_ROLE_DENIED,
            f"AWS refused AssumeRole on {role_arn}. Check that the role exists in the account with exactly this name "
            "and path, that its trust policy trusts orgsync's caller identity, and that its sts:ExternalId condition "
            "matches the member external id configured for the organization",
        )
    if code == "ValidationError" and "durationseconds" in lowered:
        return (
            DURATION_EXCEEDED,
            f"the session duration {duration}s is above the maximum session duration of {role_arn}; raise the "
            "role's maximum session duration or lower the member session duration of the organization",
        )
    if code == "RegionDisabledException":
        return (
            REGION_DISABLED,
            "STS is not activated in this region for the account; activate it in the account's IAM settings or use "
            "the global STS endpoint",
        )
    return AWS_ERROR, f"AssumeRole on {role_arn} failed: {code or 'error'}: {message}".strip()
