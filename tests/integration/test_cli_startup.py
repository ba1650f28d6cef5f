"""Commands that only read the database start without AWS, the broker or the migrations: `org list`,
`cloud list` and `cloud show` load neither boto3, dramatiq, pika, Alembic nor cryptography (checked in a
fresh interpreter on this test's database; tests/unit/test_cli_startup.py checks `--help`)."""

from __future__ import annotations

from ..support.processes import heavy_imports_after

# what reading the inventory needs: the settings, SQLAlchemy and its driver (of support.processes.HEAVY_LIBRARIES)
DATABASE_LIBRARIES = {"pydantic_settings", "psycopg", "sqlalchemy"}


def test_reading_the_inventory_loads_only_the_database_libraries(cli_env, tmp_path):
    commands = [["org", "list"], ["org", "list", "--json"], ["cloud", "list"], ["cloud", "show", "123456789012"]]
    # the last exits 1: no such account, found by a query like the others
    assert heavy_imports_after(commands, tmp_path) == ([0, 0, 0, 1], DATABASE_LIBRARIES)
