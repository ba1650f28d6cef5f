"""The `orgsync` command line.

Every listing takes --json and then prints exactly one JSON document on stdout. Errors print one line
on stderr and exit non-zero; secrets are read from files, stdin or a prompt, never printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from domain.config import (
    OrgRegistration,
    RoleConfig,
    Secret,
    build_credentials,
    build_filters,
    check_account_id,
    check_cloud_name,
    check_duration,
    check_external_id,
    check_nickname,
    check_session_name,
    parse_role_arn,
)
from domain.errors import InvalidInput, OrgSyncError
from domain.status import STATUSES
from storage import repository as repo
from storage.models import Organization
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from . import services
from .bootstrap import Runtime
from .logs import configure_logging
from .settings import get_settings
from .terminal import add_row, literal, shorten, table
from .terminal import console as make_console

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

out = make_console()
err = make_console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Return when the work and all it caused has finished.")]
RoleArnOpt = Annotated[str, typer.Option(help="Role to assume in that account.")]
SessionNameOpt = Annotated[str, typer.Option(help="Session name.")]
ExternalIdOpt = Annotated[str | None, typer.Option(help="External id of the role.")]
ExternalIdFileOpt = Annotated[str | None, typer.Option(help="Read it from a file ('-' = stdin).")]
DurationOpt = Annotated[int, typer.Option(help="900-43200 seconds.")]


def _error_line(message: str) -> str:
    """One line on stderr: control characters escaped, a long value cut."""
    return "error: " + shorten(literal(message))


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(_error_line(message))
    raise typer.Exit(code)


@contextmanager
def runtime(*, workers: bool = False, migrate: bool | None = None) -> Iterator[Runtime]:
    """The command's runtime, after checking the services it needs answer (one clear line if not).

    `workers`: the command publishes work; with RabbitMQ the broker must be reachable before anything
    is stored, or a request would wait in the outbox for a worker that cannot receive it.
    """
    from .preflight import check_broker, check_database

    settings = get_settings()
    configure_logging(settings, quiet=True)
    if "ORGSYNC_LOG_LEVEL" not in os.environ:
        # a command reports what went wrong in its own error line; the logs of the work it runs or
        # publishes (pika's reconnects, a worker thread's warnings) are for ORGSYNC_LOG_LEVEL=INFO
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.CRITICAL)
    if settings.database_url is not None and not settings.embedded_database and not migrate:
        check_database(settings.database_url.get_secret_value())
    if workers and settings.broker_url is not None and not settings.in_process_broker:
        check_broker(settings.broker_url.get_secret_value())
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


def _follow(
    rt: Runtime, request_id: str | None, *, label: str, wait: bool, as_json: bool, data: dict[str, Any], text: str
) -> None:
    """The end of every command that requests work: wait when asked (always in-process), report, and
    exit non-zero when the work timed out or failed. `--json` prints `data` plus the wait's outcome."""
    result = None
    if request_id is not None and (wait or rt.in_process):
        result = _wait(rt, request_id, label=label, as_json=as_json)
    if as_json:
        _print_json({**data, **_wait_json(result)})
    else:
        out.print(text)
    if result is not None:
        _finish_wait(result, label)


def _wait(rt: Runtime, request_id: str, *, label: str, as_json: bool) -> services.WaitResult:
    settings = rt.settings
    if as_json:
        return services.wait_for(rt, request_id, timeout=settings.wait_timeout_seconds)
    with err.status(f"{label}…") as status:

        def show(progress: dict[str, Any]) -> None:
            status.update(f"{label}: {progress['done']} messages handled, {progress['pending']} pending")

        return services.wait_for(rt, request_id, timeout=settings.wait_timeout_seconds, on_progress=show)


def _wait_json(result: services.WaitResult | None) -> dict[str, Any]:
    """What --json says of a --wait: finished, ok, and each failure (the exit code says it too)."""
    if result is None:
        return {"finished": False, "ok": None, "failures": []}
    return {
        "finished": result.finished,
        "ok": result.ok,
        "failures": [{"actor": actor, "error": error} for actor, error in result.failures],
    }


