"""Retained raw inputs encrypted at rest.

A tier with ``retain_inputs_days > 0`` keeps its clients' raw records for that long. They are
the most sensitive thing in the database, so each ``query_inputs.data`` value is sealed with
AES-256-GCM (``cryptography``) under the *inputs key*, which lives in its own file or
environment variable (:mod:`privguard.gateway.keyfiles`), never in the database: a copied
database file or dump reveals no input without it. The query id is bound in as associated data,
so a ciphertext moved to another row does not decrypt.

Stored form: ``pgenc1:`` + URL-safe base64 of (12-byte nonce || ciphertext || 16-byte tag).

Example:
    >>> cipher = InputCipher(inputs_key(config, db))
    >>> row["data"] = cipher.encrypt(json.dumps(x.tolist()), query_id)
    >>> cipher.decrypt(row["data"], query_id)
    '[[0.0, ...]]'
"""

from __future__ import annotations

import base64
import secrets

from privguard.errors import ConfigError

PREFIX = "pgenc1:"


class InputCipher:
    """AES-256-GCM of retained inputs under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ConfigError("the inputs key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, query_id: str) -> str:
        nonce = secrets.token_bytes(12)
        blob = nonce + self._aead.encrypt(nonce, plaintext.encode(), query_id.encode())
        return PREFIX + base64.urlsafe_b64encode(blob).decode()

    def decrypt(self, stored: str, query_id: str) -> str:
        """The plaintext of ``stored``; a :class:`ConfigError` when it was written under another
        key or altered."""
        from cryptography.exceptions import InvalidTag

        if not stored.startswith(PREFIX):
            raise ConfigError(f"retained input of query {query_id} is not encrypted")
        try:
            blob = base64.urlsafe_b64decode(stored[len(PREFIX) :])
            return self._aead.decrypt(blob[:12], blob[12:], query_id.encode()).decode()
        except (InvalidTag, ValueError):
            raise ConfigError(
                f"retained input of query {query_id} does not decrypt: another inputs key "
                "(PRIVGUARD_INPUTS_KEY / [server] inputs_key_file) or an altered row"
            ) from None
