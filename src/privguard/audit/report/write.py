"""Writing a report directory atomically: ``report.json``, ``report.html``, ``model-card.md``.

:func:`write_report` renders everything in memory first and then moves complete, fsynced files
into place, so a failure never leaves a half-written report behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privguard._io import publish_files
from privguard.audit.report import Report
from privguard.audit.report.card import render_model_card
from privguard.audit.report.html import render_html
from privguard.audit.report.serialize import render_json
from privguard.errors import ConfigError

FILES = {"json": "report.json", "html": "report.html", "model_card": "model-card.md"}
"""Key returned by :func:`write_report` -> file name in the output directory."""


# --- writing ---------------------------------------------------------------------------------


ARTIFACTS = "artifacts"


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``model-card.md`` into ``out_dir``.

    All three are rendered in memory first, so a rendering error writes nothing. The files are
    then published with :func:`privguard._io.publish_files` (written and fsynced beside
    ``out_dir``, moved into place with ``os.replace``): each file is either its previous
    complete version or the new one, never truncated, and no temporary files stay behind.
    ``out_dir`` is created when absent.

    Returns:
        ``{"json": path, "html": path, "model_card": path}``.

    Raises:
        ConfigError: ``out_dir`` is a file, cannot be created, or is not writable.
    """
    out = Path(out_dir)
    _check_out_dir(out)
    texts: dict[str, str | bytes] = {
        FILES["json"]: render_json(report),
        FILES["html"]: render_html(report),
        FILES["model_card"]: render_model_card(report),
    }
    for name, arrays in report.artifacts.items():
        # bytes are a file as is (e.g. a stolen model's model.json); arrays become an .npz
        blob = arrays if isinstance(arrays, bytes) else _npz_bytes(arrays)
        texts[f"{ARTIFACTS}/{name}"] = blob
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the report directory {out} ({e.strerror or e}): "
            "choose another output directory"
        ) from e
    publish_files(out, texts, what="the report")
    paths = {key: out / name for key, name in FILES.items()}
    paths.update({name: out / ARTIFACTS / name for name in report.artifacts})
    return paths


def _npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """Arrays as a compressed .npz that ``np.load(..., allow_pickle=False)`` reads."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"the report directory {out} is a file: pass a directory path (it is created when "
            "absent) or move the file away"
        )
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot create {out}: {existing} is a file; choose another directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the report into {out}: {existing} is not writable; choose another "
            "output directory or fix its permissions"
        )
    for name in FILES.values():
        if (out / name).is_dir():
            raise ConfigError(f"{out / name} is a directory: remove it or choose another directory")
