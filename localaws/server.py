"""The local AWS as an HTTP server, for the demo, e2e tests and benchmarks.

`serve()` installs the patches, builds the org, and serves moto's WSGI app on a threaded werkzeug
server (several orgsync worker processes call it at once), with HTTP/1.1 keep-alive connections and
a cached application lookup for IAM, Organizations and STS (see `KeepAliveRequestHandler`,
`cached_dispatcher`). Control endpoints live on the same port
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
    GET  /_localaws/events                     the Organizations events' settings (trail.py) + "stats"
    POST /_localaws/events                     {"queue_url" (null: off), "delay_ms", "duplicate_rate",
                                                "reorder_window", "seed", "reorder_idle_ms"}
    POST /_localaws/events/flush               deliver every pending event now
    POST /_localaws/events/reset               events off, pending dropped, statistics cleared

`serve(events_queue=NAME)` creates the SQS queue NAME (with a dead-letter queue NAME-dlq, after 5
receives) in the management account in us-east-1 and emits the Organizations events to it from the
start; the manifest then has `events_queue_url` and `events_dlq_url`.

The manifest JSON is written atomically once the server accepts connections.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import IO, Any, cast

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import LimitedStream

from . import faults, patches, trail
from .builder import REGION, BuiltOrg, build_org, set_member_role
from .generator import MANAGEMENT_ACCOUNT_ID, OrgSpec
from .orgmodel import set_account_state

CONTROL_PREFIX = "/_localaws/"
# services whose moto application depends only on the credential scope of the request's SigV4
# Authorization header (moto builds the host `<service>.<region>.amazonaws.com` from it and reads
# nothing else); the dispatcher caches their lookup (see `cached_dispatcher`)
CACHED_SERVICES = frozenset({"iam", "organizations", "sts"})
# paths moto routes by their prefix before it looks at the Authorization header
UNCACHED_PATH_PREFIXES = ("/moto-api", "/favicon.ico", "/latest/meta-data/", "/latest/api/")
EVENTS_MAX_RECEIVE_COUNT = 5


def _scope_key(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(Host, region, service) of a SigV4-signed request to one of `CACHED_SERVICES`, else None.

    Parses the Authorization header as moto's `infer_service_region_host` does
    (`Credential=<key>/<date>/<region>/<service>/aws4_request`). The Host header is part of the
    key because older moto versions try it before the Authorization header."""
    path_info = environ.get("PATH_INFO", "")
    auth = environ.get("HTTP_AUTHORIZATION")
    if not auth or not isinstance(path_info, str) or path_info.startswith(UNCACHED_PATH_PREFIXES):
        return None
    words = auth.split(",")[0].split()
    if len(words) < 2:
        return None
    parts = words[1].split("/")
    if len(parts) != 5 or parts[3].lower() not in CACHED_SERVICES:
        return None
    return str(environ.get("HTTP_HOST", "")), parts[2], parts[3]


