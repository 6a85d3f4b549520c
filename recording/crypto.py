"""Encryption at rest: AES-256-GCM with keys from configuration, the key id stored per recording.

An encrypted blob is ``MAGIC (6 bytes) | key-id length (1 byte) | key id (ASCII) | nonce (12
bytes) | ciphertext + 16-byte tag``. The recording's SID is the associated data, so a blob
copied onto another recording's name does not decrypt. Rotation: add a new key to
RECORDINGS_KEYS and make it RECORDINGS_KEY_ID; old recordings still decrypt with their own key
(keep it listed until they are all deleted).
"""
from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"SKAR1\x00"
NONCE_BYTES = 12
TAG_BYTES = 16


class KeyConfigError(ValueError):
    """The key configuration is unusable, or a blob names a key that is not configured."""


class DecryptionError(ValueError):
    """A blob is not ours, was altered, or belongs to another recording."""


KEY_ID_MAX = 32


def valid_key_id(key_id: str) -> bool:
    """Whether ``key_id`` may name a key in RECORDINGS_KEYS: 1-32 ASCII letters, digits, ``-``
    or ``_`` (the one rule for :meth:`Keyring.parse` and ``flask recordings new-key --id``)."""
    return 0 < len(key_id) <= KEY_ID_MAX and key_id.isascii() \
        and all(ch.isalnum() or ch in "-_" for ch in key_id)


@dataclass(frozen=True)
class Keyring:
    """The configured keys (id → 32-byte key) and the id that encrypts new recordings."""

    keys: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, spec: str, current: str = "") -> "Keyring":
        """Parse ``id:base64[,id:base64…]`` (each key 32 bytes; ids up to 32 ASCII letters,
        digits, ``-`` or ``_``; each id once). ``current`` defaults to the last id. Raises
        KeyConfigError."""
        keys: dict[str, bytes] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep or not valid_key_id(key_id):
                raise KeyConfigError(f"RECORDINGS_KEYS: {item[:40]!r} is not 'id:base64-key'")
            try:
                raw = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KeyConfigError(f"RECORDINGS_KEYS: key {key_id!r} is not base64") from exc
            if len(raw) != 32:
                raise KeyConfigError(f"RECORDINGS_KEYS: key {key_id!r} must be 32 bytes, not {len(raw)}")
            if key_id in keys:  # which of the two would decrypt that id's recordings?
                raise KeyConfigError(f"RECORDINGS_KEYS: key id {key_id!r} is listed twice")
            keys[key_id] = raw
        if not keys:
            raise KeyConfigError("RECORDINGS_KEYS is empty: recordings cannot be stored unencrypted")
        current = current or list(keys)[-1]
        if current not in keys:
            raise KeyConfigError(f"RECORDINGS_KEY_ID {current!r} is not in RECORDINGS_KEYS")
        return cls(keys, current)

    def encrypt(self, plaintext: bytes, recording_sid: str) -> tuple[str, bytes]:
        """Return ``(key id, blob)`` for ``plaintext`` bound to ``recording_sid``."""
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.current.encode("ascii")
        sealed = AESGCM(self.keys[self.current]).encrypt(nonce, plaintext, recording_sid.encode())
        return self.current, MAGIC + bytes([len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, blob: bytes, recording_sid: str) -> bytes:
        """Return the plaintext of ``blob``. Raises DecryptionError (not ours, altered, another
        recording's) or KeyConfigError (its key is no longer configured)."""
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
            raise DecryptionError("not an encrypted recording")
        length = blob[len(MAGIC)]
        start = len(MAGIC) + 1
        if len(blob) < start + length + NONCE_BYTES + TAG_BYTES:  # torn write, bad restore
            raise DecryptionError(f"truncated encrypted recording ({len(blob)} bytes)")
        key_id = blob[start:start + length].decode("ascii", "replace")
        nonce = blob[start + length:start + length + NONCE_BYTES]
        if key_id not in self.keys:
            raise KeyConfigError(f"recording encrypted with key {key_id!r}, which is not configured")
        try:
            return AESGCM(self.keys[key_id]).decrypt(nonce, blob[start + length + NONCE_BYTES:],
                                                     recording_sid.encode())
        except (InvalidTag, ValueError) as exc:  # ValueError: a malformed nonce or blob
            raise DecryptionError("recording does not decrypt (altered, truncated, or another "
                                  "recording's)") from exc


def new_key() -> str:
    """Return a fresh random key, base64 (for ``RECORDINGS_KEYS``)."""
    return base64.b64encode(os.urandom(32)).decode()
