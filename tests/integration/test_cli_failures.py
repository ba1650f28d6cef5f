"""Every way a command can fail: one line on stderr, the documented exit code, nothing half-stored.

The table below is the contract for bad input; each row runs the real CLI against this test's own
database and checks the exact line, the exit code, and that no row was written.
"""

from __future__ import annotations

import json

import pytest

from localaws import faults
from localaws.builder import BuiltOrg
from orgsync.settings import get_settings

from ..support.cli import add_args, counts, run
from ..support.services import RUN_ID, Postgres, RabbitMQ

LONG = "x" * 10_000
ACCOUNT = "123456789012"

# (case, argv, extra environment, exit code, the one stderr line)
BAD_INPUT = [
    (
        "duration_not_a_number_names_the_option",
        ["--org-session-duration", "abc"],
        {},
        2,
        "error: Invalid value for '--org-session-duration': Input should be a valid integer, unable to parse string "
        "as an integer",
    ),
    (
        "nickname_of_10k_characters_is_a_length_error",
        ["--nickname", LONG],
        {},
        1,
        "error: nickname: 1-128 printable characters",
    ),
    (
        "rate_limit_that_is_not_a_number_names_the_variable",
        [],
        {"ORGSYNC_AWS_RATE_LIMITS": "organizations=abc"},
        1,
        "error: ORGSYNC_AWS_RATE_LIMITS: organizations: 'abc' is not a number of calls per second above 0",
    ),
    (
        "infinite_rate_limit",
        [],
        {"ORGSYNC_AWS_RATE_LIMITS": "organizations=inf"},
        1,
        "error: ORGSYNC_AWS_RATE_LIMITS: organizations: 'inf' is not a number of calls per second above 0",
    ),
    (
        "nan_rate_limit",
        [],
        {"ORGSYNC_AWS_RATE_LIMITS": "sts=nan"},
        1,
        "error: ORGSYNC_AWS_RATE_LIMITS: sts: 'nan' is not a number of calls per second above 0",
    ),
    (
        "misspelt_service_in_rate_limits",
        [],
        {"ORGSYNC_AWS_RATE_LIMITS": "organisations=5"},
        1,
        "error: ORGSYNC_AWS_RATE_LIMITS: unknown service 'organisations' (known: organizations, sts, iam, sqs and * "
        "for the rest)",
    ),
    (
        "minimum_aws_rate_of_zero",
        [],
        {"ORGSYNC_AWS_MIN_RATE": "0"},
        1,
        "error: ORGSYNC_AWS_MIN_RATE: input should be greater than 0",
    ),
    (
        "minimum_aws_rate_that_is_not_a_number",
        [],
        {"ORGSYNC_AWS_MIN_RATE": "abc"},
        1,
        "error: ORGSYNC_AWS_MIN_RATE: input should be a valid number, unable to parse string as a number",
    ),
    (
        "negative_worker_processes_setting",
        [],
        {"ORGSYNC_WORKER_PROCESSES": "-1"},
        1,
        "error: ORGSYNC_WORKER_PROCESSES: input should be greater than or equal to 1",
    ),
    (
        "unknown_option",
        ["--bogus"],
        {},
        2,
        "error: No such option: --bogus",
    ),
]


