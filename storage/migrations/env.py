"""Alembic environment: runs migrations on the engine handed over by storage.db.upgrade."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from storage.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    # Two processes starting at once (workers, scheduler) must not both migrate.
    connection.execute(text("SELECT pg_advisory_lock(7291001)"))
    try:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(7291001)"))
        connection.commit()
