"""Tabular preprocessing: raw records (a pandas DataFrame) -> float32 features in [0, 1].

The rule, applied column by column to every column except the label:

- **numeric** columns (any integer or float dtype): missing values are replaced by the median
  seen at fit time, then min-max scaled with the fit-time minimum and maximum to [0, 1] and
  clipped to [0, 1] (so records from a new file stay inside the bounds the model was trained
  on). A column that was constant at fit time becomes 0.
- **categorical** columns (every other dtype: text, bool, category): values are compared as
  text (``str(value)``), one-hot encoded with one column per value seen at fit time plus an
  explicit ``missing`` column for empty cells. A value not seen at fit time encodes as all
  zeros. A column with more than ``MAX_CATEGORIES`` distinct values is refused (an identifier
  or free text would explode into one column per record).
- A numeric column is never guessed to be categorical, however few values it has (0/1 flags
  and small counts scale to [0, 1] just as well): write it as text to have it one-hot encoded.

Output columns are the numeric columns in file order, then the one-hot columns; their names
(``age``, ``sex=Male``, ``sex=missing``) are in ``feature_names``. Classes are the distinct
label values written as text (integer-valued numbers without a trailing ``.0``), sorted by value
(numbers numerically: 1, 2, 10; text alphabetically), and ``y`` is the index of a record's label
in that list. Records with an empty label are refused.

``to_dict()`` records all of this as plain JSON (stored in ``model.json``); ``from_dict()``
rebuilds a preprocessor that gives bit-identical output on the same records, without pickles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import OneHotEncoder

from privguard.errors import DataError

MISSING = "missing"
MAX_CATEGORIES = 1000  # more distinct values than this is an identifier or free text
_VERSION = 1


class TabularPreprocessor:
    """Fit on a DataFrame with a label column, then turn DataFrames into ``(x, y)``.

    Attributes (set by :meth:`fit` or :meth:`from_dict`):
        label: the label column's name.
        classes: the class names; label index = position in this list.
        numeric: per numeric column ``{"name", "median", "min", "max"}``.
        categorical: per categorical column ``{"name", "categories"}`` (``missing`` included).
        feature_names: names of the output columns, ``len == x.shape[1]``.
    """

    def __init__(self) -> None:
        self.label: str = ""
        self.classes: list[str] = []
        self.numeric: list[dict[str, Any]] = []
        self.categorical: list[dict[str, Any]] = []
        self.feature_names: list[str] = []
        self._encoder: OneHotEncoder | None = None

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, df: pd.DataFrame, label: str, *, where: str = "the data") -> TabularPreprocessor:
        """Learn medians, ranges, categories and classes from ``df``; returns ``self``."""
        df = _with_str_columns(df)
        if label not in df.columns:
            raise DataError(
                f"{where} has no column {label!r}; columns are: {join_names(df.columns)}; "
                "pass --label with one of them"
            )
        if len(df) == 0:
            raise DataError(f"{where} has a header but no records")
        features = [c for c in df.columns if c != label]
        if not features:
            raise DataError(f"{where} has only the label column {label!r}; it needs features too")

        self.label = label
        labels = _label_text(df[label], where=where, column=label)
        self.classes = _sorted_classes(df[label], labels)
        if len(self.classes) < 2:
            raise DataError(
                f"label column {label!r} in {where} has a single value ({self.classes[0]!r}); "
                "a classifier needs at least two classes: pick another --label"
            )

        self.numeric, self.categorical = [], []
        for name in features:
            col = df[name]
            if _is_numeric(col):
                values = _floats(col)
                _check_inf(values, name, where)
                present = values[~np.isnan(values)]
                if len(present) == 0:
                    raise DataError(
                        f"column {name!r} in {where} is empty in every record; drop the column"
                    )
                self.numeric.append(
                    {
                        "name": name,
                        "median": float(np.median(present)),
                        "min": float(present.min()),
                        "max": float(present.max()),
                        # records whose empty cell was filled with the median (train reports it)
                        "imputed": int(len(values) - len(present)),
                    }
                )
            else:
                seen = sorted(set(_category_text(col)) - {MISSING})
                if len(seen) > MAX_CATEGORIES:
                    raise DataError(
                        f"column {name!r} in {where} has {len(seen)} distinct text values (more "
                        f"than {MAX_CATEGORIES}): an identifier or free text cannot be one-hot "
                        "encoded; remove the column from the file, or store it as numbers"
                    )
                n_missing = int(sum(v == MISSING for v in _category_text(col)))
                self.categorical.append(
                    {"name": name, "categories": [*seen, MISSING], "imputed": n_missing}
                )
        self._build()
        return self

    # -- JSON record ----------------------------------------------------------------------------

    def imputed(self) -> list[tuple[str, int, str]]:
        """``(column, records, value)`` for each column whose empty cells were filled when
        fitting: numeric ones with their median, categorical ones with the level ``missing``."""
        out = [
            (c["name"], int(c["imputed"]), f"median {c['median']:g}")
            for c in self.numeric
            if c.get("imputed")
        ]
        out += [
            (c["name"], int(c["imputed"]), f'level "{MISSING}"')
            for c in self.categorical
            if c.get("imputed")
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A plain-JSON description that :meth:`from_dict` replays exactly."""
        return {
            "type": "tabular",
            "version": _VERSION,
            "label": self.label,
            "classes": list(self.classes),
            "numeric": [dict(c) for c in self.numeric],
            "categorical": [
                {
                    "name": c["name"],
                    "categories": list(c["categories"]),
                    **({"imputed": c["imputed"]} if "imputed" in c else {}),
                }
                for c in self.categorical
            ],
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularPreprocessor:
        """Rebuild from :meth:`to_dict` output; :class:`DataError` if the record is malformed."""
        if not isinstance(d, dict) or d.get("type") != "tabular":
            raise DataError(
                "the recorded preprocessing is not a tabular record; audit with the kind of data "
                "the model was trained on"
            )
        if d.get("version") != _VERSION:
            raise DataError(
                f"the recorded preprocessing has version {d.get('version')!r}; this privguard "
                f"reads version {_VERSION}: retrain the model with this version"
            )
        self = cls()
        try:
            self.label = str(d["label"])
            self.classes = [str(c) for c in d["classes"]]
            self.numeric = [
                {
                    "name": str(c["name"]),
                    "median": float(c["median"]),
                    "min": float(c["min"]),
                    "max": float(c["max"]),
                    **({"imputed": int(c["imputed"])} if "imputed" in c else {}),
                }
                for c in d["numeric"]
            ]
            self.categorical = [
                {
                    "name": str(c["name"]),
                    "categories": [str(v) for v in c["categories"]],
                    **({"imputed": int(c["imputed"])} if "imputed" in c else {}),
                }
                for c in d["categorical"]
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"the recorded preprocessing is malformed ({type(e).__name__}: {e}); "
                "retrain the model"
            ) from e
        self._build()
        if "feature_names" in d and list(d["feature_names"]) != self.feature_names:
            raise DataError("the recorded preprocessing is inconsistent; retrain the model")
        return self

    # -- transforming ---------------------------------------------------------------------------

    def transform(
        self, df: pd.DataFrame, *, where: str = "the data"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode records and labels.

        Returns:
            x: float32 ``(n, len(feature_names))`` in [0, 1].
            y: int64 ``(n,)`` class indices into ``classes``.
        """
        df = _with_str_columns(df)
        if self.label not in df.columns:
            raise DataError(
                f"{where} has no label column {self.label!r} (the model was trained with it); "
                f"columns are: {join_names(df.columns)}"
            )
        x = self.transform_features(df, where=where)
        labels = _label_text(df[self.label], where=where, column=self.label)
        index = {c: i for i, c in enumerate(self.classes)}
        unseen = sorted(set(labels) - set(index))
        if unseen:
            raise DataError(
                f"label column {self.label!r} in {where} has value(s) {join_names(unseen)} that "
                "the model was not trained on (its classes are: "
                f"{join_names(self.classes)}); drop those records"
            )
        y = np.array([index[v] for v in labels], dtype=np.int64)
        return x, y

    def transform_features(self, df: pd.DataFrame, *, where: str = "the data") -> np.ndarray:
        """Encode records without labels: float32 ``(n, len(feature_names))`` in [0, 1]."""
        df = _with_str_columns(df)
        if not self.feature_names:
            raise DataError("the preprocessor is not fitted; call fit() or from_dict() first")
        needed = [c["name"] for c in self.numeric + self.categorical]
        absent = [c for c in needed if c not in df.columns]
        if absent:
            raise DataError(
                f"{where} lacks column(s) {join_names(absent)} that the model was trained on; "
                f"columns are: {join_names(df.columns)}"
            )
        if len(df) == 0:
            raise DataError(f"{where} has no records")
        parts: list[np.ndarray] = []
        if self.numeric:
            parts.append(self._numeric_block(df, where))
        if self.categorical:
            cats = np.column_stack([_category_text(df[c["name"]]) for c in self.categorical])
            assert self._encoder is not None
            parts.append(np.asarray(self._encoder.transform(cats), dtype=np.float32))
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

    # -- internals ------------------------------------------------------------------------------

    def _numeric_block(self, df: pd.DataFrame, where: str) -> np.ndarray:
        out = np.empty((len(df), len(self.numeric)), dtype=np.float32)
        for j, c in enumerate(self.numeric):
            col = df[c["name"]]
            if not _is_numeric(col):
                coerced = pd.to_numeric(col, errors="coerce")
                bad = col[coerced.isna() & col.notna()]
                if len(bad):
                    raise DataError(
                        f"column {c['name']!r} in {where} was numeric when the model was trained "
                        f"but has {len(bad)} non-numeric value(s) here (e.g. {bad.iloc[0]!r}); "
                        "fix them or leave those cells empty"
                    )
                col = coerced
            values = _floats(col)
            _check_inf(values, c["name"], where)
            values = np.where(np.isnan(values), c["median"], values)
            span = c["max"] - c["min"]
            out[:, j] = np.clip((values - c["min"]) / span, 0.0, 1.0) if span > 0 else 0.0
        return out

    def _build(self) -> None:
        """Make the encoder and feature names from the recorded state (fit and replay alike)."""
        self.feature_names = [c["name"] for c in self.numeric]
        self._encoder = None
        if self.categorical:
            categories = [np.array(c["categories"], dtype=object) for c in self.categorical]
            # The categories are given explicitly, so fitting on one row made of each column's
            # first category only sets up the encoder: nothing is learned from data here.
            first = np.array([[c[0] for c in categories]], dtype=object)
            self._encoder = OneHotEncoder(
                categories=categories,
                handle_unknown="ignore",
                sparse_output=False,
                dtype=np.float32,
            ).fit(first)
            for c in self.categorical:
                self.feature_names += [f"{c['name']}={v}" for v in c["categories"]]


def _with_str_columns(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of records, got {type(df).__name__}")
    if all(isinstance(c, str) for c in df.columns):
        return df
    return df.rename(columns=str)


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)


def _floats(col: pd.Series) -> np.ndarray:
    """A numeric column as float64 ``(n,)``, empty cells as NaN."""
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_inf(values: np.ndarray, name: str, where: str) -> None:
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        raise DataError(
            f"column {name!r} in {where} has {n_inf} infinite value(s); replace them with "
            "numbers or leave those cells empty"
        )


def _category_text(col: pd.Series) -> np.ndarray:
    """Categorical cells as text, empty cells as ``missing``: object array ``(n,)``."""
    isna = col.isna().to_numpy()
    text = np.array([as_text(v) for v in col.to_numpy(dtype=object)], dtype=object)
    text[isna] = MISSING
    return text


def as_text(v: Any) -> str:
    """A cell as text; integer-valued floats lose their ``.0`` so 1 and 1.0 are the same class."""
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _label_text(col: pd.Series, *, where: str, column: str) -> list[str]:
    n_missing = int(col.isna().sum())
    if n_missing:
        raise DataError(
            f"label column {column!r} in {where} is empty in {n_missing} record(s); "
            "drop those records or fill in their labels"
        )
    return [as_text(v) for v in col.to_numpy(dtype=object)]


def _sorted_classes(col: pd.Series, labels: list[str]) -> list[str]:
    """Distinct labels as text, in the order of their values (numbers numerically)."""
    if _is_numeric(col):
        values = sorted(set(_floats(col).tolist()))
        return list(dict.fromkeys(as_text(v) for v in values))
    return sorted(set(labels))


def join_names(items: Any, limit: int = 30) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
