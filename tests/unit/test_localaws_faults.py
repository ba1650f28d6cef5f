"""Fault injection and request accounting of the local AWS (in-process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws import BuiltOrg, faults, generate_org, local_aws

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def org() -> Iterator[BuiltOrg]:
    with local_aws(generate_org(30, seed=5)) as built:
        faults.reset_stats()
        yield built


def _client(service: str, config: Config | None = NO_RETRIES) -> Any:
    return boto3.client(service, region_name="us-east-1", config=config)


def _throttled_count(call: Any, n: int) -> tuple[int, set[tuple[str, str]]]:
    errors = 0
    seen: set[tuple[str, str]] = set()
    for _ in range(n):
        try:
            call()
        except ClientError as exc:
            errors += 1
            seen.add((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
    return errors, seen


def test_every_request_is_counted(org: BuiltOrg) -> None:
    organizations = _client("organizations")
    for _ in range(3):
        organizations.list_roots()
    organizations.list_accounts_for_parent(ParentId=org.root_id)
    _client("sts").get_caller_identity()
    assert faults.stats() == {
        "calls": {"organizations:ListRoots": 3, "organizations:ListAccountsForParent": 1, "sts:GetCallerIdentity": 1},
        "throttled": {},
    }
    faults.reset_stats()
    assert faults.stats() == {"calls": {}, "throttled": {}}


def test_throttling_rate_is_roughly_honoured_and_counted(org: BuiltOrg) -> None:
    faults.configure(throttle_rate=0.3, seed=42)
    organizations = _client("organizations")
    errors, seen = _throttled_count(organizations.list_roots, 400)
    assert 80 <= errors <= 160
    assert seen == {
        (
            "TooManyRequestsException",
            "AWS Organizations can't complete your request because another request is already in progress. "
            "Try again later.",
        )
    }
    sts_errors, sts_seen = _throttled_count(_client("sts").get_caller_identity, 200)
    assert 30 <= sts_errors <= 90
    assert sts_seen == {("Throttling", "Rate exceeded")}
    assert faults.stats() == {
        "calls": {"organizations:ListRoots": 400, "sts:GetCallerIdentity": 200},
        "throttled": {"organizations:ListRoots": errors, "sts:GetCallerIdentity": sts_errors},
    }
    # IAM is not throttled: 20 calls without retries all answer
    iam = _client("iam")
    assert [[r["RoleName"] for r in iam.list_roles()["Roles"]] for _ in range(20)] == [["OrgSyncOrgReader"]] * 20
    assert (faults.stats()["calls"]["iam:ListRoles"], faults.stats()["throttled"].get("iam:ListRoles")) == (20, None)


def test_throttling_is_deterministic_for_a_seed(org: BuiltOrg) -> None:
    organizations = _client("organizations")

    def pattern() -> list[bool]:
        outcome = []
        for _ in range(60):
            try:
                organizations.list_roots()
                outcome.append(True)
            except ClientError:
                outcome.append(False)
        return outcome

    faults.configure(throttle_rate=0.5, seed=7)
    first = pattern()
    faults.configure(throttle_rate=0.5, seed=7)
    assert pattern() == first
    faults.configure(throttle_rate=0.5, seed=8)
    assert pattern() != first


def test_botocore_retries_through_throttling(org: BuiltOrg) -> None:
    faults.configure(throttle_rate=0.3, seed=1)
    organizations = _client("organizations", Config(retries={"mode": "standard", "max_attempts": 10}))
    paginator = organizations.get_paginator("list_accounts")
    assert sum(len(p["Accounts"]) for p in paginator.paginate()) == 31
    # seed 1 at 30 % throttles the first call and lets the next two (the two pages) through
    assert faults.stats() == {
        "calls": {"organizations:ListAccounts": 3},
        "throttled": {"organizations:ListAccounts": 1},
    }


def test_fail_parent_breaks_only_that_parent(org: BuiltOrg) -> None:
    parent = org.accounts[5].parent_id if org.accounts[5].parent_id != org.root_id else org.accounts[6].parent_id
    faults.fail_parent(parent)
    organizations = _client("organizations", None)
    for call in (organizations.list_accounts_for_parent, organizations.list_organizational_units_for_parent):
        with pytest.raises(ClientError) as exc:
            call(ParentId=parent)
        assert exc.value.response["Error"] == {
            "Code": "AccessDeniedException",
            "Message": "You don't have permissions to access this resource.",
        }
    at_root = organizations.list_accounts_for_parent(ParentId=org.root_id)["Accounts"]
    assert sorted(a["Id"] for a in at_root) == sorted(a.account_id for a in org.accounts if a.parent_id == org.root_id)
    assert faults.stats()["calls"]["organizations:ListAccountsForParent"] == 2
    faults.fail_parent(org.root_id, code="ParentNotFoundException")
    with pytest.raises(ClientError) as exc:
        organizations.list_organizational_units_for_parent(ParentId=org.root_id)
    assert exc.value.response["Error"]["Code"] == "ParentNotFoundException"
    faults.clear()
    children = organizations.list_organizational_units_for_parent(ParentId=parent)["OrganizationalUnits"]
    assert sorted(u["Id"] for u in children) == sorted(
        unit for key, unit in org.units.items() if "/" in key and org.units[key.rsplit("/", 1)[0]] == parent
    )
    assert faults.settings() == {
        "latency_ms": 0.0,
        "throttle_rate": 0.0,
        "seed": 0,
        "rate_limits": {},
        "fail_parents": {},
    }


def test_latency_applies_to_every_request(org: BuiltOrg) -> None:
    faults.configure(latency_ms=50)
    started = time.perf_counter()
    _client("organizations").list_roots()
    _client("iam").list_roles()
    assert time.perf_counter() - started >= 0.1


def test_configure_validates() -> None:
    with pytest.raises(ValueError):
        faults.configure(throttle_rate=1.5)
    with pytest.raises(ValueError):
        faults.configure(latency_ms=-1)
