"""Live updates end to end: changes made in the local AWS (moto, with its CloudTrail-to-SQS trail), read from
the org's SQS queue by the events listener, applied by the handlers through the outbox and the in-process
broker into Postgres. After each kind of change the inventory is what AWS says, and a full sync then finds
nothing to correct; with duplicated, late and reordered events too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from domain.config import OrgRegistration
from localaws import trail
from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from orgsync import services
from orgsync.bootstrap import Runtime
from orgsync.listener import Counts, Listener
from storage import listings
from storage import repository as repo

from ..support.runtime import clouds_by_account, registration, sync
from .conftest import RuntimeFactory


@pytest.fixture
def aws() -> Iterator[BuiltOrg]:
    with local_aws(generate_org(24, seed=17, suspended=1)) as org:
        yield org


@pytest.fixture
def queue_url(aws: BuiltOrg) -> Iterator[str]:
    url = str(boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="org-events")["QueueUrl"])
    yield url
    trail.reset()


@pytest.fixture
def live(make_runtime: RuntimeFactory, aws: BuiltOrg, queue_url: str) -> tuple[Runtime, Listener, uuid.UUID]:
    """An org registered with its events queue and synced once; the trail on from then."""
    rt = make_runtime()
    base = registration(aws)
    registered = services.register_org(
        rt, OrgRegistration(base.nickname, base.credentials, base.filters, events_queue_url=queue_url)
    )
    assert services.wait_for(rt, registered.request_id, timeout=60).ok
    trail.configure(queue_url)
    return rt, Listener(rt, wait_seconds=0, delete_within=0), registered.org_id


def drain(rt: Runtime, listener: Listener) -> Counts:
    """Read the queue until it is empty, then wait until every message it caused was handled."""
    trail.flush()
    total = Counts()
    (source,) = listener.sources()
    while (counts := listener.poll(source, wait_seconds=0)).received:
        total.add(counts)
        trail.flush()
    deadline = time.monotonic() + 60
    while _pending(rt):
        assert time.monotonic() < deadline, "the updates were not all handled within 60 s"
        time.sleep(0.05)
    return total


def _pending(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(
            s.execute(
                text(
                    "SELECT count(*) FROM outbox o WHERE o.actor_name IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id)"
                )
            ).scalar_one()
        )


def inventory(rt: Runtime) -> dict[str, tuple[Any, ...]]:
    """Every stored account: (name, state, path, status, managed, badges)."""
    return {
        account: (c["name"], c["aws_state"], c["org_path"], c["managed"], c["badges"])
        for account, c in clouds_by_account(rt).items()
    }


def assert_a_full_sync_corrects_nothing(rt: Runtime, org_id: uuid.UUID) -> None:
    before = inventory(rt)
    result = sync(rt, org_id)
    assert result.ok, result
    with rt.reading() as conn:
        run = listings.latest_sync_run(conn, org_id)
    assert run is not None
    assert (run.added, run.updated, run.removed) == (0, 0, 0)
    assert run.drift == {"added": 0, "updated": 0, "removed": 0, "units": 0, "policies": 0}  # nothing missed
    assert inventory(rt) == before


def organizations() -> Any:
    return boto3.client("organizations", region_name="us-east-1")


def test_accounts_moved_tagged_created_closed_and_removed_show_at_once(live, aws: BuiltOrg):
    rt, listener, org_id = live
    org = organizations()
    root = aws.root_id
    members = [a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE"]
    moved, tagged, closed, removed = members[:4]

    unit = org.create_organizational_unit(ParentId=root, Name="Live")["OrganizationalUnit"]["Id"]
    org.move_account(AccountId=moved.account_id, SourceParentId=moved.parent_id, DestinationParentId=unit)
    org.tag_resource(ResourceId=tagged.account_id, Tags=[{"Key": "team", "Value": "live-updates"}])
    created = org.create_account(AccountName="fresh", Email="fresh@example.com")["CreateAccountStatus"]["AccountId"]
    org.close_account(AccountId=closed.account_id)
    org.remove_account_from_organization(AccountId=removed.account_id)

    counts = drain(rt, listener)

    stored = clouds_by_account(rt)
    assert stored[moved.account_id]["org_path"] == "Root/Live"
    assert stored[moved.account_id]["badges"]["system.cloud_org_path"] == "Root/Live"
    assert stored[tagged.account_id]["badges"]["team"] == "live-updates"
    assert (stored[created]["name"], stored[created]["org_path"], stored[created]["managed"]) == ("fresh", "Root", True)
    assert stored[created]["status"] != "pending"  # validated
    assert stored[closed.account_id]["aws_state"] in ("SUSPENDED", "PENDING_CLOSURE", "CLOSED")
    assert removed.account_id not in stored
    assert counts.unreadable == 0 and counts.deleted == counts.received
    assert_a_full_sync_corrects_nothing(rt, org_id)


def test_an_ou_renamed_rewrites_the_paths_below_it_without_asking_aws_per_account(live, aws: BuiltOrg):
    rt, listener, org_id = live
    deep = max(aws.accounts, key=lambda a: len(a.ou_path_ids))
    renamed_ou = deep.ou_path_ids[2]
    below = [a for a in aws.accounts if renamed_ou in a.ou_path_ids]
    organizations().update_organizational_unit(OrganizationalUnitId=renamed_ou, Name="Renamed")

    drain(rt, listener)

    stored = clouds_by_account(rt)
    for account in below:
        names = list(account.ou_path_names)
        names[2] = "Renamed"
        assert stored[account.account_id]["org_path"] == "/".join(names)
        assert stored[account.account_id]["badges"]["system.cloud_org_path"] == "/".join(names)
    assert_a_full_sync_corrects_nothing(rt, org_id)


def test_renames_handled_together_do_not_undo_each_other(live, aws: BuiltOrg):
    rt, listener, org_id = live
    deep = max(aws.accounts, key=lambda a: len(a.ou_path_ids))
    chain = deep.ou_path_ids[1:]  # every OU above the deepest account, outermost first
    org = organizations()
    for i, unit in enumerate(chain):
        org.update_organizational_unit(OrganizationalUnitId=unit, Name=f"R{i}")

    drain(rt, listener)

    renamed = "/".join(["Root", *(f"R{i}" for i in range(len(chain)))])
    assert clouds_by_account(rt)[deep.account_id]["org_path"] == renamed
    with rt.sessions() as s:
        paths = dict(s.execute(text("SELECT id, path FROM org_units WHERE id = ANY(:ids)"), {"ids": chain}).all())
    assert paths[chain[-1]] == renamed
    assert_a_full_sync_corrects_nothing(rt, org_id)


def test_duplicated_late_and_reordered_events_end_as_a_full_sync_does(live, aws: BuiltOrg, queue_url):
    rt, listener, org_id = live
    trail.configure(queue_url, duplicate_rate=0.5, reorder_window=4, delay_ms=20, seed=5)
    org = organizations()
    members = [a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE"]
    unit = org.create_organizational_unit(ParentId=aws.root_id, Name="Shuffled")["OrganizationalUnit"]["Id"]
    for i, account in enumerate(members[:6]):
        org.move_account(AccountId=account.account_id, SourceParentId=account.parent_id, DestinationParentId=unit)
        org.tag_resource(ResourceId=account.account_id, Tags=[{"Key": "wave", "Value": str(i)}])
    org.move_account(AccountId=members[0].account_id, SourceParentId=unit, DestinationParentId=aws.root_id)
    org.update_organizational_unit(OrganizationalUnitId=unit, Name="Shuffled2")

    counts = drain(rt, listener)

    assert counts.duplicates > 0  # some AWS events arrived twice and were written once
    stored = clouds_by_account(rt)
    assert stored[members[0].account_id]["org_path"] == "Root"
    assert {stored[a.account_id]["org_path"] for a in members[1:6]} == {"Root/Shuffled2"}
    assert {a.account_id: stored[a.account_id]["badges"]["wave"] for a in members[:6]} == {
        a.account_id: str(i) for i, a in enumerate(members[:6])
    }
    assert_a_full_sync_corrects_nothing(rt, org_id)


def test_a_full_sync_counts_what_the_events_missed(live, aws: BuiltOrg):
    rt, _, org_id = live
    trail.configure(None)  # AWS changes, and no event says so
    member = next(a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE")
    unit = organizations().create_organizational_unit(ParentId=aws.root_id, Name="Unseen")["OrganizationalUnit"]["Id"]
    organizations().move_account(AccountId=member.account_id, SourceParentId=member.parent_id, DestinationParentId=unit)

    assert sync(rt, org_id).ok
    with rt.reading() as conn:
        run = listings.latest_sync_run(conn, org_id)
    # the account's move, the new OU, and the default SCP AWS attached to it
    assert run is not None and run.drift == {"added": 0, "updated": 1, "removed": 0, "units": 1, "policies": 1}
    with rt.sessions() as s:
        assert repo.drift_totals(s) == {"added": 0, "policies": 1, "removed": 0, "units": 1, "updated": 1}
    assert clouds_by_account(rt)[member.account_id]["org_path"] == "Root/Unseen"


def test_a_policy_created_attached_updated_and_detached_is_read_alone(live, aws: BuiltOrg):
    rt, listener, org_id = live
    org = organizations()
    member = next(a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE")
    deny = '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}'
    policy = org.create_policy(Content=deny, Description="no s3", Name="NoS3", Type="SERVICE_CONTROL_POLICY")
    policy_id = policy["Policy"]["PolicySummary"]["Id"]
    org.attach_policy(PolicyId=policy_id, TargetId=member.account_id)
    drain(rt, listener)

    with rt.sessions() as s:
        policies, targets = repo_scps(s, org_id)
    assert policies[policy_id] == ("NoS3", deny)
    assert {(t.policy_id, t.target_id) for t in targets if t.policy_id == policy_id} == {(policy_id, member.account_id)}

    allow = deny.replace("Deny", "Allow")
    org.update_policy(PolicyId=policy_id, Content=allow)
    org.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
    drain(rt, listener)

    with rt.sessions() as s:
        policies, targets = repo_scps(s, org_id)
    assert policies[policy_id] == ("NoS3", allow)
    assert [t for t in targets if t.policy_id == policy_id] == []
    assert_a_full_sync_corrects_nothing(rt, org_id)


def repo_scps(session: Any, org_id: uuid.UUID) -> tuple[dict[str, tuple[str, str]], list[Any]]:
    policies, targets = listings.org_scps(listings.of_session(session), org_id)
    return {p.id: (p.name, p.content) for p in policies}, targets


def test_each_change_reads_from_aws_only_what_it_can_have_changed(live, aws: BuiltOrg):
    """AWS calls per change, exactly (the listener's SQS requests apart): a stored account's move only its
    parent, its closing or removal only itself, a tag change only its tags, a rename only the OU, an SCP
    attached only that policy and that target's attachments (the management role sits in the management
    account, which SCPs never restrict: its permissions are judged again without a call). A new account
    is read whole, with its attached SCPs and tags, and validated (the member role assumed once)."""
    rt, listener, org_id = live
    org = organizations()
    members = [a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE"]
    moved, tagged, closed, removed, attached_to = members[:5]
    renamed = next(a for a in aws.accounts if a.ou_path_ids[1:]).ou_path_ids[1]
    policy = org.create_policy(
        Content='{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}',
        Description="no s3",
        Name="NoS3",
        Type="SERVICE_CONTROL_POLICY",
    )["Policy"]["PolicySummary"]["Id"]
    drain(rt, listener)
    with rt.sessions() as s:
        report_before = s.execute(
            text("SELECT permission_report FROM organizations WHERE id = :id"), {"id": org_id}
        ).scalar_one()

    def calls_of(change: Any) -> dict[str, int]:
        before = dict(rt.aws.totals.calls)
        change()
        drain(rt, listener)
        after = rt.aws.totals.calls
        return {k: v - before.get(k, 0) for k, v in after.items() if not k.startswith("sqs:") and v != before.get(k, 0)}

    o = "organizations:"
    move = {"AccountId": moved.account_id, "SourceParentId": moved.parent_id, "DestinationParentId": aws.root_id}
    assert calls_of(lambda: org.move_account(**move)) == {o + "ListParents": 1}
    assert calls_of(lambda: org.tag_resource(ResourceId=tagged.account_id, Tags=[{"Key": "k", "Value": "v"}])) == {
        o + "ListTagsForResource": 1
    }
    assert calls_of(lambda: org.close_account(AccountId=closed.account_id)) == {o + "DescribeAccount": 1}
    assert calls_of(lambda: org.remove_account_from_organization(AccountId=removed.account_id)) == {
        o + "DescribeAccount": 1
    }
    assert calls_of(lambda: org.update_organizational_unit(OrganizationalUnitId=renamed, Name="Renamed")) == {
        o + "DescribeOrganizationalUnit": 1
    }
    assert calls_of(lambda: org.attach_policy(PolicyId=policy, TargetId=attached_to.account_id)) == {
        o + "DescribePolicy": 1,
        o + "ListPoliciesForTarget": 1,
    }
    created: list[str] = []
    assert calls_of(
        lambda: created.append(
            org.create_account(AccountName="fresh", Email="fresh@example.com")["CreateAccountStatus"]["AccountId"]
        )
    ) == {
        o + "DescribeAccount": 1,
        o + "ListParents": 1,
        o + "ListPoliciesForTarget": 1,
        o + "ListTagsForResource": 1,
        "sts:AssumeRole": 1,  # its validation
    }

    stored = clouds_by_account(rt)
    assert stored[moved.account_id]["org_path"] == "Root"
    assert stored[tagged.account_id]["badges"]["k"] == "v"
    assert stored[closed.account_id]["aws_state"] in ("SUSPENDED", "PENDING_CLOSURE", "CLOSED")
    assert removed.account_id not in stored
    assert stored[created[0]]["name"] == "fresh"
    with rt.sessions() as s:
        report_after = s.execute(
            text("SELECT permission_report FROM organizations WHERE id = :id"), {"id": org_id}
        ).scalar_one()
    assert report_after["probes"] == report_before["probes"] and report_after["errors"] == []
    assert_a_full_sync_corrects_nothing(rt, org_id)


def test_messages_read_are_deleted_together_and_all_of_them_when_the_listener_stops(live, aws: BuiltOrg, queue_url):
    rt, _, _ = live
    listener = Listener(rt, wait_seconds=0, delete_within=3600)
    (source,) = listener.sources()
    members = [a for a in aws.accounts if a.account_id != aws.management_account_id and a.state == "ACTIVE"]
    sqs = boto3.client("sqs", region_name="us-east-1")

    def tag(accounts: list[Any], value: str) -> None:
        for account in accounts:
            organizations().tag_resource(ResourceId=account.account_id, Tags=[{"Key": "wave", "Value": value}])
        trail.flush()

    def in_queue() -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
        return int(attributes[names[0]]), int(attributes[names[1]])

    tag(members[:3], "1")
    first = listener.poll(source)
    assert (first.received, first.emitted, first.deleted) == (3, 3, 0)
    assert in_queue() == (0, 3)  # written to the outbox, hidden, deleted with the next ones

    tag(members[3:10], "2")
    second = listener.poll(source)
    assert (second.received, second.deleted) == (7, 10)  # ten waiting: one request
    assert in_queue() == (0, 0)

    tag(members[10:11], "3")
    assert listener.poll(source).deleted == 0
    assert listener.flush(source) == 1  # as when `orgsync events` stops
    assert in_queue() == (0, 0)
    assert listener.counts.deleted == listener.counts.received == 11
