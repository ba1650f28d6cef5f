"""compose.yaml is a valid Compose file with the services a deployment needs (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
        "migrate",
        "postgres",
        "rabbitmq",
        "scheduler",
        "worker-sync",
        "worker-validation",
    ]
    missing_key = subprocess.run(
        [tool, "-f", str(ROOT / "compose.yaml"), "config"],
        env={k: v for k, v in os.environ.items() if k != "ORGSYNC_ENCRYPTION_KEYS"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing_key.returncode == 1
    assert "set ORGSYNC_ENCRYPTION_KEYS" in missing_key.stderr