@pytest.mark.parametrize(("argv", "env", "code", "line"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_org_add_bad_input_is_one_line_and_stores_nothing(
    capsys, monkeypatch, cli_env, aws: BuiltOrg, argv, env, code, line
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    base = add_args(aws)
    for i in range(0, len(argv), 2):  # an override replaces the default value of the same option
        if argv[i] in base:
            del base[base.index(argv[i]) : base.index(argv[i]) + 2]
    assert run(capsys, *base, *argv) == (code, "", line + "\n")
    assert counts(cli_env) == (0, 0, 0)


COMMAND_FAILURES = [
    (
        "cloud_list_with_unknown_status",
        ["cloud", "list", "--status", "bogus"],
        1,
        "error: status: unknown status 'bogus'; one of pending, ok, assume_role_denied, scp_denied, "
        "duration_exceeded, account_suspended, sts_region_disabled, aws_error, credentials_unreadable",
    ),
    (
        "cloud_add_with_a_10k_character_name",
        [
            "cloud",
            "add",
            "--account-id",
            ACCOUNT,
            "--name",
            LONG,
            "--role-arn",
            f"arn:aws:iam::{ACCOUNT}:role/audit",
            "--session-name",
            "s1",
        ],
        1,
        "error: name: 1-256 printable characters",
    ),
    (
        "a_long_unknown_org_is_cut_in_the_error",
        ["org", "show", "y" * 5000],
        1,
        # the first 300 characters of the message, then how many more there were
        "error: no organization '" + "y" * 283 + f"… ({5000 - 283 + 41} more characters)",
    ),
    (
        "cloud_remove_refuses_an_unknown_account_before_asking",
        ["cloud", "remove", ACCOUNT],
        1,
        f"error: no cloud with account id {ACCOUNT}",
    ),
    (
        "org_remove_refuses_an_unknown_org_before_asking",
        ["org", "remove", "nosuch"],
        1,
        "error: no organization 'nosuch' (give its id, cloud org id or nickname)",
    ),
    (
        "dead_letters_without_a_broker",
        ["dead-letters", "list"],
        1,
        "error: no ORGSYNC_BROKER_URL: with the in-process broker, messages live only inside a command's run",
    ),
    (
        "worker_without_a_broker",
        ["worker"],
        1,
        "error: orgsync worker needs ORGSYNC_BROKER_URL (without it, commands run their work in-process)",
    ),
    (
        "scheduler_without_a_broker",
        ["scheduler"],
        1,
        "error: orgsync scheduler needs ORGSYNC_BROKER_URL: it only publishes work for `orgsync worker` processes",
    ),
    (
        "org_sync_of_an_unknown_org",
        ["org", "sync", "nosuch", "--wait"],
        1,
        "error: no organization 'nosuch' (give its id, cloud org id or nickname)",
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "line"), [c[1:] for c in COMMAND_FAILURES], ids=[c[0] for c in COMMAND_FAILURES]
)
def test_command_failures_are_one_line_with_their_exit_code(capsys, cli_env, argv, code, line):
    assert run(capsys, *argv) == (code, "", line + "\n")
    assert counts(cli_env) == (0, 0, 0)


def test_cloud_remove_of_a_managed_account_is_refused_before_the_question(capsys, cli_env, aws: BuiltOrg):
    assert run(capsys, *add_args(aws))[0] == 0
    member = next(a for a in aws.accounts if a.account_id != aws.management_account_id)
    # no --yes and no stdin: the refusal must come before any prompt
    assert run(capsys, "cloud", "remove", member.account_id) == (
        1,
        "",
        f"error: account {member.account_id} is managed by organization 'acme': it leaves the inventory with the "
        "organization's scope, or with the organization\n",
    )


def test_a_failed_sync_with_wait_exits_1_and_json_says_not_ok(capsys, cli_env, aws: BuiltOrg):
    assert run(capsys, *add_args(aws))[0] == 0
    faults.fail_parent(aws.root_id)
    try:
        code, out, err = run(capsys, "org", "sync", "acme", "--wait", "--json")
    finally:
        faults.clear()
    data = json.loads(out)
    assert (code, data["finished"], data["ok"], [f["actor"] for f in data["failures"]]) == (
        1,
        True,
        False,
        ["org_sync_requested"],
    )
    assert err.startswith("error: sync failed: org_sync_requested: ") and err.count("\n") == 1
    assert "incomplete walk" in err


def test_a_wait_that_times_out_exits_1(capsys, monkeypatch, cli_env, amqp_url, aws: BuiltOrg):
    monkeypatch.setenv("ORGSYNC_BROKER_URL", amqp_url)  # nobody consumes: the sync cannot finish
    monkeypatch.setenv("ORGSYNC_WAIT_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    code, out, err = run(capsys, *add_args(aws), "--wait", "--json")
    data = json.loads(out)
    assert (code, data["finished"], data["ok"], data["nickname"]) == (1, False, False, "acme")
    assert err == "error: timed out after 1s waiting for the sync to finish (ORGSYNC_WAIT_TIMEOUT_SECONDS)\n"
    assert run(capsys, "org", "sync", "acme", "--wait")[::2] == (
        1,
        "error: timed out after 1s waiting for the sync to finish (ORGSYNC_WAIT_TIMEOUT_SECONDS)\n",
    )


@pytest.mark.parametrize(
    ("broker", "line"),
    [  # {mq} is where the run's RabbitMQ listens
        ("amqp://guest:guest@127.0.0.1:1/%2F", "error: cannot reach RabbitMQ at 127.0.0.1:1/%2F: connection refused"),
        (
            "amqp://guest:wrong@{mq}/%2F",
            "error: cannot reach RabbitMQ at {mq}/%2F: access refused (check the user and password)",
        ),
        (
            "amqp://guest:guest@{mq}/no-such-vhost",
            "error: cannot reach RabbitMQ at {mq}/no-such-vhost: vhost 'no-such-vhost' does not exist or is "
            "not permitted",
        ),
    ],
    ids=["closed_port", "wrong_password", "wrong_vhost"],
)
def test_a_misconfigured_broker_stores_nothing(request, capsys, monkeypatch, cli_env, aws: BuiltOrg, broker, line):
    if "{mq}" in broker:
        rabbitmq: RabbitMQ = request.getfixturevalue("rabbitmq")
        broker, line = broker.format(mq=rabbitmq.address), line.format(mq=rabbitmq.address)
    monkeypatch.setenv("ORGSYNC_BROKER_URL", broker)
    get_settings.cache_clear()
    assert run(capsys, *add_args(aws), "--wait") == (1, "", line + "\n")
    assert counts(cli_env) == (0, 0, 0)
    for command in (("org", "sync", "acme"), ("queues",), ("dead-letters", "list"), ("tags", "refresh")):
        assert run(capsys, *command) == (1, "", line + "\n")


def test_an_unreachable_database_is_one_line(capsys, monkeypatch, cli_env):
    monkeypatch.setenv("ORGSYNC_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/orgsync")
    get_settings.cache_clear()
    line = "error: cannot reach the database at 127.0.0.1:1/orgsync: connection refused\n"
    assert run(capsys, "org", "list") == (1, "", line)
    assert run(capsys, "db", "upgrade") == (1, "", line)


def test_orgsync_alone_prints_its_help_and_no_error_line(capsys, cli_env):
    code, out, err = run(capsys)
    assert (code, err, out.split()[0]) == (2, "", "Usage:")
    assert "Keep a cloud inventory in step with AWS Organizations." in out
    code, out, err = run(capsys, "org")
    assert (code, err, out.split()[0]) == (2, "", "Usage:")
    assert "Register and inspect AWS Organizations." in out


@pytest.fixture
def empty_database(postgres: Postgres):
    name = f"orgsync_t{RUN_ID}_empty"
    yield postgres.create_database(name), name
    postgres.drop_database(name)


def test_an_unmigrated_database_says_to_run_db_upgrade(capsys, monkeypatch, cli_env, postgres, empty_database):
    url, name = empty_database
    monkeypatch.setenv("ORGSYNC_DATABASE_URL", url)
    get_settings.cache_clear()
    line = (
        f"error: the database at {postgres.address}/{name} has no orgsync schema (or an old one): "
        "run `orgsync db upgrade`"
    )
    assert run(capsys, "org", "list") == (1, "", line + "\n")
    assert run(capsys, "db", "upgrade") == (0, "database schema is up to date\n", "")
    assert run(capsys, "org", "list", "--json") == (0, "[]\n", "")


HOSTILE = "[bold red]PWN[/bold red] \x1b[41mESC\r\nfake line"
SHOWN = "[bold red]PWN[/bold red] \\x1b[41mESC\\x0d\\x0afake line"


def test_names_from_aws_are_printed_literally_with_control_characters_escaped(capsys, cli_env, aws: BuiltOrg):
    from localaws.orgmodel import find_account, org_backend_for

    member = next(a for a in aws.accounts if a.account_id != aws.management_account_id)
    find_account(org_backend_for(aws.management_account_id), member.account_id).name = HOSTILE
    assert run(capsys, *add_args(aws))[0] == 0

    code, out, err = run(capsys, "cloud", "list")
    assert (code, err) == (0, "")
    assert "\x1b" not in out and "\r" not in out
    row = next(line for line in out.splitlines() if member.account_id in line)
    assert SHOWN in row
    # off a terminal no id is cut: every account id appears whole, each on its own row
    assert {a.account_id for a in aws.accounts} <= {line.split()[1] for line in out.splitlines() if "│" in line}

    code, out, err = run(capsys, "cloud", "show", member.account_id)
    assert (code, err) == (0, "")
    assert f"name             {SHOWN}\n" in out and "\x1b" not in out

    code, out, _ = run(capsys, "cloud", "show", member.account_id, "--json")
    assert json.loads(out)["name"] == HOSTILE  # JSON carries the value itself, escaped by JSON's own rules


def test_org_show_says_the_last_sync_in_words_not_json(capsys, cli_env, aws: BuiltOrg):
    assert run(capsys, *add_args(aws, **{"--exclude-name-prefix": "sandbox-"}))[0] == 0
    code, out, err = run(capsys, "org", "show", "acme")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    labels = [line[:24].rstrip() for line in lines if not line.startswith("note: ")]
    assert labels == [
        "nickname",
        "id",
        "cloud org",
        "management account",
        "accounts",
        "credentials",
        "management role",
        "member role",
        "exclude name prefixes",
        "limit to OUs",
        "auto-remove suspended",
        "events queue",
        "last sync",
        "  started",
        "  finished",
        "  accounts in scope",
        "  added/updated/removed",
        "  rows written",
        "  AWS calls",
        "  took",
    ]
    values = {line[:24].strip(): line[25:] for line in lines}
    assert (values["cloud org"], values["exclude name prefixes"], values["last sync"], values["member role"]) == (
        aws.org_id,
        "sandbox-",
        "succeeded",
        aws.member_role_name,
    )
    assert "{" not in out


def test_an_argument_that_is_not_utf8_is_refused_in_one_line_without_its_value(cli_env):
    import subprocess
    import sys
    from pathlib import Path

    orgsync = str(Path(sys.executable).with_name("orgsync"))
    done = subprocess.run([orgsync, "org", "show", b"secret-\xff"], capture_output=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, b"", b"error: argument 3 is not valid UTF-8\n")


def test_an_argument_with_a_nul_is_refused_in_one_line_without_its_value(capsys, cli_env):
    assert run(capsys, "org", "show", "secret\x00") == (2, "", "error: argument 3 contains a NUL character\n")
