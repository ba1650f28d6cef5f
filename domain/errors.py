"""Errors the domain raises; the outer layers turn them into exit codes or dead letters.

Every message here is written for a person and never carries a secret.
"""

from __future__ import annotations


class OrgSyncError(Exception):
    """Base of every error orgsync raises on purpose."""


class InvalidInput(OrgSyncError):
    """A field of user input has the wrong format."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidFields(InvalidInput):
    """Several fields of one input have the wrong format; it reads as the first of them (one error line
    on the command line) and lists them all in `errors` (each field beside its error in a form)."""

    def __init__(self, errors: list[InvalidInput]) -> None:
        super().__init__(errors[0].field, errors[0].message)
        self.errors = tuple(errors)


class NotFound(OrgSyncError):
    """A referenced organization or cloud does not exist."""


class Conflict(OrgSyncError):
    """The change would break a uniqueness or ownership rule."""


class PermanentError(OrgSyncError):
    """Retrying cannot help: the message is dead-lettered at once."""


class MalformedMessage(PermanentError):
    """A message body that does not decode into a known event."""


class RetryLater(OrgSyncError):
    """A transient condition (AWS throttling after all retries, connection trouble): the message is
    retried with backoff, unlike a PermanentError."""


class AwsStepFailed(OrgSyncError):
    """An AWS call that a step depends on failed; `step` names it for the user."""

    def __init__(self, step: str, message: str, *, code: str | None = None, aws_message: str | None = None) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.code = code
        self.aws_message = message if aws_message is None else aws_message  # AWS's own words, when it answered


class AccountNotInOrganization(OrgSyncError):
    """AWS says the account is not (or no longer) in the organization that was asked about it."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is not in the organization")
        self.account_id = account_id
