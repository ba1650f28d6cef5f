"""`orgsync api`: the versioned JSON API (/api/v1, documented at /api/docs) and the web console, one ASGI
app over the services the CLI uses. Stateless: run as many as you like behind a load balancer."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from . import problems, v1


def create_app(rt: Any, *, console: bool = True) -> FastAPI:
    """The app over an open Runtime (`rt`), which the caller closes."""
    app = FastAPI(
        title="orgsync",
        summary="AWS Organizations in a cloud-security inventory: organizations, accounts, badges, sync requests.",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.rt = rt
    problems.install(app)

    @app.middleware("http")
    async def server_timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every response says how long the server took (`Server-Timing: app;dur=<ms>`)."""
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    app.include_router(v1.router)

    @app.get("/healthz", include_in_schema=False, response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok\n"

    @app.get("/readyz", include_in_schema=False, response_class=PlainTextResponse)
    def readyz() -> PlainTextResponse:
        problem = rt.database.problem()
        if problem is not None:
            return PlainTextResponse(f"not ready: {problem}\n", status_code=503)
        return PlainTextResponse("ready\n")

    if console:
        from . import console as web

        web.install(app)
    return app


def serve(rt: Any, host: str, port: int) -> None:
    """Serve the app over `rt` on `host:port` until SIGTERM or Ctrl-C, which end it normally (the requests
    under way finish first): the process then exits 0, as a supervisor or `docker stop` expects."""
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn raises the signal again once it has stopped (the process would die of it): not here
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(create_app(rt), host=host, port=port, log_level="warning", access_log=False)
    Server(config).run()


def check_listenable(host: str, port: int) -> None:
    """OrgSyncError naming the address when nothing can listen there (taken, or not this host's)."""
    import socket

    from domain.errors import OrgSyncError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise OrgSyncError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
