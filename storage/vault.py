"""Credential encryption at rest: AES-256-GCM under a key ring, bound to the row it belongs to.

Blob layout: 0x01 | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag. The associated data names
the table and row id, so a ciphertext copied into another row does not decrypt. The first key of the
ring encrypts; every key decrypts, which is what makes rotation possible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.config import Credentials
from domain.errors import OrgSyncError, PermanentError

VERSION = b"\x01"
KEY_ID_LEN = 8
NONCE_LEN = 12


# What users are told (org status, cloud status, `keys rotate`) when a stored block does not open.
CREDENTIALS_UNREADABLE = "credentials cannot be decrypted (tampered, copied or wrong key ring)"


class VaultError(OrgSyncError):
    """A key is malformed, missing, or a ciphertext does not open. Never carries key material."""


class CredentialsUnreadable(VaultError, PermanentError):
    """A stored credential block does not open with this key ring: not an orgsync ciphertext, encrypted
    under a key the ring lacks, or not for this row (tampered or copied). Retrying cannot help."""


def generate_key() -> str:
    """A new random 256-bit key, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode_key(text: str, position: int) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise VaultError(f"encryption key #{position} is not base64") from None
    if len(raw) != 32:
        raise VaultError(f"encryption key #{position} is {len(raw)} bytes; keys are 32 bytes (orgsync keys generate)")
    return raw


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"orgsync-key-id" + key).digest()[:KEY_ID_LEN]


def row_context(table: str, row_id: object) -> bytes:
    return f"orgsync:{table}:{row_id}".encode()


class KeyRing:
    def __init__(self, keys: Iterable[str]) -> None:
        raw = [_decode_key(k, i + 1) for i, k in enumerate(k for k in keys if k.strip())]
        if not raw:
            raise VaultError("no encryption key configured")
        self._keys = {_key_id(k): AESGCM(k) for k in raw}
        self._primary = _key_id(raw[0])

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    @property
    def size(self) -> int:
        return len(self._keys)

    def encrypt(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return VERSION + self._primary + nonce + self._keys[self._primary].encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, context: bytes) -> bytes:
        if len(blob) < 1 + KEY_ID_LEN + NONCE_LEN + 16 or blob[:1] != VERSION:
            raise CredentialsUnreadable("credential block is not an orgsync ciphertext")
        key_id = blob[1 : 1 + KEY_ID_LEN]
        aead = self._keys.get(key_id)
        if aead is None:
            raise CredentialsUnreadable("credential block was encrypted with a key that is not in the key ring")
        nonce = blob[1 + KEY_ID_LEN : 1 + KEY_ID_LEN + NONCE_LEN]
        try:
            return aead.decrypt(nonce, blob[1 + KEY_ID_LEN + NONCE_LEN :], context)
        except InvalidTag:
            raise CredentialsUnreadable("credential block does not decrypt for this row (tampered or copied)") from None

    def is_primary(self, blob: bytes) -> bool:
        return blob[1 : 1 + KEY_ID_LEN] == self._primary

    def seal(self, credentials: Credentials, table: str, row_id: object) -> bytes:
        return self.encrypt(json.dumps(credentials.to_json()).encode(), row_context(table, row_id))

    def open(self, blob: bytes, table: str, row_id: object) -> Credentials:
        return Credentials.from_json(json.loads(self.decrypt(blob, row_context(table, row_id))))

    def rewrap(self, blob: bytes, table: str, row_id: object) -> bytes:
        """The same plaintext under the primary key (for `keys rotate`)."""
        context = row_context(table, row_id)
        return self.encrypt(self.decrypt(blob, context), context)


def read_keys_file(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise VaultError(f"cannot read encryption keys file {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ensure_keys_file(path: Path) -> list[str]:
    """Read the embedded mode's key file, creating it (mode 0600) with one new key if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# orgsync encryption keys: the first encrypts, all decrypt. Keep this file secret.\n")
            handle.write(generate_key() + "\n")
    return read_keys_file(path)