def cached_dispatcher(create_app: Any) -> Any:
    """moto's `DomainDispatcherApplication`, with its application lookup cached for `CACHED_SERVICES`.

    moto finds the Flask application of every request under a global lock: it lists moto's package
    directory (an `os.path.isdir` per service module), matches the host against every backend's URL
    pattern and parses the Authorization header, per request. For a signed IAM / Organizations / STS
    request the answer depends only on the credential scope's region and service, so the first
    lookup of each (Host, region, service) is remembered; other requests go through moto unchanged.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    class CachedDispatcher(DomainDispatcherApplication):
        def __init__(self, create_app: Any) -> None:
            super().__init__(create_app)
            self.scope_apps: dict[tuple[str, str, str], Any] = {}

        def get_application(self, environ: dict[str, Any]) -> Any:
            key = _scope_key(environ)
            if key is None:
                return super().get_application(environ)
            app = self.scope_apps.get(key)
            if app is None:
                app = super().get_application(environ)
                self.scope_apps[key] = app
            return app

    return CachedDispatcher(create_app)


class ControlApp:
    """WSGI middleware: `/_localaws/...` is answered here, everything else goes to moto."""

    def __init__(self, moto_app: Any, org: BuiltOrg) -> None:
        self.moto_app = moto_app
        self.org = org
        self.endpoint_url = ""
        self.extra: dict[str, Any] = {}

    def manifest(self) -> dict[str, Any]:
        return {**self.org.to_json(), **self.extra, "endpoint_url": self.endpoint_url}

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
        if parts[0] == "events":
            return self._events(request, "/".join(parts[1:]))
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

    def _events(self, request: Request, what: str) -> tuple[int, Any]:
        method = request.method
        if what == "" and method == "POST":
            body = self._body(request)
            queue_url = body.get("queue_url")
            trail.configure(
                None if queue_url is None else str(queue_url),
                delay_ms=float(body.get("delay_ms", 0)),
                duplicate_rate=float(body.get("duplicate_rate", 0)),
                reorder_window=int(body.get("reorder_window", 0)),
                seed=int(body.get("seed", 0)),
                reorder_idle_ms=float(body.get("reorder_idle_ms", trail.DEFAULT_REORDER_IDLE_MS)),
            )
        elif what == "flush" and method == "POST":
            trail.flush()
        elif what == "reset" and method == "POST":
            trail.reset()
        elif not (what == "" and method == "GET"):
            return 404, {"error": f"no control endpoint {method} {request.path}"}
        return 200, {**trail.settings(), "stats": trail.stats()}

    def _update_manifest_account(self, account_id: str, *, state: str, legacy_status: Any) -> None:
        for account in self.org.accounts:
            if account.account_id == account_id:
                account.state = state
                if legacy_status is not None:
                    account.legacy_status = bool(legacy_status)


class _ServerWithApp:
    """A view of a werkzeug server with another WSGI application (for one request handler)."""

    def __init__(self, server: Any, app: Any) -> None:
        self._server = server
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


Answer = tuple[str, list[tuple[str, str]], bytes]
IDLE_TIMEOUT = 60.0


class KeepAliveRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler, serving HTTP/1.1 keep-alive connections (see `keep_alive_handler`).

    werkzeug's development server answers every request with `Connection: close` (it cannot tell
    where an unread request body ends), so every AWS call cost both sides a TCP connection, a thread
    and a selector drain. This handler bounds the request body by its Content-Length, discards what
    the application left unread, and keeps the connection open when the application's response has
    a correct Content-Length (moto's always do); the response is werkzeug's minus the
    `Connection: close` header. Everything else is left to werkzeug and closes, as before: a
    request with a body of unknown length or `Expect: 100-continue`, a client that asks to close,
    a response without a (correct) Content-Length, an application error.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = io.DEFAULT_BUFFER_SIZE  # a small answer leaves in one write, at the flush
    # a connection idle this long is closed (its thread ends); clients reconnect, as with AWS
    timeout = IDLE_TIMEOUT

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log_error(self, format: str, *args: Any) -> None:
        if not format.startswith("Request timed out"):  # an idle connection, not an error
            super().log_error(format, *args)

    def run_wsgi(self) -> None:
        lengths = self.headers.get_all("Content-Length") or ["0"]
        length = str(lengths[0]).strip() if len(lengths) == 1 else ""
        keepable = not (self.close_connection or "Transfer-Encoding" in self.headers or "Expect" in self.headers)
        if not (keepable and length.isdigit()):
            super().run_wsgi()
            self.close_connection = True
            return
        answer = self._answer(int(length))
        if answer is None:  # already answered the werkzeug way, and the connection closes
            return
        status, headers, payload = answer
        code, message = [*status.split(None, 1), ""][:2]  # as werkzeug splits it
        self.send_response(int(code), message)
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _answer(self, length: int) -> Answer | None:
        """Run the application: its answer if it can go out on the kept connection, else None
        once it went out the werkzeug way."""
        self.environ = environ = self.make_environ()
        body = LimitedStream(cast(IO[bytes], self.rfile), length)
        environ["wsgi.input"] = body
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is None and started:
                raise AssertionError("Headers already set")
            started[:] = [status, headers]
            return chunks.append

        try:
            application_iter = self.server.app(environ, start_response)
            try:
                chunks.extend(application_iter)
            finally:
                if hasattr(application_iter, "close"):
                    application_iter.close()
            status, headers = started
            payload = b"".join(chunks)
            framed = int(status.split(None, 1)[0]) >= 200 and [
                value.strip() for key, value in headers if key.lower() == "content-length"
            ] == [str(len(payload))]
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away
            return None
        except Exception as exc:
            self._failed(exc)
            return None
        if not framed:
            self._replay(_Canned(status, headers, payload))
            return None
        try:
            body.exhaust()  # the unread rest of the body, so that the next request can be read
        except Exception:
            self.close_connection = True  # the client is gone
        return status, headers, payload

    def _failed(self, exc: Exception) -> None:
        """werkzeug's answer to an application error: a 500, logged, and the connection closed."""
        if self.server.passthrough_errors:
            raise exc
        self._replay(InternalServerError())
        from werkzeug.debug.tbtools import DebugTraceback

        self.server.log("error", f"Error on request:\n{DebugTraceback(exc).render_traceback_text()}")

    def _replay(self, app: Any) -> None:
        """werkzeug's `run_wsgi` (Connection: close) with `app` in place of the server's application."""
        server = self.server
        self.server = cast(Any, _ServerWithApp(server, app))
        try:
            WSGIRequestHandler.run_wsgi(self)
        finally:
            self.server = server
            self.close_connection = True


