"""Format checks of what an admin registers: every failure names its field and never echoes a secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.config import (
    DEFAULT_SESSION_SECONDS,
    PARTITIONS,
    AccessKey,
    Credentials,
    Filters,
    MemberRoleConfig,
    RoleConfig,
    Secret,
    build_credentials,
    build_filters,
    check_account_id,
    check_duration,
    check_external_id,
    check_nickname,
    check_ou_id,
    check_role_name,
    check_session_name,
    member_role_arn,
    parse_rate_limits,
    parse_role_arn,
)
from domain.errors import InvalidInput

ARN = "arn:aws:iam::123456789012:role/OrgReader"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

VALID = {
    "org_role_arn": ARN,
    "org_session_name": "orgsync",
    "member_role_name": "security/Reader",
    "member_session_name": "orgsync-member",
}


def _build(**overrides: object) -> Credentials:
    return build_credentials(**{**VALID, **overrides})  # type: ignore[arg-type]


# --- role ARNs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (ARN, ("aws", "123456789012", "OrgReader")),
        ("arn:aws:iam::000000000000:role/a/b/c/Name", ("aws", "000000000000", "a/b/c/Name")),
        ("arn:aws-cn:iam::111122223333:role/R", ("aws-cn", "111122223333", "R")),
        ("arn:aws-us-gov:iam::111122223333:role/svc/R_1", ("aws-us-gov", "111122223333", "svc/R_1")),
        ("arn:aws-iso-b:iam::111122223333:role/R+=,.@-", ("aws-iso-b", "111122223333", "R+=,.@-")),
        ("arn:aws-eusc:iam::111122223333:role/" + "n" * 64, ("aws-eusc", "111122223333", "n" * 64)),
    ],
)
def test_valid_role_arn_splits_into_partition_account_and_path_name(arn: str, expected: tuple[str, str, str]) -> None:
    assert parse_role_arn(arn, "org-role-arn") == expected


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "OrgReader",
        "arn:aws:iam::12345678901:role/R",  # 11 digits
        "arn:aws:iam::1234567890123:role/R",  # 13 digits
        "arn:aws:iam::12345678901a:role/R",
        "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/R",  # non-ASCII digits
        "arn:aws:iam::123456789012:user/R",
        "arn:aws:sts::123456789012:role/R",
        "arn:aws:iam:us-east-1:123456789012:role/R",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role//R",
        "arn:aws:iam::123456789012:role/a//R",
        "arn:aws:iam::123456789012:role/R/",
        "arn:aws:iam::123456789012:role/R*",
        "arn:aws:iam::123456789012:role/Réader",  # IAM names are ASCII
        "arn:aws:iam::123456789012:role/" + "n" * 65,  # role name longer than 64
        "arn:aws:iam::123456789012:role/R\n",  # trailing newline
        " arn:aws:iam::123456789012:role/R",
        "arn:AWS:iam::123456789012:role/R",
    ],
)
def test_malformed_role_arn_is_refused_naming_the_field(arn: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_role_arn(arn, "org-role-arn")
    assert exc.value.field == "org-role-arn"
    assert exc.value.message == (f"not an IAM role ARN (expected arn:aws:iam::<12 digits>:role/<name>): {arn!r}")
    assert str(exc.value) == f"org-role-arn: {exc.value.message}"


@pytest.mark.parametrize("partition", ["aws-xx", "amazon", "aws-"])
def test_role_arn_with_unknown_partition_is_refused(partition: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_role_arn(f"arn:{partition}:iam::123456789012:role/R", "org-role-arn")
    assert (exc.value.field, exc.value.message) == ("org-role-arn", f"unknown AWS partition {partition!r}")


def test_role_arn_with_path_and_name_over_512_characters_is_refused() -> None:
    name = "/".join(["p" * 63] * 8) + "/R"  # 8*64 + 1 = 513 characters
    assert len(name) == 513
    with pytest.raises(InvalidInput) as exc:
        parse_role_arn(f"arn:aws:iam::123456789012:role/{name}", "org-role-arn")
    assert exc.value.message == "role path and name are longer than 512 characters"


def test_role_arn_with_path_and_name_of_exactly_512_characters_is_accepted() -> None:
    name = "/".join(["p" * 63] * 7) + "/" + "R" * 64  # 7*64 + 64 = 512
    assert len(name) == 512
    assert parse_role_arn(f"arn:aws:iam::123456789012:role/{name}", "f")[2] == name


_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-"
_segment = st.text(alphabet=_NAME_ALPHABET, min_size=1, max_size=20)


@given(
    partition=st.sampled_from(PARTITIONS),
    account=st.text(alphabet="0123456789", min_size=12, max_size=12),
    path=st.lists(_segment, max_size=6),
    name=st.text(alphabet=_NAME_ALPHABET, min_size=1, max_size=64),
)
def test_every_valid_role_arn_parses_back_to_its_parts(
    partition: str, account: str, path: list[str], name: str
) -> None:
    role = "/".join([*path, name])
    arn = member_role_arn(partition, account, role)
    assert parse_role_arn(arn, "org-role-arn") == (partition, account, role)
    config = RoleConfig(role_arn=arn, session_name="s1")
    assert (config.partition, config.account_id) == (partition, account)


@given(st.text(max_size=80))
def test_parse_role_arn_on_any_text_either_parses_or_raises_invalid_input(value: str) -> None:
    try:
        partition, account, name = parse_role_arn(value, "org-role-arn")
    except InvalidInput as exc:
        assert exc.field == "org-role-arn"
    else:
        assert value == member_role_arn(partition, account, name)
        assert partition in PARTITIONS


# --- single fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ab", "orgsync", "a" * 64, "user@example.com", "x_y-z+=,.@"])
def test_session_name_of_2_to_64_allowed_characters_is_accepted(value: str) -> None:
    assert check_session_name(value, "org-session-name") == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "2-64 characters from letters, digits and +=,.@_-: missing"),
        ("", "2-64 characters from letters, digits and +=,.@_-: missing"),
        ("a", "2-64 characters from letters, digits and +=,.@_-: 'a'"),
        ("a" * 65, f"2-64 characters from letters, digits and +=,.@_-: {'a' * 65!r}"),
        ("has space", "2-64 characters from letters, digits and +=,.@_-: 'has space'"),
        ("slash/no", "2-64 characters from letters, digits and +=,.@_-: 'slash/no'"),
        ("ok\n", "2-64 characters from letters, digits and +=,.@_-: 'ok\\n'"),
    ],
)
def test_bad_session_name_is_refused_with_the_rule(value: str | None, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_session_name(value, "member-session-name")
    assert (exc.value.field, exc.value.message) == ("member-session-name", message)


@pytest.mark.parametrize(("value", "expected"), [(None, 3600), (900, 900), (3600, 3600), (43200, 43200)])
def test_duration_within_900_to_43200_is_accepted_and_none_means_one_hour(value: int | None, expected: int) -> None:
    assert check_duration(value, "org-session-duration") == expected
    assert DEFAULT_SESSION_SECONDS == 3600


@pytest.mark.parametrize("value", [0, -1, 899, 43201, 86400])
def test_duration_outside_900_to_43200_is_refused(value: int) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_duration(value, "member-session-duration")
    assert exc.value.field == "member-session-duration"
    assert exc.value.message == f"must be between 900 and 43200 seconds, got {value}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("ab", "ab"), ("x" * 1224, "x" * 1224), ("a:b/c=d,e.f@g-h_i+j", "a:b/c=d,e.f@g-h_i+j")],
)
def test_external_id_is_optional_and_accepted_in_iam_format(value: str | None, expected: str | None) -> None:
    assert check_external_id(value, "org-external-id") == expected


@pytest.mark.parametrize(
    "value", ["Q", "x" * 1225, "secret with spaces", "s3cr3t!value", "tab\there", "ünïcode-id", "trailing\n"]
)
def test_bad_external_id_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_external_id(value, "org-external-id")
    assert exc.value.field == "org-external-id"
    assert exc.value.message == "2-1224 characters from letters, digits and +=,.@:/_-"
    assert value not in str(exc.value)
    assert value not in repr(exc.value)


@given(st.text(min_size=1, max_size=40))
def test_external_id_is_never_part_of_an_error_message(value: str) -> None:
    try:
        check_external_id(value, "member-external-id")
    except InvalidInput as exc:
        assert exc.field == "member-external-id"
        assert str(exc) == "member-external-id: 2-1224 characters from letters, digits and +=,.@:/_-"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Reader", "Reader"),
        ("security/Reader", "security/Reader"),
        ("/security/Reader/", "security/Reader"),
        ("a/b/c/d/Reader", "a/b/c/d/Reader"),
        ("R" * 64, "R" * 64),
        ("OrganizationAccountAccessRole", "OrganizationAccountAccessRole"),
    ],
)
def test_role_name_with_optional_path_is_accepted_without_outer_slashes(value: str, expected: str) -> None:
    assert check_role_name(value, "member-role-name") == expected


@pytest.mark.parametrize("value", [None, "", "/", "//", "a//b", "R" * 65, "bad name", "Réader", "R\n", "a/*"])
def test_bad_role_name_is_refused_naming_the_field(value: str | None) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_role_name(value, "member-role-name")
    assert exc.value.field == "member-role-name"
    assert exc.value.message == f"not an IAM role name (optionally with a path, e.g. security/Reader): {value!r}"


def test_role_name_with_path_over_512_characters_is_refused() -> None:
    value = "/".join(["p" * 63] * 8) + "/R"
    with pytest.raises(InvalidInput) as exc:
        check_role_name(value, "member-role-name")
    assert exc.value.field == "member-role-name"


@pytest.mark.parametrize("value", ["123456789012", "000000000000"])
def test_twelve_digit_account_id_is_accepted(value: str) -> None:
    assert check_account_id(value, "account-id") == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "an AWS account id is 12 digits: missing"),
        ("", "an AWS account id is 12 digits: missing"),
        ("12345678901", "an AWS account id is 12 digits: '12345678901'"),
        ("1234567890123", "an AWS account id is 12 digits: '1234567890123'"),
        ("12345678901a", "an AWS account id is 12 digits: '12345678901a'"),
        ("123456789012\n", "an AWS account id is 12 digits: '123456789012\\n'"),
        ("١٢٣٤٥٦٧٨٩٠١٢", "an AWS account id is 12 digits: '١٢٣٤٥٦٧٨٩٠١٢'"),
    ],
)
def test_bad_account_id_is_refused(value: str | None, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_account_id(value, "account-id")
    assert (exc.value.field, exc.value.message) == ("account-id", message)


@pytest.mark.parametrize("value", ["ou-abcd-12345678", "ou-0a1b-abcdefgh12", "ou-" + "a" * 32 + "-" + "b" * 32])
def test_ou_id_in_aws_format_is_accepted(value: str) -> None:
    assert check_ou_id(value, "limit-to-ou") == value


@pytest.mark.parametrize(
    "value",
    ["", "r-abcd", "ou-abc-12345678", "ou-abcd-1234567", "ou-ABCD-12345678", "ou-abcd_12345678", "ou-abcd-12345678\n"],
)
def test_bad_ou_id_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_ou_id(value, "limit-to-ou")
    assert exc.value.field == "limit-to-ou"
    assert exc.value.message.startswith("not an organizational unit id (ou-xxxx-xxxxxxxx): ")


@pytest.mark.parametrize(
    ("value", "expected"), [("prod", "prod"), ("  Prod Org  ", "Prod Org"), ("n" * 128, "n" * 128), ("é😀", "é😀")]
)
def test_nickname_is_trimmed_and_accepted(value: str, expected: str) -> None:
    assert check_nickname(value) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "n" * 129, "tab\there", "new\nline", "bell\x07"])
def test_bad_nickname_is_refused(value: str | None) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_nickname(value)
    assert (exc.value.field, exc.value.message) == ("nickname", "1-128 printable characters")


# --- filters ------------------------------------------------------------------------------------------


def test_filters_keep_order_and_drop_duplicates() -> None:
    filters = build_filters(
        ["sandbox-", "test-", "sandbox-"], ["ou-abcd-12345678", "ou-efgh-87654321", "ou-abcd-12345678"], True
    )
    assert filters == Filters(("sandbox-", "test-"), ("ou-abcd-12345678", "ou-efgh-87654321"), True)


def test_default_filters_keep_everything() -> None:
    assert build_filters() == Filters((), (), False)


@pytest.mark.parametrize(
    ("prefixes", "ous", "field", "message"),
    [
        ([""], [], "exclude-name-prefix", "a prefix is 1-128 printable characters"),
        (["p" * 129], [], "exclude-name-prefix", "a prefix is 1-128 printable characters"),
        ([], ["ou-bad"], "limit-to-ou", "not an organizational unit id (ou-xxxx-xxxxxxxx): 'ou-bad'"),
        ([], ["ou-abcd-12345678", ""], "limit-to-ou", "not an organizational unit id (ou-xxxx-xxxxxxxx): missing"),
    ],
)
def test_bad_filter_is_refused_naming_its_option(prefixes: list[str], ous: list[str], field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        build_filters(prefixes, ous)
    assert (exc.value.field, exc.value.message) == (field, message)


def test_filters_survive_json_round_trip() -> None:
    filters = Filters(("a-", "b-"), ("ou-abcd-12345678",), True)
    assert filters.to_json() == {
        "exclude_name_prefixes": ["a-", "b-"],
        "limit_to_ou_ids": ["ou-abcd-12345678"],
        "auto_remove_suspended": True,
    }
    assert Filters.from_json(filters.to_json()) == filters


def test_filters_from_json_defaults_missing_keys() -> None:
    assert Filters.from_json({}) == Filters()
    assert Filters.from_json({"exclude_name_prefixes": None, "limit_to_ou_ids": None}) == Filters()


# --- credentials ----------------------------------------------------------------------------------------


def test_minimal_credentials_get_defaults_and_no_access_key() -> None:
    assert _build() == Credentials(
        management=RoleConfig(ARN, "orgsync", 3600, None),
        member=MemberRoleConfig("security/Reader", "orgsync-member", 3600, None),
        access_key=None,
    )


def test_full_credentials_keep_every_value_and_wrap_secrets() -> None:
    creds = _build(
        org_session_duration=900,
        org_external_id="org-ext-id",
        member_role_name="/Reader/",
        member_session_duration=43200,
        member_external_id="member-ext-id",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_KEY,
    )
    assert creds == Credentials(
        management=RoleConfig(ARN, "orgsync", 900, Secret("org-ext-id")),
        member=MemberRoleConfig("Reader", "orgsync-member", 43200, Secret("member-ext-id")),
        access_key=AccessKey(ACCESS_KEY_ID, Secret(SECRET_KEY)),
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"org_role_arn": None}, "org-role-arn"),
        ({"org_role_arn": "arn:aws:iam::123:role/R"}, "org-role-arn"),
        ({"org_session_name": None}, "org-session-name"),
        ({"org_session_name": "x"}, "org-session-name"),
        ({"org_session_duration": 899}, "org-session-duration"),
        ({"org_external_id": "bad external id!"}, "org-external-id"),
        ({"member_role_name": None}, "member-role-name"),
        ({"member_role_name": "a//b"}, "member-role-name"),
        ({"member_session_name": "has space"}, "member-session-name"),
        ({"member_session_duration": 43201}, "member-session-duration"),
        ({"member_external_id": "e"}, "member-external-id"),
        ({"secret_access_key": SECRET_KEY}, "access-key-id"),
        ({"access_key_id": "akia-lowercase-id"}, "access-key-id"),
        ({"access_key_id": "AKIASHORT"}, "access-key-id"),
        ({"access_key_id": ACCESS_KEY_ID}, "secret-access-key-file"),
        ({"access_key_id": ACCESS_KEY_ID, "secret_access_key": "short"}, "secret-access-key-file"),
        ({"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_KEY + "!"}, "secret-access-key-file"),
        ({"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_KEY + "\n"}, "secret-access-key-file"),
    ],
)
def test_every_bad_credential_field_is_named_in_the_error(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        _build(**overrides)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret_access_key": SECRET_KEY}, "required when a secret access key is given"),
        ({"access_key_id": ACCESS_KEY_ID}, "required when an access key id is given"),
        ({"access_key_id": "AKIASHORT"}, "not an AWS access key id: 'AKIASHORT'"),
    ],
)
def test_access_key_pair_errors_explain_what_is_missing(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        _build(**overrides)
    assert exc.value.message == message


@pytest.mark.parametrize(
    "secret", ["too-short", "bad chars in secret key value!!", "ünïcode" * 4, "x" * 129, SECRET_KEY + "\n"]
)
def test_bad_secret_access_key_never_appears_in_the_error(secret: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        _build(access_key_id=ACCESS_KEY_ID, secret_access_key=secret)
    assert exc.value.field == "secret-access-key-file"
    assert exc.value.message == "not an AWS secret access key (16-128 characters, A-Z a-z 0-9 / + =)"
    assert secret not in str(exc.value)
    assert secret.strip() not in repr(exc.value)


@pytest.mark.parametrize(
    ("field", "kwarg"), [("org-external-id", "org_external_id"), ("member-external-id", "member_external_id")]
)
def test_bad_external_id_in_credentials_is_not_echoed(field: str, kwarg: str) -> None:
    secret = "my shared secret value"
    with pytest.raises(InvalidInput) as exc:
        _build(**{kwarg: secret})
    assert exc.value.field == field
    assert secret not in str(exc.value)


def test_first_bad_field_wins_when_several_are_bad() -> None:
    with pytest.raises(InvalidInput) as exc:
        _build(org_session_name="x", member_role_name="", org_session_duration=1)
    assert exc.value.field == "org-session-name"


def test_credentials_survive_json_round_trip() -> None:
    creds = _build(
        org_external_id="org-ext-id",
        member_external_id="member-ext-id",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_KEY,
    )
    assert creds.to_json() == {
        "management": {
            "role_arn": ARN,
            "session_name": "orgsync",
            "duration_seconds": 3600,
            "external_id": "org-ext-id",
        },
        "member": {
            "role_name": "security/Reader",
            "session_name": "orgsync-member",
            "duration_seconds": 3600,
            "external_id": "member-ext-id",
        },
        "access_key": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_KEY},
    }
    assert Credentials.from_json(creds.to_json()) == creds


def test_credentials_without_secrets_survive_json_round_trip() -> None:
    creds = _build()
    assert creds.to_json()["access_key"] is None
    assert Credentials.from_json(creds.to_json()) == creds


def test_credentials_from_json_refuses_a_block_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match=r"^credential block is not an object$"):
        Credentials.from_json({"management": "oops", "member": {}})


def test_repr_of_credentials_shows_no_secret() -> None:
    creds = _build(
        org_external_id="org-ext-id-value",
        member_external_id="member-ext-id-value",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_KEY,
    )
    text = repr(creds) + str(creds)
    for secret in ("org-ext-id-value", "member-ext-id-value", SECRET_KEY):
        assert secret not in text
    assert text.count("Secret('********')") == 6


def test_member_role_config_builds_the_role_of_one_account() -> None:
    member = MemberRoleConfig("security/Reader", "orgsync-member", 1800, Secret("ext"))
    assert member.for_account("aws-cn", "210987654321") == RoleConfig(
        "arn:aws-cn:iam::210987654321:role/security/Reader", "orgsync-member", 1800, Secret("ext")
    )


# --- Secret ------------------------------------------------------------------------------------------------


def test_secret_masks_its_value_in_repr_str_and_format() -> None:
    secret = Secret("hunter2-value")
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "Secret('********')"
    assert f"{secret}" == "Secret('********')"
    assert "hunter2" not in repr([secret, {"k": secret}])
    assert secret.reveal() == "hunter2-value"


def test_secrets_compare_and_hash_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert {Secret("a"), Secret("a"), Secret("b")} == {Secret("a"), Secret("b")}


# --- AWS call rates ----------------------------------------------------------------------------------------


def test_rate_limits_are_ceilings_per_service() -> None:
    assert parse_rate_limits("") == {}
    assert parse_rate_limits(" organizations=20, sts=200.5 ,*=50 ") == {"organizations": 20.0, "sts": 200.5, "*": 50.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sts", "'sts' is not service=calls-per-second (e.g. sts=200)"),
        ("organisations=5", "unknown service 'organisations' (known: organizations, sts, iam, sqs and * for the rest)"),
        ("iam=0", "iam: '0' is not a number of calls per second above 0"),
        ("*=inf", "*: 'inf' is not a number of calls per second above 0"),
    ],
)
def test_a_bad_rate_limit_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rate_limits(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("prefix", ["\x00x", "tab\there", "a\udcff"])
def test_a_name_prefix_that_is_not_printable_utf8_is_refused(prefix):
    with pytest.raises(InvalidInput) as caught:
        build_filters([prefix])
    assert str(caught.value) == "exclude-name-prefix: a prefix is 1-128 printable characters"
