"""The attacker's proxy recipe, for models that bring no training recipe of their own.

LiRA, RMIA and shadow models train reference models "like the target". A scikit-learn model is
cloned and a PyTorch module can bring a ``train_fn`` hook or a recipe file, but an ONNX file, a
Hugging Face classifier, a callable or an HTTP endpoint does not say how it was trained. For
them the attacker states a proxy: a model privguard trains itself, chosen for the data:

- ``table`` (a DataFrame of raw columns): one-hot encoding of the non-numeric columns and a
  scikit-learn ``HistGradientBoostingClassifier`` (200 rounds, no early stopping; missing values
  handled natively);
- ``array`` (numeric vectors): privguard's MLP (two ReLU layers of 256, Adam 1e-3, batch 64,
  60 epochs: :class:`~privguard.models.train.TrainConfig`);
- ``image`` (``(channels, height, width)`` arrays): privguard's CNN (30 epochs);
- ``text`` (one text column): character n-gram TF-IDF and a logistic regression (C=10).

The attacks then RUN (never skipped for a model that answers probabilities), and the report
says that they used a proxy: a proxy that differs from the target's real recipe makes the
reference models' loss distributions a worse match, so the attacks' numbers are a lower bound
on what an attacker who knows the recipe finds. Give the real recipe (``train_fn=`` /
``--recipe``) to remove that gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privguard.data.preprocess import as_text
from privguard.errors import DataError
from privguard.models.adapters.base import ModelAdapter, Recipe

DATA_KINDS = ("auto", "table", "array", "image", "text")
MLP = {"model": "mlp", "hidden": [256, 256], "epochs": 60, "lr": 1e-3, "batch_size": 64}
CNN = {"model": "cnn", "hidden": [128], "epochs": 30, "lr": 1e-3, "batch_size": 64}
GBM_ROUNDS = 200
_WHAT = {
    "table": f"one-hot encoding + HistGradientBoosting ({GBM_ROUNDS} rounds)",
    "array": "privguard's MLP (2x256 ReLU, Adam 1e-3, batch 64, 60 epochs)",
    "image": "privguard's CNN (2 conv blocks, Adam 1e-3, batch 64, 30 epochs)",
    "text": "character n-gram TF-IDF + logistic regression",
}


class ProxyRecipe(Recipe):
    """Reference models of the attacker's choosing (see the module docstring).

    Args:
        classes: the target's class labels (output column order).
        data: ``table``, ``array``, ``image``, ``text``, or ``auto`` (decided by what ``fit``
            is given: a DataFrame is a table, or text when it is one column of long strings;
            4-D arrays are images).
    """

    kind = "proxy"

    def __init__(self, classes: Sequence[Any], *, data: str = "auto") -> None:
        if data not in DATA_KINDS:
            raise ValueError(f"data={data!r}: one of {DATA_KINDS}")
        self.classes = list(classes)
        self.data = data
        what = _WHAT[data] if data != "auto" else "; ".join(f"{k}: {v}" for k, v in _WHAT.items())
        self.description = (
            f"the target brings no training recipe: reference models are the attacker's proxy, "
            f"{what} (a lower bound: the target's own recipe would be stronger)"
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "data": self.data}

    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> ModelAdapter:
        index = {as_text(c): i for i, c in enumerate(self.classes)}
        try:
            yi = np.array([index[as_text(v)] for v in np.asarray(y).tolist()], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"label {e.args[0]!r} is not one of the model's classes") from None
        kind = self.data if self.data != "auto" else data_kind(x)
        if kind in ("table", "text"):
            return self._fit_sklearn(kind, x, yi, seed)
        return self._fit_torch(kind, x, yi, seed)

    def _fit_sklearn(self, kind: str, x: Any, y: np.ndarray, seed: int) -> ModelAdapter:
        from privguard.models.adapters.sklearn import SklearnAdapter

        est = text_pipeline(x) if kind == "text" else table_pipeline(x, seed)
        est.fit(x, y)
        return SklearnAdapter(est, classes=list(range(len(self.classes))))

    def _fit_torch(self, kind: str, x: Any, y: np.ndarray, seed: int) -> ModelAdapter:
        from privguard.models.adapters.generic import PredictorAdapter
        from privguard.models.train import TrainConfig, TrainingRecipe

        x32 = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        settings = CNN if kind == "image" and x32.ndim == 4 else MLP
        recipe = TrainingRecipe(TrainConfig(**settings, seed=seed), len(self.classes))
        return PredictorAdapter(recipe.fit(x32, y, seed=seed), self.classes)


def data_kind(x: Any) -> str:
    """``table``, ``text``, ``image`` or ``array``: what a proxy is chosen for."""
    import pandas as pd

    if isinstance(x, pd.DataFrame):
        if x.shape[1] == 1 and not pd.api.types.is_numeric_dtype(x.iloc[:, 0]):
            lengths = x.iloc[:, 0].dropna().astype(str).str.len()
            if len(lengths) and float(lengths.mean()) >= 20:
                return "text"
        return "table"
    return "image" if np.ndim(x) == 4 else "array"


def table_pipeline(x: Any, seed: int) -> Any:
    """One-hot encoding of non-numeric columns + HistGradientBoosting, on raw columns."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    cats = [
        c
        for c in x.columns
        if not pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])
    ]
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats)],
        remainder="passthrough",
    )
    gbm = HistGradientBoostingClassifier(
        max_iter=GBM_ROUNDS, early_stopping=False, random_state=seed
    )
    return Pipeline([("encode", encode), ("gbm", gbm)])


def text_pipeline(x: Any) -> Any:
    """Character n-gram TF-IDF + logistic regression on a one-column DataFrame of text."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    column = x.columns[0]
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=1)
    return Pipeline(
        [
            ("tfidf", ColumnTransformer([("text", tfidf, column)])),
            ("logreg", LogisticRegression(C=10.0, max_iter=2000)),
        ]
    )
