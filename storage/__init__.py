"""Postgres: models, migrations, repositories, the unit of work, the credential vault and the outbox."""
