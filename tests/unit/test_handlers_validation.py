"""validate_accounts on the in-memory unit of work: AssumeRole outcomes become statuses, and when not."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from domain.config import RoleConfig, Secret
from domain.errors import PermanentError, RetryLater
from domain.events import AccountDiscovered, AccountValidated, AccountValidationDue, Envelope, wrap
from domain.status import CloudStatus, MessageOutcome, classify_assume_role_error, suspended_outcome
from storage.inventory import OrgRecord
from storage.vault import CREDENTIALS_UNREADABLE, KeyRing, generate_key
from tests.support.fake_uow import (
    MEMBER_ROLE,
    SESSION,
    Assumed,
    CloudRow,
    ProcessedRow,
    World,
    cloud_role_blob,
    org_credentials,
)
from workers.validation import Validation, validate_accounts

ACTOR = "account_validation_due"
ACCOUNT = "222222222222"
MEMBER_ARN = f"arn:aws:iam::{ACCOUNT}:role/{MEMBER_ROLE}"
MEMBER = RoleConfig(MEMBER_ARN, SESSION, 1800, Secret("member-external-id"))
ACCESS_KEY_ID = "AKIAFAKEFAKEFAKE1234"


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def org(world: World) -> OrgRecord:
    return world.add_org(credentials=org_credentials(access_key=True))


@pytest.fixture
def cloud(world: World, org: OrgRecord) -> CloudRow:
    return world.add_cloud(ACCOUNT, org_id=org.id)


def validate(world: World, event: Validation, envelope: Envelope[Any] | None = None) -> Envelope[Any]:
    envelope = envelope or wrap(event)
    validate_accounts(world.deps, envelope, ACTOR)
    return envelope


def stored(world: World, cloud_id: uuid.UUID) -> tuple[CloudStatus, str | None]:
    cloud = world.uow.state.clouds[cloud_id]
    return cloud.status, cloud.status_message


@pytest.mark.parametrize(
    "event",
    [
        lambda org, cloud: AccountValidationDue((cloud.id,), org.id),
        lambda org, cloud: AccountDiscovered(org.id, cloud.id, ACCOUNT),  # as an earlier version queued them
    ],
    ids=["AccountValidationDue", "AccountDiscovered"],
)
def test_an_assumable_member_role_makes_the_cloud_ok(
    world: World, org: OrgRecord, cloud: CloudRow, event: Callable[[OrgRecord, CloudRow], Validation]
) -> None:
    envelope = validate(world, event(org, cloud))

    assert stored(world, cloud.id) == (CloudStatus.OK, f"assumed {MEMBER_ARN}")
    assert world.uow.state.clouds[cloud.id].validated_at is not None
    assert world.uow.outbox_events() == [AccountValidated(org.id, cloud.id, ACCOUNT, "ok")]
    assert [(r.queue_name, r.actor_name) for r in world.uow.state.outbox] == [(None, None)]
    assert world.aws.assumed == [Assumed(MEMBER, ACCESS_KEY_ID, "assume the member role")]
    assert world.uow.state.processed == {envelope.id: ProcessedRow(envelope.id, ACTOR, MessageOutcome.DONE, None)}
    assert (world.uow.commits, world.uow.wakes) == (1, 1)


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("AccessDenied", "User: x is not authorized to perform: sts:AssumeRole", CloudStatus.ASSUME_ROLE_DENIED),
        ("AccessDenied", "with an explicit deny in a service control policy", CloudStatus.SCP_DENIED),
        (
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration",
            CloudStatus.DURATION_EXCEEDED,
        ),
        ("RegionDisabledException", "STS is not activated in this region", CloudStatus.REGION_DISABLED),
        ("InvalidClientTokenId", "The security token included in the request is invalid", CloudStatus.AWS_ERROR),
    ],
)
def test_a_refused_assume_role_becomes_the_status_of_its_code(
    world: World, org: OrgRecord, cloud: CloudRow, code: str, message: str, status: CloudStatus
) -> None:
    world.aws.refuse(MEMBER_ARN, code, message)
    validate(world, AccountValidationDue((cloud.id,), org.id))

    expected = classify_assume_role_error(code, f"AssumeRole {MEMBER_ARN} refused: {code}: {message}", MEMBER_ARN, 1800)
    assert expected.status is status
    assert stored(world, cloud.id) == (status, expected.message)
    assert world.uow.outbox_events() == [AccountValidated(org.id, cloud.id, ACCOUNT, status.value)]


def test_a_suspended_account_is_not_asked_anything(world: World, org: OrgRecord) -> None:
    cloud = world.add_cloud(ACCOUNT, org_id=org.id, aws_state="SUSPENDED")
    validate(world, AccountValidationDue((cloud.id,), org.id))

    outcome = suspended_outcome("SUSPENDED")
    assert outcome is not None
    assert stored(world, cloud.id) == (CloudStatus.ACCOUNT_SUSPENDED, outcome.message)
    assert world.uow.outbox_events() == [AccountValidated(org.id, cloud.id, ACCOUNT, "account_suspended")]
    assert (world.aws.assumed, world.aws.calls) == ([], [])


@pytest.mark.parametrize("code", ["Throttling", "TooManyRequestsException", None])
def test_a_transient_failure_is_retried_later_and_records_nothing(
    world: World, org: OrgRecord, cloud: CloudRow, code: str | None
) -> None:
    world.aws.refuse(MEMBER_ARN, code, "Rate exceeded" if code else "EndpointConnectionError")
    before = copy.deepcopy(world.uow.state)

    with pytest.raises(RetryLater):
        validate(world, AccountValidationDue((cloud.id,), org.id))

    assert world.uow.state == before
    assert world.uow.commits == 0


def test_account_validated_is_emitted_only_when_the_status_or_message_changes(
    world: World, org: OrgRecord, cloud: CloudRow
) -> None:
    event = AccountValidationDue((cloud.id,), org.id)
    validate(world, event)
    first_stamp = world.uow.state.clouds[cloud.id].validated_at

    second = validate(world, event)

    assert world.uow.outbox_events() == [AccountValidated(org.id, cloud.id, ACCOUNT, "ok")]
    assert world.uow.state.processed[second.id].outcome is MessageOutcome.DONE
    assert world.uow.state.clouds[cloud.id].validated_at != first_stamp  # stamped again all the same
    assert world.uow.wakes == 1

    world.aws.refuse(MEMBER_ARN, "AccessDenied", "not authorized")
    validate(world, event)
    assert world.uow.outbox_events(1) == [AccountValidated(org.id, cloud.id, ACCOUNT, "assume_role_denied")]


def test_a_cloud_removed_meanwhile_is_claimed_and_nothing_else(world: World, org: OrgRecord) -> None:
    before = copy.deepcopy(world.uow.state)

    envelope = validate(world, AccountValidationDue((uuid.uuid4(),), org.id))

    assert world.uow.state.processed == {envelope.id: ProcessedRow(envelope.id, ACTOR, MessageOutcome.DONE, None)}
    assert (world.uow.state.clouds, world.uow.state.outbox) == (before.clouds, [])
    assert (world.aws.assumed, world.uow.wakes) == ([], 0)


def test_a_batch_records_every_outcome_in_one_transaction_and_reports_only_the_changes(
    world: World, org: OrgRecord
) -> None:
    ok, denied, suspended, unchanged = (
        world.add_cloud("222222222222", org_id=org.id),
        world.add_cloud("333333333333", org_id=org.id),
        world.add_cloud("444444444444", org_id=org.id, aws_state="SUSPENDED"),
        world.add_cloud("555555555555", org_id=org.id),
    )
    validate(world, AccountValidationDue((unchanged.id,), org.id))
    denied_arn = f"arn:aws:iam::333333333333:role/{MEMBER_ROLE}"
    world.aws.refuse(denied_arn, "AccessDenied", "not authorized")
    gone = uuid.uuid4()
    commits, outbox = world.uow.commits, len(world.uow.state.outbox)

    envelope = validate(world, AccountValidationDue((ok.id, denied.id, suspended.id, unchanged.id, gone), org.id))

    refused = classify_assume_role_error(
        "AccessDenied", f"AssumeRole {denied_arn} refused: AccessDenied: not authorized", denied_arn, 1800
    )
    assert {c: stored(world, c)[0] for c in (ok.id, denied.id, suspended.id, unchanged.id)} == {
        ok.id: CloudStatus.OK,
        denied.id: refused.status,
        suspended.id: CloudStatus.ACCOUNT_SUSPENDED,
        unchanged.id: CloudStatus.OK,
    }
    assert sorted(world.uow.outbox_events(outbox), key=lambda e: e.account_id) == [
        AccountValidated(org.id, ok.id, "222222222222", "ok"),
        AccountValidated(org.id, denied.id, "333333333333", "assume_role_denied"),
        AccountValidated(org.id, suspended.id, "444444444444", "account_suspended"),
    ]
    assert sorted(a.role.role_arn for a in world.aws.assumed[1:]) == [
        f"arn:aws:iam::{account}:role/{MEMBER_ROLE}" for account in ("222222222222", "333333333333", "555555555555")
    ]
    assert world.uow.commits == commits + 1
    assert world.uow.state.processed[envelope.id] == ProcessedRow(envelope.id, ACTOR, MessageOutcome.DONE, None)


def test_one_throttled_account_retries_the_whole_batch_and_records_nothing(world: World, org: OrgRecord) -> None:
    clouds = [world.add_cloud(account, org_id=org.id) for account in ("222222222222", "333333333333")]
    world.aws.refuse(f"arn:aws:iam::333333333333:role/{MEMBER_ROLE}", "Throttling", "Rate exceeded")
    before = copy.deepcopy(world.uow.state)

    with pytest.raises(RetryLater):
        validate(world, AccountValidationDue(tuple(c.id for c in clouds), org.id))

    assert (world.uow.state, world.uow.commits) == (before, 0)


def test_batches_split_the_clouds_in_sorted_order_of_at_most_batch_size() -> None:
    org_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(2 * AccountValidationDue.BATCH + 1)]

    batches = AccountValidationDue.batches(org_id, ids)

    assert [len(b.cloud_ids) for b in batches] == [AccountValidationDue.BATCH, AccountValidationDue.BATCH, 1]
    assert [c for b in batches for c in b.cloud_ids] == sorted(ids)
    assert {b.org_id for b in batches} == {org_id}
    assert AccountValidationDue.batches(None, []) == []


@pytest.mark.parametrize("cloud_exists", [False, True], ids=["no-cloud", "cloud-of-another-org"])
def test_a_named_org_that_does_not_exist_is_a_permanent_error(
    world: World, cloud: CloudRow, cloud_exists: bool
) -> None:
    org_id = uuid.uuid4()
    cloud_id = cloud.id if cloud_exists else uuid.uuid4()
    before = copy.deepcopy(world.uow.state)

    with pytest.raises(PermanentError) as raised:
        validate(world, AccountValidationDue((cloud_id,), org_id))

    assert str(raised.value) == f"org_id {org_id}: no such organization"
    assert (world.uow.state, world.uow.commits, world.aws.assumed) == (before, 0, [])


def test_a_redelivered_message_does_nothing(world: World, org: OrgRecord, cloud: CloudRow) -> None:
    envelope = validate(world, AccountValidationDue((cloud.id,), org.id))
    before = copy.deepcopy(world.uow.state)
    world.aws.refuse(MEMBER_ARN, "AccessDenied", "not authorized")

    validate(world, envelope.event, envelope)

    assert world.uow.state == before
    assert (world.uow.commits, len(world.aws.assumed)) == (1, 1)


def test_a_standalone_cloud_assumes_its_own_role_with_the_ambient_identity(world: World) -> None:
    role = RoleConfig(f"arn:aws:iam::{ACCOUNT}:role/Reader", "reader-session", 900, Secret("its-external-id"))
    cloud = world.add_cloud(ACCOUNT, role=role)

    validate(world, AccountValidationDue((cloud.id,)))

    assert world.aws.assumed == [Assumed(role, None, "assume the member role")]
    assert stored(world, cloud.id) == (CloudStatus.OK, f"assumed {role.role_arn}")
    assert world.uow.outbox_events() == [AccountValidated(None, cloud.id, ACCOUNT, "ok")]


def test_unreadable_standalone_credentials_become_its_status_and_dead_letter_the_message(world: World) -> None:
    role = RoleConfig(f"arn:aws:iam::{ACCOUNT}:role/Reader", "reader-session")
    cloud = world.add_cloud(ACCOUNT)
    cloud.credentials = cloud_role_blob(KeyRing([generate_key()]), cloud.id, role)

    envelope = wrap(AccountValidationDue((cloud.id,)))
    with pytest.raises(PermanentError) as raised:
        validate(world, envelope.event, envelope)

    assert str(raised.value) == CREDENTIALS_UNREADABLE

    assert stored(world, cloud.id) == (CloudStatus.CREDENTIALS_UNREADABLE, CREDENTIALS_UNREADABLE)
    assert world.uow.state.processed == {
        envelope.id: ProcessedRow(
            envelope.id, ACTOR, MessageOutcome.FAILED, f"PermanentError: {CREDENTIALS_UNREADABLE}"
        )
    }
    assert world.uow.outbox_events() == [AccountValidated(None, cloud.id, ACCOUNT, "credentials_unreadable")]
    assert world.aws.assumed == []


def test_unreadable_org_credentials_are_a_permanent_error_that_records_nothing(world: World, org: OrgRecord) -> None:
    cloud = world.add_cloud(ACCOUNT, org_id=org.id)
    world.break_credentials(org.id)
    before = copy.deepcopy(world.uow.state)

    with pytest.raises(PermanentError) as raised:
        validate(world, AccountValidationDue((cloud.id,), org.id))

    assert str(raised.value) == CREDENTIALS_UNREADABLE
    assert (world.uow.state, world.uow.commits, world.aws.assumed) == (before, 0, [])


def test_a_cloud_without_credentials_in_a_batch_is_skipped_and_the_others_are_validated(world: World) -> None:
    role = RoleConfig(f"arn:aws:iam::{ACCOUNT}:role/Reader", "reader-session", 900, None)
    own = world.add_cloud(ACCOUNT, role=role)
    bare = world.add_cloud("333333333333")  # neither an organization nor credentials of its own

    envelope = validate(world, AccountValidationDue((own.id, bare.id)))

    assert (stored(world, own.id), stored(world, bare.id)) == (
        (CloudStatus.OK, f"assumed {role.role_arn}"),
        (CloudStatus.PENDING, None),
    )
    assert world.aws.assumed == [Assumed(role, None, "assume the member role")]
    assert world.uow.state.processed[envelope.id].outcome is MessageOutcome.DONE
