"""Operating orgsync: bad messages end in the dead-letter queue with a reason while workers go on,
the dead-letter commands, Prometheus metrics after a known workload, and JSON logs without secrets."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pika
from prometheus_client.parser import text_string_to_metric_families

from aws.session import DEFAULT_CEILING
from domain.status import CloudStatus

from ..support.processes import org_add_args, orgsync

MEMBER_EXTERNAL_ID = "member-ext-1"


def add_org(env, org) -> str:
    added = orgsync(
        env,
        *org_add_args(org, "ops", "--member-external-id-file", "-", "--wait", "--json"),
        stdin=MEMBER_EXTERNAL_ID + "\n",
    )
    assert (added.returncode, added.stderr) == (0, ""), added.stderr
    return json.loads(added.stdout)["id"]


def envelope(type_: str, version: int, data: dict) -> dict:
    return {
        "type": type_,
        "version": version,
        "id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": data,
    }


def publish(url: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "org-sync", body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    connection.close()


def dramatiq_body(env_: dict) -> bytes:
    return json.dumps(
        {
            "queue_name": "org-sync",
            "actor_name": "org_sync_requested",
            "args": [env_],
            "kwargs": {},
            "options": {},
            "message_id": env_["id"],
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()


def dead_letters(env) -> list[dict]:
    listed = orgsync(env, "dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def wait_for_dead(env, count: int) -> list[dict]:
    deadline = time.monotonic() + 60
    letters = dead_letters(env)
    while len(letters) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        letters = dead_letters(env)
    return letters


def scrape(env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = env["ORGSYNC_METRICS_PORT"]
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_bad_messages_are_dead_lettered_with_reasons_and_the_worker_goes_on(aws_server, env, workers):
    org = aws_server.org
    org_id = add_org(env, org)
    unknown_org = str(uuid.uuid4())
    bad = {
        "not json": b"{this is not json",
        "unknown type": dramatiq_body(envelope("NoSuchEvent", 1, {"org_id": org_id})),
        "unknown version": dramatiq_body(envelope("OrgSyncRequested", 99, {"org_id": org_id})),
        "unknown org": dramatiq_body(envelope("OrgSyncRequested", 1, {"org_id": unknown_org})),
    }
    for body in bad.values():
        publish(env["ORGSYNC_BROKER_URL"], body)
    letters = wait_for_dead(env, 4)
    assert sorted(d["reason"] for d in letters) == sorted(
        [
            "the body is not JSON",
            "MalformedMessage: unknown message type 'NoSuchEvent'",
            "MalformedMessage: OrgSyncRequested: unknown version 99 (this build reads up to 1)",
            f"PermanentError: org_id {unknown_org}: no such organization",
        ]
    )
    assert {d["queue"] for d in letters} == {"org-sync"}

    # the workers keep consuming
    synced = orgsync(env, "org", "sync", "ops", "--wait")
    assert (synced.returncode, synced.stderr) == (0, "")

    # requeued letters fail again, for the same reasons (the body that is not JSON cannot be requeued: a
    # worker can do nothing with it, it stays); purge empties the queue
    not_json = next(d for d in letters if d["reason"] == "the body is not JSON")
    assert not_json["id"].startswith("sha256:") and 0 <= not_json["age_seconds"] < 300
    unknown = orgsync(env, "dead-letters", "requeue", "no-such-id")
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (
        1,
        "",
        "error: no dead letter with id no-such-id (see `orgsync dead-letters list`)\n",
    )
    refused = orgsync(env, "dead-letters", "requeue", not_json["id"])
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        f"requeued 0 messages\nmessage {not_json['id']} cannot be requeued: the body is not JSON\n",
        "error: 1 of the messages asked for cannot be requeued\n",
    )
    requeued = orgsync(env, "dead-letters", "requeue", "--queue", "org-sync", "--json")
    assert requeued.returncode == 0
    assert (len(json.loads(requeued.stdout)["requeued"]), json.loads(requeued.stdout)["refused"]) == (
        3,
        [{"id": not_json["id"], "reason": "the body is not JSON"}],
    )
    again = wait_for_dead(env, 4)
    assert sorted(d["reason"] for d in again) == sorted(d["reason"] for d in letters)
    one = orgsync(env, "dead-letters", "purge", not_json["id"], "--yes")
    assert (one.returncode, one.stdout) == (0, "purged 1 dead letters from org-sync.XQ\n")
    purged = orgsync(env, "dead-letters", "purge", "--queue", "org-sync", "--yes")
    assert (purged.returncode, purged.stdout) == (0, "purged 3 dead letters from org-sync.XQ\n")
    assert dead_letters(env) == []
    nosuch = orgsync(env, "dead-letters", "list", "--queue", "nosuch")
    assert (nosuch.returncode, nosuch.stderr) == (
        1,
        "error: unknown queue nosuch; orgsync's queues are account-validation, badges, org-sync, tags\n",
    )


def test_metrics_after_a_known_workload(aws_server, env, workers):
    org = aws_server.org
    add_org(env, org)
    before = scrape(env)
    aws_server.reset_stats()
    synced = orgsync(env, "org", "sync", "ops", "--wait")
    assert synced.returncode == 0, synced.stderr
    after = scrape(env)
    server = aws_server.stats()["calls"]

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("orgsync_messages_total", queue="org-sync", actor="org_sync_requested", outcome="processed") == 1
    # a re-sync with nothing new validates nothing again and asks for one tag refresh
    assert delta("orgsync_messages_total", queue="tags", actor="tag_refresh_due", outcome="processed") == 2
    assert (
        delta("orgsync_messages_total", queue="account-validation", actor="account_validation_due", outcome="processed")
        == 0
    )
    # every AWS call the workers made is counted per API, exactly as the local AWS saw it
    counted = {
        dict(labels)["api"]: after[(name, labels)] - before.get((name, labels), 0.0)
        for (name, labels) in after
        if name == "orgsync_aws_calls_total"
    }
    assert {api: n for api, n in counted.items() if n} == {api: float(n) for api, n in server.items() if n}
    statuses = {dict(labels)["status"]: v for (name, labels), v in after.items() if name == "orgsync_accounts"}
    expected_ok = sum(1 for a in org.accounts if a.state == "ACTIVE" and a.member_role == "ok")
    assert statuses[CloudStatus.OK] == expected_ok
    assert metric(after, "orgsync_queue_messages", queue="org-sync", state="dead") == 0
    assert metric(after, "orgsync_queue_consumers", queue="org-sync") == 2
    # each worker process shows the rate it allows itself per service: AWS never throttled, so the ceiling
    deadline = time.monotonic() + 10
    while not (rates := allowed_rates(scrape(env))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rates and set(rates.values()) == {DEFAULT_CEILING}, rates


def allowed_rates(samples) -> dict[tuple[str, str], float]:
    """(service, pid) -> the allowed rate, for the services AWS was called for."""
    return {
        (dict(labels)["service"], dict(labels)["pid"]): value
        for (name, labels), value in samples.items()
        if name == "orgsync_aws_allowed_rate"
    }


def test_worker_logs_are_json_with_ids_and_no_secret(aws_server, env, workers, tmp_path: Path):
    org_id = add_org(env, aws_server.org)
    time.sleep(1)
    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    synced = [line for line in lines if line["message"].startswith(f"org {org_id} synced")]
    assert len(synced) == 1
    assert (synced[0]["org_id"], synced[0]["actor"]) == (org_id, "org_sync_requested")
    assert set(synced[0]) >= {"ts", "level", "message", "org_id", "message_id", "correlation_id"}
    text = (tmp_path / "worker.log").read_text()
    for secret in (MEMBER_EXTERNAL_ID, env["ORGSYNC_ENCRYPTION_KEYS"], "guest:guest"):
        assert secret not in text