def _finish_wait(result: services.WaitResult, label: str) -> None:
    """Exit non-zero when the awaited work timed out or any part of it failed."""
    if not result.finished:
        _fail(f"timed out after {result.seconds:.0f}s waiting for the {label} to finish (ORGSYNC_WAIT_TIMEOUT_SECONDS)")
    if result.failures:
        actor, error = result.failures[0]
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        _fail(f"{label} failed: {actor}: {error}{more}")


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
        "notes": report.get("notes", []),
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
        if not as_json:
            out.print(
                f"added organization {literal(registered.nickname)} ({registered.cloud_org_id}) as {registered.org_id}"
            )
            for warning in registered.report.warnings:
                out.print(f"warning: {literal(warning)}")
            for note in registered.report.notes:
                out.print(f"note: {literal(note)}")
        result = None
        if wait or rt.in_process:
            result = _wait(rt, registered.request_id, label="sync", as_json=as_json)
        with rt.sessions() as s:
            org, count = repo.org_with_count(s, registered.org_id)
        if as_json:
            _print_json({**_org_json(org, count), "request_id": registered.request_id, **_wait_json(result)})
        elif result is not None and result.ok:
            out.print(f"synced: {count} accounts in {result.seconds:.1f}s")
        if result is not None:
            _finish_wait(result, "sync")


@org_app.command("list")
def org_list(as_json: JsonOpt = False) -> None:
    """Registered organizations with their account counts and last sync."""
    with runtime() as rt, rt.sessions() as s:
        rows = [_org_json(o, n) for o, n in repo.list_orgs(s)]
    if as_json:
        _print_json(rows)
        return
    grid = table("nickname", "cloud org", "accounts", "last sync", "finished", "error", "id")
    for r in rows:
        last = r["last_sync"]
        add_row(
            grid,
            r["nickname"],
            r["cloud_org_id"],
            r["account_count"],
            last["status"],
            last["finished_at"],
            shorten(last["error"] or "", 80),
            r["id"],
        )
    out.print(grid)


@org_app.command("show")
def org_show(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")], as_json: JsonOpt = False
) -> None:
    """One organization: settings (never secrets), filters, warnings, last sync."""
    with runtime() as rt, rt.sessions() as s:
        found, count = repo.org_with_count(s, repo.find_org(s, org).id)
        data = _org_json(found, count)
        unreadable = False
        try:
            creds = rt.keyring.open(found.credentials, "organizations", found.id)
        except CredentialsUnreadable:  # show the rest (the last sync says the same), then exit 1
            unreadable = True
            data.update(management_role=None, member_role=None, credentials_source="unreadable")
        else:
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
    else:
        for label, value in _org_show_lines(data):
            out.print(f"{label:24} {literal(value)}")
        for error in data["permission_errors"]:
            out.print(f"error: {literal(error)}")
        for warning in data["warnings"]:
            out.print(f"warning: {literal(warning)}")
        for note in data["notes"]:
            out.print(f"note: {literal(note)}")
    if unreadable:
        _fail(f"the stored {CREDENTIALS_UNREADABLE}: `org edit` them with every credential option")


