"""`orgsync demo` as a user runs it: no services configured, embedded Postgres, in-process broker."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request

from domain.status import SyncStatus
from orgsync.demo import demo_spec

from ..support.processes import ORGSYNC, free_port


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


def test_demo_serve_keeps_the_console_up_with_a_one_time_admin_token(tmp_path, start_service):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "AWS_"))}
    env["ORGSYNC_DATA_DIR"] = str(tmp_path)
    port = free_port()
    demo = start_service("demo", ["demo", "--accounts", "12", "--seed", "5", "--serve", "--port", str(port)], env)
    demo.wait_for("Ctrl-C stops it.", timeout=240)
    lines = demo.lines()
    token = lines[lines.index("sign in with this admin token (shown once):") + 1].strip()
    assert f"web console: http://127.0.0.1:{port}/ (the API's documentation at /api/docs)" in lines

    def get(path: str, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the demo's own server)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError:  # not listening yet
            return 0, ""

    deadline = time.monotonic() + 30
    while get("/healthz")[0] != 200:
        assert time.monotonic() < deadline, "the console never answered"
        time.sleep(0.2)
    assert get("/api/v1/orgs")[0] == 401
    status, body = get("/api/v1/orgs", Authorization=f"Bearer {token}")
    assert status == 200
    [org] = json.loads(body)
    assert (org["nickname"], org["account_count"], org["last_sync"]["status"]) == ("demo-org", 13, SyncStatus.SUCCEEDED)
    assert demo.stop(signal.SIGINT) == 0
