"""Reading one part of the user's split (members, non-members or population): a DataFrame with
a label column, an ``(X, y)`` pair of arrays, or a CSV / Parquet / NPZ file; and the per-record
hashes that recognise a part and find records shared between parts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.preprocess import as_text, join_names
from privguard.errors import DataError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")


@dataclass
class _Part:
    name: str
    features: pd.DataFrame | np.ndarray
    labels: np.ndarray
    source: str
    sha256: str | None = None  # hash of the bytes of the file it was read from

    def content_hash(self) -> str:
        """sha256 of the records and labels as read (the same for a CSV file and the
        DataFrame it holds): what a saved user model records to recognise its split."""
        h = hashlib.sha256()
        if isinstance(self.features, pd.DataFrame):
            h.update(repr([str(c) for c in self.features.columns]).encode())
        else:
            h.update(f"{self.features.dtype}{self.features.shape}".encode())
        h.update(_row_hashes(self).tobytes())
        return h.hexdigest()


def read_part(part: Any, *, name: str, label: str | None) -> _Part:
    """One part of the split as (features, raw labels); files are read by suffix."""
    if isinstance(part, str | Path):
        return _read_file(Path(part), name=name, label=label)
    if isinstance(part, pd.DataFrame):
        return _from_frame(part, name=name, label=label, source="DataFrame")
    if isinstance(part, tuple | list) and len(part) == 2:
        x, y = part
        labels = np.asarray(y.to_numpy() if isinstance(y, pd.Series) else y)
        if labels.ndim != 1:
            raise DataError(
                f"{name}: labels must be one value per record, got shape {labels.shape}"
            )
        if isinstance(x, pd.DataFrame):
            feats: pd.DataFrame | np.ndarray = x.reset_index(drop=True)
        else:
            feats = np.asarray(x)
            if feats.dtype.kind not in "biuf":
                raise DataError(f"{name}: X must be numeric, not {feats.dtype}")
            if feats.ndim < 2:
                raise DataError(f"{name}: X must be (records, features), got shape {feats.shape}")
        if len(feats) != len(labels):
            raise DataError(f"{name}: {len(feats)} records but {len(labels)} labels")
        return _Part(name, feats, labels, "arrays")
    raise DataError(
        f"{name}: give a pandas DataFrame with a label column, an (X, y) pair of arrays, or a "
        f"CSV / Parquet / NPZ file, not a {type(part).__name__}"
    )


def _read_file(path: Path, *, name: str, label: str | None) -> _Part:
    from privguard.data.files import read_table

    if not path.is_file():
        raise DataError(f"{name}: no such file {path}")
    low = path.name.lower()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if low.endswith(TABLE_SUFFIXES):
        part = _from_frame(read_table(path), name=name, label=label, source=str(path))
    elif low.endswith(".npz"):
        part = _read_npz(path, name=name)
    else:
        raise DataError(
            f"{name}: cannot tell the kind of {path} from its name; give a .csv, .tsv, "
            ".parquet or .npz file"
        )
    part.sha256 = digest
    return part


def _read_npz(path: Path, *, name: str) -> _Part:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "y" not in f.files:
                raise DataError(
                    f"{name}: {path} must hold arrays 'x' and 'y' (numpy.savez(path, x=..., "
                    f"y=...)); it holds {join_names(f.files) or 'nothing'}"
                )
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{name}: could not read {path} as NPZ ({type(e).__name__}); save numeric arrays "
            "with numpy.savez (object arrays are never unpickled)"
        ) from None
    part = read_part((x, y), name=name, label=None)
    part.source = str(path)
    return part


def _from_frame(df: pd.DataFrame, *, name: str, label: str | None, source: str) -> _Part:
    if label is None:
        raise DataError(f"{name}: a table needs label= (CLI --label) naming its label column")
    df = df.rename(columns=str)
    if label not in df.columns:
        raise DataError(
            f"{name} ({source}) has no label column {label!r}; its columns are "
            f"{join_names(df.columns)}"
        )
    labels = df[label].to_numpy()
    n_missing = int(pd.isna(df[label]).sum())
    if n_missing:
        raise DataError(f"{name}: {n_missing} record(s) have an empty label; drop them")
    return _Part(name, df.drop(columns=[label]).reset_index(drop=True), labels, source)


def _numeric_array(p: _Part) -> np.ndarray:
    if not isinstance(p.features, pd.DataFrame):
        return np.asarray(p.features)
    bad = [c for c in p.features.columns if not pd.api.types.is_numeric_dtype(p.features[c])]
    if bad:
        raise DataError(
            f"{p.name}: the model takes numeric arrays but column(s) {join_names(bad)} are not "
            "numeric; encode them as the model was trained, or audit the whole pipeline"
        )
    return p.features.to_numpy(dtype=np.float64)


def _row_hashes(p: _Part) -> np.ndarray:
    if isinstance(p.features, pd.DataFrame):
        df = p.features.copy()
        df["__label__"] = [as_text(v) for v in p.labels]
        return pd.util.hash_pandas_object(df, index=False).to_numpy()
    rows = np.ascontiguousarray(p.features).reshape(len(p.features), -1)
    digests = [
        hashlib.sha256(r.tobytes() + b"\0" + as_text(lab).encode()).digest()[:8]
        for r, lab in zip(rows, p.labels, strict=True)
    ]
    return np.frombuffer(b"".join(digests), dtype=np.uint64)
