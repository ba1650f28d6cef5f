"""What every `orgsync` command shares: the two consoles, the one error line, the runtime a command opens,
JSON output, secrets read from files, and the single request → wait → report ending of commands that
request work.

`orgsync --help` imports every command module: what a command needs beyond typer and the domain (the
settings, SQLAlchemy, boto3, dramatiq, ...) is imported inside the command, when it runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from domain.errors import InvalidInput

from ..terminal import console as make_console
from ..terminal import literal, shorten

if TYPE_CHECKING:
    from storage.repository import Progress

    from .. import services
    from ..bootstrap import Runtime
    from ..database_runtime import DatabaseRuntime
    from ..settings import Settings

out = make_console()
err = make_console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Return when the work and all it caused has finished.")]


def error_line(message: str) -> str:
    """One line on stderr: control characters escaped, a long value cut."""
    return "error: " + shorten(literal(message))


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(error_line(message))
    raise typer.Exit(code)


@contextmanager
def runtime(*, workers: bool = False) -> Iterator[Runtime]:
    """The command's runtime, after checking the services it needs answer (one clear line if not).

    `workers`: the command publishes work; with RabbitMQ the broker must be reachable before anything
    is stored, or a request would wait in the outbox for a worker that cannot receive it.
    """
    from ..bootstrap import Runtime

    settings = _checked_settings(workers=workers)
    rt = Runtime.open(settings)
    try:
        if workers and rt.in_process:
            rt.start_in_process_workers()
        yield rt
    finally:
        rt.close()


@contextmanager
def database(*, migrate: bool | None = None) -> Iterator[DatabaseRuntime]:
    """The database and key ring of a command that neither calls AWS nor publishes work (`org list`,
    `db upgrade`, ...), after the same checks as `runtime`; no broker, AWS gateway or actors are built.

    `migrate`: bring the schema to the newest revision first (`db upgrade`); the database must then be
    reachable, not yet at the current schema.
    """
    from ..database_runtime import DatabaseRuntime

    settings = _checked_settings(migrate=bool(migrate))
    rt = DatabaseRuntime.open(settings, migrate=migrate)
    try:
        yield rt
    finally:
        rt.close()


def _checked_settings(*, workers: bool = False, migrate: bool = False) -> Settings:
    """The settings, the command's logging, and the checks that the services it needs answer."""
    from ..logs import configure_logging
    from ..preflight import check_broker, check_database
    from ..settings import get_settings

    settings = get_settings()
    configure_logging(settings, quiet=True)
    if "ORGSYNC_LOG_LEVEL" not in os.environ:
        # a command reports what went wrong in its own error line; the logs of the work it runs or
        # publishes (pika's reconnects, a worker thread's warnings) are for ORGSYNC_LOG_LEVEL=INFO
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.CRITICAL)
    if (database_url := settings.external_database_url) is not None:
        # `db upgrade` needs the database reachable, not yet at the current schema
        check_database(database_url, schema=not migrate)
    if workers and (broker_url := settings.external_broker_url) is not None:
        check_broker(broker_url)
    return settings


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def read_secret(path: str | None, what: str) -> str | None:
    """A secret from a file, or from stdin with '-'; never from the command line itself."""
    if path is None:
        return None
    if path == "-":
        try:
            value = sys.stdin.readline()
        except UnicodeDecodeError:
            raise InvalidInput(what, "standard input is not UTF-8 text") from None
    else:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(what, f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InvalidInput(what, f"{path} is not UTF-8 text") from None
    value = value.strip()
    if not value:
        raise InvalidInput(what, "the file is empty")
    return value


def broker_url_or_fail() -> str:
    """The broker URL of a command that reads RabbitMQ itself, after checking RabbitMQ answers."""
    from ..preflight import check_broker
    from ..settings import get_settings

    url = get_settings().external_broker_url
    if url is None:
        fail("no ORGSYNC_BROKER_URL: with the in-process broker, messages live only inside a command's run")
    check_broker(url)
    return url


def follow(
    rt: Runtime,
    request_id: uuid.UUID | None,
    *,
    label: str,
    wait: bool,
    as_json: bool,
    data: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    text: str | Callable[[services.WaitResult | None], str | None],
    announce: Sequence[str] = (),
) -> None:
    """The end of every command that requests work: wait when asked (always in-process), report, and
    exit non-zero when the work timed out or failed. `--json` prints `data` plus the wait's outcome;
    without it, the `announce` lines come before any wait and `text` after it.

    `data` and `text` may be functions, called once the wait is over, when the report tells what the work
    did; `text` is given the wait's result (None when there was no wait) and may return None to say nothing.
    """
    if not as_json:
        for said in announce:
            out.print(said)
    result = None
    if request_id is not None and (wait or rt.in_process):
        result = _wait(rt, request_id, label=label, as_json=as_json)
    if as_json:
        print_json({**(data() if callable(data) else data), **_wait_json(result)})
    else:
        line = text(result) if callable(text) else text
        if line is not None:
            out.print(line)
    if result is not None:
        _finish_wait(result, label)


def _wait(rt: Runtime, request_id: uuid.UUID, *, label: str, as_json: bool) -> services.WaitResult:
    from .. import services

    settings = rt.settings
    if as_json:
        return services.wait_for(rt, request_id, timeout=settings.wait_timeout_seconds)
    with err.status(f"{label}…") as status:

        def show(progress: Progress) -> None:
            status.update(f"{label}: {progress.done} messages handled, {progress.pending} pending")

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
        fail(f"timed out after {result.seconds:.0f}s waiting for the {label} to finish (ORGSYNC_WAIT_TIMEOUT_SECONDS)")
    if result.failures:
        actor, error = result.failures[0]
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        fail(f"{label} failed: {actor}: {error}{more}")
