"""`OrganizationsReader.account_tags` turns botocore's errors into domain errors, so that the tagging
worker decides on those alone: an account that left is skipped, a refusal fails the refresh with the
code, anything else is retried later. And a failed AssumeRole is worth retrying only when throttled or
unanswered."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from aws.organizations import OrganizationsReader
from aws.session import is_transient
from domain.errors import AccountNotInOrganization, AwsStepFailed, RetryLater


class TagClient:
    """list_tags_for_resource answering pages, or raising one error."""

    def __init__(self, pages: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
        self.pages = pages or []
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def list_tags_for_resource(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        return self.pages[len(self.calls) - 1]


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "no"}}, "ListTagsForResource")


def test_account_tags_reads_every_page():
    client = TagClient(
        [{"Tags": [{"Key": "team", "Value": "a"}], "NextToken": "t1"}, {"Tags": [{"Key": "env", "Value": "prod"}]}]
    )
    assert OrganizationsReader(client).account_tags("111111111111") == {"team": "a", "env": "prod"}
    assert client.calls == [{"ResourceId": "111111111111"}, {"ResourceId": "111111111111", "NextToken": "t1"}]


@pytest.mark.parametrize("code", ["AccountNotFoundException", "TargetNotFoundException"])
def test_an_account_not_in_the_organization_is_a_domain_error_naming_it(code):
    with pytest.raises(AccountNotInOrganization) as caught:
        OrganizationsReader(TagClient(error=client_error(code))).account_tags("111111111111")
    assert (caught.value.account_id, str(caught.value)) == (
        "111111111111",
        "account 111111111111 is not in the organization",
    )


@pytest.mark.parametrize("code", ["AccessDeniedException", "AccessDenied"])
def test_a_refusal_is_a_failed_step_with_the_code(code):
    with pytest.raises(AwsStepFailed) as caught:
        OrganizationsReader(TagClient(error=client_error(code))).account_tags("111111111111")
    failed = caught.value
    assert (failed.step, failed.message, failed.code) == (
        "read account tags",
        f"ListTagsForResource refused: {code}",
        code,
    )
    assert not isinstance(failed, RetryLater)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (client_error("TooManyRequestsException"), "reading tags failed: TooManyRequestsException"),
        (client_error("ServiceException"), "reading tags failed: ServiceException"),
        (EndpointConnectionError(endpoint_url="https://organizations"), "reading tags failed: EndpointConnectionError"),
    ],
)
def test_anything_else_is_retried_later(error, message):
    with pytest.raises(RetryLater) as caught:
        OrganizationsReader(TagClient(error=error)).account_tags("111111111111")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("code", "transient"),
    [(None, True), ("Throttling", True), ("RequestLimitExceeded", True), ("AccessDenied", False), ("X", False)],
)
def test_a_failed_step_is_transient_when_throttled_or_unanswered(code, transient):
    assert is_transient(AwsStepFailed("assume the member role", "refused", code=code)) is transient
