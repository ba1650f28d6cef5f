"""IAM's policy simulator is only a second opinion: whatever way SimulatePrincipalPolicy fails (an AWS error, a
connection error, an answer botocore cannot parse) becomes a note, and the probes' verdict stands."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError

from aws.permissions import check_management_role
from domain.permissions import ALLOWED, DENIED, REQUIRED_ACTIONS

ROLE_ARN = "arn:aws:iam::111111111111:role/OrgSyncReader"
MANAGEMENT_ACCOUNT = "111111111111"
LIST_ROOTS = "organizations:ListRoots"


def _note(cause: str) -> str:
    return f"IAM's policy simulator was not available ({cause}); only probe calls were used"


class FakeOrganizations:
    """Answers every probe call; `denied` names the operations that answer AccessDeniedException."""

    def __init__(self, denied: tuple[str, ...] = ()) -> None:
        self.denied = denied

    def _call(self, operation: str, response: dict[str, Any]) -> dict[str, Any]:
        if operation in self.denied:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, operation)
        return response

    def describe_organization(self) -> dict[str, Any]:
        return self._call("DescribeOrganization", {"Organization": {"Id": "o-abc"}})

    def list_roots(self, **_: Any) -> dict[str, Any]:
        return self._call("ListRoots", {"Roots": [{"Id": "r-ab12"}]})

    def list_organizational_units_for_parent(self, **_: Any) -> dict[str, Any]:
        return self._call("ListOrganizationalUnitsForParent", {"OrganizationalUnits": []})

    def list_accounts_for_parent(self, **_: Any) -> dict[str, Any]:
        return self._call("ListAccountsForParent", {"Accounts": []})

    def list_tags_for_resource(self, **_: Any) -> dict[str, Any]:
        return self._call("ListTagsForResource", {"Tags": []})

    def list_policies(self, **_: Any) -> dict[str, Any]:
        return self._call("ListPolicies", {"Policies": [{"Id": "p-FullAWSAccess"}]})

    def describe_policy(self, **_: Any) -> dict[str, Any]:
        return self._call("DescribePolicy", {"Policy": {"PolicySummary": {"Name": "FullAWSAccess"}, "Content": "{}"}})

    def list_targets_for_policy(self, **_: Any) -> dict[str, Any]:
        return self._call("ListTargetsForPolicy", {"Targets": []})


class _NotXml500(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"upstream exploded"
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def iam_answering_non_xml_500() -> Iterator[Any]:
    """A real botocore IAM client whose endpoint answers every call with a plain-text 500."""
    server = HTTPServer(("127.0.0.1", 0), _NotXml500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield boto3.client(
            "iam",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="not-a-secret",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
    finally:
        server.shutdown()
        server.server_close()


def test_response_parser_error_is_not_a_botocore_error(iam_answering_non_xml_500: Any) -> None:
    """Why catching BotoCoreError was not enough."""
    with pytest.raises(ResponseParserError):
        iam_answering_non_xml_500.simulate_principal_policy(PolicySourceArn=ROLE_ARN, ActionNames=[LIST_ROOTS])


def test_a_simulator_answering_non_xml_becomes_a_note_and_the_probes_decide(iam_answering_non_xml_500: Any) -> None:
    report = check_management_role(FakeOrganizations(), iam_answering_non_xml_500, ROLE_ARN, MANAGEMENT_ACCOUNT)
    assert (report.ok, report.errors, report.warnings, report.notes) == (
        True,
        (),
        (),
        (_note("ResponseParserError"),),
    )
    assert (dict(report.probes), dict(report.simulator)) == (dict.fromkeys(REQUIRED_ACTIONS, ALLOWED), {})


def test_a_denied_probe_still_fails_the_check_when_the_simulator_cannot_be_read(
    iam_answering_non_xml_500: Any,
) -> None:
    report = check_management_role(
        FakeOrganizations(denied=("ListRoots",)), iam_answering_non_xml_500, ROLE_ARN, MANAGEMENT_ACCOUNT
    )
    assert (report.ok, report.errors, report.notes) == (
        False,
        (f"the management role is not allowed {LIST_ROOTS} (the probe call was denied)",),
        (_note("ResponseParserError"),),
    )
    assert report.probes[LIST_ROOTS] == DENIED


class _Iam:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def simulate_principal_policy(self, **_: Any) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(
    ("outcome", "cause"),
    [
        (ResponseParserError("Unable to parse response, invalid XML received"), "ResponseParserError"),
        (EndpointConnectionError(endpoint_url="https://iam.amazonaws.com/"), "EndpointConnectionError"),
        (ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SimulatePrincipalPolicy"), "AccessDenied"),
        ({"EvaluationResults": [{"EvalActionName": LIST_ROOTS}]}, "KeyError"),  # a result without its decision
        (None, "AttributeError"),
    ],
)
def test_every_failure_of_the_simulator_is_a_note(outcome: Any, cause: str) -> None:
    report = check_management_role(FakeOrganizations(), _Iam(outcome), ROLE_ARN, MANAGEMENT_ACCOUNT)
    assert (report.ok, report.errors, report.warnings, report.notes, dict(report.simulator)) == (
        True,
        (),
        (),
        (_note(cause),),
        {},
    )
