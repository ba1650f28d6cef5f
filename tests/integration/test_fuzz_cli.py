"""Fuzzed arguments (Hypothesis) for `orgsync org add`, `org edit` and `cloud add`, through the real entry
point (`orgsync.cli.main`) in this process, against the run's Postgres, the run's RabbitMQ vhost (nobody
consumes it: a command that requests work leaves one row in the outbox) and the local AWS in-process.

Every value is drawn either from what the local AWS org accepts (its management role ARN, member role name,
OU ids, member accounts) or from hostile text: empty, blank, very long, control characters, ANSI escapes,
NUL, argv bytes that are not UTF-8, unicode digits, wrong ARN shapes, values that look like options,
negative and huge durations, taken nicknames and accounts, unreadable secret files. Each value says
whether the command must take it (OK), must refuse it (BAD) or may do either (ANY: e.g. a role ARN of
another partition, which only AWS can judge); a case is OK when all its values are, BAD when one is.

Every case ends in exactly one of:
- accepted: exit 0, nothing on stderr, and the rows the command stores and no others (`org add`: the
  organization and its sync request in the outbox; `org edit`: one sync request when something changed,
  and the stored organization as asked; `cloud add`: the cloud);
- refused: exit code 1 or 2, exactly one line on stderr starting with `error: `, nothing on stdout, and
  not one row of any table added, removed or changed.
No secret given (external ids, secret access keys: each carries a marker) appears on stdout or stderr.
After every case the test puts the database back as it was, so that every case starts alike (and a case
that stored what it should not fails alone, not every case after it).

Each case runs `orgsync.cli.main` in this process (about 100 cases a second where a real process would take
a second each), its streams as a UTF-8 process without a terminal has them; the run shares between cases
only what a process builds once (`share_what_a_process_builds_once`).
"""

from __future__ import annotations

import io
import json
import re
import string
import sys
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from domain.config import build_credentials
from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from orgsync import cli
from orgsync.database_runtime import DatabaseRuntime
from orgsync.settings import Settings, get_settings
from storage import repository as repo
from storage.models import Base
from storage.vault import generate_key

from ..support.cli import add_args
from ..support.services import IN_CI, RUN_ID, Postgres, purge_queues

ADD_CASES, EDIT_CASES, CLOUD_CASES = 200, 150, 150
OK, ANY, BAD = "ok", "any", "bad"
TAKEN = "taken"  # the nickname of an organization stored before every case (not the local AWS org)
TAKEN_CLOUD_ORG = "o-taken00000"
MAX_SESSION = 3600  # the local AWS roles' MaxSessionDuration
TABLES = sorted(Base.metadata.tables)


def fuzz(examples: int) -> settings:
    """Each example runs the CLI once: no deadline; under CI the same cases each run."""
    return settings(max_examples=examples, deadline=None, derandomize=IN_CI)


# -- the CLI in this process, as a shell runs it ----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], stdin: bytes) -> Outcome:
    """`orgsync *argv` with `stdin`, the streams as a process in a UTF-8 locale without a terminal has them:
    stdin and stdout strict UTF-8 (bytes or characters they cannot carry are errors, as there), stderr with
    backslash escapes. argv may hold what a shell passes from bytes that are not UTF-8 (lone surrogates)."""
    out, err = io.BytesIO(), io.BytesIO()
    streams = [
        io.TextIOWrapper(out, encoding="utf-8", errors="strict", newline="", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", newline="", write_through=True),
    ]
    saved = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["orgsync", *argv], io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with redirect_stdout(streams[0]), redirect_stderr(streams[1]), pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv, sys.stdin = saved
    code = exit_info.value.code
    assert isinstance(code, int), f"exit code {code!r}"
    return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


# -- the module's world: a database, the vhost, the local AWS org, the CLI's environment --------------


@dataclass
class Env:
    org: BuiltOrg
    conn: psycopg.Connection[Any]
    files: Path
    taken_id: uuid.UUID
    standalone: str  # account id of a standalone cloud stored before every `cloud add` case
    acme: uuid.UUID | None = None  # the local AWS org, when registered (as "acme")
    baseline: dict[str, Any] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what Hypothesis prints of a failing example
        printer.text(f"Env(acme={self.acme})")

    def counts(self) -> dict[str, int]:
        row = self.conn.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)).fetchone()
        assert row is not None
        return dict(zip(TABLES, row, strict=True))

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """Every row of `table` (organizations or clouds), all of its columns, by id."""
        found = self.conn.execute(f"SELECT * FROM {table} ORDER BY id")
        columns = [c.name for c in found.description or ()]
        return {str(r[0]): dict(zip(columns, r, strict=True)) for r in found.fetchall()}

    def orgs(self) -> dict[str, dict[str, Any]]:
        return self.rows("organizations")

    def clouds(self) -> dict[str, dict[str, Any]]:
        return self.rows("clouds")

    def snapshot(self) -> None:
        self.baseline = {"orgs": self.orgs(), "clouds": self.clouds()}

    def reset(self) -> None:
        """Back to the snapshot: organizations and clouds added since removed, the stored ones as they were."""
        orgs, clouds = self.baseline["orgs"], self.baseline["clouds"]
        self.conn.execute("DELETE FROM organizations WHERE NOT (id::text = ANY(%s))", (list(orgs),))
        self.conn.execute("DELETE FROM clouds WHERE NOT (id::text = ANY(%s))", (list(clouds),))
        current = self.orgs()
        for org_id, row in orgs.items():
            if current.get(org_id) != row:
                values = [Jsonb(v) if isinstance(v, dict | list) else v for v in row.values()]
                assignments = ", ".join(f"{c} = %s" for c in row)
                self.conn.execute(f"UPDATE organizations SET {assignments} WHERE id = %s", [*values, org_id])
        assert (self.orgs(), self.clouds()) == (orgs, clouds)

    def use_acme(self, registered: bool) -> None:
        """The local AWS org registered as "acme" (or not), then a snapshot to return to after each case."""
        if registered == (self.acme is not None):
            return
        if registered:
            argv = [*add_args(self.org), "--json"]
            done = run_cli(argv, b"")
            assert (done.code, done.err) == (0, ""), done
            self.acme = uuid.UUID(json.loads(done.out)["id"])
        else:
            self.conn.execute("DELETE FROM organizations WHERE id = %s", (self.acme,))
            self.acme = None
        self.snapshot()

    def materialize(self, case: Case) -> list[str]:
        """The argv with each file placeholder replaced by the path of a file written now."""
        paths = {}
        for i, spec in enumerate(case.files):
            token = f"@file{i}@"
            if spec.kind == "missing":
                paths[token] = str(self.files / f"missing-{uuid.uuid4().hex}")
            elif spec.kind == "directory":
                paths[token] = str(self.files)
            else:
                path = self.files / uuid.uuid4().hex
                path.write_bytes(spec.content)
                paths[token] = str(path)
        return [paths.get(token, token) for token in case.argv]


