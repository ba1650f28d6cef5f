"""What an organization or an account looks like to a reader, as JSON-simple dicts: `org show --json`,
`cloud show --json` and the HTTP API return the same documents (never a secret)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from domain.templates import members_template_command
from storage import listings

if TYPE_CHECKING:
    from domain.config import MemberRoleConfig
    from storage.access import AuditView
    from storage.listings import Connection, OrgView

    from .database_runtime import DatabaseRuntime


def org_json(org: OrgView) -> dict[str, Any]:
    report = org.permission_report or {}
    return {
        "id": str(org.id),
        "provider": org.provider,
        "cloud_org_id": org.cloud_org_id,
        "nickname": org.nickname,
        "management_account_id": org.management_account_id,
        "account_count": org.account_count,
        "filters": org.filters,
        "events_queue_url": org.events_queue_url,
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


def member_template_command(conn: Connection, org_id: uuid.UUID, member: MemberRoleConfig) -> str | None:
    """The `orgsync roles template members` command of the organization's member role when some of its accounts
    could not assume that role (missing, trusting another caller or external id, or a shorter maximum session);
    None when none failed so."""
    if not listings.member_role_failures(conn, org_id):
        return None
    return members_template_command(member.role_name, member.duration_seconds, member.external_id is not None)


def org_detail(rt: DatabaseRuntime, conn: Connection, org_id: uuid.UUID) -> tuple[dict[str, Any], bool]:
    """`org_json` with its roles' settings (whether an external id is set, never the id), the command that makes
    a template of its member role when accounts could not assume it, and its last sync run's figures; and
    whether the stored credentials could not be read (the rest is shown regardless)."""
    from storage.vault import CredentialsUnreadable

    found = listings.org_view(conn, org_id)
    data = org_json(found)
    unreadable = False
    try:
        creds = rt.keyring.open(listings.org_credentials(conn, found.id), "organizations", found.id)
    except CredentialsUnreadable:
        unreadable = True
        data.update(
            management_role=None, member_role=None, credentials_source="unreadable", member_template_command=None
        )
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
        data["member_template_command"] = member_template_command(conn, found.id, creds.member)
        data["credentials_source"] = "iam-user" if creds.access_key else "ambient"
        if creds.access_key:
            data["access_key_id"] = creds.access_key.access_key_id
    run = listings.latest_sync_run(conn, found.id)
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
                "drift": run.drift,
            }
        )
    return data, unreadable


def cloud_detail(conn: Connection, account_id: str) -> dict[str, Any] | None:
    """One account as `cloud list` shows it, with its AWS tags, the SCPs that apply and the changes of its
    status that validations found (newest first); None if unknown."""
    found = listings.list_clouds(conn, account_ids=[account_id])
    if not found:
        return None
    data = found[0]
    cloud_id = uuid.UUID(data["id"])
    data["tags"] = listings.tags_of(conn, cloud_id)
    data["service_control_policies"] = listings.scps_for_cloud(conn, cloud_id)
    data["status_history"] = listings.status_history(conn, cloud_id)
    return data


def audit_json(entry: AuditView) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "client": entry.client,
    }
