"""`orgsync tags refresh` and `orgsync badges reconcile`: request the periodic tag and badge work now."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from .common import JsonOpt, WaitOpt, follow, runtime

if TYPE_CHECKING:
    from domain.events import Event

tags_app = typer.Typer(no_args_is_help=True, help="Account tags read from AWS.")
badges_app = typer.Typer(no_args_is_help=True, help="Badges derived from tags.")


def _request_and_wait(
    event_factory: Callable[[uuid.UUID | None], Event], org: str | None, label: str, wait: bool, as_json: bool
) -> None:
    from .. import services

    with runtime(workers=True) as rt:
        request_id = services.request_event(rt, org, event_factory)
        follow(
            rt,
            request_id,
            label=label,
            wait=wait,
            as_json=as_json,
            data={"request_id": request_id},
            text=f"{label} requested ({request_id})",
        )


@tags_app.command("refresh")
def tags_refresh(
    org: Annotated[str | None, typer.Option(help="Only this organization (default: all).")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Read account tags from AWS now; changed tags then update the badges."""
    from domain.events import TagRefreshDue

    _request_and_wait(lambda org_id: TagRefreshDue(org_id), org, "tag refresh", wait, as_json)


@badges_app.command("reconcile")
def badges_reconcile(
    org: Annotated[str | None, typer.Option(help="Only this organization (default: all).")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make badges follow the stored tags now."""
    from domain.events import BadgeReconcileDue

    _request_and_wait(lambda org_id: BadgeReconcileDue(org_id), org, "badge reconcile", wait, as_json)
