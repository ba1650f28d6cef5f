"""`orgsync demo` as a user runs it: no services configured, embedded Postgres, in-process broker."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from domain.status import SyncStatus
from orgsync.demo import demo_spec

from ..support.processes import ORGSYNC


def test_demo_runs_on_embedded_defaults_and_leaves_a_browsable_inventory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "AWS_"))}
    env["ORGSYNC_DATA_DIR"] = str(tmp_path)
    demo = subprocess.run(
        [ORGSYNC, "demo", "--accounts", "30", "--seed", "4"], env=env, capture_output=True, text=True, timeout=300
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "sync ok" in demo.stdout
    # what the demo announces is what it lists: 30 members plus the management account
    assert "generating an organization of 30 member accounts and its management account" in demo.stdout
    assert "clouds: 30 member accounts and 1 management account(s)" in demo.stdout
    # the probes prove every call the sync needs: the simulator's disagreement is a note, never a warning
    assert "warning" not in demo.stdout + demo.stderr

    demo_dir = tmp_path / "demo"
    assert stat.S_IMODE((demo_dir / "encryption.keys").stat().st_mode) == 0o600
    env["ORGSYNC_DATA_DIR"] = str(demo_dir)
    listed = subprocess.run([ORGSYNC, "cloud", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    spec = demo_spec(30, seed=4)
    expected = {a.account_id for a in spec.accounts} | {"123456789012"}
    assert {c["account_id"] for c in json.loads(listed.stdout)} == expected
    orgs = subprocess.run([ORGSYNC, "org", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    [org] = json.loads(orgs.stdout)
    assert (org["nickname"], org["account_count"], org["last_sync"]["status"]) == ("demo-org", 31, SyncStatus.SUCCEEDED)
