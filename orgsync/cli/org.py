"""`orgsync org`: register, inspect, edit, sync and remove AWS Organizations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from domain.config import build_filters, build_registration, check_nickname, credentials_if_given
from domain.errors import InvalidInput
from domain.live import check_events_queue_url

from ..terminal import add_row, literal, shorten, table
from .common import JsonOpt, WaitOpt, database, fail, follow, out, print_json, read_secret, runtime

if TYPE_CHECKING:
    from storage.listings import OrgView

org_app = typer.Typer(no_args_is_help=True, help="Register and inspect AWS Organizations.")

EventsQueueOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="SQS queue of the org's AWS events, for live updates (see `orgsync events template`).",
        show_default=False,
    ),
]


def _credential_values(
    *,
    org_external_id_file: str | None,
    member_external_id_file: str | None,
    secret_access_key_file: str | None,
    **given: Any,
) -> dict[str, Any]:
    """The credential options as `build_credentials` takes them, the secrets read from their files."""
    return {
        **given,
        "org_external_id": given["org_external_id"] or read_secret(org_external_id_file, "org-external-id-file"),
        "member_external_id": given["member_external_id"]
        or read_secret(member_external_id_file, "member-external-id-file"),
        "secret_access_key": read_secret(secret_access_key_file, "secret-access-key-file"),
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
    events_queue_url: EventsQueueOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an AWS Organization: checks formats, the management role and its permissions, then syncs."""
    from storage import listings

    from .. import services
    from ..views import member_template_command, org_json

    registration = build_registration(
        nickname=nickname,
        credentials=_credential_values(
            org_role_arn=org_role_arn,
            org_session_name=org_session_name,
            org_session_duration=org_session_duration,
            org_external_id=org_external_id,
            org_external_id_file=org_external_id_file,
            member_role_name=member_role_name,
            member_session_name=member_session_name,
            member_session_duration=member_session_duration,
            member_external_id=member_external_id,
            member_external_id_file=member_external_id_file,
            access_key_id=access_key_id,
            secret_access_key_file=secret_access_key_file,
        ),
        exclude_name_prefixes=exclude_name_prefix or (),
        limit_to_ou_ids=limit_to_ou or (),
        auto_remove_suspended=auto_remove_suspended,
        events_queue_url=events_queue_url,
    )
    with runtime(workers=True) as rt:
        registered = services.register_org(rt, registration)

        def stored() -> OrgView:
            """The organization as the sync (if awaited) left it."""
            with rt.reading() as conn:
                return listings.org_view(conn, registered.org_id)

        def template_command() -> str | None:
            """The template of the member role, when accounts could not assume it after the sync."""
            with rt.reading() as conn:
                return member_template_command(conn, registered.org_id, registration.credentials.member)

        def synced(result: services.WaitResult | None) -> str | None:
            if result is None or not result.ok:
                return None
            command = template_command()
            hint = "" if command is None else "\n" + member_template_note(command)
            return f"synced: {stored().account_count} accounts in {result.seconds:.1f}s{hint}"

        follow(
            rt,
            registered.request_id,
            label="sync",
            wait=wait,
            as_json=as_json,
            data=lambda: {
                **org_json(stored()),
                "request_id": registered.request_id,
                "member_template_command": template_command(),
            },
            text=synced,
            announce=[
                f"added organization {literal(registered.nickname)} ({registered.cloud_org_id}) as {registered.org_id}",
                *(f"warning: {literal(warning)}" for warning in registered.report.warnings),
                *(f"note: {literal(note)}" for note in registered.report.notes),
            ],
        )