@pytest.fixture(scope="module")
def env(postgres: Postgres, pg_template: str, amqp_vhost: str, tmp_path_factory) -> Iterator[Env]:
    """The module's own copy of the run's template database; the run's vhost (emptied before and after),
    where nobody consumes; a 6-account local AWS org (one account without the member role); the CLI's
    environment; an organization "taken" and one standalone cloud stored before every case.

    Module-scoped, so that Hypothesis runs every example in the same world; each test puts the database
    back after every case (`Env.reset`)."""
    name = f"orgsync_t{RUN_ID}_fuzz_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name, template=pg_template)
    purge_queues(amqp_vhost)
    aws = local_aws(generate_org(6, seed=11, suspended=0, missing_role=1, wrong_external_id=0))
    try:
        with pytest.MonkeyPatch.context() as mp, aws as org, psycopg.connect(url, autocommit=True) as conn:
            files = tmp_path_factory.mktemp("fuzz-cli")
            values = {
                "ORGSYNC_DATABASE_URL": url,
                "ORGSYNC_BROKER_URL": amqp_vhost,
                "ORGSYNC_ENCRYPTION_KEYS": generate_key(),
                "ORGSYNC_DATA_DIR": str(files),
            }
            for key, value in values.items():
                mp.setenv(key, value)
            mp.delenv("ORGSYNC_DEBUG", raising=False)
            get_settings.cache_clear()
            share_what_a_process_builds_once(mp)
            try:
                taken_id = store_taken_org(url, org)
                standalone = next(a.account_id for a in org.accounts if a.member_role == "ok")
                done = run_cli(cloud_argv(standalone, "standalone", org.member_role_arn(standalone)), b"")
                assert (done.code, done.err) == (0, ""), done
                world = Env(org, conn, files, taken_id, standalone)
                world.snapshot()
                yield world
            finally:
                get_settings.cache_clear()
    finally:
        purge_queues(amqp_vhost)
        postgres.drop_database(name)


def share_what_a_process_builds_once(mp: pytest.MonkeyPatch) -> None:
    """`orgsync` parses botocore's service models and builds its click command tree once per process; run in
    this process, every case would do both again (0.15 s and 0.04 s a case, most of the time of the run).
    Share them between the cases; each still opens its own runtime, botocore session, clients and engine."""
    import botocore.loaders
    import botocore.session
    import typer.main

    loader = botocore.loaders.create_loader()
    new_session = botocore.session.get_session

    def get_session(env_vars: Any = None) -> Any:
        session = new_session(env_vars)
        session.register_component("data_loader", loader)
        return session

    mp.setattr(botocore.session, "get_session", get_session)
    command, build = typer.main.get_command(cli.app), typer.main.get_command
    mp.setattr(typer.main, "get_command", lambda app: command if app is cli.app else build(app))


def store_taken_org(url: str, org: BuiltOrg) -> uuid.UUID:
    """An organization named "taken" (another cloud org id), with credentials for the local AWS org."""
    rt = DatabaseRuntime.open(Settings(database_url=SecretStr(url)), migrate=False)
    try:
        return _store_taken_org(rt, org)
    finally:
        rt.close()


def _store_taken_org(rt: DatabaseRuntime, org: BuiltOrg) -> uuid.UUID:
    org_id = uuid.uuid4()
    creds = build_credentials(
        org_role_arn=org.management_role_arn,
        org_session_name="orgsync-test",
        member_role_name=org.member_role_name,
        member_session_name="orgsync-test",
    )
    with rt.sessions.begin() as s:
        repo.add_org(
            s,
            org_id=org_id,
            cloud_org_id=TAKEN_CLOUD_ORG,
            nickname=TAKEN,
            management_account_id=org.management_account_id,
            partition="aws",
            credentials=rt.keyring.seal(creds, "organizations", org_id),
            filters={"exclude_name_prefixes": [], "limit_to_ou_ids": [], "auto_remove_suspended": False},
            permission_report={},
        )
    return org_id


