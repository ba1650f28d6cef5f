"""`orgsync events` as a process, as the README starts it: beside `orgsync worker` processes on RabbitMQ, it
reads the org's SQS queue in the local AWS (which puts there the events of every Organizations change, as
EventBridge does), and a change made in AWS shows in the inventory; its health and metrics answer on its
port; SIGTERM stops it with status 0 and nothing logged at ERROR."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from localaws import LocalAwsServer

from ..support.processes import free_port, org_add_args, orgsync, service_env, start_workers, stop_workers


@pytest.fixture(scope="module")
def aws_with_events() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(accounts=30, seed=31, events_queue="org-events") as server:
        yield server


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cloud(env: dict[str, str], account_id: str) -> dict:
    shown = orgsync(env, "cloud", "show", account_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_change_in_aws_reaches_the_inventory_through_orgsync_events(
    aws_with_events: LocalAwsServer, database_url, amqp_url, encryption_key, tmp_path, start_service
):
    server = aws_with_events
    queue = server.events_queue_url
    assert queue is not None
    port = free_port()
    env = service_env(server, database_url, amqp_url, encryption_key, tmp_path, ORGSYNC_EVENTS_METRICS_PORT=str(port))
    workers = start_workers(env, tmp_path / "worker.log")
    try:
        added = orgsync(env, *org_add_args(server.org, "live"), "--events-queue-url", queue, "--wait")
        assert added.returncode == 0, added.stderr
        listener = start_service("events", ["events"], env)
        listener.wait_for(f"events listener: reading {queue} for org live", timeout=60)

        member = next(a for a in server.org.accounts if a.account_id != server.org.management_account_id)
        aws = server.client("organizations")
        unit = aws.create_organizational_unit(ParentId=server.org.root_id, Name="Moved")["OrganizationalUnit"]["Id"]
        aws.move_account(AccountId=member.account_id, SourceParentId=member.parent_id, DestinationParentId=unit)
        aws.tag_resource(ResourceId=member.account_id, Tags=[{"Key": "live", "Value": "yes"}])

        deadline = time.monotonic() + 60
        while (shown := cloud(env, member.account_id))["org_path"] != "Root/Moved" or "live" not in shown["badges"]:
            assert time.monotonic() < deadline, f"the change never showed: {shown}"
            time.sleep(0.2)
        assert shown["badges"]["live"] == "yes"
        assert shown["badges"]["system.cloud_org_path"] == "Root/Moved"

        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ready\n")
        status, metrics = get(port, "/metrics")
        assert status == 200
        assert 'orgsync_events_applied_total{event="MoveAccount"} 1.0' in metrics
        assert 'orgsync_events_applied_total{event="TagResource"} 1.0' in metrics
        assert listener.stop() == 0
        assert listener.problems() == []
        sqs = server.client("sqs")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)["Attributes"]
        assert [int(left[n]) for n in names] == [0, 0]  # every message read was deleted, at the latest on stop
    finally:
        stop_workers(workers)
