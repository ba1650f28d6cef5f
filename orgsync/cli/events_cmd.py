"""`orgsync events`: live updates from the AWS events of an organization."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import database, print_json

events_app = typer.Typer(no_args_is_help=True, help="Live updates from AWS Organizations events (SQS).")


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