def cloud_argv(account: str, name: str, role_arn: str) -> list[str]:
    return ["cloud", "add", "--account-id", account, "--name", name, "--role-arn", role_arn, "--session-name", "s1"]


# -- values and what the command must make of them ------------------------------------------------

ALNUM = string.ascii_letters + string.digits
NAME_ALPHABET = ALNUM + "_+=,.@-"  # IAM's names: session names, role names (ASCII only)
SECRET_ALPHABET = {"external": NAME_ALPHABET + ":/", "secret key": ALNUM + "/+="}
SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}")
ROLE_NAME = re.compile(r"(?:[A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}")
SECRET_FORMAT = {
    "external": re.compile(r"[A-Za-z0-9_+=,.@:/-]{2,1224}"),
    "secret key": re.compile(r"[A-Za-z0-9/+=]{16,128}"),
}
ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
PLAIN_INT = re.compile(r"-?[0-9]+")

PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S"]) | st.just(" ")
NOT_PRINTABLE = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]) | st.sampled_from(["\u00a0", "\u3000"])
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\t",
            "\x00",
            "a\x00b",
            "\x1b[31mred\x1b[0m",
            "\x1b]0;title\x07",
            "line\nbreak",
            "cr\r\nlf",
            "\u2028",
            "\u202eevil",
            "[bold]markup[/bold]",
            "%s%n{0}",
            "'; DROP TABLE organizations; --",
            "--nickname",
            "--help",
            "-h",
            "--",
            "-",
            "--org-role-arn=x",
            "-5",
            "${HOME}",
            "ünïcödé",
            "日本語",
            "🙂",
            "\ufeffbom",
            "١٢٣",
        ]
    ),
    st.integers(1, 20_000).map(lambda n: "x" * n),  # up to very long
    st.text(max_size=30),  # any unicode but surrogates
    st.text(NOT_PRINTABLE | st.characters(categories=["Zs"]), min_size=1, max_size=8),
    st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),  # argv bytes
)
# printable text with something else inside (control characters, escapes, NUL, a line break, ...)
SPOILED = st.builds(
    lambda a, b, c: a + b + c,
    st.text(PRINTABLE, max_size=6),
    st.text(NOT_PRINTABLE, min_size=1, max_size=3),
    st.text(PRINTABLE, max_size=6),
)
MARKER = st.text(ALNUM, min_size=10, max_size=10).map("Zq".__add__)  # in every secret: told from other text
NICKNAMES = st.text(PRINTABLE, min_size=1, max_size=40)
SESSION_NAMES = st.text(NAME_ALPHABET, min_size=2, max_size=64)
ROLE_NAMES = st.sampled_from(["security/Reader", "/path/to/Role/"]) | st.builds(
    lambda path, name: "".join(f"{p}/" for p in path) + name,
    st.lists(st.text(NAME_ALPHABET, min_size=1, max_size=8), max_size=2),
    st.text(NAME_ALPHABET, min_size=1, max_size=64),
)
DURATIONS = st.integers(900, MAX_SESSION).map(str)
EXTRA = st.sampled_from([["--bogus"], ["stray"], ["--json", "extra"], ["-x"]])
# at the end of the command line only: before `org edit`'s `--` it would take `--` as its value
DANGLING = st.just(["--nickname"])

# what is wrong with a value of each kind, most of the time (else any hostile text)
MALFORMED: dict[str, st.SearchStrategy[str]] = {
    "nickname": st.one_of(SPOILED, st.sampled_from(["", "   ", "\t", "x" * 129, "\x1b[2J", "\u00a0"])),
    "name": st.one_of(SPOILED, st.sampled_from(["", "   ", "x" * 257, "\x1b[2J", "\u2028"])),
    "session": st.one_of(
        st.text(string.punctuation.translate(str.maketrans("", "", "_+=,.@-")) + " üß", min_size=1, max_size=5).map(
            "s".__add__
        ),
        st.sampled_from(["a", "a" * 65, "has space", "üüüü", "a/b", "a:b"]),
    ),
    "role": st.sampled_from(["/", "//", "a//b", "x" * 65, "p/" * 300 + "r", "ünï", "a b", "a:b", "*"]),
    "duration": st.one_of(
        st.sampled_from([0, -1, 899, 43201, 2**63, -(2**63), 10**30]).map(str),
        st.integers(max_value=899).map(str),
        st.integers(min_value=43201).map(str),
        st.sampled_from(["abc", "", "3600.0", "1e3", " 3600", "3_600", "0x384", "٣٦٠٠", "--", "-0", "+3600"]),
    ),
    "account": st.sampled_from(["12345678901", "1234567890123", "١٢٣٤٥٦٧٨٩٠١٢", " 123456789012", "12345678901a", ""]),
    "ou": st.sampled_from(["ou-", "OU-ABCD-12345678", "ou-abcd", "r-abcd", "ou-abcd-1234567", "ou-ab_d-12345678"]),
    "prefix": st.sampled_from(["", "p" * 129, "\x00", "a\x00"]),
}


def malformed(draw: st.DrawFn, kind: str) -> str:
    return draw(MALFORMED[kind]) if draw(st.integers(0, 3)) else draw(HOSTILE)


