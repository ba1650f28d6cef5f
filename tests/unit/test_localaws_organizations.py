"""Organizations in the local AWS: the built org, AWS-like pagination, account State, mutations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localaws import (
    AccountSpec,
    BuiltOrg,
    OrgSpec,
    UnitSpec,
    build_org,
    generate_org,
    local_aws,
    set_account_state,
)


def _spec() -> OrgSpec:
    units = [UnitSpec("big", "Big", None), UnitSpec("many", "Many", None)]
    units += [UnitSpec(f"many/u{i:02d}", f"Unit{i:02d}", "many") for i in range(25)]
    accounts = [
        AccountSpec(
            account_id=f"{100000000000 + i:012d}",
            name=f"big-{i:04d}",
            email=f"big-{i}@example.com",
            parent_key="big",
            tags={"env": "prod", "n": str(i)},
        )
        for i in range(45)
    ]
    accounts.append(
        AccountSpec(
            account_id="200000000001",
            name="tagged",
            email="tagged@example.com",
            parent_key=None,
            tags={f"k{i:02d}": f"v{i}" for i in range(45)},
        )
    )
    accounts.append(
        AccountSpec(
            account_id="200000000002",
            name="legacy",
            email="legacy@example.com",
            parent_key="many/u03",
            state="SUSPENDED",
            legacy_status=True,
        )
    )
    accounts.append(
        AccountSpec(
            account_id="200000000003",
            name="closing",
            email="closing@example.com",
            parent_key="many/u03",
            state="PENDING_CLOSURE",
        )
    )
    return OrgSpec(units=units, accounts=accounts)


@pytest.fixture
def org() -> Iterator[BuiltOrg]:
    with local_aws(_spec()) as built:
        yield built


@pytest.fixture
def organizations(org: BuiltOrg) -> Any:
    return boto3.client("organizations", region_name="us-east-1")


def _pages(call: Any, key: str, **kwargs: Any) -> list[list[Any]]:
    pages: list[list[Any]] = []
    token = None
    while True:
        response = call(**kwargs, **({"NextToken": token} if token else {}))
        pages.append(response[key])
        token = response.get("NextToken")
        if not token:
            return pages


def test_built_org_matches_what_aws_reports(org: BuiltOrg, organizations: Any) -> None:
    described = organizations.describe_organization()["Organization"]
    assert described["Id"] == org.org_id
    assert described["FeatureSet"] == "ALL"
    assert described["MasterAccountId"] == "123456789012"
    roots = organizations.list_roots()["Roots"]
    assert [r["Id"] for r in roots] == [org.root_id]
    assert roots[0]["Name"] == "Root"
    legacy = org.account("200000000002")
    assert legacy.ou_path_names == ["Root", "Many", "Unit03"]
    assert legacy.ou_path_ids == [org.root_id, org.units["many"], org.units["many/u03"]]
    assert (
        organizations.describe_organizational_unit(OrganizationalUnitId=org.units["many/u03"])["OrganizationalUnit"][
            "Name"
        ]
        == "Unit03"
    )
    management = org.account("123456789012")
    assert management.name == "management"
    assert management.ou_path_names == ["Root"]
    assert len(org.accounts) == 49
    assert BuiltOrg.from_json(org.to_json()) == org


def test_forty_five_accounts_under_one_parent_take_three_pages(org: BuiltOrg, organizations: Any) -> None:
    pages = _pages(organizations.list_accounts_for_parent, "Accounts", ParentId=org.units["big"], MaxResults=20)
    assert [len(p) for p in pages] == [20, 20, 5]
    ids = [a["Id"] for p in pages for a in p]
    assert ids == sorted(f"{100000000000 + i:012d}" for i in range(45))
    without_max = _pages(organizations.list_accounts_for_parent, "Accounts", ParentId=org.units["big"])
    assert [len(p) for p in without_max] == [20, 20, 5]
    small = _pages(organizations.list_accounts_for_parent, "Accounts", ParentId=org.units["big"], MaxResults=7)
    assert [len(p) for p in small] == [7, 7, 7, 7, 7, 7, 3]
    paginator = organizations.get_paginator("list_accounts_for_parent")
    assert sum(len(p["Accounts"]) for p in paginator.paginate(ParentId=org.units["big"])) == 45


def test_other_listings_paginate(org: BuiltOrg, organizations: Any) -> None:
    ous = _pages(organizations.list_organizational_units_for_parent, "OrganizationalUnits", ParentId=org.units["many"])
    assert [len(p) for p in ous] == [20, 5]
    children = _pages(
        organizations.list_children, "Children", ParentId=org.units["many"], ChildType="ORGANIZATIONAL_UNIT"
    )
    assert [len(p) for p in children] == [20, 5]
    assert children[0][0]["Type"] == "ORGANIZATIONAL_UNIT"
    account_children = _pages(
        organizations.list_children, "Children", ParentId=org.units["big"], ChildType="ACCOUNT", MaxResults=20
    )
    assert [len(p) for p in account_children] == [20, 20, 5]
    accounts = _pages(organizations.list_accounts, "Accounts")
    assert [len(p) for p in accounts] == [20, 20, 9]
    tags = _pages(organizations.list_tags_for_resource, "Tags", ResourceId="200000000001")
    assert [len(p) for p in tags] == [20, 20, 5]
    assert tags[0][0] == {"Key": "k00", "Value": "v0"}
    targets = _pages(organizations.list_targets_for_policy, "Targets", PolicyId="p-FullAWSAccess", MaxResults=20)
    assert sum(len(p) for p in targets) == 1 + 27 + 49
    assert [len(p) for p in targets][:3] == [20, 20, 20]
    policies = _pages(organizations.list_policies, "Policies", Filter="SERVICE_CONTROL_POLICY", MaxResults=1)
    assert [len(p) for p in policies] == [1, 1, 1]
    for_root = _pages(
        organizations.list_policies_for_target,
        "Policies",
        TargetId=org.root_id,
        Filter="SERVICE_CONTROL_POLICY",
        MaxResults=1,
    )
    assert sorted(p[0]["Name"] for p in for_root) == ["FullAWSAccess", "ProtectOrganizationsFromOthers"]
    assert organizations.list_roots(MaxResults=1)["Roots"][0]["Id"] == org.root_id


def test_bad_pagination_input_is_rejected_like_aws(org: BuiltOrg, organizations: Any) -> None:
    with pytest.raises(ClientError) as exc:
        organizations.list_accounts_for_parent(ParentId=org.units["big"], MaxResults=21)
    assert exc.value.response["Error"]["Code"] == "InvalidInputException"
    with pytest.raises(ClientError) as exc:
        organizations.list_accounts_for_parent(ParentId=org.units["big"], NextToken="garbage")
    assert exc.value.response["Error"]["Code"] == "InvalidInputException"
    token = organizations.list_accounts_for_parent(ParentId=org.units["big"])["NextToken"]
    with pytest.raises(ClientError) as exc:
        organizations.list_accounts_for_parent(ParentId=org.units["many"], NextToken=token)
    assert exc.value.response["Error"]["Code"] == "InvalidInputException"


def test_state_is_reported_and_legacy_accounts_only_have_status(org: BuiltOrg, organizations: Any) -> None:
    closing = organizations.describe_account(AccountId="200000000003")["Account"]
    assert (closing["State"], closing["Status"]) == ("PENDING_CLOSURE", "PENDING_CLOSURE")
    legacy = organizations.describe_account(AccountId="200000000002")["Account"]
    assert legacy["Status"] == "SUSPENDED"
    assert "State" not in legacy
    listed = organizations.list_accounts_for_parent(ParentId=org.units["many/u03"])["Accounts"]
    assert {a["Id"]: a.get("State") for a in listed} == {"200000000002": None, "200000000003": "PENDING_CLOSURE"}
    everyone = [a for p in _pages(organizations.list_accounts, "Accounts") for a in p]
    assert sum("State" not in a for a in everyone) == 1

    set_account_state("100000000007", "CLOSED")
    closed = organizations.describe_account(AccountId="100000000007")["Account"]
    assert (closed["State"], closed["Status"]) == ("CLOSED", "SUSPENDED")
    set_account_state("100000000007", "PENDING_ACTIVATION", legacy_status=True)
    pending = organizations.describe_account(AccountId="100000000007")["Account"]
    assert pending["Status"] == "ACTIVE"
    assert "State" not in pending
    with pytest.raises(ValueError):
        set_account_state("100000000007", "GONE")
    with pytest.raises(KeyError):
        set_account_state("999999999999", "ACTIVE")


def test_accounts_can_be_changed_with_ordinary_calls(org: BuiltOrg, organizations: Any) -> None:
    account_id = "100000000001"
    organizations.move_account(
        AccountId=account_id, SourceParentId=org.units["big"], DestinationParentId=org.units["many/u07"]
    )
    assert organizations.list_parents(ChildId=account_id)["Parents"] == [
        {"Id": org.units["many/u07"], "Type": "ORGANIZATIONAL_UNIT"}
    ]
    moved = organizations.list_accounts_for_parent(ParentId=org.units["many/u07"])["Accounts"]
    assert [a["Id"] for a in moved] == [account_id]
    organizations.tag_resource(ResourceId=account_id, Tags=[{"Key": "owner", "Value": "alice"}])
    organizations.untag_resource(ResourceId=account_id, TagKeys=["env"])
    tags = organizations.list_tags_for_resource(ResourceId=account_id)["Tags"]
    assert tags == [{"Key": "n", "Value": "1"}, {"Key": "owner", "Value": "alice"}]
    organizations.remove_account_from_organization(AccountId=account_id)
    with pytest.raises(ClientError) as exc:
        organizations.describe_account(AccountId=account_id)
    assert exc.value.response["Error"]["Code"] == "AccountNotFoundException"
    assert sum(len(p) for p in _pages(organizations.list_accounts, "Accounts")) == 48
    created = organizations.create_account(AccountName="fresh", Email="fresh@example.com")["CreateAccountStatus"]
    assert created["State"] == "SUCCEEDED"
    organizations.close_account(AccountId="100000000002")
    assert organizations.describe_account(AccountId="100000000002")["Account"]["State"] == "SUSPENDED"


def test_build_twice_is_refused() -> None:
    with local_aws(generate_org(3)), pytest.raises(RuntimeError):
        build_org(generate_org(3))


def test_spec_validation() -> None:
    with local_aws():
        bad_parent = OrgSpec(units=[UnitSpec("a", "A", "nope")], accounts=[])
        with pytest.raises(ValueError, match="unknown parent"):
            build_org(bad_parent)
        duplicate = OrgSpec(
            units=[],
            accounts=[AccountSpec("123456789012", "clash", "c@example.com", None)],
        )
        with pytest.raises(ValueError, match="unique"):
            build_org(duplicate)


def test_targets_of_a_policy_are_the_ones_moto_lists_page_by_page(org: BuiltOrg, organizations: Any) -> None:
    from moto.organizations.models import OrganizationsBackend, organizations_backends

    from localaws.patches import _policy_for_targets

    backend = organizations_backends["123456789012"]["aws"]
    moto_list = OrganizationsBackend.list_targets_for_policy
    for policy_id in ["p-FullAWSAccess", "p-RCPFullAWSAccess", *org.policies.values()]:
        for size in (20, 3):
            pages = _pages(organizations.list_targets_for_policy, "Targets", PolicyId=policy_id, MaxResults=size)
            expected = sorted(moto_list(backend, PolicyId=policy_id)["Targets"], key=lambda t: t["TargetId"])
            assert [t for page in pages for t in page] == expected
            assert all(len(page) == size for page in pages[:-1])
    for policy_id, code in [("p-zzzzzzzz", "PolicyNotFoundException"), ("bogus", "InvalidInputException")]:
        with pytest.raises(ClientError) as exc:
            organizations.list_targets_for_policy(PolicyId=policy_id)
        assert exc.value.response["Error"]["Code"] == code
        with pytest.raises(Exception) as ours:
            _policy_for_targets(backend, policy_id)
        with pytest.raises(Exception) as moto:
            moto_list(backend, PolicyId=policy_id)
        assert (type(ours.value), str(ours.value)) == (type(moto.value), str(moto.value))
