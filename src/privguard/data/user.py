"""The user's own split: members, non-members and (optionally) population records.

A user who audits a model they already trained knows which records it was trained on
(``members``), which it never saw (``nonmembers``) and, optionally, other records from the same
distribution an attacker could hold (``population``). Each part is a pandas DataFrame with a
``label`` column, an ``(X, y)`` pair of arrays, or a CSV / Parquet / NPZ file (NPZ holding arrays
``x`` and ``y``, read with ``allow_pickle=False``). Without a population, a stated share of the
non-members (seeded, stratified by label) becomes the attacker's population, and the report says
so.

Attacks work on float32 arrays in [0, 1]; a model may want something else (a DataFrame of raw
columns for a pipeline that does its own encoding, float64 arrays). A :class:`Codec` is the
reversible mapping between the two:

- :class:`FrameCodec`: numeric columns min-max scaled to [0, 1] with a ``name?missing``
  indicator column when the column has empty cells; other columns (text, bool, category) one-hot
  encoded as ``name=value`` with ``name=missing`` for empty cells. Decoding undoes the scaling
  (integer columns rounded), takes the most likely category of each one-hot block, restores
  empty cells and each column's original dtype, so the model gets a DataFrame with exactly its
  columns. A query that is one of the user's own records (bit for bit, after encoding) decodes
  to that record exactly, so members and non-members reach the model unchanged;
- :class:`ArrayCodec`: numeric arrays used as they are (float32 for the attacks), given back in
  the model's dtype, the user's own records exactly.

Bad input raises :class:`~privguard.errors.DataError` naming the part and what to do: a label
column absent from one part, members that also appear among the non-members (how many), labels
the model does not predict, columns the model was not fitted on, an unknown file kind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.dataset import Dataset
from privguard.data.preprocess import MISSING, as_text, join_names
from privguard.data.split import Split
from privguard.errors import ConfigError, DataError

POPULATION_SHARE = 0.5  # share of the non-members that becomes the population when none is given
PARTS = ("members", "nonmembers", "population")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")


# -- reading one part ------------------------------------------------------------------------


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


# -- codecs ----------------------------------------------------------------------------------


class Codec:
    """Reversible mapping between the model's records and the attacks' float32 vectors."""

    feature_names: list[str]
    input_shape: tuple[int, ...]
    bounds: tuple[float, float]
    kind: str
    preprocessing: dict[str, Any] | None

    def encode(self, raw: Any) -> np.ndarray:
        raise NotImplementedError

    def decode(self, x: np.ndarray) -> Any:
        raise NotImplementedError

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


# -- the whole split -------------------------------------------------------------------------


class UserDataset(Dataset):
    """A :class:`Dataset` of the user's split; its summary says where the population came from."""

    user: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d["user_split"] = dict(getattr(self, "user", {}))
        return d


@dataclass
class UserData:
    """The user's split ready for an audit.

    Attributes:
        dataset: encoded records (members, then non-members, then population) and label indices.
        split: indices of the three roles in ``dataset``.
        codec: maps the attacks' vectors to what the model takes and back.
        raw: the raw records in the same order (DataFrame or array), as the model takes them.
        classes: the model's class labels; ``dataset.y`` indexes into them.
        info: what the report's data section says about the split.
    """

    dataset: UserDataset
    split: Split
    codec: Codec
    raw: Any
    classes: list[Any]
    info: dict[str, Any]