def either(draw: st.DrawFn, refused_later: st.SearchStrategy[str], kind: str) -> str:
    """Half the hostile values pass the format checks and are refused by the service, AWS or the database
    (a taken nickname, a role that does not exist: where half-storing could happen), half are malformed."""
    return draw(refused_later) if draw(st.booleans()) else malformed(draw, kind)


@dataclass(frozen=True)
class Value:
    text: str
    verdict: str


def nickname_verdict(text: str, taken: str) -> str:
    name = text.strip()
    return OK if 0 < len(name) <= 128 and name.isprintable() and name != taken else BAD


def cloud_name_verdict(text: str) -> str:
    name = text.strip()
    return OK if 0 < len(name) <= 256 and name.isprintable() else BAD


def session_name_verdict(text: str) -> str:
    return OK if SESSION_NAME.fullmatch(text) else BAD


def role_name_verdict(text: str) -> str:
    name = text.strip("/")
    return OK if name and len(name) <= 512 and ROLE_NAME.fullmatch(name) else BAD


def prefix_verdict(text: str) -> str:
    if not 0 < len(text) <= 128:
        return BAD
    # NUL or a lone surrogate cannot be stored in the filters' JSON: refused, one way or another
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return ANY
    return OK if text.isprintable() else BAD  # a tab, a line break, an escape: never part of an account name


def duration_verdict(text: str, ceiling: int) -> str:
    if PLAIN_INT.fullmatch(text):
        return OK if 900 <= int(text) <= ceiling else BAD
    return ANY if any(c.isdigit() for c in text) else BAD  # " 3600", "٣٦٠٠", "3_600": the parser's call


def arn_verdict(text: str, valid: set[str]) -> str:
    """OK for a role AWS lets the caller assume; ANY for the same in another partition or case (AWS's call)."""
    if text in valid:
        return OK
    for arn in valid:
        variants = {arn.replace("arn:aws:", f"arn:{p}:", 1) for p in ("aws-cn", "aws-us-gov", "aws-iso")}
        if text in variants or text.lower() == arn.lower():
            return ANY
    return BAD


def missing_roles(arn: str) -> list[str]:
    """Well-formed ARNs of roles AWS will not let the caller assume (or, in another partition or case, may)."""
    head, _, name = arn.partition(":role/")
    account = head.rsplit(":", 1)[1]
    return [
        arn.replace(account, "999999999999"),
        f"{head}:role/x/{name}",
        f"{head}:role/Other",
        arn.lower(),
        arn.replace("arn:aws:", "arn:aws-cn:", 1),
    ]


def malformed_arn(draw: st.DrawFn, arn: str) -> str:
    """A wrong shape of a role ARN, or any hostile text."""
    head, _, _ = arn.partition(":role/")
    account = head.rsplit(":", 1)[1]
    shapes = [
        arn.replace(account, account[:-1]),
        arn.replace(account, "١٢٣٤٥٦٧٨٩٠١٢"),
        arn.replace(":role/", ":user/"),
        f"{head}:role/",
        f"{head}:role/{'a' * 600}",
        arn + "\n",
        " " + arn,
        arn + " ",
        arn.upper(),
        arn.replace("arn:aws:", "arn:bogus:", 1),
        arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/") + "/session",
        arn + "\x00",
    ]
    return draw(st.sampled_from(shapes)) if draw(st.integers(0, 3)) else draw(HOSTILE)


def hostile_fields(draw: st.DrawFn, fields_: list[str], counts: tuple[int, ...] = (0, 1, 1, 1, 2)) -> set[str]:
    """Which values (or options) of a case are made hostile: none, one (most often) or two."""
    count = draw(st.sampled_from(counts))
    return set(draw(st.lists(st.sampled_from(fields_), min_size=count, max_size=count, unique=True)))


@dataclass(frozen=True)
class FileSpec:
    kind: str  # "content", "missing" or "directory"
    content: bytes = b""


@dataclass
class Case:
    """One command line: its argv (files as placeholders), stdin, the verdicts, and what to check."""

    argv: list[str] = field(default_factory=list)
    stdin: bytes = b""
    files: list[FileSpec] = field(default_factory=list)
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # (what, verdict)
    secrets: list[str] = field(default_factory=list)  # markers that must never be printed
    expect: dict[str, Any] = field(default_factory=dict)  # what an accepted case stores

    @property
    def verdict(self) -> str:
        found = {v for _, v in self.verdicts}
        return BAD if BAD in found else ANY if ANY in found else OK

    def because(self, verdict: str) -> list[str]:
        return [what for what, v in self.verdicts if v == verdict]

    def opt(self, option: str, value: Value) -> None:
        self.argv += [option, value.text]
        self.verdicts.append((option, value.verdict))

    def file(self, spec: FileSpec) -> str:
        self.files.append(spec)
        return f"@file{len(self.files) - 1}@"


