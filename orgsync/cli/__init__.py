"""The `orgsync` command line: the top-level app, its command groups, and `main`, the console script.

Every listing takes --json and then prints exactly one JSON document on stdout. Errors print one line
on stderr and exit non-zero; secrets are read from files, stdin or a prompt, never printed.

Each group lives in a module of its own; what they share (consoles, the error line, the runtime, the
request → wait → report ending) is in `common`.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import warnings
from typing import Any, NoReturn

import typer

from domain.errors import OrgSyncError

from . import operations
from .access_cmd import audit_app, tokens_app
from .api_cmd import api
from .cloud import cloud_app
from .common import err, error_line
from .db import db_app
from .dead_letters import dead_app
from .demo_cmd import demo
from .events_cmd import events_app
from .keys_cmd import keys_app
from .org import org_app
from .roles_cmd import roles_app
from .tags import badges_app, tags_app

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Keep a cloud inventory in step with AWS Organizations."
)
# `--help` lists the commands first, then the groups, each in the order registered here
for command in (operations.scheduler, operations.worker, api, operations.queues, demo):
    app.command()(command)
app.add_typer(org_app, name="org")
app.add_typer(cloud_app, name="cloud")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(tags_app, name="tags")
app.add_typer(badges_app, name="badges")
app.add_typer(events_app, name="events")
app.add_typer(roles_app, name="roles")
app.add_typer(tokens_app, name="tokens")
app.add_typer(audit_app, name="audit")


def _usage_error(exc: Any) -> str:
    """A usage error in one line that names the option or argument it is about."""
    message = str(exc.format_message())
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "opts", None):
        hint = "/".join(param.opts)
        if hint not in message:
            message = f"{hint}: {message}"
    return message


def main() -> NoReturn:
    """`orgsync`: exit 0 on success, 1 on a refused or failed request, 2 on bad usage, 130 when aborted."""
    debug = os.environ.get("ORGSYNC_DEBUG") == "1"
    # At the interpreter's exit (an atexit handler, so not when tests call `main` in-process), move every
    # object to the permanent generation: the final garbage collections then skip the many objects that
    # SQLAlchemy and pydantic made, about a tenth of a second of a short command. The other atexit handlers
    # still run and the streams are still flushed; only cycles still alive at exit are left to the OS.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from typer._click.exceptions import ClickException  # typer bundles its own click

    # bytes that are not UTF-8 arrive as lone surrogates, which nothing can store, and a NUL only from a caller
    # in this process (a C string ends there); the value itself is never shown: it may be a secret
    for position, arg in enumerate(sys.argv[1:], start=1):
        problem = "contains a NUL character" if "\x00" in arg else None
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            problem = "is not valid UTF-8"
        if problem:
            err.print(error_line(f"argument {position} {problem}"))
            sys.exit(2)
    try:
        # without standalone mode, click returns the code of a `typer.Exit` instead of raising it
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("error: aborted")
        sys.exit(130)
    except OrgSyncError as exc:
        err.print(error_line(str(exc)))
        sys.exit(1)
    except ClickException as exc:
        if not exc.format_message():  # `orgsync` or a group alone: the help is printed, nothing more to say
            sys.exit(exc.exit_code)
        err.print(error_line(_usage_error(exc)))
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(error_line(f"unexpected {type(exc).__name__}: {first} (ORGSYNC_DEBUG=1 shows the traceback)"))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
