"""The gateway's secret keys, each kept in its own file (or environment variable), apart from the
database: what form a key takes, how weak keys are refused, where each one lives.

Four secrets, four purposes — rotating one never touches another:

=================  =============================  ==========================================
key                what it protects               where (first match wins)
=================  =============================  ==========================================
fingerprint        HMAC of every logged input     ``PRIVGUARD_FINGERPRINT_KEY``,
                   and of alert fingerprints      ``[server] fingerprint_key_file``,
                                                  ``DB.fingerprint-key`` beside a SQLite file,
                                                  ``./privguard-fingerprint.key``
session            signs dashboard sessions       ``PRIVGUARD_SESSION_KEY``,
                   (admin credential)             ``[server] session_key_file``,
                                                  ``DB.session-key``, ``./privguard-session.key``
inputs             AES-GCM of retained raw        ``PRIVGUARD_INPUTS_KEY``,
                   inputs (``retain_inputs_days``) ``[server] inputs_key_file``,
                                                  ``DB.inputs-key``, ``./privguard-inputs.key``
seal               AES-GCM of a sealed model      ``--seal-key-file``, ``PRIVGUARD_SEAL_KEY``
=================  =============================  ==========================================

Every key is at least 32 random bytes written as URL-safe base64 text (what
:func:`new_key_text` writes, and ``privguard seal`` for sealing keys). A key file that is missing
is created on first start (mode 0600, never overwritten); one that is corrupt, short, or holds
low-entropy bytes (ASCII text, one repeated byte, few distinct bytes) is refused with a one-line
:class:`~privguard.errors.ConfigError` that names the file.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from privguard.errors import ConfigError

if TYPE_CHECKING:
    from privguard.gateway.config import GatewayConfig

KEY_BYTES = 32
#: URL-safe base64 text, optionally padded (what :func:`new_key_text` writes)
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_MIN_DISTINCT = 16  # 32 random bytes have ~30 distinct values; fewer than 16: P < 1e-20


def new_key_text(n: int = KEY_BYTES) -> str:
    """``n`` fresh random bytes as URL-safe base64 text (the one accepted form)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode()


def weakness(key: bytes) -> str | None:
    """Why ``key`` is not a usable secret (``None`` when it is): too short, one repeated byte,
    printable ASCII text, or too few distinct byte values for random bytes."""
    if len(key) < KEY_BYTES:
        return f"it holds {len(key)} bytes, fewer than {KEY_BYTES}"
    if len(set(key)) == 1:
        return f"it is one byte repeated ({key[:1].hex()} x {len(key)})"
    if all(32 <= b < 127 for b in key):
        return "it is ASCII text, not random bytes"
    if len(set(key)) < _MIN_DISTINCT:
        return f"it has only {len(set(key))} distinct byte values, not random bytes"
    return None


#: how to make a key by hand (the files privguard creates need nothing)
MAKE_KEY = "write 32 random bytes as URL-safe base64, e.g. `openssl rand 32 | basenc --base64url`"


def decode_key(
    text: str | bytes, where: str, *, exact: int | None = None, fix: str = MAKE_KEY
) -> bytes:
    """The key in ``text`` (URL-safe base64 of >= 32 random bytes, or exactly ``exact`` bytes);
    anything else raises a one-line :class:`ConfigError` naming ``where`` and ending in
    ``fix``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(
                f"{where} is not a key: it holds binary data, not base64 text; {fix}"
            ) from None
    text = text.strip()
    if not text:
        raise ConfigError(f"{where} is empty; {fix}")
    if not _B64URL.fullmatch(text):
        raise ConfigError(
            f"{where} is not a key: it is not URL-safe base64 text "
            f"(the form privguard writes); {fix}"
        )
    try:
        body = text.rstrip("=")
        key = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, binascii.Error):
        raise ConfigError(
            f"{where} is not a key: its base64 is cut short or corrupt; {fix}"
        ) from None
    if exact is not None and len(key) != exact:
        raise ConfigError(f"{where} holds {len(key)} bytes, not a {exact}-byte key; {fix}")
    why = weakness(key)
    if why:
        raise ConfigError(f"{where} is refused as a key: {why}; {fix}")
    return key


def create_key_file(path: str | Path, text: str | None = None) -> bool:
    """Write a fresh key to ``path`` (mode 0600) unless it exists; ``True`` when written."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise ConfigError(f"cannot create the key file {p}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write((text or new_key_text()) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


@dataclass(frozen=True)
class KeySpec:
    """One of the gateway's keys: its environment variable, ``[server]`` setting and default
    file name suffix."""

    name: str
    env: str
    setting: str
    suffix: str

    def path(self, configured: str | None, db_url: str) -> Path:
        """``configured``, else beside a SQLite database, else in the working directory."""
        if configured:
            return Path(configured).expanduser()
        if db_url.startswith("sqlite:///"):
            db = Path(db_url[len("sqlite:///") :].split("?", 1)[0])
            return db.with_name(f"{db.name}.{self.suffix}")
        return Path(f"privguard-{self.name}.key")

    def load(self, configured: str | None, db_url: str, *, create: bool = True) -> bytes:
        """The key from the environment, else its file (created on first start)."""
        env = os.environ.get(self.env)
        if env:
            return decode_key(env, self.env)
        path = self.path(configured, db_url)
        if create:
            create_key_file(path)
        for _ in range(50):  # another worker may be writing it right now
            try:
                if path.read_bytes().strip():
                    break
            except FileNotFoundError:
                raise ConfigError(
                    f"no {self.name} key at {path}; set [server] {self.setting} or {self.env}"
                ) from None
            except OSError as e:
                raise ConfigError(f"cannot read the {self.name} key {path}: {e.strerror}") from None
            time.sleep(0.01)
        return decode_key(
            path.read_bytes(),
            f"the {self.name} key file {path}",
            fix="restore it from a backup, or delete it and restart to make a new one (mode 0600)",
        )


FINGERPRINT = KeySpec(
    "fingerprint", "PRIVGUARD_FINGERPRINT_KEY", "fingerprint_key_file", "fingerprint-key"
)
SESSION = KeySpec("session", "PRIVGUARD_SESSION_KEY", "session_key_file", "session-key")
INPUTS = KeySpec("inputs", "PRIVGUARD_INPUTS_KEY", "inputs_key_file", "inputs-key")


def fingerprint_key(config: GatewayConfig, db_url: str) -> bytes:
    """The HMAC key of input and alert fingerprints (shared by every worker and replica)."""
    return FINGERPRINT.load(config.server.fingerprint_key_file, db_url)


def session_key(config: GatewayConfig, db_url: str) -> bytes:
    """The key that signs dashboard sessions: distinct from the fingerprint key, so that
    whoever holds that one (every replica, every log reader's HMAC) cannot forge an admin
    session. Created on first start when absent (deployments from before it existed); refused
    when it is the fingerprint key itself (one file configured for both)."""
    key = SESSION.load(config.server.session_key_file, db_url)
    if hmac.compare_digest(key, fingerprint_key(config, db_url)):
        raise ConfigError(
            "the session key is the fingerprint key: give [server] session_key_file (or "
            f"{SESSION.env}) a key of its own, so the fingerprint key cannot sign admin sessions"
        )
    return key


def inputs_key(config: GatewayConfig, db_url: str) -> bytes:
    """The AES-256-GCM key of retained raw inputs (kept apart from the database)."""
    key = INPUTS.load(config.server.inputs_key_file, db_url)
    return key[:KEY_BYTES]