def _org_show_lines(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """`org show` as label/value lines: settings, filters, then the last sync in words."""
    filters = data["filters"]
    last = data["last_sync"]
    lines: list[tuple[str, Any]] = [
        ("nickname", data["nickname"]),
        ("id", data["id"]),
        ("cloud org", data["cloud_org_id"]),
        ("management account", data["management_account_id"]),
        ("accounts", data["account_count"]),
        ("credentials", data["credentials_source"]),
        ("management role", (data["management_role"] or {}).get("role_arn", "-")),
        ("member role", (data["member_role"] or {}).get("role_name", "-")),
        ("exclude name prefixes", ", ".join(filters.get("exclude_name_prefixes") or []) or "-"),
        ("limit to OUs", ", ".join(filters.get("limit_to_ou_ids") or []) or "-"),
        ("auto-remove suspended", "yes" if filters.get("auto_remove_suspended") else "no"),
        ("last sync", last["status"] or "never"),
    ]
    if last.get("started_at"):
        lines.append(("  started", last["started_at"]))
    if last.get("finished_at"):
        lines.append(("  finished", last["finished_at"]))
    if last.get("error"):
        lines.append(("  error", shorten(last["error"])))
    if "accounts_in_scope" in last:
        calls = last["aws_calls"].get("calls", {}) if isinstance(last["aws_calls"], dict) else {}
        lines += [
            ("  accounts in scope", last["accounts_in_scope"]),
            ("  added/updated/removed", f"{last['added']}/{last['updated']}/{last['removed']}"),
            ("  rows written", last["rows_written"]),
            ("  AWS calls", sum(calls.values())),
            ("  took", f"{last['duration_ms'] / 1000:.1f}s" if last["duration_ms"] is not None else "-"),
        ]
    return lines


@org_app.command("sync")
def org_sync(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Request a sync of one organization now."""
    with runtime(workers=True) as rt:
        org_id, request_id = services.request_sync(rt, org, "requested from the CLI")
        _follow(
            rt,
            request_id,
            label="sync",
            wait=wait,
            as_json=as_json,
            data={"org_id": org_id, "request_id": request_id},
            text=f"sync requested for {org_id} (request {request_id})",
        )


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
        _follow(
            rt,
            request_id,
            label="sync",
            wait=wait,
            as_json=as_json,
            data={"id": org_id, "changed": changed, "request_id": request_id},
            text=f"changed {', '.join(changed)}; sync requested ({request_id})" if changed else "nothing to change",
        )


@org_app.command("remove")
def org_remove(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an organization and every account it manages from the inventory (AWS is not touched)."""
    with runtime() as rt:
        with rt.sessions() as s:
            found = repo.find_org(s, org)  # an unknown org is refused before anything is asked
            nickname = found.nickname
        question = f"Remove organization {literal(nickname)} and all the accounts it manages?"
        if not yes and not typer.confirm(question):
            raise typer.Abort()
        nickname, count = services.remove_org(rt, org)
    if as_json:
        _print_json({"nickname": nickname, "clouds_removed": count})
    else:
        out.print(f"removed organization {literal(nickname)} and its {count} accounts")


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
    name = check_cloud_name(name)
    with runtime() as rt:
        cloud_id = services.add_cloud(rt, account_id, name, role)
    if as_json:
        _print_json({"id": cloud_id, "account_id": account_id, "name": name, "status": "ok"})
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
    if status is not None and status not in STATUSES:
        raise InvalidInput("status", f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    with runtime() as rt, rt.sessions() as s:
        org_id = repo.find_org(s, org).id if org else None
        rows = repo.list_clouds(s, org_id=org_id, badge=badge_filter, status=status)
    if as_json:
        _print_json(rows)
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
    for account in accounts or ():
        check_account_id(account, "account")
    with runtime(workers=True) as rt:
        request_id, count = services.request_validation(rt, org_ref=org, account_ids=list(accounts or ()))
        _follow(
            rt,
            request_id if count else None,
            label="validation",
            wait=wait,
            as_json=as_json,
            data={"request_id": request_id, "accounts": count},
            text=f"validation requested for {count} accounts ({request_id})",
        )


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
        _follow(
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


@app.command()
def scheduler() -> None:
    """Publish the periodic work (syncs, tag refresh, badge reconcile, re-validation); one instance leads."""
    from . import preflight
    from .scheduler_main import main as scheduler_main

    settings = get_settings()
    if settings.in_process_broker:
        _fail("orgsync scheduler needs ORGSYNC_BROKER_URL: it only publishes work for `orgsync worker` processes")
    preflight.check_services(settings)  # one clear line and exit 1 when the database or RabbitMQ is unusable
    scheduler_main(settings)


# -- operations ---------------------------------------------------------------------------------


@app.command()
def worker(
    processes: Annotated[
        int | None,
        typer.Option(metavar="N", help="Worker processes (default: ORGSYNC_WORKER_PROCESSES).", show_default=False),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(metavar="N", help="Threads per process (default: ORGSYNC_WORKER_THREADS).", show_default=False),
    ] = None,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            metavar="QUEUE[,QUEUE...]",
            help="Queues to consume (default: all): repeat the option or separate names by commas.",
        ),
    ] = None,
) -> None:
    """Run dramatiq worker processes consuming orgsync's queues from RabbitMQ."""
    settings = get_settings()
    if settings.in_process_broker:
        _fail("orgsync worker needs ORGSYNC_BROKER_URL (without it, commands run their work in-process)")
    from . import preflight, worker_main

    process_count = worker_main.at_least_one("--processes", processes, settings.worker_processes)
    thread_count = worker_main.at_least_one("--threads", threads, settings.worker_threads)
    names = worker_main.parse_queues(queues)
    preflight.check_services(settings)  # one clear line and exit 1, rather than workers that cannot work
    sys.stdout.flush()
    raise typer.Exit(worker_main.run(settings, processes=process_count, threads=thread_count, queues=names))


@app.command()
def queues(as_json: JsonOpt = False) -> None:
    """Message counts of orgsync's queues (ready, delayed, dead letters)."""
    from workers.routes import QUEUES

    settings = get_settings()
    if settings.in_process_broker:
        data: Any = {
            "mode": "in-process",
            "queues": [],
            "note": "no ORGSYNC_BROKER_URL: messages live inside each command",
        }
    else:
        from .broker_admin import queue_counts

        url = _broker_url_or_fail()
        api = settings.broker_management_url.get_secret_value() if settings.broker_management_url else None
        data = {"mode": "rabbitmq", "queues": queue_counts(url, QUEUES, api)}
    if as_json:
        _print_json(data)
        return
    if data["mode"] == "in-process":
        out.print("in-process broker: " + data["note"])
        return
    grid = table("queue", "ready", "unacked", "delayed", "dead", "consumers")
    for q in data["queues"]:
        add_row(grid, q["queue"], *(q[k] for k in ("ready", "unacked", "delayed", "dead", "consumers")))
    out.print(grid)


def _broker_url_or_fail() -> str:
    """The broker URL of a command that reads RabbitMQ itself, after checking RabbitMQ answers."""
    from .preflight import check_broker

    settings = get_settings()
    if settings.in_process_broker or settings.broker_url is None:
        _fail("no ORGSYNC_BROKER_URL: with the in-process broker, messages live only inside a command's run")
    url = settings.broker_url.get_secret_value()
    check_broker(url)
    return url


def _queues_option(queue: str | None) -> tuple[str, ...]:
    from workers.routes import QUEUES

    if queue is not None and queue not in QUEUES:
        _fail(f"unknown queue {queue}; orgsync's queues are {', '.join(QUEUES)}")
    return (queue,) if queue else QUEUES


@dead_app.command("list")
def dead_letters_list(
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None, as_json: JsonOpt = False
) -> None:
    """Dead-lettered messages: id, type, org, age, why they failed."""
    from .broker_admin import peek_dead_letters

    url = _broker_url_or_fail()
    letters = peek_dead_letters(url, _queues_option(queue))
    with runtime() as rt, rt.sessions() as s:
        reasons = repo.failure_reasons(s, [i for d in letters for i in (d["envelope_id"], d["id"]) if i])
    for letter in letters:
        # what the worker recorded when it gave up comes first; else what the message itself tells
        letter["reason"] = reasons.get(letter["envelope_id"] or "") or reasons.get(letter["id"]) or letter["reason"]
        letter.pop("body_is_json", None)
        letter.pop("enqueued_at_ms", None)
    if as_json:
        _print_json(letters)
        return
    grid = table("queue", "id", "type", "org", "age (s)", "reason")
    for d in letters:
        add_row(grid, d["queue"], d["id"], d["type"], d["org_id"], d["age_seconds"], d["reason"])
    out.print(grid)
    out.print(f"{len(letters)} dead letters")


def _dead_letter_ids(url: str, queues: tuple[str, ...], ids: list[str] | None) -> set[str] | None:
    """The ids asked for, after checking each names a dead letter (else nothing is done at all)."""
    if not ids:
        return None
    from .broker_admin import peek_dead_letters

    known = {i for d in peek_dead_letters(url, queues) for i in (d["id"], d["message_id"], d["envelope_id"]) if i}
    unknown = [i for i in ids if i not in known]
    if unknown:
        where = f" in {queues[0]}.XQ" if len(queues) == 1 else ""
        _fail(f"no dead letter with id {', '.join(unknown)}{where} (see `orgsync dead-letters list`)")
    return set(ids)


@dead_app.command("requeue")
def dead_letters_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (default: every dead letter).")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put dead letters back on their queue (after fixing what made them fail).

    Only orgsync's own messages can go back; any other body stays a dead letter (purge it by id).
    Exits 1 when an id given is unknown (nothing is moved) or cannot be requeued.
    """
    from .broker_admin import requeue_dead_letters

    url = _broker_url_or_fail()
    queues = _queues_option(queue)
    wanted = _dead_letter_ids(url, queues, ids)
    moved: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    with runtime() as rt:

        def forget(message_ids: list[str]) -> None:
            with rt.sessions.begin() as s:
                repo.forget_failures(s, message_ids)

        for name in queues:
            outcome = requeue_dead_letters(url, name, wanted, forget)
            moved += outcome.moved
            refused += outcome.refused
    if as_json:
        _print_json({"requeued": [m for m, _ in moved], "refused": [{"id": i, "reason": why} for i, why in refused]})
    else:
        out.print(f"requeued {len(moved)} messages")
        for message_id, why in refused:
            out.print(f"message {literal(message_id)} cannot be requeued: {literal(why)}")
    if refused and wanted is not None:
        _fail(f"{len(refused)} of the messages asked for cannot be requeued")


@dead_app.command("purge")
def dead_letters_purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (default: all of --queue).")] = None,
    queue: Annotated[str | None, typer.Option(help="The queue whose dead letters to drop.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drop dead letters: the given ids, or every dead letter of one queue."""
    from .broker_admin import purge_dead_letters

    url = _broker_url_or_fail()
    if not ids and queue is None:
        raise InvalidInput("queue", "give --queue to drop every dead letter of a queue, or the ids to drop")
    queues = _queues_option(queue)
    wanted = _dead_letter_ids(url, queues, ids)
    what = f"{len(wanted)} dead letters" if wanted else f"every dead letter of {queue}"
    if not yes and not typer.confirm(f"Drop {what}?"):
        raise typer.Abort()
    dropped = [(name, i) for name in queues for i in purge_dead_letters(url, name, wanted)]
    if as_json:
        _print_json({"purged": [{"queue": name, "id": i} for name, i in dropped]})
        return
    for name in sorted({name for name, _ in dropped} or set(queues if queue else ())):
        out.print(f"purged {sum(1 for n, _ in dropped if n == name)} dead letters from {name}.XQ")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration."""
    with runtime(migrate=True):
        pass
    out.print("database schema is up to date")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random encryption key (put it first in ORGSYNC_ENCRYPTION_KEYS to start using it)."""
    from storage.vault import generate_key

    sys.stdout.write(generate_key() + "\n")


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """Re-encrypt every stored credential block under the first key of the ring."""
    from .keys import RotationRefused, rotate

    with runtime() as rt:
        try:
            counts = rotate(rt)
        except RotationRefused as exc:  # every bad row is named, however long the line: nothing is cut
            err.print("error: " + literal(str(exc)))
            raise typer.Exit(1) from None
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


def _usage_error(exc: Any) -> str:
    """A usage error in one line that names the option or argument it is about."""
    message = str(exc.format_message())
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "opts", None):
        hint = "/".join(param.opts)
        if hint not in message:
            message = f"{hint}: {message}"
    return message


def main() -> None:
    """`orgsync`: exit 0 on success, 1 on a refused or failed request, 2 on bad usage, 130 when aborted."""
    debug = os.environ.get("ORGSYNC_DEBUG") == "1"
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from typer._click.exceptions import ClickException  # typer bundles its own click

    try:
        # without standalone mode, click returns the code of a `typer.Exit` instead of raising it
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("error: aborted")
        sys.exit(130)
    except OrgSyncError as exc:
        err.print(_error_line(str(exc)))
        sys.exit(1)
    except ClickException as exc:
        err.print(_error_line(_usage_error(exc)))
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(_error_line(f"unexpected {type(exc).__name__}: {first} (ORGSYNC_DEBUG=1 shows the traceback)"))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