def read_verdict(raw: bytes, kind: str, *, first_line: bool) -> str:
    """What `read_secret` makes of a file's (or stdin's) bytes: UTF-8, universal newlines, stripped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BAD
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if first_line:
        text = text.split("\n", 1)[0]
    text = text.strip()
    return OK if text and SECRET_FORMAT[kind].fullmatch(text) else BAD


def give_secret(draw: st.DrawFn, case: Case, option: str, kind: str, *, hostile: bool) -> None:
    """A secret (with a marker, unless it is pure hostile text) by value, file or stdin; hostile: its text,
    or the way it is given (a missing file, a directory, bytes that are not UTF-8)."""
    if hostile and draw(st.booleans()):
        text = draw(HOSTILE)
    else:
        marker = draw(MARKER)
        case.secrets.append(marker)
        # a secret key is 16 characters or more: the marker is 12
        pad = HOSTILE if hostile else st.text(SECRET_ALPHABET[kind], min_size=2, max_size=12)
        text = draw(pad) + marker + draw(pad)
    raw = text.encode("utf-8", "surrogateescape")
    by_value = option != "--secret-access-key-file"
    ways = (["value"] if by_value else []) + ["file", "stdin"]
    way = draw(st.sampled_from(ways + (["missing", "directory", "not-utf-8"] if hostile else [])))
    if way == "stdin" and case.stdin:
        way = "file"  # stdin holds one secret
    file_option = f"{option}-file" if by_value else option
    if way == "value":
        case.argv += [option, text]
        ok = text == "" or SECRET_FORMAT[kind].fullmatch(text)  # an empty external id means none
        case.verdicts.append((option, OK if ok else BAD))
    elif way == "stdin":
        case.stdin = raw + draw(st.sampled_from([b"\n", b"", b"\r\n", b"\nsecond line\n"]))
        case.argv += [file_option, "-"]
        case.verdicts.append((f"{file_option} -", read_verdict(case.stdin, kind, first_line=True)))
    elif way in ("missing", "directory"):
        case.argv += [file_option, case.file(FileSpec(way))]
        case.verdicts.append((f"{file_option} {way}", BAD))
    else:
        content = (b"\xe9t\xe9 " if way == "not-utf-8" else b"") + raw
        content += draw(st.sampled_from([b"", b"\n", b"\r\n", b"  \n\n"]))
        case.argv += [file_option, case.file(FileSpec("content", content))]
        case.verdicts.append((file_option, read_verdict(content, kind, first_line=False)))


def access_keys(draw: st.DrawFn, case: Case, *, hostile: bool) -> None:
    """--access-key-id and --secret-access-key-file: a well-formed pair (the local AWS takes any), or one of
    them missing or malformed."""
    key_id = draw(st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=24))
    shape = draw(st.sampled_from(["no_id", "no_secret", "bad_id", "bad_secret"])) if hostile else "pair"
    if shape == "bad_id":
        key_id = draw(HOSTILE | st.sampled_from(["akiaaaaaaaaaaaaaaaaa", "AKIA", "A" * 129, "AKIA-AAAAAAAAAAAAAAA"]))
    if shape != "no_id":
        case.argv += ["--access-key-id", key_id]
    if shape != "no_secret":
        give_secret(draw, case, "--secret-access-key-file", "secret key", hostile=shape == "bad_secret")
    if shape in ("no_id", "no_secret") or not ACCESS_KEY_ID.fullmatch(key_id):
        case.verdicts.append(("access keys", BAD))


def filters(draw: st.DrawFn, case: Case, ous: list[str], *, hostile: set[str], edit: bool) -> None:
    """--exclude-name-prefix and --limit-to-ou (repeated), and for `org edit` their --clear-... flags;
    `case.expect` gets the filters stored when the case is accepted."""
    prefixes = draw(st.lists(st.text(PRINTABLE, min_size=1, max_size=12), max_size=3))
    if "prefix" in hostile:
        prefixes.insert(draw(st.integers(0, len(prefixes))), malformed(draw, "prefix"))
    limit = draw(st.lists(st.sampled_from(ous), max_size=2))
    if "ou" in hostile:  # well-formed but not in the organization, or malformed
        last = ous[0][-1]
        unknown = st.sampled_from(["ou-abcd-12345678", ous[0][:-1] + ("1" if last == "0" else "0")])
        limit.append(either(draw, unknown, "ou"))
    for prefix in prefixes:
        case.opt("--exclude-name-prefix", Value(prefix, prefix_verdict(prefix)))
    for ou in limit:
        case.opt("--limit-to-ou", Value(ou, OK if ou in ous else BAD))
    # as the command keeps them: in order, each once
    case.expect["exclude_name_prefixes"] = list(dict.fromkeys(prefixes))
    case.expect["limit_to_ou_ids"] = list(dict.fromkeys(limit))
    if edit:
        for key, given_, flag in (
            ("exclude_name_prefixes", prefixes, "--clear-exclude-name-prefix"),
            ("limit_to_ou_ids", limit, "--clear-limit-to-ou"),
        ):
            if draw(st.integers(0, 3)) == 0:
                case.argv.append(flag)
                case.expect[key] = []
                if given_:
                    case.verdicts.append((f"{flag} and values", BAD))


CREDENTIAL_FIELDS = [
    "arn",
    "--org-session-name",
    "--member-session-name",
    "member_role",
    "--org-session-duration",
    "--member-session-duration",
    "--org-external-id",
    "--member-external-id",
    "access_key",
    "omit",
]


def credentials(draw: st.DrawFn, case: Case, org: BuiltOrg, hostile: set[str]) -> None:
    """The credential options of `org add` (and of `org edit`, where they come all together)."""
    arn = org.management_role_arn
    if "arn" in hostile:
        text = draw(st.sampled_from(missing_roles(arn))) if draw(st.booleans()) else malformed_arn(draw, arn)
        role = Value(text, arn_verdict(text, {arn}))
    else:
        role = Value(arn, OK)
    options = [("--org-role-arn", role)]
    for option in ("--org-session-name", "--member-session-name"):
        text = malformed(draw, "session") if option in hostile else draw(SESSION_NAMES)
        options.append((option, Value(text, session_name_verdict(text))))
    text = malformed(draw, "role") if "member_role" in hostile else draw(st.just(org.member_role_name) | ROLE_NAMES)
    options.append(("--member-role-name", Value(text, role_name_verdict(text))))
    for option, ceiling in (("--org-session-duration", MAX_SESSION), ("--member-session-duration", 43200)):
        if option in hostile:  # above the role's maximum (AWS refuses it: the management role only), or malformed
            longer = st.integers(MAX_SESSION + 1, 43200).map(str)
            text = (
                either(draw, longer, "duration") if option == "--org-session-duration" else malformed(draw, "duration")
            )
            options.append((option, Value(text, duration_verdict(text, ceiling))))
        elif draw(st.booleans()):
            text = draw(DURATIONS)
            options.append((option, Value(text, duration_verdict(text, ceiling))))
    if "omit" in hostile:  # a required option left out
        left_out = draw(st.sampled_from(options[:4]))
        options.remove(left_out)
        case.verdicts.append((f"{left_out[0]} left out", BAD))
    for option, value in draw(st.permutations(options)):
        case.opt(option, value)
    for option in ("--org-external-id", "--member-external-id"):
        if option in hostile or draw(st.booleans()):
            give_secret(draw, case, option, "external", hostile=option in hostile)
    if "access_key" in hostile or draw(st.integers(0, 3)) == 0:
        access_keys(draw, case, hostile="access_key" in hostile)


# -- the three commands ----------------------------------------------------------------------------


@st.composite
def org_add_cases(draw: st.DrawFn, org: BuiltOrg) -> Case:
    """`org add` with the local org's values, none, one or two of them (or of the options) made hostile."""
    hostile = hostile_fields(draw, ["nickname", *CREDENTIAL_FIELDS, "prefix", "ou", "extra"])
    case = Case()
    if "nickname" in hostile:  # taken (refused after AWS has been asked), or malformed
        text = either(draw, st.sampled_from([TAKEN, f" {TAKEN} ", f"{TAKEN}\t"]), "nickname")
    else:
        text = draw(NICKNAMES)
    if "omit" in hostile and draw(st.booleans()):
        case.verdicts.append(("--nickname left out", BAD))
    else:
        case.opt("--nickname", Value(text, nickname_verdict(text, TAKEN)))
    credentials(draw, case, org, hostile)
    filters(draw, case, sorted(org.units.values()), hostile=hostile, edit=False)
    case.expect["auto_remove_suspended"] = draw(st.booleans())
    if case.expect["auto_remove_suspended"]:
        case.argv.append("--auto-remove-suspended")
    if draw(st.booleans()):
        case.argv.append("--json")
    if "extra" in hostile:
        case.argv += draw(EXTRA | DANGLING)
        case.verdicts.append(("extra arguments", BAD))
    case.argv = ["org", "add", *case.argv]
    case.expect["nickname"] = text.strip()
    return case


