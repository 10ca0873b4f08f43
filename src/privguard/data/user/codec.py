"""Reversible encodings between the model's records and the attacks' float32 vectors in [0, 1]:
:class:`FrameCodec` for DataFrames (scaling, one-hot, missing-value indicators) and
:class:`ArrayCodec` for numeric arrays (see :mod:`privguard.data.user`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.preprocess import MISSING, as_text
from privguard.errors import DataError


class Codec(ABC):
    """Reversible mapping between the model's records and the attacks' float32 vectors."""

    feature_names: list[str]
    input_shape: tuple[int, ...]
    bounds: tuple[float, float]
    kind: str
    preprocessing: dict[str, Any] | None

    @abstractmethod
    def encode(self, raw: Any) -> np.ndarray:
        """The attacks' numeric view of raw records."""

    @abstractmethod
    def decode(self, x: np.ndarray) -> Any:
        """Raw records back from the numeric view."""

    def remember(self, raw: Any, encoded: np.ndarray) -> None:
        """Make ``decode`` return these raw records exactly for their encoded rows."""
        keys = np.ascontiguousarray(encoded, dtype=np.float32).reshape(len(encoded), -1)
        self._raw = raw
        self._index = {row.tobytes(): i for i, row in enumerate(keys)}

    def _known(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of query rows that are remembered records, and those records' indices."""
        index = getattr(self, "_index", {})
        keys = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
        pos, idx = [], []
        for p, row in enumerate(keys):
            i = index.get(row.tobytes())
            if i is not None:
                pos.append(p)
                idx.append(i)
        return np.asarray(pos, dtype=np.int64), np.asarray(idx, dtype=np.int64)


class ArrayCodec(Codec):
    """Numeric arrays: float32 for the attacks, the model's dtype (records exact) for the model."""

    def __init__(self, x: np.ndarray, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.input_shape = tuple(x.shape[1:])
        self.kind = "image" if x.ndim == 4 else "tabular"
        n_feat = int(np.prod(self.input_shape))
        self.feature_names = [f"x{i}" for i in range(n_feat)] if self.kind == "tabular" else []
        finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
        self.bounds = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if self.kind == "image" and self.bounds[0] >= 0.0 and self.bounds[1] <= 1.0:
            self.bounds = (0.0, 1.0)
        self.preprocessing = None
        self.lossy = x.astype(np.float32).astype(x.dtype).tobytes() != x.tobytes()

    def encode(self, raw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(raw, dtype=np.float32)

    def decode(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x, dtype=self.dtype)
        if self.lossy and hasattr(self, "_raw"):
            pos, idx = self._known(x)
            if len(pos):
                out = np.array(out, copy=True)
                out[pos] = np.asarray(self._raw, dtype=self.dtype)[idx]
        return out


@dataclass
class _Column:
    name: str
    dtype: Any
    numeric: bool
    lo: float = 0.0
    hi: float = 0.0
    integer: bool = False
    has_missing: bool = False
    categories: list[Any] = field(default_factory=list)
    width: int = 1


class FrameCodec(Codec):
    """Raw DataFrame columns <-> float32 vectors in [0, 1] (see the module docstring)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.columns: list[_Column] = []
        self.kind = "tabular"
        self.bounds = (0.0, 1.0)
        for name in df.columns:
            col = df[name]
            missing = bool(col.isna().any())
            if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(
                col.dtype
            ):
                values = col.to_numpy(dtype=np.float64, na_value=np.nan)
                present = values[~np.isnan(values)]
                if np.isinf(present).any():
                    raise DataError(f"column {name!r} has infinite values; replace them")
                lo, hi = (float(present.min()), float(present.max())) if len(present) else (0, 0)
                integer = pd.api.types.is_integer_dtype(col.dtype) or (
                    len(present) > 0 and bool(np.all(present == np.round(present)))
                )
                self.columns.append(
                    _Column(name, col.dtype, True, lo, hi, integer, missing, width=1 + int(missing))
                )
            else:
                present = col[col.notna()]
                cats = sorted(pd.unique(present), key=lambda v: (as_text(v), str(type(v))))
                if len(cats) > 1000:
                    raise DataError(
                        f"column {name!r} has {len(cats)} distinct values: an identifier or free "
                        "text cannot be one-hot encoded for the attacks; drop it from the data"
                    )
                self.columns.append(
                    _Column(
                        name,
                        col.dtype,
                        False,
                        has_missing=missing,
                        categories=list(cats),
                        width=len(cats) + int(missing),
                    )
                )
        self.feature_names = []
        for c in self.columns:
            if c.numeric:
                self.feature_names += [c.name] + ([f"{c.name}?missing"] if c.has_missing else [])
            else:
                self.feature_names += [f"{c.name}={as_text(v)}" for v in c.categories]
                self.feature_names += [f"{c.name}={MISSING}"] if c.has_missing else []
        self.input_shape = (len(self.feature_names),)
        self.names = [c.name for c in self.columns]
        self.preprocessing = {
            "type": "user",
            "numeric": [
                {"name": c.name, "min": c.lo, "max": c.hi} for c in self.columns if c.numeric
            ],
            "categorical": [
                {
                    "name": c.name,
                    "categories": [as_text(v) for v in c.categories]
                    + ([MISSING] if c.has_missing else []),
                }
                for c in self.columns
                if not c.numeric
            ],
        }

    def encode(self, raw: pd.DataFrame) -> np.ndarray:
        blocks = []
        for c in self.columns:
            col = raw[c.name]
            isna = col.isna().to_numpy()
            if c.numeric:
                v = col.to_numpy(dtype=np.float64, na_value=np.nan)
                span = c.hi - c.lo
                scaled = np.where(isna, 0.0, (v - c.lo) / span if span > 0 else 0.0)
                blocks.append(np.clip(scaled, 0.0, 1.0)[:, None])
                if c.has_missing:
                    blocks.append(isna.astype(np.float64)[:, None])
            else:
                onehot = np.zeros((len(raw), c.width))
                lookup = {_key(v): j for j, v in enumerate(c.categories)}
                values = col.to_numpy(dtype=object)
                for i, v in enumerate(values):
                    if isna[i]:
                        if c.has_missing:
                            onehot[i, -1] = 1.0
                    else:
                        j = lookup.get(_key(v))
                        if j is not None:
                            onehot[i, j] = 1.0
                blocks.append(onehot)
        return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        pos, idx = self._known(x)
        if len(pos) == len(x) and hasattr(self, "_raw"):
            return self._raw.iloc[idx].reset_index(drop=True)
        out: dict[str, Any] = {}
        j = 0
        for c in self.columns:
            block = x[:, j : j + c.width]
            j += c.width
            if c.numeric:
                v = c.lo + np.clip(block[:, 0], 0.0, 1.0) * (c.hi - c.lo)
                if c.integer:
                    v = np.round(v)
                series = pd.Series(v)
                if c.has_missing:
                    series[block[:, 1] > 0.5] = np.nan
                out[c.name] = _cast(series, c.dtype)
            else:
                pick = np.argmax(block, axis=1)
                values = np.empty(len(x), dtype=object)
                for k, cat in enumerate(c.categories):
                    values[pick == k] = cat
                if c.has_missing:
                    values[pick == len(c.categories)] = None
                out[c.name] = _cast(pd.Series(values), c.dtype)
        frame = pd.DataFrame(out)
        if len(pos) and hasattr(self, "_raw"):
            known = self._raw.iloc[idx].reset_index(drop=True)
            for name in self.names:
                col = frame[name].astype(object)
                col.iloc[pos] = known[name].astype(object).to_numpy()
                frame[name] = _cast(col, self._raw[name].dtype)
        return frame


def _key(v: Any) -> str:
    return as_text(v.item() if isinstance(v, np.generic) else v)


def _cast(series: pd.Series, dtype: Any) -> pd.Series:
    """``series`` in the column's original dtype (integers with gaps stay float)."""
    try:
        if isinstance(dtype, pd.CategoricalDtype):
            return series.astype(dtype)
        nullable = isinstance(dtype, pd.api.extensions.ExtensionDtype)
        if pd.api.types.is_integer_dtype(dtype) and series.isna().any() and not nullable:
            return series.astype("float64")
        return series.astype(dtype)
    except (TypeError, ValueError):
        return series
