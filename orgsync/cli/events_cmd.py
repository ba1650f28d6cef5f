"""`orgsync events`: live updates from the AWS events of an organization."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import database, print_json

events_app = typer.Typer(
    help="Live updates from AWS Organizations events: alone, read every registered events queue and apply the"
    " changes; `template` prints the stack that feeds an organization's queue."
)


@events_app.callback(invoke_without_command=True)
def events_listen(ctx: typer.Context) -> None:
    """Read every registered organization's events queue and apply each change AWS reports (run any number;
    SIGTERM or Ctrl-C stops it). Without ORGSYNC_BROKER_URL the updates run in this process."""
    if ctx.invoked_subcommand is not None:
        return
    import logging
    import signal
    import threading

    from .. import preflight
    from ..bootstrap import Runtime
    from ..listener import Listener
    from ..logs import configure_logging
    from ..settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    preflight.check_services(settings)  # one clear line and exit 1 when the database or RabbitMQ is unusable
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    rt = Runtime.open(settings, migrate=False)
    server = None
    try:
        if settings.events_metrics_port:
            from .. import metrics_server
            from ..health import services_probe
            from ..listener import metrics

            metrics()  # registered before the endpoint copies the registry

            try:
                server = metrics_server.start(
                    settings, port=settings.events_metrics_port, multiprocess=False, ready=services_probe(settings)
                )
            except OSError as exc:  # another listener on this host: listening matters more than metrics
                logging.getLogger(__name__).warning(
                    metrics_server.unavailable_message(
                        settings.metrics_host, settings.events_metrics_port, exc, "this events listener"
                    )
                )
        if rt.in_process:
            rt.start_in_process_workers()
        Listener(rt).run(stop)
    finally:
        if server is not None:
            server.shutdown()
        rt.close()


@events_app.command("template")
def events_template(org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")]) -> None:
    """Print a CloudFormation template (JSON) for the org's events: an EventBridge rule on its changes, an
    SQS queue with a dead-letter queue, and read access for the management role. Deploy it in the
    management account in us-east-1, then `orgsync org edit ORG --events-queue-url <its QueueUrl>`."""
    from domain.live import events_template as template
    from storage import listings

    with database() as rt, rt.reading() as conn:
        found = listings.org_view(conn, listings.find_org_id(conn, org))
        creds = rt.keyring.open(listings.org_credentials(conn, found.id), "organizations", found.id)
    document = template(
        nickname=found.nickname, cloud_org_id=found.cloud_org_id, management_role_arn=creds.management.role_arn
    )
    print_json(document)