@st.composite
def org_edit_cases(draw: st.DrawFn, env: Env) -> Case:
    """`org edit` of the local org ("acme") or of "taken" (whose cloud org the local AWS does not read), by
    any of their references or a hostile one; a new nickname, credentials (all, some, or none), filters."""
    assert env.acme is not None
    # more often none: an edit has more ways to be refused (credentials for "taken", a value and its --clear-...)
    fields_ = ["ref", "nickname", *CREDENTIAL_FIELDS, "partial", "prefix", "ou", "extra"]
    hostile = hostile_fields(draw, fields_, (0, 0, 1, 1, 2))
    case = Case()
    ids = {"acme": env.acme, TAKEN: env.taken_id}
    cloud_orgs = {"acme": env.org.org_id, TAKEN: TAKEN_CLOUD_ORG}
    refs = {
        ref: name
        for name, org_id in ids.items()
        for ref in (
            name,
            str(org_id),
            str(org_id).upper(),
            f"{{{org_id}}}",
            f"urn:uuid:{org_id}",
            org_id.hex,
            cloud_orgs[name],
        )
    }
    ref = draw(st.sampled_from(sorted(refs)))
    if "ref" in hostile:  # no such organization: a near miss, or hostile text
        near = st.sampled_from(["acme ", "ACME", "o-", "nosuch", str(uuid.UUID(int=1)), "\x00", "acme\udcff"])
        ref = draw(near) if draw(st.booleans()) else draw(HOSTILE)
    target = refs.get(ref)
    if target is None:
        case.verdicts.append(("no such organization", BAD))
    other = TAKEN if target == "acme" else "acme"

    nickname = None
    if "nickname" in hostile:  # the other organization's (refused by the database), or malformed
        nickname = either(draw, st.sampled_from([other, f" {other} ", f"{other}\t"]), "nickname")
    elif draw(st.booleans()):
        nickname = draw(NICKNAMES | st.sampled_from(["acme", TAKEN]))
    if nickname is not None:
        case.opt("--nickname", Value(nickname, nickname_verdict(nickname, other)))

    with_credentials = draw(st.integers(0, 2)) == 0 or bool(hostile & set(CREDENTIAL_FIELDS))
    if "partial" in hostile:  # some of the required credential options, not all
        present = draw(st.sets(st.sampled_from(["arn", "org", "member_role", "member"]), min_size=1, max_size=3))
        values = {
            "arn": ("--org-role-arn", env.org.management_role_arn),
            "org": ("--org-session-name", "s1"),
            "member_role": ("--member-role-name", env.org.member_role_name),
            "member": ("--member-session-name", "s1"),
        }
        for key in sorted(present):
            case.opt(values[key][0], Value(values[key][1], OK))
        case.verdicts.append(("some credential options", BAD))
        with_credentials = False
    elif with_credentials:
        credentials(draw, case, env.org, hostile)
        if target == TAKEN:
            case.verdicts.append(("the role reads another organization", BAD))

    filters(draw, case, sorted(env.org.units.values()), hostile=hostile, edit=True)
    auto = draw(st.sampled_from([None, True, False]))
    if auto is not None:
        case.argv.append("--auto-remove-suspended" if auto else "--no-auto-remove-suspended")
    if draw(st.booleans()):
        case.argv.append("--json")
    if "extra" in hostile:
        case.argv += draw(EXTRA)
        case.verdicts.append(("extra arguments", BAD))
    case.argv = ["org", "edit", *case.argv, "--", ref]

    # what an accepted edit changes, in the order the command names them (every filter starts empty)
    current = target or "acme"
    new_nickname = current if nickname is None else nickname.strip()
    changed = [
        name
        for name, differs in (
            ("credentials", with_credentials),
            ("nickname", new_nickname != current),
            ("exclude_name_prefixes", case.expect["exclude_name_prefixes"] != []),
            ("limit_to_ou_ids", case.expect["limit_to_ou_ids"] != []),
            ("auto_remove_suspended", auto is True),
        )
        if differs
    ]
    case.expect.update(target=current, nickname=new_nickname, changed=changed, auto_remove_suspended=bool(auto))
    return case


