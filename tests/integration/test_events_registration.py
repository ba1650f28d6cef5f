"""An organization's events queue through the real CLI against the local AWS (moto's SQS) and Postgres:
`org add|edit --events-queue-url` check that the management role reads the queue before storing it,
`--no-events` turns it off, `org show` tells it, and `events template` prints the stack that feeds it."""

from __future__ import annotations

import json

import boto3
import pytest

from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws

from ..support.cli import add_args, counts, run


@pytest.fixture
def aws():
    with local_aws(generate_org(6, seed=3)) as org:
        yield org


@pytest.fixture
def queue_url(aws: BuiltOrg) -> str:
    sqs = boto3.client("sqs", region_name="us-east-1")
    return str(sqs.create_queue(QueueName="orgsync-events")["QueueUrl"])


def shown(capsys, org: str) -> dict:
    code, out, err = run(capsys, "org", "show", org, "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


def test_org_add_stores_a_readable_events_queue(capsys, cli_env, aws: BuiltOrg, queue_url):
    code, out, err = run(capsys, *add_args(aws), "--events-queue-url", queue_url, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["events_queue_url"] == queue_url
    assert shown(capsys, "acme")["events_queue_url"] == queue_url
    code, out, _ = run(capsys, "org", "show", "acme")
    assert f"events queue             {queue_url}" in out.splitlines()


def test_org_add_refuses_a_queue_it_cannot_read_and_stores_nothing(capsys, cli_env, aws: BuiltOrg, queue_url):
    missing = queue_url.replace("orgsync-events", "no-such-queue")
    code, out, err = run(capsys, *add_args(aws), "--events-queue-url", missing)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: read the events queue: {missing}: AWS.SimpleQueueService.NonExistentQueue")
    assert len(err.splitlines()) == 1
    assert counts(cli_env) == (0, 0, 0)

    code, out, err = run(capsys, *add_args(aws), "--events-queue-url", "not a url")
    assert (code, out, err) == (
        1,
        "",
        "error: events-queue-url: not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT_ID/QUEUE_NAME)\n",
    )
    assert counts(cli_env) == (0, 0, 0)


def test_org_edit_turns_events_on_and_off(capsys, cli_env, aws: BuiltOrg, queue_url):
    assert run(capsys, *add_args(aws))[0] == 0
    assert shown(capsys, "acme")["events_queue_url"] is None
    before = counts(cli_env)

    code, out, err = run(capsys, "org", "edit", "acme", "--events-queue-url", queue_url, "--no-events")
    assert (code, out, err) == (1, "", "error: events-queue-url: give a queue URL or --no-events, not both\n")
    missing = queue_url.replace("orgsync-events", "gone")
    code, out, err = run(capsys, "org", "edit", "acme", "--events-queue-url", missing)
    assert (code, out) == (1, "") and err.startswith(f"error: read the events queue: {missing}: ")
    assert counts(cli_env) == before and shown(capsys, "acme")["events_queue_url"] is None

    code, out, err = run(capsys, "org", "edit", "acme", "--events-queue-url", queue_url, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["changed"] == ["events_queue_url"]  # and a sync to start from, as every edit
    assert shown(capsys, "acme")["events_queue_url"] == queue_url
    code, out, _ = run(capsys, "org", "edit", "acme", "--events-queue-url", queue_url, "--json")
    assert json.loads(out)["changed"] == []

    code, out, err = run(capsys, "org", "edit", "acme", "--no-events", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["changed"] == ["events_queue_url"]
    assert shown(capsys, "acme")["events_queue_url"] is None


def test_events_template_names_the_org_and_its_management_role(capsys, cli_env, aws: BuiltOrg):
    assert run(capsys, *add_args(aws))[0] == 0
    code, out, err = run(capsys, "events", "template", "acme")
    assert (code, err) == (0, "")
    template = json.loads(out)
    assert f"{aws.org_id} (acme)" in template["Description"]
    role_name = aws.management_role_arn.rsplit("/", 1)[1]
    assert template["Resources"]["OrgsyncReadsEvents"]["Properties"]["Roles"] == [role_name]
    code, out, err = run(capsys, "events", "template", "nope")
    assert (code, out) == (1, "")
    assert err == "error: no organization 'nope' (give its id, cloud org id or nickname)\n"
