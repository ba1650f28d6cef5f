"""The local AWS as an HTTP server, for the demo, e2e tests and benchmarks.

`serve()` installs the patches, builds the org, and serves moto's WSGI app on a threaded werkzeug
server (several orgsync worker processes call it at once). Control endpoints live on the same port
under `/_localaws/`, a prefix no AWS API that orgsync uses can produce (S3 bucket names cannot
start with "_"), so they never reach moto's routing:

    GET  /_localaws/health                     {"ok": true}
    GET  /_localaws/org                        the manifest (BuiltOrg + endpoint_url)
    GET  /_localaws/faults                     current fault settings
    POST /_localaws/faults                     {"latency_ms", "throttle_rate", "seed", "fail_parents",
                                                "rate_limits": "organizations=20:40,..."}
    GET  /_localaws/stats                      {"calls": {...}, "throttled": {...}}
    POST /_localaws/stats/reset
    POST /_localaws/accounts/<id>/state        {"state": "SUSPENDED", "legacy_status": false}
    POST /_localaws/accounts/<id>/member-role  {"kind": "ok" | "missing" | "wrong_external_id"}

The manifest JSON is written atomically once the server accepts connections.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from . import faults, patches
from .builder import BuiltOrg, build_org, set_member_role
from .generator import OrgSpec
from .orgmodel import set_account_state

CONTROL_PREFIX = "/_localaws/"


class ControlApp:
    """WSGI middleware: `/_localaws/...` is answered here, everything else goes to moto."""

    def __init__(self, moto_app: Any, org: BuiltOrg) -> None:
        self.moto_app = moto_app
        self.org = org
        self.endpoint_url = ""

    def manifest(self) -> dict[str, Any]:
        return {**self.org.to_json(), "endpoint_url": self.endpoint_url}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("PATH_INFO", "")).startswith(CONTROL_PREFIX):
            return self.moto_app(environ, start_response)
        request = Request(environ)
        try:
            status, payload = self._handle(request)
        except (KeyError, ValueError, TypeError) as exc:
            status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
        response = Response(json.dumps(payload), status=status, mimetype="application/json")
        return response(environ, start_response)

    def _body(self, request: Request) -> dict[str, Any]:
        if not request.data:
            return {}
        data = json.loads(request.data)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    def _handle(self, request: Request) -> tuple[int, Any]:
        path = request.path[len(CONTROL_PREFIX) :].strip("/")
        parts = path.split("/")
        method = request.method
        if path == "health":
            return 200, {"ok": True}
        if path == "org" and method == "GET":
            return 200, self.manifest()
        if path == "faults" and method == "GET":
            return 200, faults.settings()
        if path == "faults" and method == "POST":
            body = self._body(request)
            faults.clear()
            faults.configure(
                latency_ms=float(body.get("latency_ms", 0)),
                throttle_rate=float(body.get("throttle_rate", 0.0)),
                seed=int(body.get("seed", 0)),
                rate_limits=faults.parse_rate_limits(str(body.get("rate_limits") or "")),
            )
            fail_parents = body.get("fail_parents") or []
            if isinstance(fail_parents, dict):
                for parent_id, code in fail_parents.items():
                    faults.fail_parent(str(parent_id), str(code))
            else:
                for parent_id in fail_parents:
                    faults.fail_parent(str(parent_id), str(body.get("fail_code", "AccessDeniedException")))
            return 200, faults.settings()
        if path == "stats" and method == "GET":
            return 200, faults.stats()
        if path == "stats/reset" and method == "POST":
            faults.reset_stats()
            return 200, {"ok": True}
        if len(parts) == 3 and parts[0] == "accounts" and method == "POST":
            account_id, what = parts[1], parts[2]
            body = self._body(request)
            if what == "state":
                legacy = body.get("legacy_status")
                legacy_flag = None if legacy is None else bool(legacy)
                set_account_state(account_id, str(body["state"]), legacy_status=legacy_flag)
                self._update_manifest_account(account_id, state=str(body["state"]), legacy_status=legacy)
                return 200, {"ok": True}
            if what == "member-role":
                set_member_role(self.org, account_id, str(body["kind"]))
                return 200, {"ok": True}
        return 404, {"error": f"no control endpoint {method} {request.path}"}

    def _update_manifest_account(self, account_id: str, *, state: str, legacy_status: Any) -> None:
        for account in self.org.accounts:
            if account.account_id == account_id:
                account.state = state
                if legacy_status is not None:
                    account.legacy_status = bool(legacy_status)


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(
    spec: OrgSpec,
    *,
    manifest: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: float = 0,
    throttle_rate: float = 0.0,
    fault_seed: int = 0,
    rate_limits: str = "",
    **build_kwargs: Any,
) -> None:
    """Build `spec`, write the manifest and serve until SIGTERM / SIGINT."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    patches.install()
    faults.configure(
        latency_ms=latency_ms,
        throttle_rate=throttle_rate,
        seed=fault_seed,
        rate_limits=faults.parse_rate_limits(rate_limits),
    )
    org = build_org(spec, **build_kwargs)

    class Handler(MotoRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return

    app = ControlApp(DomainDispatcherApplication(create_backend_app), org)
    server = make_server(host, port, app, threaded=True, request_handler=Handler)
    app.endpoint_url = f"http://{host}:{server.server_port}"
    os.environ.setdefault("MOTO_PORT", str(server.server_port))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    write_manifest(manifest, app.manifest())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
