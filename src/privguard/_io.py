"""Durable file writes and JSON-safe conversion, shared by everything that writes to disk.

Every file privguard writes (reports, model directories, reference-model caches, sealed models,
monitors, DP audits, sweeps) goes through :func:`atomic_write_bytes` or :func:`publish_files`:
the bytes are written to a temporary file in the destination's directory, flushed and
``fsync``-ed, moved over the destination with ``os.replace`` and the directory is ``fsync``-ed
too, so after a crash or power loss the destination holds either its previous complete content
or the new one — never a truncated mix — and the rename itself is durable.

:func:`to_jsonable` is the one conversion to JSON types (numpy scalars and arrays, paths,
NaN/infinity as ``null``) used by every JSON file and message privguard writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

from privguard.errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dumps_json",
    "fsync_dir",
    "publish_files",
    "to_jsonable",
]


# --- JSON ------------------------------------------------------------------------------------


def to_jsonable(
    obj: Any, where: str = "value", *, default: Callable[[Any], Any] | None = None
) -> Any:
    """A copy of ``obj`` made of JSON types only: non-finite floats become ``None``.

    numpy (and torch) scalars and arrays become Python numbers and lists, paths become strings,
    tuples become lists, mapping keys that are numbers, booleans or ``None`` become their JSON
    text (as ``json.dumps`` writes them). Anything else is passed to ``default`` when given
    (e.g. ``default=str``), otherwise raises ``TypeError`` naming where it sits, e.g.
    ``report.attacks[0].metrics.auc``.

    Example:
        >>> to_jsonable({"auc": np.float32(0.5), "eps": float("inf"), 1: Path("a")})
        {'auc': 0.5, 'eps': None, '1': 'a'}
    """
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {
            _json_key(k, where): to_jsonable(v, f"{where}.{k}", default=default)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]", default=default) for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "dtype") and callable(getattr(obj, "tolist", None)):  # numpy, torch
        return to_jsonable(obj.tolist(), where, default=default)
    if default is not None:
        return to_jsonable(default(obj), where)
    raise TypeError(f"{where} holds a {type(obj).__name__}, which JSON cannot hold")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(key)
    raise TypeError(f"{where} has a key of type {type(key).__name__}; JSON keys must be text")


def dumps_json(
    obj: Any,
    *,
    indent: int | None = 2,
    where: str = "value",
    ensure_ascii: bool = True,
    sort_keys: bool = False,
) -> str:
    """``obj`` through :func:`to_jsonable`, as strict JSON text (no NaN) ending in a newline."""
    data = to_jsonable(obj, where)
    text = json.dumps(
        data, indent=indent, allow_nan=False, ensure_ascii=ensure_ascii, sort_keys=sort_keys
    )
    return text + "\n"


# --- durable writes --------------------------------------------------------------------------


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make creations and renames in directory ``path`` durable.

    A no-op where directories cannot be opened or synced (Windows, some network filesystems).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def out_directory(directory: str | os.PathLike[str]) -> Path:
    """``directory`` as a Path, created when absent; a path that exists and is not a
    directory is a ConfigError (the ``--out`` of ``train``, ``dp-audit`` and the savers)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; returns the path.

    The bytes go to a temporary file beside ``path`` (same filesystem), which is fsynced and
    moved over ``path`` with ``os.replace``; then the directory is fsynced. A reader (or the
    file after a crash) sees the old content or the new, never a part. On any error the
    temporary file is removed and the exception propagates (an ``OSError`` the caller turns
    into its own message).

    Args:
        private: the new file is readable by its owner only (0o600, ``mkstemp``'s mode);
            ``False`` gives it the mode ``open()`` would (0o666 less the umask).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write_bytes takes bytes, not {type(data).__name__}")
    dst = Path(path)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if not private:
                os.fchmod(f.fileno(), _umask_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)
    return dst


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", private: bool = True
) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding), private=private)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    ensure_ascii: bool = True,
    sort_keys: bool = False,
    private: bool = True,
) -> Path:
    """Write ``obj`` as strict JSON (see :func:`dumps_json`) with :func:`atomic_write_bytes`.

    The text is rendered before anything is written, so an unconvertible value (a
    ``TypeError`` naming where it sits) leaves ``path`` untouched.
    """
    text = dumps_json(
        obj, indent=indent, where=Path(path).name, ensure_ascii=ensure_ascii, sort_keys=sort_keys
    )
    return atomic_write_text(path, text, private=private)


def publish_files(
    out_dir: str | os.PathLike[str],
    files: Mapping[str, str | bytes],
    *,
    what: str = "the files",
    private: bool = False,
) -> dict[str, Path]:
    """Write several files into ``out_dir`` so that each is its old or its new complete version.

    ``files`` maps relative names (``"report.json"``, ``"artifacts/x.npz"``) to text (UTF-8)
    or bytes. All are written and fsynced in a temporary directory on ``out_dir``'s filesystem
    (beside it when possible, else inside it), then moved into place with ``os.replace`` and
    the directories fsynced; no temporary files stay behind. ``out_dir`` is created when absent.

    Returns:
        ``{name: path}`` for every file written.

    Raises:
        ConfigError: the files could not be written (message names ``what`` and ``out_dir``).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create {out} for {what} ({e.strerror or e}): choose another directory"
        ) from e
    tmp = _temp_dir_beside(out, what)
    mode = None if private else _umask_mode()
    try:
        for name, content in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp / name, content, mode)
        for d in {(tmp / n).parent for n in files}:
            fsync_dir(d)
        targets = {}
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, out / name)
            targets[name] = out / name
        for d in {(out / n).parent for n in files} | {out}:
            fsync_dir(d)
    except OSError as e:
        raise ConfigError(
            f"could not write {what} into {out} ({e.strerror or e}): free some space, "
            "fix the permissions or choose another output directory"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return targets


def _temp_dir_beside(out: Path, what: str) -> Path:
    """A fresh directory on ``out``'s filesystem: beside it if possible, else inside it."""
    real = out.resolve()
    parent = real.parent
    try:
        if parent != real and os.stat(parent).st_dev == os.stat(real).st_dev:
            return Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".tmp", dir=parent))
    except OSError:
        pass  # parent not writable (or gone): fall back to inside out_dir
    try:
        return Path(tempfile.mkdtemp(prefix=".privguard-", suffix=".tmp", dir=real))
    except OSError as e:
        raise ConfigError(
            f"cannot write {what} into {out} ({e.strerror or e}): choose another output "
            "directory or fix its permissions"
        ) from e


def _write_synced(path: Path, content: str | bytes, mode: int | None) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