@org_app.command("list")
def org_list(as_json: JsonOpt = False) -> None:
    """Registered organizations with their account counts and last sync."""
    from storage import listings

    from ..views import org_json

    with database() as rt, rt.reading() as conn:
        rows = [org_json(org) for org in listings.list_orgs(conn)]
    if as_json:
        print_json(rows)
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
    from storage import listings
    from storage.vault import CREDENTIALS_UNREADABLE

    from ..views import org_detail

    with database() as rt, rt.reading() as conn:
        data, unreadable = org_detail(rt, conn, listings.find_org_id(conn, org))
    if as_json:
        print_json(data)
    else:
        for label, value in _org_show_lines(data):
            out.print(f"{label:24} {literal(value)}")
        for error in data["permission_errors"]:
            out.print(f"error: {literal(error)}")
        for warning in data["warnings"]:
            out.print(f"warning: {literal(warning)}")
        for note in data["notes"]:
            out.print(f"note: {literal(note)}")
        if data["member_template_command"]:
            out.print(member_template_note(data["member_template_command"]))
    if unreadable:
        fail(f"the stored {CREDENTIALS_UNREADABLE}: `org edit` them with every credential option")


def member_template_note(command: str) -> str:
    """The line that gives the command making a template of the member role some accounts could not assume."""
    return f"note: some accounts could not assume the member role; its CloudFormation template: {literal(command)}"


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
        ("events queue", data["events_queue_url"] or "- (periodic syncs only)"),
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
        drift = last.get("drift")
        if drift is not None:  # live updates: what the sync had to correct
            missed = ", ".join(f"{n} {kind}" for kind, n in drift.items() if n) or "nothing"
            lines.append(("  events missed", missed))
    return lines


@org_app.command("sync")
def org_sync(
    org: Annotated[str, typer.Argument(help="Id, cloud org id or nickname.")],
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Request a sync of one organization now."""
    from .. import services

    with runtime(workers=True) as rt:
        org_id, request_id = services.request_sync(rt, org, "requested from the CLI")
        follow(
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
    events_queue_url: EventsQueueOpt = None,
    no_events: Annotated[bool, typer.Option("--no-events", help="Stop reading the org's events queue.")] = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Change an organization. Credentials change as a whole; filters alone keep the stored credentials."""
    from .. import services

    credentials = credentials_if_given(
        _credential_values(
            org_role_arn=org_role_arn,
            org_session_name=org_session_name,
            org_session_duration=org_session_duration,
            org_external_id=org_external_id,
            org_external_id_file=org_external_id_file,
            member_role_name=member_role_name,
            member_session_name=member_session_name,
            member_session_duration=member_session_duration,
            member_external_id=member_external_id,
            member_external_id_file=member_external_id_file,
            access_key_id=access_key_id,
            secret_access_key_file=secret_access_key_file,
        )
    )
    if exclude_name_prefix and clear_exclude_name_prefix:
        raise InvalidInput("exclude-name-prefix", "give prefixes or --clear-exclude-name-prefix, not both")
    if limit_to_ou and clear_limit_to_ou:
        raise InvalidInput("limit-to-ou", "give OU ids or --clear-limit-to-ou, not both")
    if events_queue_url is not None and no_events:
        raise InvalidInput("events-queue-url", "give a queue URL or --no-events, not both")
    new_filters = build_filters(exclude_name_prefix or (), limit_to_ou or ())
    edit = services.OrgEdit(
        credentials=credentials,
        nickname=check_nickname(nickname) if nickname is not None else None,
        exclude_name_prefixes=() if clear_exclude_name_prefix else (new_filters.exclude_name_prefixes or None),
        limit_to_ou_ids=() if clear_limit_to_ou else (new_filters.limit_to_ou_ids or None),
        auto_remove_suspended=auto_remove_suspended,
        events_queue_url=None if events_queue_url is None else check_events_queue_url(events_queue_url),
        no_events=no_events,
    )
    with runtime(workers=True) as rt:
        org_id, request_id, changed = services.edit_org(rt, org, edit)
        follow(
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
    from storage import repository as repo

    from .. import services

    with runtime() as rt:
        with rt.sessions() as s:
            found = repo.find_org(s, org)  # an unknown org is refused before anything is asked
            nickname = found.nickname
        question = f"Remove organization {literal(nickname)} and all the accounts it manages?"
        if not yes and not typer.confirm(question):
            raise typer.Abort()
        nickname, count = services.remove_org(rt, org)
    if as_json:
        print_json({"nickname": nickname, "clouds_removed": count})
    else:
        out.print(f"removed organization {literal(nickname)} and its {count} accounts")
