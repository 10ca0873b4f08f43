"""Which field of a tabular dataset is the sensitive one, and how it sits in the model's input.

An attribute-inference audit hides one field of each evaluated record (sex, race, marital
status...) and asks the attacks to recover it. The attacks need to know which encoded columns
hold that field and what those columns contain for each possible value; this module reads that
off a :class:`~privguard.data.Dataset` and returns a
:class:`~privguard.attacks.SensitiveAttribute`:

- a **categorical** field (one-hot columns ``name=value``, including ``name=missing``): the
  columns are all of the field's one-hot columns, the values are the categories that occur in the
  data (``missing`` only when some record has it), each value's code is its one-hot row;
- a **numeric** field (one min-max scaled column) with few distinct values (at most
  :data:`MAX_NUMERIC_VALUES`, e.g. diabetes ``sex`` coded 1/2): each distinct scaled number is a
  value, named after the raw value (from ``Dataset.extra`` when the dataset keeps the raw column,
  else by undoing the recorded scaling);
- any other numeric field (age, income) is **binned**: ``bins`` quantile bins (default
  :data:`DEFAULT_BINS`; ``--sensitive age:bins=5``), each bin's value the median of its records,
  a record's bin the nearest of those medians — so the truth and the attacks' ``fill`` /
  ``decode`` agree — and each bin named by the raw range it covers (``age 41–52``).

Records whose sensitive value is missing (the ``missing`` category, or an empty raw cell) are
not a value to guess: :func:`missing_records` finds them and the evaluator leaves them out of
the scores (and counts them).

Example:
    >>> ds = privguard.data.load_dataset("heart-disease")
    >>> sex = sensitive_attribute(ds, default_sensitive(ds))
    >>> sex.values
    ['Female', 'Male']
    >>> truth = sex.decode(ds.x)      # value index per record
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.base import SensitiveAttribute
from privguard.data import Dataset
from privguard.data.preprocess import MISSING, as_text
from privguard.errors import ConfigError

MAX_NUMERIC_VALUES = 10
DEFAULT_BINS = 5
MAX_BINS = 20


def parse_sensitive(spec: str) -> tuple[str, int | None]:
    """``"age"`` -> ``("age", None)``; ``"age:bins=5"`` -> ``("age", 5)``; a ConfigError for
    anything else."""
    name, _, opts = str(spec).partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"--sensitive takes FIELD or FIELD:bins=N, not {spec!r}")
    if not opts:
        return name, None
    key, _, value = opts.partition("=")
    if key.strip() != "bins" or not value.strip().isdigit():
        raise ConfigError(
            f"--sensitive takes FIELD or FIELD:bins=N (N = 2..{MAX_BINS}), not {spec!r}"
        )
    bins = int(value)
    if not 2 <= bins <= MAX_BINS:
        raise ConfigError(f"--sensitive {name}:bins=N takes N from 2 to {MAX_BINS}, not {bins}")
    return name, bins


def sensitive_attribute(ds: Dataset, name: str, bins: int | None = None) -> SensitiveAttribute:
    """The field ``name`` of ``ds`` as a :class:`SensitiveAttribute` (``name`` may carry
    ``:bins=N``; ``bins`` bins a numeric field into that many quantile bins).

    Raises :class:`~privguard.errors.ConfigError` for image data, an unknown field (the message
    lists the usable ones) or bins asked of a categorical field.

    Example:
        >>> race = sensitive_attribute(privguard.data.load_dataset("adult"), "race")
        >>> race.fill(x, race.values.index("White"))   # records with race set to White
    """
    _require_tabular(ds)
    if ":" in name:
        name, asked = parse_sensitive(name)
        bins = bins if bins is not None else asked
    categorical, numeric = _fields(ds)
    x = ds.x.reshape(len(ds), -1)
    if name in categorical:
        if bins is not None:
            raise ConfigError(
                f"{name!r} is a categorical field: bins apply to numeric fields only; pass "
                f"--sensitive {name}"
            )
        return _categorical(ds, x, name, categorical[name])
    if name in numeric:
        col = numeric[name]
        distinct = np.unique(x[:, col])
        if bins is None and len(distinct) <= MAX_NUMERIC_VALUES:
            return _numeric(ds, x, name, col, distinct)
        return _binned(ds, x, name, col, bins or DEFAULT_BINS)
    raise ConfigError(
        f"{ds.name} has no field {name!r} usable as a sensitive attribute; usable fields: "
        f"{_listing(ds)}"
    )


def usable_fields(ds: Dataset) -> list[str]:
    """Fields of ``ds`` that :func:`sensitive_attribute` accepts (every categorical and numeric
    field; numeric ones with many values are binned), in column order; ``[]`` for images."""
    if ds.kind != "tabular":
        return []
    categorical, numeric = _fields(ds)
    first = {n: min(cols) for n, cols in categorical.items()} | dict(numeric)
    return sorted(first, key=first.__getitem__)


def missing_records(ds: Dataset, attr: SensitiveAttribute, rows: np.ndarray) -> np.ndarray:
    """``(len(rows),)`` bool: the records whose sensitive value is missing (the ``missing``
    category, or an empty cell of the raw column the dataset keeps)."""
    flat = ds.x[rows].reshape(len(rows), -1)
    out = np.zeros(len(rows), dtype=bool)
    if MISSING in attr.values:
        out |= attr.decode(flat) == attr.values.index(MISSING)
    raw = ds.extra.get(attr.name)
    if raw is not None and len(raw) == len(ds):
        cells = np.asarray(raw, dtype=object)[rows]
        out |= np.array([as_text(c) in ("nan", "", "None") for c in cells], dtype=bool)
    return out


def default_sensitive(ds: Dataset) -> str | None:
    """The sensitive field a dataset names itself: the first raw column it keeps in
    ``Dataset.extra`` that is a usable field (``"sex"`` for adult, heart-disease, diabetes), or
    ``None`` (image data, or nothing kept)."""
    usable = set(usable_fields(ds))
    return next((k for k in ds.extra if k in usable), None)


# -- internals ----------------------------------------------------------------------------------


def _require_tabular(ds: Dataset) -> None:
    if ds.kind != "tabular":
        raise ConfigError(
            f"{ds.name} is {ds.kind} data; attribute inference needs a tabular dataset with a "
            "categorical (or few-valued numeric) sensitive field"
        )


def _fields(ds: Dataset) -> tuple[dict[str, list[int]], dict[str, int]]:
    """(categorical field -> its one-hot column positions, numeric field -> its column)."""
    names = list(ds.feature_names)
    prep: dict[str, Any] = ds.preprocessing or {}
    cat_names = [c["name"] for c in prep.get("categorical", [])]
    num_names = [c["name"] for c in prep.get("numeric", [])]
    if not prep:  # no record of the encoding: read it off the column names
        cat_names = list(dict.fromkeys(n.split("=", 1)[0] for n in names if "=" in n))
        num_names = [n for n in names if "=" not in n]
    categorical: dict[str, list[int]] = {}
    for field in cat_names:
        cols = [i for i, n in enumerate(names) if n.startswith(f"{field}=")]
        if cols:
            categorical[field] = cols
    numeric = {n: names.index(n) for n in num_names if n in names}
    return categorical, numeric


def _categorical(ds: Dataset, x: np.ndarray, name: str, cols: list[int]) -> SensitiveAttribute:
    labels = [ds.feature_names[c].split("=", 1)[1] for c in cols]
    present = (x[:, cols] > 0.5).any(axis=0)
    keep = [j for j, lab in enumerate(labels) if present[j]]
    if not keep:
        raise ConfigError(f"field {name!r} of {ds.name} holds no value in any record")
    codes = np.eye(len(cols), dtype=np.float32)[keep]
    values = [labels[j] for j in keep]
    # "missing" stays a value only when it occurs; listed last, as the encoder orders it.
    return SensitiveAttribute(name=name, columns=list(cols), values=values, codes=codes)


def _numeric(
    ds: Dataset, x: np.ndarray, name: str, col: int, distinct: np.ndarray
) -> SensitiveAttribute:
    raw = ds.extra.get(name)
    spec = next((c for c in (ds.preprocessing or {}).get("numeric", []) if c["name"] == name), None)
    values: list[str] = []
    for v in distinct:
        label = None
        if raw is not None and len(raw) == len(x):
            seen = {as_text(r) for r in np.asarray(raw, dtype=object)[x[:, col] == v]}
            seen.discard("nan")
            label = "/".join(sorted(seen)) if seen else MISSING
        elif spec is not None:
            label = as_text(float(np.round(spec["min"] + v * (spec["max"] - spec["min"]), 6)))
        values.append(label if label is not None else f"{float(v):g}")
    codes = distinct.astype(np.float32).reshape(-1, 1)
    return SensitiveAttribute(name=name, columns=[col], values=values, codes=codes)


def _binned(ds: Dataset, x: np.ndarray, name: str, col: int, bins: int) -> SensitiveAttribute:
    """Quantile bins of a numeric field; each bin's code is the median of its records, a
    record's bin the nearest code (so :meth:`SensitiveAttribute.decode` is the truth)."""
    v = x[:, col].astype(np.float64)
    edges = np.quantile(v, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges[1:-1], v, side="right"), 0, bins - 1)
    medians = np.unique([np.median(v[which == b]) for b in range(bins) if (which == b).any()])
    if len(medians) < 2:
        raise ConfigError(f"numeric field {name!r} of {ds.name} holds a single value: no bins")
    bounds = np.r_[v.min(), (medians[1:] + medians[:-1]) / 2, v.max()]
    spec = next((c for c in (ds.preprocessing or {}).get("numeric", []) if c["name"] == name), None)

    def raw(s: float) -> str:
        if spec is None:
            return f"{s:.3g}"
        return f"{spec['min'] + s * (spec['max'] - spec['min']):.4g}"

    values = [f"{raw(lo)}–{raw(hi)}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    codes = medians.astype(np.float32).reshape(-1, 1)
    return SensitiveAttribute(name=name, columns=[col], values=values, codes=codes)


def _listing(ds: Dataset) -> str:
    usable = usable_fields(ds)
    return ", ".join(usable) if usable else "(none)"
