"""The schema the migrations build is the one the models describe: no table, column, index or constraint
that one has and the other lacks (Alembic's autogenerate comparison finds nothing to do)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from storage.models import Base


def test_the_migrated_schema_is_the_models_schema(database_url: str):
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