@st.composite
def cloud_add_cases(draw: st.DrawFn, env: Env) -> Case:
    """`cloud add` of a member account (its member role), or of the management account (its management
    role); none, one or two values (or options) made hostile: the account taken already, one without the
    role, the role of another account, malformed ids."""
    org = env.org
    roles = {a.account_id: {org.member_role_arn(a.account_id)} for a in org.accounts if a.member_role == "ok"}
    roles[org.management_account_id].add(org.management_role_arn)
    roles.pop(env.standalone)  # stored already
    hostile = hostile_fields(draw, ["account", "arn", "name", "session", "duration", "external", "omit", "extra"])
    case = Case()
    account = draw(st.sampled_from(sorted(roles)))
    arn = draw(st.sampled_from(sorted(roles[account])))
    if "account" in hostile:  # taken, without the role, another than the role's; or malformed
        missing_role = next(a.account_id for a in org.accounts if a.member_role != "ok")
        others = st.sampled_from([env.standalone, missing_role, *sorted(roles)]) | st.text(
            string.digits, min_size=12, max_size=12
        )
        account = either(draw, others, "account")
    if "arn" in hostile:  # the role of another account, one that does not exist; or malformed
        others = sorted(set().union(*roles.values())) + missing_roles(arn)
        arn = draw(st.sampled_from(others)) if draw(st.booleans()) else malformed_arn(draw, arn)
    name = malformed(draw, "name") if "name" in hostile else draw(st.text(PRINTABLE, min_size=1, max_size=60))
    session = malformed(draw, "session") if "session" in hostile else draw(SESSION_NAMES)
    options = [
        ("--account-id", Value(account, OK if account in roles else BAD)),
        ("--name", Value(name, cloud_name_verdict(name))),
        ("--role-arn", Value(arn, arn_verdict(arn, roles.get(account, set())))),
        ("--session-name", Value(session, session_name_verdict(session))),
    ]
    if "omit" in hostile:
        left_out = draw(st.sampled_from(options))
        options.remove(left_out)
        case.verdicts.append((f"{left_out[0]} left out", BAD))
    if "duration" in hostile:  # above the roles' maximum (AWS refuses it), or malformed
        text = either(draw, st.integers(MAX_SESSION + 1, 43200).map(str), "duration")
        options.append(("--session-duration", Value(text, duration_verdict(text, MAX_SESSION))))
    elif draw(st.booleans()):
        options.append(("--session-duration", Value(draw(DURATIONS), OK)))
    for option, value in draw(st.permutations(options)):
        case.opt(option, value)
    if "external" in hostile or draw(st.booleans()):
        give_secret(draw, case, "--external-id", "external", hostile="external" in hostile)
    if draw(st.booleans()):
        case.argv.append("--json")
    if "extra" in hostile:
        case.argv += draw(EXTRA | DANGLING)
        case.verdicts.append(("extra arguments", BAD))
    case.argv = ["cloud", "add", *case.argv]
    case.expect.update(account_id=account, name=name.strip())
    return case


# -- running a case ---------------------------------------------------------------------------------


