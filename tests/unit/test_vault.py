"""The credential vault: AES-GCM under a key ring, bound to its row, rotatable, never leaking keys."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.config import AccessKey, Credentials, MemberRoleConfig, RoleConfig, Secret
from storage.vault import (
    KEY_ID_LEN,
    NONCE_LEN,
    KeyRing,
    VaultError,
    ensure_keys_file,
    generate_key,
    read_keys_file,
    row_context,
)

K1 = base64.urlsafe_b64encode(bytes(range(32))).decode()
K2 = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
K3 = base64.urlsafe_b64encode(b"\xff" * 32).decode()
CTX = row_context("organizations", "org-1")

CREDS = Credentials(
    management=RoleConfig("arn:aws:iam::123456789012:role/OrgReader", "orgsync", 3600, Secret("org-ext-id")),
    member=MemberRoleConfig("security/Reader", "orgsync-member", 900, Secret("member-ext-id")),
    access_key=AccessKey("AKIAIOSFODNN7EXAMPLE", Secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
)


def test_generated_keys_are_distinct_32_byte_urlsafe_base64() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert {len(base64.urlsafe_b64decode(k)) for k in keys} == {32}
    assert all(set(k) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=") for k in keys)


def test_row_context_names_table_and_row() -> None:
    assert row_context("organizations", 42) == b"orgsync:organizations:42"


# --- encrypt / decrypt ----------------------------------------------------------------------------------


def test_encrypt_then_decrypt_gives_the_plaintext_back() -> None:
    ring = KeyRing([K1])
    blob = ring.encrypt(b"plain text", CTX)
    assert ring.decrypt(blob, CTX) == b"plain text"


def test_blob_layout_is_version_key_id_nonce_ciphertext_and_tag() -> None:
    ring = KeyRing([K1])
    blob = ring.encrypt(b"0123456789", CTX)
    assert blob[:1] == b"\x01"
    assert len(blob) == 1 + KEY_ID_LEN + NONCE_LEN + 10 + 16
    assert b"0123456789" not in blob
    assert blob[1 : 1 + KEY_ID_LEN] == KeyRing([K1]).encrypt(b"", CTX)[1 : 1 + KEY_ID_LEN]


def test_same_plaintext_encrypts_differently_each_time() -> None:
    ring = KeyRing([K1])
    assert ring.encrypt(b"x", CTX) != ring.encrypt(b"x", CTX)


def test_sealed_credentials_open_to_the_same_values_and_hide_secrets() -> None:
    ring = KeyRing([K1])
    blob = ring.seal(CREDS, "organizations", "org-1")
    for secret in (b"org-ext-id", b"member-ext-id", b"wJalrXUtnFEMI", b"OrgReader"):
        assert secret not in blob
    assert ring.open(blob, "organizations", "org-1") == CREDS


def test_ciphertext_copied_to_another_row_does_not_open() -> None:
    ring = KeyRing([K1])
    blob = ring.seal(CREDS, "organizations", "org-1")
    with pytest.raises(VaultError) as exc:
        ring.open(blob, "organizations", "org-2")
    assert str(exc.value) == "credential block does not decrypt for this row (tampered or copied)"


def test_ciphertext_copied_to_another_table_does_not_open() -> None:
    ring = KeyRing([K1])
    blob = ring.seal(CREDS, "organizations", "org-1")
    with pytest.raises(VaultError, match=r"^credential block does not decrypt for this row \(tampered or copied\)$"):
        ring.open(blob, "clouds", "org-1")


@pytest.mark.parametrize("position", [0, 1, 8, 9, 20, 21, -1])
def test_tampered_ciphertext_does_not_open(position: int) -> None:
    ring = KeyRing([K1])
    blob = bytearray(ring.encrypt(b"secret payload", CTX))
    blob[position] ^= 0x01
    with pytest.raises(VaultError) as exc:
        ring.decrypt(bytes(blob), CTX)
    expected = {
        0: "credential block is not an orgsync ciphertext",
        1: "credential block was encrypted with a key that is not in the key ring",
        8: "credential block was encrypted with a key that is not in the key ring",
    }.get(position, "credential block does not decrypt for this row (tampered or copied)")
    assert str(exc.value) == expected


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + bytes(35), b"\x02" + bytes(40), b"plain json {}" * 4])
def test_blob_that_is_not_an_orgsync_ciphertext_is_refused(blob: bytes) -> None:
    with pytest.raises(VaultError, match=r"^credential block is not an orgsync ciphertext$"):
        KeyRing([K1]).decrypt(blob, CTX)


def test_blob_of_a_key_outside_the_ring_is_refused() -> None:
    blob = KeyRing([K1]).encrypt(b"x", CTX)
    with pytest.raises(VaultError) as exc:
        KeyRing([K2]).decrypt(blob, CTX)
    assert str(exc.value) == "credential block was encrypted with a key that is not in the key ring"


# --- rotation --------------------------------------------------------------------------------------------------


def test_ring_with_a_new_first_key_still_opens_old_blobs_and_rewrap_moves_them() -> None:
    old_ring = KeyRing([K1])
    old_blob = old_ring.seal(CREDS, "organizations", 7)

    rotated = KeyRing([K2, K1])
    assert rotated.open(old_blob, "organizations", 7) == CREDS
    assert rotated.is_primary(old_blob) is False

    new_blob = rotated.rewrap(old_blob, "organizations", 7)
    assert rotated.is_primary(new_blob) is True
    assert rotated.open(new_blob, "organizations", 7) == CREDS
    # once every row is rewrapped the old key can go, and only then
    assert KeyRing([K2]).open(new_blob, "organizations", 7) == CREDS
    with pytest.raises(VaultError, match="not in the key ring"):
        KeyRing([K2]).open(old_blob, "organizations", 7)
    with pytest.raises(VaultError, match="not in the key ring"):
        old_ring.open(new_blob, "organizations", 7)


def test_rewrap_keeps_the_row_binding() -> None:
    ring = KeyRing([K2, K1])
    new_blob = ring.rewrap(KeyRing([K1]).seal(CREDS, "organizations", 1), "organizations", 1)
    with pytest.raises(VaultError, match="tampered or copied"):
        ring.open(new_blob, "organizations", 2)


def test_rewrap_under_the_wrong_row_fails() -> None:
    blob = KeyRing([K1]).seal(CREDS, "organizations", 1)
    with pytest.raises(VaultError, match="tampered or copied"):
        KeyRing([K2, K1]).rewrap(blob, "organizations", 2)


def test_only_the_first_key_encrypts() -> None:
    ring = KeyRing([K3, K1, K2])
    blob = ring.encrypt(b"x", CTX)
    assert KeyRing([K3]).decrypt(blob, CTX) == b"x"
    assert ring.is_primary(blob) is True
    assert KeyRing([K1, K3]).is_primary(blob) is False


# --- keys ------------------------------------------------------------------------------------------------------


def test_blank_entries_are_skipped_and_duplicate_keys_count_once() -> None:
    ring = KeyRing(["", "  ", K1, f"  {K1}\n", K2])
    assert ring.size == 2
    assert repr(ring) == "KeyRing(2 keys)"


def test_standard_base64_keys_are_accepted_too() -> None:
    standard = base64.b64encode(b"\xfb" * 32).decode()  # contains '+' and '/'
    assert "+" in standard or "/" in standard
    ring = KeyRing([standard])
    assert KeyRing([base64.urlsafe_b64encode(b"\xfb" * 32).decode()]).decrypt(ring.encrypt(b"x", CTX), CTX) == b"x"


@pytest.mark.parametrize("keys", [[], [""], ["  ", "\n"]])
def test_empty_key_ring_is_refused(keys: list[str]) -> None:
    with pytest.raises(VaultError, match=r"^no encryption key configured$"):
        KeyRing(keys)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            [base64.urlsafe_b64encode(b"k" * 16).decode()],
            "encryption key #1 is 16 bytes; keys are 32 bytes (orgsync keys generate)",
        ),
        (
            [K1, base64.urlsafe_b64encode(b"k" * 33).decode()],
            "encryption key #2 is 33 bytes; keys are 32 bytes (orgsync keys generate)",
        ),
        (
            [K1, "", base64.urlsafe_b64encode(b"k" * 24).decode()],  # blank lines do not count
            "encryption key #2 is 24 bytes; keys are 32 bytes (orgsync keys generate)",
        ),
        (["AAAAA"], "encryption key #1 is not base64"),
        ([K1, K2, K1[:-2]], "encryption key #3 is not base64"),
        # characters outside the alphabet are dropped before decoding: still a clear error
        (["not a key, obviously!!"], "encryption key #1 is 12 bytes; keys are 32 bytes (orgsync keys generate)"),
    ],
)
def test_malformed_key_gives_a_clear_error_without_key_material(keys: list[str], message: str) -> None:
    with pytest.raises(VaultError) as exc:
        KeyRing(keys)
    assert str(exc.value) == message
    for key in keys:
        if key.strip():
            assert key not in str(exc.value)
            assert key.strip()[:8] not in str(exc.value)
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__ is True or exc.value.__context__ is None


def test_repr_of_key_ring_and_secret_do_not_leak() -> None:
    ring = KeyRing([K1, K2])
    for text in (repr(ring), str(ring)):
        assert text == "KeyRing(2 keys)"
        assert K1 not in text
        assert K2 not in text
    assert repr(Secret(K1)) == "Secret('********')"
    assert K1 not in f"{Secret(K1)} {Secret(K1)!r}"


# --- key files -----------------------------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_key_file_is_created_with_mode_0600_and_one_key(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "nested" / "dir" / "keys"
    keys = ensure_keys_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(keys) == 1
    assert len(base64.urlsafe_b64decode(keys[0])) == 32
    lines = path.read_text().splitlines()
    assert lines == [
        "# orgsync encryption keys: the first encrypts, all decrypt. Keep this file secret.",
        keys[0],
    ]
    assert KeyRing(keys).size == 1


def test_existing_key_file_is_read_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# comment\n\n  {K2}  \n   # indented comment\n{K1}\n")
    before = path.read_text()
    assert ensure_keys_file(path) == [K2, K1]
    assert path.read_text() == before


def test_key_file_is_stable_across_calls(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    assert ensure_keys_file(path) == ensure_keys_file(path)


def test_unreadable_key_file_is_a_vault_error(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(VaultError) as exc:
        read_keys_file(path)
    assert str(exc.value) == f"cannot read encryption keys file {path}: No such file or directory"


# --- properties ------------------------------------------------------------------------------------------------

_RING = KeyRing([K1, K2])


@settings(max_examples=50)
@given(
    plaintext=st.binary(max_size=256),
    table=st.sampled_from(["organizations", "clouds"]),
    row=st.integers(0, 10**9) | st.uuids().map(str),
    other_row=st.integers(0, 10**9) | st.uuids().map(str),
)
def test_any_plaintext_round_trips_for_its_row_only(
    plaintext: bytes, table: str, row: object, other_row: object
) -> None:
    context = row_context(table, row)
    blob = _RING.encrypt(plaintext, context)
    assert _RING.decrypt(blob, context) == plaintext
    assert KeyRing([K1]).decrypt(blob, context) == plaintext
    if str(other_row) != str(row):
        with pytest.raises(VaultError, match="tampered or copied"):
            _RING.decrypt(blob, row_context(table, other_row))
