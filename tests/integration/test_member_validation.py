"""Member-role validation on the local AWS: each status with its message, throttling absorbed,
re-validation on demand, and no secret anywhere in what orgsync stores, publishes or logs."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from sqlalchemy import select

from localaws import faults, set_member_role
from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from orgsync import services
from orgsync.views import cloud_detail
from storage import inventory
from storage.models import Organization, OutboxMessage, ProcessedMessage, SyncRun

from ..support.cli import run
from ..support.runtime import add_and_sync, clouds_by_account, expected_statuses, registration

MEMBER_EXTERNAL_ID = "member-ext-7f3a"
MANAGEMENT_EXTERNAL_ID = "mgmt-ext-91c2"


@pytest.fixture
def aws():
    spec = generate_org(24, seed=9, suspended=3, missing_role=2, wrong_external_id=2)
    with local_aws(spec, member_external_id=MEMBER_EXTERNAL_ID, management_external_id=MANAGEMENT_EXTERNAL_ID) as org:
        yield org


def statuses(rt) -> dict[str, str]:
    return {k: c["status"] for k, c in clouds_by_account(rt).items()}


def test_each_account_gets_the_status_of_its_member_role(rt, aws: BuiltOrg):
    add_and_sync(rt, aws)
    expected = expected_statuses(aws)
    assert statuses(rt) == expected
    assert sorted(expected.values()).count("assume_role_denied") == 4
    assert sorted(expected.values()).count("account_suspended") == 3
    clouds = clouds_by_account(rt)
    healthy = next(a for a in aws.accounts if expected[a.account_id] == "ok")
    missing = aws.accounts_with(member_role="missing")[0]
    suspended = next(a for a in aws.accounts if a.state == "SUSPENDED")
    assert clouds[healthy.account_id]["status_message"] == f"assumed {aws.member_role_arn(healthy.account_id)}"
    assert clouds[missing.account_id]["status_message"] == (
        f"AWS refused AssumeRole on {aws.member_role_arn(missing.account_id)}. Check that the role exists in the "
        "account with exactly this name and path, that its trust policy trusts orgsync's caller identity, and that "
        "its sts:ExternalId condition matches the member external id configured for the organization"
    )
    assert clouds[suspended.account_id]["status_message"] == (
        "the account is SUSPENDED in AWS Organizations and cannot be harvested; reinstate it, or turn on "
        "auto-remove suspended for its organization"
    )


def test_session_duration_above_the_role_maximum(rt, aws: BuiltOrg):
    reg = registration(aws)
    creds = reg.credentials
    longer = type(creds)(
        management=creds.management,
        member=type(creds.member)(creds.member.role_name, creds.member.session_name, 7200, creds.member.external_id),
    )
    registered = services.register_org(rt, type(reg)(reg.nickname, longer, reg.filters))
    assert services.wait_for(rt, registered.request_id, timeout=60).ok
    expected = {
        k: ("duration_exceeded" if v == "ok" and aws.account(k).member_role == "ok" else v)
        for k, v in expected_statuses(aws).items()
    }
    assert statuses(rt) == expected
    some = next(k for k, v in expected.items() if v == "duration_exceeded")
    assert clouds_by_account(rt)[some]["status_message"] == (
        f"the session duration 7200s is above the maximum session duration of {aws.member_role_arn(some)}; "
        "raise the role's maximum session duration or lower the member session duration of the organization"
    )


def test_throttling_on_a_share_of_calls_leaves_no_account_in_error(make_runtime, aws: BuiltOrg):
    # AWS throttling 30 % of all calls slows the adaptive rate to its floor; a floor of 10 calls/s keeps
    # this test quick (what is tested is that every throttle is retried, not how fast)
    rt = make_runtime(aws_max_attempts=12, aws_min_rate=10)
    faults.configure(throttle_rate=0.3, seed=4)
    faults.reset_stats()
    add_and_sync(rt, aws)
    server_side = faults.stats()
    faults.configure()
    assert statuses(rt) == expected_statuses(aws)
    throttled_by_aws = sum(server_side["throttled"].values())
    assert throttled_by_aws > 10  # the injection really happened...
    assert rt.aws.totals.total_throttles == throttled_by_aws  # ...and every throttle was absorbed by a retry


def test_cloud_validate_checks_again_on_demand(rt, aws: BuiltOrg, capsys, cli_env):
    add_and_sync(rt, aws)
    missing = aws.accounts_with(member_role="missing")[0]
    set_member_role(aws, missing.account_id, "ok")
    code, out, err = run(capsys, "cloud", "validate", missing.account_id, "--wait", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["accounts"] == 1
    assert statuses(rt)[missing.account_id] == "ok"
    code, out, _ = run(capsys, "cloud", "list", "--status", "assume_role_denied", "--json")
    assert {c["account_id"] for c in json.loads(out)} == {
        k for k, v in expected_statuses(aws).items() if v == "assume_role_denied"
    } - {missing.account_id}


def test_each_account_keeps_the_changes_of_its_status_newest_first(rt, aws: BuiltOrg, monkeypatch):
    add_and_sync(rt, aws)
    missing = aws.accounts_with(member_role="missing")[0]
    healthy = next(a for a in aws.accounts if expected_statuses(aws)[a.account_id] == "ok")

    def history(account_id: str) -> list[str]:
        with rt.reading() as conn:
            return [h["status"] for h in cloud_detail(conn, account_id)["status_history"]]  # type: ignore[index]

    def validate(account_id: str) -> None:
        request_id, _ = services.request_validation(rt, org_ref=None, account_ids=[account_id])
        assert services.wait_for(rt, request_id, timeout=60).ok

    assert (history(missing.account_id), history(healthy.account_id)) == (["assume_role_denied"], ["ok"])
    validate(healthy.account_id)  # the same outcome again: no change to note
    assert history(healthy.account_id) == ["ok"]
    set_member_role(aws, missing.account_id, "ok")
    validate(missing.account_id)
    assert history(missing.account_id) == ["ok", "assume_role_denied"]

    monkeypatch.setattr(inventory, "_RECORD", _record_statement(4))  # built at import: rebuilt keeping 4
    for n in range(5):
        set_member_role(aws, missing.account_id, "missing" if n % 2 == 0 else "ok")
        validate(missing.account_id)
    assert history(missing.account_id) == ["assume_role_denied", "ok", "assume_role_denied", "ok"]


def _record_statement(kept: int):
    from sqlalchemy import text

    return text(inventory._RECORD.text.replace(f"LIMIT {inventory.HISTORY_KEPT - 1}", f"LIMIT {kept - 1}"))


def test_no_secret_in_outputs_messages_or_logs(rt, aws: BuiltOrg, capsys, cli_env, caplog):
    caplog.set_level(logging.DEBUG)
    for library in ("botocore", "boto3", "urllib3"):  # quiet in every orgsync process (orgsync.logs)
        caplog.set_level(logging.WARNING, logger=library)
    add_and_sync(rt, aws)
    outputs = [
        run(capsys, "org", "show", "acme", "--json")[1],
        run(capsys, "org", "list", "--json")[1],
        run(capsys, "cloud", "list", "--json")[1],
    ]
    with rt.sessions() as s:
        envelopes = list(s.scalars(select(OutboxMessage.envelope)))
        errors = list(s.scalars(select(ProcessedMessage.error)))
        run_errors = list(s.scalars(select(SyncRun.error)))
        reports = list(s.scalars(select(Organization.permission_report)))
        ciphertexts = list(s.scalars(select(Organization.credentials)))
    stored = [json.dumps(e) for e in envelopes] + [str(e) for e in errors + run_errors]
    stored += [json.dumps(r) for r in reports]
    haystack = "\n".join([*outputs, *stored, caplog.text])
    for secret in (MEMBER_EXTERNAL_ID, MANAGEMENT_EXTERNAL_ID, aws.caller_secret_access_key):
        assert secret not in haystack
        assert all(secret.encode() not in blob for blob in ciphertexts)
    # the search covered every message the sync wrote and every record of one being handled
    n = len(aws.accounts)
    assert Counter(e["type"] for e in envelopes) == {
        "OrgSyncRequested": 1,
        "AccountDiscovered": n,
        "AccountValidationDue": 1,  # the one batch of all n accounts
        "AccountValidated": n,
        "OrgSyncCompleted": 1,
        "TagRefreshDue": 2,  # for the org, then for its one chunk of accounts
        "BadgeReconcileDue": 1,
    }
    assert (len(errors), len(run_errors), len(reports), len(ciphertexts)) == (1 + 1 + 2 + 1, 1, 1, 1)
