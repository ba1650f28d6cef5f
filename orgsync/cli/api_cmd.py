"""`orgsync api`: serve the HTTP API and the web console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..settings import Settings


def api(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: ORGSYNC_API_HOST, else 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on [default: ORGSYNC_API_PORT, else 8080].")
    ] = None,
) -> None:
    """Serve the JSON API (/api/v1, documented at /api/docs) and the web console until SIGTERM or Ctrl-C.
    Sign in with a token of `orgsync tokens create`. Without ORGSYNC_BROKER_URL the work it requests
    runs in this process."""
    from .. import preflight
    from ..logs import configure_logging
    from ..settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    preflight.check_services(settings)  # one clear line and exit 1 when the database or RabbitMQ is unusable
    serve(settings, host or settings.api_host, port or settings.api_port)


def serve(settings: Settings, host: str, port: int) -> None:
    """Open the runtime, then run the app on `host:port` until SIGTERM or Ctrl-C."""
    import logging

    from .. import api
    from ..bootstrap import Runtime

    api.check_listenable(host, port)  # before anything starts: one line, exit 1
    rt = Runtime.open(settings, migrate=False)
    try:
        if rt.in_process:
            rt.start_in_process_workers()
        else:
            rt.relay.start(settings.relay_interval_seconds)  # what a request writes is published at once
        logging.getLogger(__name__).info("api: serving http://%s:%d (the API's documentation at /api/docs)", host, port)
        api.serve(rt, host, port)
    finally:
        rt.close()
