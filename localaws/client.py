"""`LocalAwsServer`: start the local AWS server in a subprocess and drive its control endpoints.

Tests, the demo and the benchmarks use it to get a local AWS that separate orgsync processes can
reach through `AWS_ENDPOINT_URL`; see `env()`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .builder import BuiltOrg

STARTUP_TIMEOUT = 60.0


class LocalAwsError(RuntimeError):
    """The local AWS server could not be started or did not answer."""


class LocalAwsServer:
    """A local AWS server subprocess: `with LocalAwsServer(accounts=50) as aws: aws.endpoint_url`."""

    def __init__(
        self,
        accounts: int = 50,
        *,
        seed: int = 0,
        latency_ms: float = 0,
        throttle_rate: float = 0.0,
        rate_limits: str = "",
        external_id: str | None = None,
        member_external_id: str | None = None,
        max_depth: int | None = None,
        tags_per_account: int | None = None,
        suspended: int | None = None,
        missing_role: int | None = None,
        wrong_external_id: int | None = None,
        legacy_status: int | None = None,
        spec_path: str | os.PathLike[str] | None = None,
        with_scps: bool = True,
        events_queue: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = STARTUP_TIMEOUT,
        extra_args: list[str] | None = None,
    ) -> None:
        self._args = ["serve", "--host", host, "--port", str(port), "--accounts", str(accounts), "--seed", str(seed)]
        self._args += ["--latency-ms", str(latency_ms), "--throttle-rate", str(throttle_rate)]
        if rate_limits:
            self._args += ["--rate-limits", rate_limits]
        optional: dict[str, Any] = {
            "--external-id": external_id,
            "--member-external-id": member_external_id,
            "--max-depth": max_depth,
            "--tags-per-account": tags_per_account,
            "--suspended": suspended,
            "--missing-role": missing_role,
            "--wrong-external-id": wrong_external_id,
            "--legacy-status": legacy_status,
            "--spec": spec_path,
            "--events-queue": events_queue,
        }
        for flag, value in optional.items():
            if value is not None:
                self._args += [flag, str(value)]
        if not with_scps:
            self._args.append("--no-scps")
        self._args += list(extra_args or [])
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log: Any = None
        self.manifest: dict[str, Any] = {}
        self.org: BuiltOrg | None = None
        self.endpoint_url = ""

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> LocalAwsServer:
        if self._process is not None:
            raise LocalAwsError("already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="orgsync-localaws-"))
        manifest_path = self._workdir / "manifest.json"
        self._log = open(self._workdir / "server.log", "w+b")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "localaws", *self._args, "--manifest", str(manifest_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self._startup_timeout
        while not manifest_path.exists():
            code = self._process.poll()
            if code is not None:
                output = self.output()
                self.stop()
                raise LocalAwsError(f"the local AWS server exited with {code}:\n{output}")
            if time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise LocalAwsError(f"the local AWS server was not ready after {self._startup_timeout:.0f}s:\n{output}")
            time.sleep(0.05)
        self.manifest = json.loads(manifest_path.read_text())
        self.endpoint_url = str(self.manifest["endpoint_url"])
        self.org = BuiltOrg.from_json(self.manifest)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LocalAwsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def output(self) -> str:
        """What the server wrote to stdout / stderr so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text: str = self._log.read().decode(errors="replace")
        self._log.seek(0, os.SEEK_END)
        return text

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- use ------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment variables a child process needs to use this local AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def client(self, service: str, **options: Any) -> Any:
        """A boto3 client of `service` calling this local AWS as its test caller (`options`: boto3's,
        e.g. config)."""
        import boto3

        env = self.env()
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            **options,
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.endpoint_url:
            raise LocalAwsError("the server is not started")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - our own http endpoint
            f"{self.endpoint_url}/_localaws/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise LocalAwsError(f"{method} /_localaws/{path}: {exc.code} {detail}") from None

    def set_faults(
        self,
        *,
        latency_ms: float = 0,
        throttle_rate: float = 0.0,
        seed: int = 0,
        fail_parents: list[str] | dict[str, str] | None = None,
        rate_limits: str = "",
    ) -> dict[str, Any]:
        """Replace the fault settings (fail_parents: ids, or {parent id: error code}; rate_limits: token
        buckets per service, "organizations=20:40")."""
        body = {
            "latency_ms": latency_ms,
            "throttle_rate": throttle_rate,
            "seed": seed,
            "fail_parents": fail_parents or [],
            "rate_limits": rate_limits,
        }
        settings: dict[str, Any] = self._call("POST", "faults", body)
        return settings

    def faults(self) -> dict[str, Any]:
        settings: dict[str, Any] = self._call("GET", "faults")
        return settings

    def stats(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = self._call("GET", "stats")
        return stats

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset", {})

    def set_account_state(self, account_id: str, state: str, *, legacy_status: bool | None = None) -> None:
        body: dict[str, Any] = {"state": state}
        if legacy_status is not None:
            body["legacy_status"] = legacy_status
        self._call("POST", f"accounts/{account_id}/state", body)
        if self.org is not None:
            account = self.org.account(account_id)
            account.state = state
            if legacy_status is not None:
                account.legacy_status = legacy_status

    def set_member_role(self, account_id: str, kind: str) -> None:
        self._call("POST", f"accounts/{account_id}/member-role", {"kind": kind})
        if self.org is not None:
            self.org.account(account_id).member_role = kind

    # -- Organizations events (CloudTrail -> EventBridge -> SQS, see trail.py) --------------------
    @property
    def events_queue_url(self) -> str | None:
        """The queue `--events-queue` created at start (None without it)."""
        url = self.manifest.get("events_queue_url")
        return str(url) if url else None

    def events(
        self,
        queue_url: str | None,
        *,
        delay_ms: float = 0,
        duplicate_rate: float = 0.0,
        reorder_window: int = 0,
        seed: int = 0,
        reorder_idle_ms: float | None = None,
    ) -> dict[str, Any]:
        """Emit the Organizations events to the SQS queue `queue_url` of this server (None: off), late by
        `delay_ms`, `duplicate_rate` of them twice, shuffled in windows of `reorder_window`; the settings
        and statistics after the change."""
        body: dict[str, Any] = {
            "queue_url": queue_url,
            "delay_ms": delay_ms,
            "duplicate_rate": duplicate_rate,
            "reorder_window": reorder_window,
            "seed": seed,
        }
        if reorder_idle_ms is not None:
            body["reorder_idle_ms"] = reorder_idle_ms
        settings: dict[str, Any] = self._call("POST", "events", body)
        return settings

    def events_settings(self) -> dict[str, Any]:
        """The events' settings, with their statistics under "stats"."""
        settings: dict[str, Any] = self._call("GET", "events")
        return settings

    def flush_events(self) -> dict[str, Any]:
        """Deliver every pending event now."""
        settings: dict[str, Any] = self._call("POST", "events/flush", {})
        return settings

    def reset_events(self) -> None:
        """Events off, pending ones dropped, statistics cleared."""
        self._call("POST", "events/reset", {})
