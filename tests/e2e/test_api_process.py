"""`orgsync api` as a process: an address it cannot listen on stops it at once with one error line and
exit status 1, before anything starts."""

from __future__ import annotations

import socket
import subprocess

from ..support.processes import ORGSYNC, free_port


def test_a_port_in_use_is_one_error_line_and_exit_1(database_url, encryption_key, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(tmp_path),
    }
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run(
            [ORGSYNC, "api", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
