"""The `orgsync` command line.

Every listing takes --json and then prints exactly one JSON document on stdout. Errors print one line
on stderr and exit non-zero; secrets are read from files, stdin or a prompt, never printed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orgsync.domain.config import (
    OrgRegistration,
    RoleConfig,
    Secret,
    build_credentials,
    build_filters,
    check_account_id,
    check_duration,
    check_external_id,
    check_nickname,
    check_session_name,
    parse_role_arn,
)
from orgsync.domain.errors import InvalidInput, OrgSyncError
from orgsync.storage import repository as repo
from orgsync.storage.models import Organization

from . import services
from .bootstrap import Runtime
from .logs import configure_logging
from .settings import get_settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Keep a cloud inventory in step with AWS Organizations."
)
org_app = typer.Typer(no_args_is_help=True, help="Register and inspect AWS Organizations.")
cloud_app = typer.Typer(no_args_is_help=True, help="Inspect accounts (clouds); register standalone ones.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage the credential encryption keys.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(org_app, name="org")
app.add_typer(cloud_app, name="cloud")
app.add_typer(keys_app, name="keys")
tags_app = typer.Typer(no_args_is_help=True, help="Account tags read from AWS.")
badges_app = typer.Typer(no_args_is_help=True, help="Badges derived from tags.")
dead_app = typer.Typer(no_args_is_help=True, help="Messages that failed for good (<queue>.XQ).")
app.add_typer(db_app, name="db")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(tags_app, name="tags")
app.add_typer(badges_app, name="badges")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Return when the work and all it caused has finished.")]
RoleArnOpt = Annotated[str, typer.Option(help="Role to assume in that account.")]
SessionNameOpt = Annotated[str, typer.Option(help="Session name.")]
ExternalIdOpt = Annotated[str | None, typer.Option(help="External id of the role.")]
ExternalIdFileOpt = Annotated[str | None, typer.Option(help="Read it from a file ('-' = stdin).")]
DurationOpt = Annotated[int, typer.Option(help="900-43200 seconds.")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def runtime(*, workers: bool = False, migrate: bool | None = None) -> Iterator[Runtime]:
    settings = get_settings()
    configure_logging(settings, quiet=True)
    rt = Runtime.open(settings, migrate=migrate)
    try:
        if workers and rt.in_process:
            rt.start_in_process_workers()
        yield rt
    finally:
        rt.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _read_secret(path: str | None, what: str) -> str | None:
    """A secret from a file, or from stdin with '-'; never from the command line itself."""
    if path is None:
        return None
    if path == "-":
        value = sys.stdin.readline()
    else:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            raise InvalidInput(what, f"cannot read {path}: {exc.strerror}") from None
    value = value.strip()
    if not value:
        raise InvalidInput(what, "the file is empty")
    return value


def _wait(rt: Runtime, request_id: str, *, label: str, as_json: bool) -> services.WaitResult:
    settings = rt.settings
    if as_json:
        return services.wait_for(rt, request_id, timeout=settings.wait_timeout_seconds)
    with err.status(f"{label}…") as status:

        def show(progress: dict[str, Any]) -> None:
            status.update(f"{label}: {progress['done']} messages handled, {progress['pending']} pending")

        return services.wait_for(rt, request_id, timeout=settings.wait_timeout_seconds, on_progress=show)


def _finish_wait(result: services.WaitResult) -> None:
    if not result.finished:
        _fail(f"timed out after {result.seconds:.0f}s waiting for the sync to finish")
    if result.failures:
        actor, error = result.failures[0]
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        _fail(f"{actor}: {error}{more}")


# -- org ----------------------------------------------------------------------------------------


def _org_json(org: Organization, account_count: int) -> dict[str, Any]:
    report = org.permission_report or {}
    return {
        "id": str(org.id),
        "provider": org.provider,
        "cloud_org_id": org.cloud_org_id,
        "nickname": org.nickname,
        "management_account_id": org.management_account_id,
        "account_count": account_count,
        "filters": org.filters,
        "warnings": report.get("warnings", []),
        "permission_errors": report.get("errors", []),
        "permissions_checked_at": report.get("checked_at"),
        "last_sync": {
            "status": org.last_sync_status,
            "started_at": org.last_sync_started_at.isoformat() if org.last_sync_started_at else None,
            "finished_at": org.last_sync_finished_at.isoformat() if org.last_sync_finished_at else None,
            "error": org.last_sync_error,
        },
        "created_at": org.created_at.isoformat(),
    }


@org_app.command("add")
def org_add(
    nickname: Annotated[str, typer.Option(help="A name for the organization (becomes a badge).")],
    org_role_arn: Annotated[str, typer.Option(help="Role in the management account that reads the org.")],
    org_session_name: Annotated[str, typer.Option(help="Session name for the management role.")],
    member_role_name: Annotated[str, typer.Option(help="Role name (optionally with path) in every member account.")],
    member_session_name: Annotated[str, typer.Option(help="Session name for member roles.")],
    org_session_duration: Annotated[int, typer.Option(help="900-43200 seconds.")] = 3600,
    org_external_id: Annotated[str | None, typer.Option(help="External id of the management role.")] = None,
    org_external_id_file: Annotated[str | None, typer.Option(help="Read it from a file ('-' = stdin).")] = None,
    member_session_duration: Annotated[int, typer.Option(help="900-43200 seconds.")] = 3600,
    member_external_id: Annotated[str | None, typer.Option(help="External id shared by member roles.")] = None,
    member_external_id_file: Annotated[str | None, typer.Option(help="Read it from a file ('-' = stdin).")] = None,
    access_key_id: Annotated[str | None, typer.Option(help="IAM user key id (else the ambient credentials).")] = None,
    secret_access_key_file: Annotated[str | None, typer.Option(help="File with the secret key ('-' = stdin).")] = None,
    exclude_name_prefix: Annotated[list[str] | None, typer.Option(help="Skip accounts whose name starts so.")] = None,
    limit_to_ou: Annotated[list[str] | None, typer.Option(help="Only these OUs and what is below them.")] = None,
    auto_remove_suspended: Annotated[
        bool, typer.Option("--auto-remove-suspended", help="Drop suspended accounts.")
    ] = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an AWS Organization: checks formats, the management role and its permissions, then syncs."""
    registration = OrgRegistration(
        nickname=check_nickname(nickname),
        credentials=build_credentials(
            org_role_arn=org_role_arn,
            org_session_name=org_session_name,
            org_session_duration=org_session_duration,
            org_external_id=org_external_id or _read_secret(org_external_id_file, "org-external-id-file"),
            member_role_name=member_role_name,
            member_session_name=member_session_name,
            member_session_duration=member_session_duration,
            member_external_id=member_external_id or _read_secret(member_external_id_file, "member-external-id-file"),
            access_key_id=access_key_id,
            secret_access_key=_read_secret(secret_access_key_file, "secret-access-key-file"),
        ),
        filters=build_filters(exclude_name_prefix or (), limit_to_ou or (), auto_remove_suspended),
    )
    with runtime(workers=True) as rt:
        registered = services.register_org(rt, registration)
        result = None
        if wait or rt.in_process:
            result = _wait(rt, registered.request_id, label="syncing", as_json=as_json)
        with rt.sessions() as s:
            orgs = {str(o.id): (o, n) for o, n in repo.list_orgs(s)}
        org, count = orgs[registered.org_id]
        data = _org_json(org, count)
        data["request_id"] = registered.request_id
        data["notes"] = list(registered.report.notes)
        if as_json:
            _print_json(data)
        else:
            out.print(f"added organization {org.nickname} ({org.cloud_org_id}) as {org.id}")
            for warning in registered.report.warnings:
                out.print(f"warning: {warning}", markup=False)
            if result is not None and result.finished:
                out.print(f"synced: {count} accounts in {result.seconds:.1f}s")
        if result is not None:
            _finish_wait(result)