def keep_alive_handler(base: type[WSGIRequestHandler]) -> type[WSGIRequestHandler]:
    """`base` (moto's request handler, which prepares the WSGI environ its way) with keep-alive."""
    return type("KeepAliveMotoRequestHandler", (KeepAliveRequestHandler, base), {})


class _Canned:
    """A WSGI application that answers what another application already answered."""

    def __init__(self, status: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.status, self.headers, self.payload = status, headers, payload

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(self.status, self.headers)
        return [self.payload]


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


def create_events_queue(name: str) -> tuple[str, str]:
    """Create the SQS queue `name` and its dead-letter queue (`name`-dlq, after
    EVENTS_MAX_RECEIVE_COUNT receives) in the management account, us-east-1; (queue path, DLQ path)
    as `/<account id>/<name>` (prefix the endpoint URL for the queue URLs)."""
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[MANAGEMENT_ACCOUNT_ID][REGION]
    fifo = name.endswith(".fifo")
    dlq_name = f"{name.removesuffix('.fifo')}-dlq" + (".fifo" if fifo else "")
    attributes: dict[str, Any] = {"FifoQueue": "true"} if fifo else {}
    dlq = backend.create_queue(dlq_name, **attributes)
    redrive = {"deadLetterTargetArn": dlq.queue_arn, "maxReceiveCount": EVENTS_MAX_RECEIVE_COUNT}
    backend.create_queue(name, RedrivePolicy=json.dumps(redrive), **attributes)
    return f"/{MANAGEMENT_ACCOUNT_ID}/{name}", f"/{MANAGEMENT_ACCOUNT_ID}/{dlq_name}"


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
    events_queue: str | None = None,
    events_delay_ms: float = 0,
    events_duplicate_rate: float = 0,
    events_reorder_window: int = 0,
    events_seed: int = 0,
    **build_kwargs: Any,
) -> None:
    """Build `spec`, write the manifest and serve until SIGTERM / SIGINT (with `events_queue`, the
    Organizations events go to that SQS queue, created with its DLQ; see `create_events_queue`)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    patches.install()
    faults.configure(
        latency_ms=latency_ms,
        throttle_rate=throttle_rate,
        seed=fault_seed,
        rate_limits=faults.parse_rate_limits(rate_limits),
    )
    org = build_org(spec, **build_kwargs)

    app = ControlApp(cached_dispatcher(create_backend_app), org)
    server = make_server(host, port, app, threaded=True, request_handler=keep_alive_handler(MotoRequestHandler))
    app.endpoint_url = f"http://{host}:{server.server_port}"
    if events_queue:
        queue_path, dlq_path = create_events_queue(events_queue)
        app.extra["events_queue_url"] = app.endpoint_url + queue_path
        app.extra["events_dlq_url"] = app.endpoint_url + dlq_path
        trail.configure(
            app.extra["events_queue_url"],
            delay_ms=events_delay_ms,
            duplicate_rate=events_duplicate_rate,
            reorder_window=events_reorder_window,
            seed=events_seed,
        )
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
