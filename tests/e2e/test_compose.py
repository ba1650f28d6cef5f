"""compose.yaml is a valid Compose file with the services a deployment needs (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ORGSYNC_SERVICES = ("migrate", "worker-sync", "worker-validation", "scheduler", "events", "api")


def test_compose_file_validates_and_names_every_service():
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("docker-compose is not installed (.ci/run installs Debian's package)", pytrace=False)
        pytest.skip("docker-compose is not installed")
    env = {**os.environ, "ORGSYNC_ENCRYPTION_KEYS": "a-key-for-validation-only"}
    checked = subprocess.run(
        [tool, "-f", str(ROOT / "compose.yaml"), "config", "--services"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert sorted(checked.stdout.split()) == [
        "api",
        "events",
        "migrate",
        "postgres",
        "rabbitmq",
        "rabbitmq-2",
        "rabbitmq-3",
        "scheduler",
        "worker-sync",
        "worker-validation",
    ]
    # the two extra RabbitMQ nodes start only with the cluster profile; orgsync then gets every node's URL
    nodes = ",".join(f"amqp://orgsync:orgsync@{host}:5672/orgsync" for host in ("rabbitmq", "rabbitmq-2", "rabbitmq-3"))
    cluster = subprocess.run(
        [tool, "-f", str(ROOT / "compose.yaml"), "--profile", "cluster", "config"],
        env={**env, "ORGSYNC_BROKER_URL": nodes},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cluster.returncode == 0, cluster.stderr
    services = yaml.safe_load(cluster.stdout)["services"]
    assert {name: s.get("profiles") for name, s in services.items() if s.get("profiles")} == {
        "rabbitmq-2": ["cluster"],
        "rabbitmq-3": ["cluster"],
    }
    assert {name: s["hostname"] for name, s in services.items() if name.startswith("rabbitmq")} == {
        "rabbitmq": "rabbitmq",
        "rabbitmq-2": "rabbitmq-2",
        "rabbitmq-3": "rabbitmq-3",
    }
    assert {services[name]["environment"]["ORGSYNC_BROKER_URL"] for name in ORGSYNC_SERVICES} == {nodes}
    assert {services[name]["environment"]["ORGSYNC_QUEUE_TYPE"] for name in ORGSYNC_SERVICES} == {"quorum"}
    cookies = {
        services[name]["environment"]["RABBITMQ_ERLANG_COOKIE"] for name in ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
    }
    assert len(cookies) == 1
    missing_key = subprocess.run(
        [tool, "-f", str(ROOT / "compose.yaml"), "config"],
        env={k: v for k, v in os.environ.items() if k != "ORGSYNC_ENCRYPTION_KEYS"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing_key.returncode == 1
    assert "set ORGSYNC_ENCRYPTION_KEYS" in missing_key.stderr