def attempt(env: Env, case: Case, action: str) -> tuple[Outcome, dict[str, int]]:
    """Run the case; check what every case must do; return the outcome and the row counts' changes (the
    audit trail's apart: a request the service took leaves one entry for `action`, whatever its end)."""
    before, stored = env.counts(), (env.orgs(), env.clouds())
    last_entry = env.conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()
    done = run_cli(env.materialize(case), case.stdin)
    after = env.counts()
    moved = {table: after[table] - before[table] for table in TABLES if after[table] != before[table]}
    moved.pop("audit_log", None)
    entries = env.conn.execute(
        "SELECT action, target, outcome, detail FROM audit_log WHERE id > %s ORDER BY id",
        (last_entry[0] if last_entry else 0,),
    ).fetchall()
    assert [m for m in case.secrets if m in repr(entries)] == [], "a secret was recorded in the audit trail"
    # what refused it: the field or step the error line names first (`error: org-role-arn: ...`)
    said = "" if done.code == 0 else ": " + re.split(r"[:'(]", done.err.removeprefix("error: "), maxsplit=1)[0][:40]
    event(f"{'accepted' if done.code == 0 else 'refused'} ({case.verdict}){said}")
    printed = done.out + done.err
    assert [m for m in case.secrets if m in printed] == [], "a secret was printed"
    assert "Traceback" not in printed and "\x1b" not in printed, "a traceback or an escape sequence was printed"
    if done.code == 0:
        assert case.verdict != BAD, f"accepted although: {case.because(BAD)}; {done}"
        assert done.err == ""
        assert [(a, o) for a, _, o, _ in entries] == [(action, "ok")]
    else:
        assert case.verdict != OK, f"refused although every value is good; {done}"
        assert done.code in (1, 2), done
        assert done.err.startswith("error: ") and done.err.endswith("\n") and len(done.err.splitlines()) == 1, done
        assert not done.err.startswith("error: unexpected "), f"refused by the catch-all, not by a check: {done}"
        assert done.out == ""
        assert moved == {}, f"refused, yet stored: {moved}"
        # refused by a format check before the service (nothing to record), or by the service, which says so
        assert [(a, o) for a, _, o, _ in entries] in ([], [(action, "refused")]), entries
        assert (env.orgs(), env.clouds()) == stored, "refused, yet a stored row changed"
    return done, moved


def new_row(env: Env, table: str) -> dict[str, Any]:
    """The one row of `table` that the snapshot does not have."""
    baseline = env.baseline["orgs" if table == "organizations" else "clouds"]
    added = [row for row_id, row in env.rows(table).items() if row_id not in baseline]
    assert len(added) == 1
    return added[0]


def stored_filters(case: Case) -> dict[str, Any]:
    return {k: case.expect[k] for k in ("exclude_name_prefixes", "limit_to_ou_ids", "auto_remove_suspended")}


@fuzz(ADD_CASES)
@given(data=st.data())
def test_org_add_takes_good_input_and_refuses_the_rest_in_one_line(env: Env, data: st.DataObject):
    env.use_acme(False)
    case = data.draw(org_add_cases(env.org))
    try:
        done, moved = attempt(env, case, "org.add")
        if done.code == 0:
            assert moved == {"organizations": 1, "outbox": 1}
            row = new_row(env, "organizations")
            stored = (row["cloud_org_id"], row["nickname"], row["filters"])
            assert stored == (env.org.org_id, case.expect["nickname"], stored_filters(case))
            if "--json" in case.argv:
                shown = json.loads(done.out)
                assert (shown["id"], shown["nickname"], shown["filters"]) == (str(row["id"]), *stored[1:])
            else:
                assert done.out.startswith(f"added organization {case.expect['nickname']} ({env.org.org_id}) as ")
    finally:
        env.reset()


@fuzz(EDIT_CASES)
@given(data=st.data())
def test_org_edit_takes_good_input_and_refuses_the_rest_in_one_line(env: Env, data: st.DataObject):
    env.use_acme(True)
    case = data.draw(org_edit_cases(env))
    try:
        done, moved = attempt(env, case, "org.edit")
        if done.code == 0:
            changed = case.expect["changed"]
            assert moved == ({"outbox": 1} if changed else {})
            target = str(env.acme if case.expect["target"] == "acme" else env.taken_id)
            before, after = env.baseline["orgs"], env.orgs()
            row, old = after.pop(target), before[target]
            assert (row["nickname"], row["filters"]) == (case.expect["nickname"], stored_filters(case))
            assert (row["credentials"] != old["credentials"]) is ("credentials" in changed)
            assert after == {k: v for k, v in before.items() if k != target}  # the other one is as it was
            if "--json" in case.argv:
                assert json.loads(done.out)["changed"] == changed
            elif changed:
                assert done.out.startswith(f"changed {', '.join(changed)}; sync requested (")
            else:
                assert done.out == "nothing to change\n"
    finally:
        env.reset()


@fuzz(CLOUD_CASES)
@given(data=st.data())
def test_cloud_add_takes_good_input_and_refuses_the_rest_in_one_line(env: Env, data: st.DataObject):
    case = data.draw(cloud_add_cases(env))
    try:
        done, moved = attempt(env, case, "cloud.add")
        if done.code == 0:
            assert moved == {"clouds": 1}
            row = new_row(env, "clouds")
            stored = (row["account_id"], row["name"], row["organization_id"], row["status"])
            assert stored == (case.expect["account_id"], case.expect["name"], None, "ok")
            if "--json" in case.argv:
                shown = json.loads(done.out)
                assert (shown["id"], shown["account_id"], shown["name"]) == (str(row["id"]), *stored[:2])
            else:
                assert done.out == f"added account {case.expect['account_id']} as {row['id']}\n"
    finally:
        env.reset()