@org_app.command("list")
def org_list(as_json: JsonOpt = False) -> None:
    """Registered organizations with their account counts and last sync."""
    with runtime() as rt, rt.sessions() as s:
        rows = [_org_json(o, n) for o, n in repo.list_orgs(s)]
    if as_json:
        _print_json(rows)
        return
    table = Table("nickname", "cloud org", "accounts", "last sync", "finished", "id")
    for r in rows:
        last = r["last_sync"]
        table.add_row(
            r["nickname"],
            r["cloud_org_id"],
            str(r["account_count"]),
            last["status"] or "-",
            last["finished_at"] or "-",
            r["id"],
        )
    out.print(table)


@org_app.command("show")
def org_show(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")], as_json: JsonOpt = False
) -> None:
    """One organization: settings (never secrets), filters, warnings, last sync."""
    with runtime() as rt, rt.sessions() as s:
        found = repo.find_org(s, org)
        count = dict((str(o.id), n) for o, n in repo.list_orgs(s))[str(found.id)]
        data = _org_json(found, count)
        creds = rt.keyring.open(found.credentials, "organizations", found.id)
        data["management_role"] = {
            "role_arn": creds.management.role_arn,
            "session_name": creds.management.session_name,
            "session_duration": creds.management.duration_seconds,
            "external_id_set": creds.management.external_id is not None,
        }
        data["member_role"] = {
            "role_name": creds.member.role_name,
            "session_name": creds.member.session_name,
            "session_duration": creds.member.duration_seconds,
            "external_id_set": creds.member.external_id is not None,
        }
        data["credentials_source"] = "iam-user" if creds.access_key else "ambient"
        if creds.access_key:
            data["access_key_id"] = creds.access_key.access_key_id
        run = repo.latest_sync_run(s, found.id)
        if run is not None:
            data["last_sync"].update(
                {
                    "accounts_in_scope": run.accounts_in_scope,
                    "added": run.added,
                    "updated": run.updated,
                    "removed": run.removed,
                    "rows_written": run.rows_written,
                    "aws_calls": run.aws_calls,
                    "duration_ms": run.duration_ms,
                }
            )
    if as_json:
        _print_json(data)
        return
    for key in ("nickname", "id", "cloud_org_id", "management_account_id", "account_count", "credentials_source"):
        out.print(f"{key:24} {data[key]}", markup=False)
    out.print(f"{'management role':24} {data['management_role']['role_arn']}", markup=False)
    out.print(f"{'member role':24} {data['member_role']['role_name']}", markup=False)
    out.print(f"{'filters':24} {json.dumps(data['filters'])}", markup=False)
    out.print(f"{'last sync':24} {json.dumps(data['last_sync'], default=str)}", markup=False)
    for warning in data["warnings"]:
        out.print(f"warning: {warning}", markup=False)


