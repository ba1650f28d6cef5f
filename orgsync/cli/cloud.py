"""`orgsync cloud`: inspect accounts (clouds); register, edit and remove standalone ones."""

from __future__ import annotations

from typing import Annotated

import typer

from domain.config import (
    RoleConfig,
    Secret,
    check_account_id,
    check_cloud_name,
    check_duration,
    check_external_id,
    check_session_name,
    parse_role_arn,
)
from domain.errors import InvalidInput, OrgSyncError
from domain.status import CloudStatus

from ..terminal import add_row, literal, table
from .common import JsonOpt, WaitOpt, database, follow, out, print_json, read_secret, runtime

cloud_app = typer.Typer(no_args_is_help=True, help="Inspect accounts (clouds); register standalone ones.")
RoleArnOpt = Annotated[str, typer.Option(help="Role to assume in that account.")]
SessionNameOpt = Annotated[str, typer.Option(help="Session name.")]
ExternalIdOpt = Annotated[str | None, typer.Option(help="External id of the role.")]
ExternalIdFileOpt = Annotated[str | None, typer.Option(help="Read it from a file ('-' = stdin).")]
DurationOpt = Annotated[int, typer.Option(help="900-43200 seconds.")]


@cloud_app.command("add")
def cloud_add(
    account_id: Annotated[str, typer.Option(help="12-digit AWS account id.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    role_arn: RoleArnOpt,
    session_name: SessionNameOpt,
    external_id: ExternalIdOpt = None,
    external_id_file: ExternalIdFileOpt = None,
    session_duration: DurationOpt = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Register a standalone account after assuming its role."""
    from .. import services

    check_account_id(account_id, "account-id")
    role = _role_config(
        role_arn, session_name, external_id or read_secret(external_id_file, "external-id-file"), session_duration
    )
    name = check_cloud_name(name)
    with runtime() as rt:
        cloud_id = services.add_cloud(rt, account_id, name, role)
    if as_json:
        print_json({"id": cloud_id, "account_id": account_id, "name": name, "status": CloudStatus.OK})
    else:
        out.print(f"added account {account_id} as {cloud_id}")


@cloud_app.command("list")
def cloud_list(
    org: Annotated[str | None, typer.Option(help="Only accounts of this organization.")] = None,
    badge: Annotated[str | None, typer.Option(help="KEY=VALUE: only accounts with this badge.")] = None,
    status: Annotated[str | None, typer.Option(help="Only accounts with this status.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Accounts with their state, status, OU path and badges."""
    from storage import listings

    badge_filter = None
    if badge is not None:
        key, sep, value = badge.partition("=")
        if not sep or not key:
            raise InvalidInput("badge", "expected KEY=VALUE")
        badge_filter = (key, value)
    wanted = None
    if status is not None:
        try:
            wanted = CloudStatus(status)
        except ValueError:
            raise InvalidInput("status", f"unknown status {status!r}; one of {', '.join(CloudStatus)}") from None
    with database() as rt, rt.reading() as conn:
        org_id = listings.find_org_id(conn, org) if org else None
        rows = listings.list_clouds(conn, org_id=org_id, badge=badge_filter, status=wanted)
    if as_json:
        print_json(rows)
        return
    grid = table("account", "name", "aws state", "status", "org path", "managed")
    for r in rows:
        add_row(
            grid,
            r["account_id"],
            r["name"],
            r["aws_state"],
            r["status"],
            r["org_path"],
            "yes" if r["managed"] else "no",
        )
    out.print(grid)
    out.print(f"{len(rows)} accounts")


@cloud_app.command("validate")
def cloud_validate(
    accounts: Annotated[list[str] | None, typer.Argument(help="Account ids (default: all, or all of --org).")] = None,
    org: Annotated[str | None, typer.Option(help="Only accounts of this organization.")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check again that each account's role can be assumed; the outcome is the account's status."""
    from .. import services

    for account in accounts or ():
        check_account_id(account, "account")
    with runtime(workers=True) as rt:
        request_id, count = services.request_validation(rt, org_ref=org, account_ids=list(accounts or ()))
        follow(
            rt,
            request_id if count else None,
            label="validation",
            wait=wait,
            as_json=as_json,
            data={"request_id": request_id, "accounts": count},
            text=f"validation requested for {count} account{'' if count == 1 else 's'} ({request_id})",
        )


@cloud_app.command("show")
def cloud_show(account: Annotated[str, typer.Argument(help="Account id.")], as_json: JsonOpt = False) -> None:
    """One account: state, status, OU path, badges, tags and the SCPs that apply to it."""
    from ..views import cloud_detail

    check_account_id(account, "account")
    with database() as rt, rt.reading() as conn:
        data = cloud_detail(conn, account)
    if data is None:
        raise OrgSyncError(f"no cloud with account id {account}")
    if as_json:
        print_json(data)
        return
    for key in ("account_id", "name", "email", "aws_state", "status", "status_message", "org_path", "managed"):
        out.print(f"{key:16} {literal(data[key])}")
    for key, badge in data["badge_details"].items():
        flag = " (auto)" if badge["autogenerated"] else ""
        out.print(f"badge            {literal(key)}={literal(badge['value'])}{flag}")
    for key, value in data["tags"].items():
        out.print(f"tag              {literal(key)}={literal(value)}")
    for scp in data["service_control_policies"]:
        out.print(f"scp              {literal(scp['name'])} ({scp['id']}) from {literal(scp['attached_to'])}")


@cloud_app.command("remove")
def cloud_remove(
    account: Annotated[str, typer.Argument(help="Account id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Remove a standalone account; accounts managed by an organization follow the organization."""
    from .. import services

    check_account_id(account, "account")
    with runtime() as rt:
        name = services.removable_cloud(rt, account)  # unknown or managed: refused before anything is asked
        if not yes and not typer.confirm(f"Remove account {account} ({literal(name)})?"):
            raise typer.Abort()
        services.remove_cloud(rt, account)
    out.print(f"removed account {account}")


@cloud_app.command("edit")
def cloud_edit(
    account: Annotated[str, typer.Argument(help="Account id.")],
    role_arn: RoleArnOpt,
    session_name: SessionNameOpt,
    external_id: ExternalIdOpt = None,
    external_id_file: ExternalIdFileOpt = None,
    session_duration: DurationOpt = 3600,
) -> None:
    """Replace a standalone account's role settings (all of them), after assuming the new role."""
    from .. import services

    check_account_id(account, "account")
    role = _role_config(
        role_arn, session_name, external_id or read_secret(external_id_file, "external-id-file"), session_duration
    )
    with runtime() as rt:
        services.edit_cloud(rt, account, role)
    out.print(f"updated the role of account {account}")


def _role_config(role_arn: str, session_name: str, external_id: str | None, duration: int) -> RoleConfig:
    parse_role_arn(role_arn, "role-arn")
    external = check_external_id(external_id, "external-id")
    return RoleConfig(
        role_arn=role_arn,
        session_name=check_session_name(session_name, "session-name"),
        duration_seconds=check_duration(duration, "session-duration"),
        external_id=None if external is None else Secret(external),
    )
