"""Models encrypted at rest: ``privguard seal DIR --key-file K --out F``.

A sealed model is one file: a header (magic, an 8-byte key identifier, a 12-byte nonce) and the
model directory as a tar archive encrypted with AES-256-GCM (``cryptography``), the header bound
in as associated data. GCM authenticates: a flipped bit anywhere, or another key, fails to
decrypt. The key identifier (a hash of the key, which reveals nothing of it) tells the two
cases apart, so ``serve`` can say "wrong key" rather than "tampered".

Keys are 32 random bytes, kept in a file (URL-safe base64 text, mode 0600; created by ``seal``
when the file does not exist) or in the ``PRIVGUARD_SEAL_KEY`` environment variable (the same
text). Only that form is accepted: raw bytes, hex, ASCII passwords, all-zero or repeated-byte
keys are refused (:mod:`privguard.gateway.keyfiles`). A file that cannot be opened says which
of these it is: not a sealed model, a truncated one, one sealed with another key id, or one
altered after sealing.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
import tempfile
from pathlib import Path

from privguard._io import atomic_write_bytes
from privguard.errors import ConfigError, ModelError
from privguard.gateway.config import SEAL_KEY_ENV
from privguard.gateway.keyfiles import create_key_file, new_key_text
from privguard.gateway.keyfiles import decode_key as decode_key_text

MAGIC = b"PGSEAL01"
KEY_BYTES = 32
_HEADER = len(MAGIC) + 8 + 12


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"privguard-seal-key-id\0" + key).digest()[:8]


def decode_key(raw: bytes | str, where: str) -> bytes:
    """The 32-byte key in ``raw``: only the form ``privguard seal`` writes (URL-safe base64 of
    32 random bytes, a trailing newline allowed); low-entropy keys are refused
    (:func:`privguard.gateway.keyfiles.decode_key`)."""
    return decode_key_text(
        raw, where, exact=KEY_BYTES, fix="create one with `privguard seal DIR --key-file NEW_FILE`"
    )


def new_key_file(path: str | Path) -> bytes:
    """Create ``path`` (mode 0600, refusing to overwrite) holding a fresh key."""
    p = Path(path)
    text = new_key_text(KEY_BYTES)
    if not create_key_file(p, text):
        raise ConfigError(f"{p} already exists; not overwriting a key")
    return decode_key(text, str(p))


def read_key_file(path: str | Path) -> bytes:
    p = Path(path)
    try:
        return decode_key(p.read_bytes(), f"key file {p}")
    except FileNotFoundError:
        raise ConfigError(f"no key file at {p}; give the key the model was sealed with") from None
    except OSError as e:
        raise ConfigError(f"cannot read key file {p}: {e.strerror}") from None


def resolve_key(key_file: str | Path | None) -> bytes | None:
    """The sealing key from ``key_file``, else from ``PRIVGUARD_SEAL_KEY``, else ``None``."""
    if key_file:
        return read_key_file(key_file)
    env = os.environ.get(SEAL_KEY_ENV)
    return decode_key(env, SEAL_KEY_ENV) if env else None


def is_sealed(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def seal(directory: str | Path, key: bytes, out: str | Path) -> Path:
    """Encrypt the model directory ``directory`` into the file ``out`` (written atomically)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    src = Path(directory)
    if not (src / "model.json").is_file():
        raise ModelError(f"{src} is not a model directory (no model.json); seal a trained model")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(src.rglob("*")):
            if f.is_file() and not f.is_symlink():
                tar.add(f, arcname=str(f.relative_to(src)), recursive=False)
    header = MAGIC + _key_id(key)
    nonce = secrets.token_bytes(12)
    blob = header + nonce + AESGCM(key).encrypt(nonce, buf.getvalue(), header)
    dst = Path(out)
    if dst.is_dir():
        raise ConfigError(f"{dst} is a directory; --out takes a file name")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(dst, blob)


def unseal(path: str | Path, key: bytes, dest: str | Path) -> Path:
    """Decrypt the sealed model ``path`` into the directory ``dest``; refuses another key or
    any alteration with a :class:`ModelError` that says which."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read sealed model {p}: {e.strerror}") from None
    if not blob.startswith(MAGIC):
        raise ModelError(
            f"{p} is not a sealed privguard model (no {MAGIC.decode()} header; "
            "seal one with `privguard seal`)"
        )
    if len(blob) < _HEADER + 16:
        raise ModelError(
            f"truncated sealed file {p}: {len(blob)} bytes, shorter than the {_HEADER + 16} of "
            "header and authentication tag alone; restore the original sealed file"
        )
    header, nonce = blob[:16], blob[16:_HEADER]
    sealed_id, given_id = header[len(MAGIC) :], _key_id(key)
    if sealed_id != given_id:
        raise ModelError(
            f"the key id does not match: the given key has key id {given_id.hex()} ({p} was "
            f"sealed with key id {sealed_id.hex()}); give the key file it was sealed with "
            f"(--seal-key-file or {SEAL_KEY_ENV}), or restore the file if its header was altered"
        )
    try:
        plain = AESGCM(key).decrypt(nonce, blob[_HEADER:], header)
    except InvalidTag:
        raise ModelError(
            f"{p} was altered or corrupted after sealing (authentication failed); "
            "restore the original sealed file"
        ) from None
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r") as tar:
            tar.extractall(out, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise ModelError(
            f"{p} decrypted but does not hold a model archive ({type(e).__name__}); "
            "seal the model directory again"
        ) from None
    return out


def load_sealed_target(path: str | Path, key: bytes):
    """Unseal into a private temporary directory, load the target, delete the plaintext."""
    from privguard.models.target import load_target

    with tempfile.TemporaryDirectory(prefix="privguard-unsealed-") as tmp:
        target = load_target(unseal(path, key, tmp))
    target.path = Path(path)
    return target


def load_model(model: str | Path, key_file: str | Path | None = None):
    """A model directory, or a sealed model file (with its key from ``key_file`` or the
    environment)."""
    from privguard.models.target import load_target

    if is_sealed(model):
        key = resolve_key(key_file)
        if key is None:
            raise ConfigError(
                f"{model} is sealed; give its key with --seal-key-file or {SEAL_KEY_ENV}"
            )
        return load_sealed_target(model, key)
    return load_target(model)