@org_app.command("sync")
def org_sync(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Request a sync of one organization now."""
    with runtime(workers=True) as rt:
        org_id, request_id = services.request_sync(rt, org, "requested from the CLI")
        result = None
        if wait or rt.in_process:
            result = _wait(rt, request_id, label="syncing", as_json=as_json)
        if as_json:
            _print_json({"org_id": org_id, "request_id": request_id, "finished": bool(result and result.finished)})
        else:
            out.print(f"sync requested for {org_id} (request {request_id})")
        if result is not None:
            _finish_wait(result)


@org_app.command("edit")
def org_edit(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    nickname: Annotated[str | None, typer.Option(help="A new nickname.")] = None,
    org_role_arn: Annotated[str | None, typer.Option(help="Credentials: all or nothing (see org add).")] = None,
    org_session_name: Annotated[str | None, typer.Option()] = None,
    org_session_duration: Annotated[int | None, typer.Option()] = None,
    org_external_id: Annotated[str | None, typer.Option()] = None,
    org_external_id_file: Annotated[str | None, typer.Option()] = None,
    member_role_name: Annotated[str | None, typer.Option()] = None,
    member_session_name: Annotated[str | None, typer.Option()] = None,
    member_session_duration: Annotated[int | None, typer.Option()] = None,
    member_external_id: Annotated[str | None, typer.Option()] = None,
    member_external_id_file: Annotated[str | None, typer.Option()] = None,
    access_key_id: Annotated[str | None, typer.Option()] = None,
    secret_access_key_file: Annotated[str | None, typer.Option()] = None,
    exclude_name_prefix: Annotated[list[str] | None, typer.Option(help="Replaces the prefixes.")] = None,
    clear_exclude_name_prefix: Annotated[bool, typer.Option("--clear-exclude-name-prefix")] = False,
    limit_to_ou: Annotated[list[str] | None, typer.Option(help="Replaces the OU limit.")] = None,
    clear_limit_to_ou: Annotated[bool, typer.Option("--clear-limit-to-ou")] = False,
    auto_remove_suspended: Annotated[
        bool | None, typer.Option("--auto-remove-suspended/--no-auto-remove-suspended", show_default=False)
    ] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Change an organization. Credentials change as a whole; filters alone keep the stored credentials."""
    credential_values = {
        "org_role_arn": org_role_arn,
        "org_session_name": org_session_name,
        "org_session_duration": org_session_duration,
        "org_external_id": org_external_id or _read_secret(org_external_id_file, "org-external-id-file"),
        "member_role_name": member_role_name,
        "member_session_name": member_session_name,
        "member_session_duration": member_session_duration,
        "member_external_id": member_external_id or _read_secret(member_external_id_file, "member-external-id-file"),
        "access_key_id": access_key_id,
        "secret_access_key": _read_secret(secret_access_key_file, "secret-access-key-file"),
    }
    credentials = None
    if any(v is not None for v in credential_values.values()):
        required = ("org_role_arn", "org_session_name", "member_role_name", "member_session_name")
        missing = [name.replace("_", "-") for name in required if credential_values[name] is None]
        if missing:
            raise InvalidInput(
                missing[0],
                "changing credentials needs every credential field again (stored credentials are one encrypted "
                f"block); missing: {', '.join('--' + m for m in missing)}",
            )
        credentials = build_credentials(**credential_values)  # type: ignore[arg-type]
    if exclude_name_prefix and clear_exclude_name_prefix:
        raise InvalidInput("exclude-name-prefix", "give prefixes or --clear-exclude-name-prefix, not both")
    if limit_to_ou and clear_limit_to_ou:
        raise InvalidInput("limit-to-ou", "give OU ids or --clear-limit-to-ou, not both")
    new_filters = build_filters(exclude_name_prefix or (), limit_to_ou or ())
    edit = services.OrgEdit(
        credentials=credentials,
        nickname=check_nickname(nickname) if nickname is not None else None,
        exclude_name_prefixes=() if clear_exclude_name_prefix else (new_filters.exclude_name_prefixes or None),
        limit_to_ou_ids=() if clear_limit_to_ou else (new_filters.limit_to_ou_ids or None),
        auto_remove_suspended=auto_remove_suspended,
    )
    with runtime(workers=True) as rt:
        org_id, request_id, changed = services.edit_org(rt, org, edit)
        result = None
        if request_id is not None and (wait or rt.in_process):
            result = _wait(rt, request_id, label="syncing", as_json=as_json)
        if as_json:
            _print_json({"id": org_id, "changed": changed, "request_id": request_id})
        elif changed:
            out.print(f"changed {', '.join(changed)}; sync requested ({request_id})")
        else:
            out.print("nothing to change")
        if result is not None:
            _finish_wait(result)


@org_app.command("remove")
def org_remove(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an organization and every account it manages from the inventory (AWS is not touched)."""
    if not yes and not typer.confirm(f"Remove organization {org} and all the accounts it manages?"):
        raise typer.Abort()
    with runtime() as rt:
        nickname, count = services.remove_org(rt, org)
    if as_json:
        _print_json({"nickname": nickname, "clouds_removed": count})
    else:
        out.print(f"removed organization {nickname} and its {count} accounts")


# -- cloud --------------------------------------------------------------------------------------


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
    check_account_id(account_id, "account-id")
    role = _role_config(
        role_arn, session_name, external_id or _read_secret(external_id_file, "external-id-file"), session_duration
    )
    if not name.strip():
        raise InvalidInput("name", "must not be empty")
    with runtime() as rt:
        cloud_id = services.add_cloud(rt, account_id, name.strip(), role)
    if as_json:
        _print_json({"id": cloud_id, "account_id": account_id, "name": name.strip(), "status": "ok"})
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
    badge_filter = None
    if badge is not None:
        key, sep, value = badge.partition("=")
        if not sep or not key:
            raise InvalidInput("badge", "expected KEY=VALUE")
        badge_filter = (key, value)
    with runtime() as rt, rt.sessions() as s:
        org_id = repo.find_org(s, org).id if org else None
        rows = repo.list_clouds(s, org_id=org_id, badge=badge_filter, status=status)
    if as_json:
        _print_json(rows)
        return
    table = Table("account", "name", "aws state", "status", "org path", "managed")
    for r in rows:
        table.add_row(
            r["account_id"],
            r["name"],
            r["aws_state"] or "-",
            r["status"],
            r["org_path"] or "-",
            "yes" if r["managed"] else "no",
        )
    out.print(table)
    out.print(f"{len(rows)} accounts")


@cloud_app.command("validate")
def cloud_validate(
    accounts: Annotated[list[str] | None, typer.Argument(help="Account ids (default: all, or all of --org).")] = None,
    org: Annotated[str | None, typer.Option(help="Only accounts of this organization.")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check again that each account's role can be assumed; the outcome is the account's status."""
    for account in accounts or ():
        check_account_id(account, "account")
    with runtime(workers=True) as rt:
        request_id, count = services.request_validation(rt, org_ref=org, account_ids=list(accounts or ()))
        result = None
        if count and (wait or rt.in_process):
            result = _wait(rt, request_id, label=f"validating {count} accounts", as_json=as_json)
        if as_json:
            _print_json({"request_id": request_id, "accounts": count})
        else:
            out.print(f"validation requested for {count} accounts ({request_id})")
        if result is not None:
            _finish_wait(result)


@cloud_app.command("show")
def cloud_show(account: Annotated[str, typer.Argument(help="Account id.")], as_json: JsonOpt = False) -> None:
    """One account: state, status, OU path, badges, tags and the SCPs that apply to it."""
    check_account_id(account, "account")
    with runtime() as rt, rt.sessions() as s:
        rows = repo.list_clouds(s, account_ids=[account])
        if not rows:
            raise OrgSyncError(f"no cloud with account id {account}")
        data = rows[0]
        data["tags"] = repo.tags_of(s, data["id"])
        data["service_control_policies"] = repo.scps_for_cloud(s, data["id"])
    if as_json:
        _print_json(data)
        return
    for key in ("account_id", "name", "email", "aws_state", "status", "status_message", "org_path", "managed"):
        out.print(f"{key:16} {data[key]}", markup=False)
    for key, badge in data["badge_details"].items():
        flag = " (auto)" if badge["autogenerated"] else ""
        out.print(f"badge            {key}={badge['value']}{flag}", markup=False)
    for key, value in data["tags"].items():
        out.print(f"tag              {key}={value}", markup=False)
    for scp in data["service_control_policies"]:
        out.print(f"scp              {scp['name']} ({scp['id']}) from {scp['attached_to']}", markup=False)


@cloud_app.command("remove")
def cloud_remove(
    account: Annotated[str, typer.Argument(help="Account id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Remove a standalone account; accounts managed by an organization follow the organization."""
    check_account_id(account, "account")
    if not yes and not typer.confirm(f"Remove account {account}?"):
        raise typer.Abort()
    with runtime() as rt:
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
    check_account_id(account, "account")
    role = _role_config(
        role_arn, session_name, external_id or _read_secret(external_id_file, "external-id-file"), session_duration
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


# -- tags and badges ----------------------------------------------------------------------------


def _request_and_wait(event_factory: Any, org: str | None, label: str, wait: bool, as_json: bool) -> None:
    with runtime(workers=True) as rt:
        request_id = services.request_event(rt, org, event_factory)
        result = None
        if wait or rt.in_process:
            result = _wait(rt, request_id, label=label, as_json=as_json)
        if as_json:
            _print_json({"request_id": request_id, "finished": bool(result and result.finished)})
        else:
            out.print(f"{label} requested ({request_id})")
        if result is not None:
            _finish_wait(result)


@tags_app.command("refresh")
def tags_refresh(
    org: Annotated[str | None, typer.Option(help="Only this organization (default: all).")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Read account tags from AWS now; changed tags then update the badges."""
    from orgsync.domain.events import TagRefreshDue

    _request_and_wait(lambda org_id: TagRefreshDue(org_id), org, "tag refresh", wait, as_json)


@badges_app.command("reconcile")
def badges_reconcile(
    org: Annotated[str | None, typer.Option(help="Only this organization (default: all).")] = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make badges follow the stored tags now."""
    from orgsync.domain.events import BadgeReconcileDue

    _request_and_wait(lambda org_id: BadgeReconcileDue(org_id), org, "badge reconcile", wait, as_json)


@app.command()
def scheduler() -> None:
    """Publish the periodic work (syncs, tag refresh, badge reconcile, re-validation); one instance leads."""
    from .scheduler_main import main as scheduler_main

    settings = get_settings()
    if settings.in_process_broker:
        _fail("orgsync scheduler needs ORGSYNC_BROKER_URL: it only publishes work for `orgsync worker` processes")
    scheduler_main(settings)


# -- operations ---------------------------------------------------------------------------------


@app.command()
def worker(
    processes: Annotated[int, typer.Option(help="Worker processes.")] = 0,
    threads: Annotated[int, typer.Option(help="Threads per process.")] = 0,
    queues: Annotated[list[str] | None, typer.Option(help="Queues to consume (default: all).")] = None,
) -> None:
    """Run dramatiq worker processes consuming orgsync's queues from RabbitMQ."""
    settings = get_settings()
    if settings.in_process_broker:
        _fail("orgsync worker needs ORGSYNC_BROKER_URL (without it, commands run their work in-process)")
    from orgsync.workers.routes import QUEUES

    unknown = sorted(set(queues or ()) - set(QUEUES))
    if unknown:
        _fail(f"unknown queue(s) {', '.join(unknown)}; orgsync's queues are {', '.join(QUEUES)}")
    args = [
        sys.executable,
        "-m",
        "dramatiq",
        "orgsync.app.worker_main:boot",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads or settings.worker_threads),
        "--skip-logging",
    ]
    if queues:
        args += ["--queues", *queues]
    if settings.metrics_port:
        # every worker process writes its counters here; one fork process serves them all
        metrics_dir = Path(tempfile.mkdtemp(prefix="orgsync-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        args += ["--fork-function", "orgsync.app.metrics_server:serve"]
    sys.stdout.flush()
    os.execv(sys.executable, args)  # noqa: S606 - replaces this process with dramatiq's own supervisor


@app.command()
def queues(as_json: JsonOpt = False) -> None:
    """Message counts of orgsync's queues (ready, delayed, dead letters)."""
    from orgsync.workers.routes import QUEUES

    settings = get_settings()
    if settings.in_process_broker:
        data: Any = {
            "mode": "in-process",
            "queues": [],
            "note": "no ORGSYNC_BROKER_URL: messages live inside each command",
        }
    else:
        from .broker_admin import queue_counts

        assert settings.broker_url is not None
        api = settings.broker_management_url.get_secret_value() if settings.broker_management_url else None
        data = {"mode": "rabbitmq", "queues": queue_counts(settings.broker_url.get_secret_value(), QUEUES, api)}
    if as_json:
        _print_json(data)
        return
    if data["mode"] == "in-process":
        out.print("in-process broker: " + data["note"])
        return
    table = Table("queue", "ready", "unacked", "delayed", "dead", "consumers")
    for q in data["queues"]:
        table.add_row(
            q["queue"],
            *(str(q[k]) if q[k] is not None else "-" for k in ("ready", "unacked", "delayed", "dead", "consumers")),
        )
    out.print(table)


def _broker_url_or_fail() -> str:
    settings = get_settings()
    if settings.in_process_broker or settings.broker_url is None:
        _fail("no ORGSYNC_BROKER_URL: with the in-process broker, dead letters live only inside a command's run")
        raise AssertionError  # unreachable: _fail exits
    return settings.broker_url.get_secret_value()


def _queues_option(queue: str | None) -> tuple[str, ...]:
    from orgsync.workers.routes import QUEUES

    if queue is not None and queue not in QUEUES:
        _fail(f"unknown queue {queue}; orgsync's queues are {', '.join(QUEUES)}")
    return (queue,) if queue else QUEUES


@dead_app.command("list")
def dead_letters_list(
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None, as_json: JsonOpt = False
) -> None:
    """Dead-lettered messages: type, org, age, why they failed."""
    from .broker_admin import peek_dead_letters

    url = _broker_url_or_fail()
    letters = peek_dead_letters(url, _queues_option(queue))
    with runtime() as rt, rt.sessions() as s:
        reasons = repo.failure_reasons(s, [i for d in letters for i in (d["envelope_id"], d["message_id"]) if i])
    now_ms = time.time() * 1000
    for letter in letters:
        reason = reasons.get(letter["envelope_id"] or "") or reasons.get(letter["message_id"]) or None
        letter["reason"] = reason or ("the body is not JSON" if not letter.pop("body_is_json") else "unknown")
        letter.pop("body_is_json", None)
        sent = letter.pop("enqueued_at_ms")
        letter["age_seconds"] = round((now_ms - sent) / 1000) if isinstance(sent, int | float) else None
    if as_json:
        _print_json(letters)
        return
    table = Table("queue", "message", "type", "org", "age (s)", "reason")
    for d in letters:
        table.add_row(d["queue"], d["message_id"], d["type"], d["org_id"] or "-", str(d["age_seconds"]), d["reason"])
    out.print(table)
    out.print(f"{len(letters)} dead letters")


@dead_app.command("requeue")
def dead_letters_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Message ids (default: every dead letter).")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put dead letters back on their queue (after fixing what made them fail)."""
    from .broker_admin import requeue_dead_letters

    url = _broker_url_or_fail()
    moved: list[tuple[str, str]] = []
    with runtime() as rt:

        def forget(message_ids: list[str]) -> None:
            with rt.sessions.begin() as s:
                repo.forget_failures(s, message_ids)

        for name in _queues_option(queue):
            moved += requeue_dead_letters(url, name, set(ids) if ids else None, forget)
    if as_json:
        _print_json({"requeued": [m for m, _ in moved]})
    else:
        out.print(f"requeued {len(moved)} messages")


@dead_app.command("purge")
def dead_letters_purge(
    queue: Annotated[str, typer.Option(help="The queue whose dead letters to drop.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Drop every dead letter of one queue."""
    from .broker_admin import purge_dead_letters

    url = _broker_url_or_fail()
    _queues_option(queue)
    if not yes and not typer.confirm(f"Drop every dead letter of {queue}?"):
        raise typer.Abort()
    out.print(f"purged {purge_dead_letters(url, queue)} dead letters from {queue}.XQ")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration."""
    with runtime(migrate=True):
        pass
    out.print("database schema is up to date")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random encryption key (put it first in ORGSYNC_ENCRYPTION_KEYS to start using it)."""
    from orgsync.storage.vault import generate_key

    sys.stdout.write(generate_key() + "\n")


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """Re-encrypt every stored credential block under the first key of the ring."""
    from .keys import rotate

    with runtime() as rt:
        counts = rotate(rt)
    if as_json:
        _print_json(counts)
    else:
        out.print(
            f"re-encrypted {counts['organizations']} organizations and {counts['clouds']} clouds under the first key"
        )


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Accounts in the generated organization.")] = 127,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
) -> None:
    """Run everything on one machine: embedded Postgres, in-process broker, a local AWS with a generated org."""
    from .demo import run_demo

    run_demo(accounts=accounts, seed=seed, console=out)


def main() -> None:
    debug = os.environ.get("ORGSYNC_DEBUG") == "1"
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("error: aborted")
        sys.exit(130)
    except OrgSyncError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if debug:
            raise
        import click

        if isinstance(exc, click.ClickException):
            err.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        err.print(
            f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(2)