def load_user_split(
    members: Any,
    nonmembers: Any,
    population: Any = None,
    *,
    label: str | None = None,
    classes: list[Any] | None = None,
    columns: list[str] | None = None,
    dtype: Any = np.float32,
    frame_model: bool | None = None,
    seed: int = 0,
    population_share: float = POPULATION_SHARE,
) -> UserData:
    """Read and check the user's split, and encode it for the attacks.

    Args:
        members, nonmembers, population: DataFrames (with ``label``), ``(X, y)`` pairs or
            CSV / Parquet / NPZ paths; ``population`` is optional.
        label: the label column of tables.
        classes: the model's class labels (output column order); default: the sorted labels.
        columns: the columns a DataFrame model was fitted on (checked; ``None``: not known).
        dtype: what an array model computes in (records are given back in it).
        frame_model: whether the model takes a DataFrame (``True``) or arrays (``False``: tables
            of numeric columns are turned into arrays); ``None``: as the data comes.
        seed: seeds the population share taken from the non-members.
        population_share: share of the non-members that becomes the population when none is
            given (the rest stay non-members).
    """
    if members is None or nonmembers is None:
        raise ConfigError(
            "auditing your own model needs members= (the records it was trained on) and "
            "nonmembers= (records it never saw); CLI: --members FILE --nonmembers FILE"
        )
    parts = [read_part(members, name="members", label=label)]
    parts.append(read_part(nonmembers, name="nonmembers", label=label))
    if population is not None:
        parts.append(read_part(population, name="population", label=label))
    frames = [isinstance(p.features, pd.DataFrame) for p in parts]
    if frame_model is False and any(frames):
        for p in parts:
            p.features = _numeric_array(p)
        frames = [False] * len(parts)
    elif frame_model and not all(frames):
        raise DataError(
            "the model was fitted on a DataFrame: give members, non-members and population as "
            "tables (DataFrames with the label column, or CSV / Parquet files)"
        )
    if any(frames) and not all(frames):
        raise DataError(
            "give every part of the split the same way: all tables (DataFrames / CSV / Parquet) "
            "or all arrays"
        )
    if all(frames):
        feats = _align_frames(parts, columns)
        raw: Any = pd.concat(feats, ignore_index=True)
    else:
        shapes = {p.features.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise DataError(
                "members, non-members and population have records of different shapes: "
                + ", ".join(f"{p.name} {p.features.shape[1:]}" for p in parts)
            )
        raw = np.concatenate([np.asarray(p.features) for p in parts])
    labels = np.concatenate([np.asarray(p.labels, dtype=object) for p in parts])
    counts = [len(p.labels) for p in parts]
    for p in parts:
        if len(p.labels) == 0:
            raise DataError(f"{p.name}: no records")

    _check_overlap(parts)
    classes = list(classes) if classes is not None else _sorted_labels(labels)
    y = _label_index(labels, classes)

    codec: Codec = FrameCodec(raw) if all(frames) else ArrayCodec(raw, dtype)
    x = codec.encode(raw)
    codec.remember(raw, x)

    n_m, n_n = counts[0], counts[1]
    members_idx = np.arange(n_m)
    non_idx = np.arange(n_m, n_m + n_n)
    info: dict[str, Any] = {"members": n_m, "nonmembers": n_n, "label": label, "seed": seed}
    sources = {p.name: p.source for p in parts}
    if population is not None:
        aux = np.arange(n_m + n_n, len(labels))
        info["population"] = {"records": counts[2], "source": "given"}
    else:
        if not 0 < population_share < 1:
            raise ConfigError("the population share must lie strictly between 0 and 1")
        aux, non_idx = _take_share(non_idx, y, population_share, seed)
        info["nonmembers"] = len(non_idx)
        info["population"] = {
            "records": len(aux),
            "source": f"{population_share:.0%} of the non-members (seed {seed}), stratified by "
            "label, since no population was given; they are the attacker's knowledge and are not "
            "evaluated",
        }
    if len(non_idx) < 2 or len(aux) < 2:
        raise DataError(
            f"too few non-member / population records ({len(non_idx)} / {len(aux)}); give more "
            "non-members or a population"
        )
    info["sources"] = sources
    hashes = {p.name: p.sha256 for p in parts if p.sha256}
    if hashes:
        info["sha256"] = hashes
    info["content_sha256"] = {p.name: p.content_hash() for p in parts}
    name = sources.get("members", "user data")
    ds = UserDataset(
        name=name if name not in ("DataFrame", "arrays") else "user split",
        x=x,
        y=y,
        kind=codec.kind,
        classes=[as_text(c) for c in classes],
        feature_names=list(codec.feature_names),
        bounds=codec.bounds,
        preprocessing=codec.preprocessing,
        source="the user's own members / non-members / population",
    )
    ds.user = info
    split = Split(members_idx, np.sort(non_idx), np.sort(aux), np.zeros(0, np.int64), seed)
    return UserData(ds, split, codec, raw, classes, info)


def _align_frames(parts: list[_Part], columns: list[str] | None) -> list[pd.DataFrame]:
    frames = [p.features for p in parts]
    assert all(isinstance(f, pd.DataFrame) for f in frames)
    want = list(columns) if columns is not None else list(frames[0].columns)
    out = []
    for p, f in zip(parts, frames, strict=True):
        have = list(f.columns)  # type: ignore[union-attr]
        extra = [c for c in have if c not in want]
        absent = [c for c in want if c not in have]
        if extra:
            who = "the model was not fitted on" if columns is not None else "the members lack"
            raise DataError(
                f"{p.name} has column(s) {join_names(extra)} that {who}; drop them (the model's "
                f"columns are {join_names(want)})"
            )
        if absent:
            raise DataError(
                f"{p.name} lacks column(s) {join_names(absent)} that the model was fitted on"
            )
        out.append(f[want])  # type: ignore[index]
    return out


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


def _check_overlap(parts: list[_Part]) -> None:
    members = set(_row_hashes(parts[0]).tolist())
    shared = int(sum(h in members for h in _row_hashes(parts[1]).tolist()))
    if shared:
        raise DataError(
            f"{shared} non-member record(s) also appear among the members (same features and "
            "label); a record cannot be both: remove them from the non-members"
        )


def _sorted_labels(labels: np.ndarray) -> list[Any]:
    distinct = {as_text(v): v for v in labels}
    try:
        return [distinct[k] for k in sorted(distinct, key=lambda k: float(k))]
    except ValueError:
        return [distinct[k] for k in sorted(distinct)]


def _label_index(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    index = {as_text(c): i for i, c in enumerate(classes)}
    unknown = sorted({as_text(v) for v in labels} - set(index))
    if unknown:
        distinct = len({as_text(v) for v in labels})
        if distinct > len(classes):
            raise DataError(
                f"the model gives {len(classes)} output(s) per record but the labels have "
                f"{distinct} classes ({join_names(unknown)} unknown to it); check the label "
                "column and that this is the model trained on these labels"
            )
        raise DataError(
            f"label value(s) {join_names(unknown)} are not among the model's classes "
            f"({join_names(as_text(c) for c in classes)}); check the label column"
        )
    return np.array([index[as_text(v)] for v in labels], dtype=np.int64)


def _take_share(
    idx: np.ndarray, y: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (taken, kept), ``share`` of each label's records taken (seeded)."""
    rng = np.random.default_rng(seed)
    taken, kept = [], []
    for label in np.unique(y[idx]):
        group = idx[y[idx] == label]
        group = group[rng.permutation(len(group))]
        k = int(round(len(group) * share))
        taken.append(group[:k])
        kept.append(group[k:])
    return np.concatenate(taken), np.concatenate(kept)
