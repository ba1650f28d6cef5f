"""Commands that only read the database start without SQLAlchemy, AWS, the broker or the migrations: `org list`,
`org show`, `cloud list` and `cloud show` read with plain psycopg (storage.listings) and load neither
SQLAlchemy, Alembic, boto3, dramatiq nor pika; only `org show`, which opens the credentials, loads
cryptography (checked in a fresh interpreter on this test's database; tests/unit/test_cli_startup.py checks
`--help`)."""

from __future__ import annotations

import json

from localaws.builder import BuiltOrg

from ..support.cli import add_args, run
from ..support.processes import heavy_imports_after

# what reading the inventory needs: the settings and the driver (of support.processes.HEAVY_LIBRARIES)
DATABASE_LIBRARIES = {"pydantic_settings", "psycopg"}


def test_reading_the_inventory_loads_only_the_database_libraries(cli_env, tmp_path):
    commands = [["org", "list"], ["org", "list", "--json"], ["cloud", "list"], ["cloud", "show", "123456789012"]]
    # the last exits 1: no such account, found by a query like the others
    assert heavy_imports_after(commands, tmp_path) == ([0, 0, 0, 1], DATABASE_LIBRARIES)


def test_showing_a_synced_organization_loads_no_sqlalchemy(capsys, cli_env, aws: BuiltOrg, tmp_path):
    assert run(capsys, *add_args(aws), "--json")[0] == 0
    code, out, _ = run(capsys, "cloud", "list", "--json")
    member = next(c["account_id"] for c in json.loads(out) if c["account_id"] != aws.management_account_id)
    assert code == 0
    listings = [
        ["org", "list"],
        ["org", "list", "--json"],
        ["cloud", "list", "--org", "acme", "--status", "pending"],
        ["cloud", "list", "--badge", f"system.cloud_organization={aws.org_id}", "--json"],
        ["cloud", "show", member],
        ["cloud", "show", member, "--json"],
    ]
    assert heavy_imports_after(listings, tmp_path) == ([0] * len(listings), DATABASE_LIBRARIES)
    # `org show` opens the stored credentials to show the roles: the key ring's cryptography, nothing more
    shows = [["org", "show", "acme"], ["org", "show", aws.org_id, "--json"]]
    assert heavy_imports_after(shows, tmp_path) == ([0, 0], {*DATABASE_LIBRARIES, "cryptography"})
