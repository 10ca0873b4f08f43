"""XGBoost and LightGBM models: native boosters and their model files.

The scikit-learn API objects (``XGBClassifier``, ``LGBMClassifier``, fitted) are scikit-learn
estimators and go to :mod:`privguard.models.adapters.sklearn` (queried as they are; reference
models are ``sklearn.base.clone``\\ s). This module adds what scikit-learn does not know:

- a native ``xgboost.Booster`` / ``lightgbm.Booster`` object, and the native model files,
  loaded by the libraries' own parsers (no pickle): XGBoost ``.json`` / ``.ubj``
  (``Booster.save_model``) and LightGBM text models (``Booster.save_model``, a text file whose
  first line is ``tree``);
- :class:`BoosterAdapter` answers from the raw margins (``output_margin`` / ``raw_score``): the
  logits are exact, the probabilities their sigmoid / softmax;
- its recipe (kind ``clone``) is the library's scikit-learn classifier built from the
  hyper-parameters the model records: LightGBM text models record all of them (rounds, leaves,
  learning rate, sampling, regularisation); XGBoost models only their rounds and trees (depth
  read from them), the rest take XGBoost's defaults and the recipe's description says so.

XGBoost is installed as ``xgboost-cpu`` (the plain ``xgboost`` wheel pulls NVIDIA's NCCL on
Linux); both libraries are optional (``pip install privguard[byom]``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privguard.data.preprocess import as_text
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    register_adapter,
    register_loader,
)
from privguard.models.adapters.generic import resolve_classes, softmax


def _is_xgb_booster(model: Any) -> bool:
    xgb = sys.modules.get("xgboost")
    return xgb is not None and isinstance(model, xgb.Booster)


def _is_lgb_booster(model: Any) -> bool:
    lgb = sys.modules.get("lightgbm")
    return lgb is not None and isinstance(model, lgb.Booster)


class BoosterAdapter(ModelAdapter):
    """A native XGBoost or LightGBM booster (classification objectives).

    Args:
        booster: ``xgboost.Booster`` or ``lightgbm.Booster``.
        classes: labels of the output columns (default ``0..K-1``).
    """

    dtype = np.float64

    def __init__(
        self,
        booster: Any,
        *,
        classes: Sequence[Any] | None = None,
        source: str | None = None,
        **_: Any,
    ) -> None:
        self.booster = booster
        self.source = source
        self.takes_frame = False
        self.columns = None
        if _is_xgb_booster(booster):
            self.framework = "xgboost"
            cfg = json.loads(booster.save_config())
            learner = cfg["learner"]
            self.objective = learner["objective"]["name"]
            k = int(learner["learner_model_param"].get("num_class", "0") or 0)
            n_features = int(booster.num_features())
            self._params = _xgb_params(booster, booster.num_boosted_rounds())
        elif _is_lgb_booster(booster):
            self.framework = "lightgbm"
            params = dict(booster.params or {})
            self.objective = str(params.get("objective", "binary"))
            k = int(params.get("num_class", 1) or 1)
            n_features = int(booster.num_feature())
            self._params = _lgb_params(params, booster.current_iteration())
        else:
            raise ConfigError(f"{type(booster).__name__} is not an XGBoost or LightGBM booster")
        binary = self.objective.startswith(("binary", "reg:logistic")) or self.objective in (
            "cross_entropy",
            "xentropy",
        )
        multi = self.objective.startswith(("multi", "multiclass", "softmax", "multiclassova"))
        if not (binary or multi):
            raise ModelError(
                f"the {self.framework} model's objective is {self.objective}: privguard audits "
                "classifiers (binary or multi-class objectives)"
            )
        self.binary = binary
        n = 2 if binary else k
        self.classes = resolve_classes(booster, classes, n, what=f"the {self.framework} model")
        self.n_classes = len(self.classes)
        self.input_shape = (n_features,)

    def predict_logits(self, x: Any) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
        if x.shape[1] != self.input_shape[0]:
            raise DataError(
                f"the {self.framework} model takes {self.input_shape[0]} features, the records "
                f"have {x.shape[1]}"
            )
        if self.framework == "xgboost":
            import xgboost as xgb

            margin = self.booster.predict(xgb.DMatrix(x), output_margin=True)
        else:
            margin = self.booster.predict(x, raw_score=True)
        margin = np.asarray(margin, dtype=np.float64)
        if self.binary:
            margin = margin.reshape(-1)
            margin = np.stack([np.zeros_like(margin), margin], axis=1)
        return check_proba(margin, len(x), self.n_classes, who=f"the {self.framework} model")

    def predict_proba(self, x: Any) -> np.ndarray:
        return softmax(self.predict_logits(x))  # two columns [0, m]: softmax == sigmoid(m)

    def recipe(self) -> Recipe:
        return BoosterRecipe(self.framework, self._params, self.classes)

    def describe(self) -> dict[str, Any]:
        d = {
            "framework": self.framework,
            "type": f"{self.framework} Booster",
            "objective": self.objective,
            "hyper_parameters": self._params,
            "classes": [str(c) for c in self.classes],
        }
        if self.source:
            d["file"] = self.source
        return d

    def fingerprint(self) -> bytes:
        if self.framework == "xgboost":
            blob = bytes(self.booster.save_raw(raw_format="ubj"))
        else:
            blob = self.booster.model_to_string().encode()
        return hashlib.sha256(blob).digest()


class BoosterRecipe(Recipe):
    """The library's scikit-learn classifier with the booster's recorded hyper-parameters."""

    kind = "clone"

    def __init__(self, framework: str, params: dict[str, Any], classes: list[Any]) -> None:
        self.framework = framework
        self.params = dict(params)
        self.classes = list(classes)
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        self.description = (
            f"reference models are {framework} classifiers with the hyper-parameters recorded "
            f"in the target's model ({shown})"
        )
        if framework == "xgboost":
            self.description += (
                "; XGBoost model files do not record the learning rate, sampling or "
                "regularisation, so those are XGBoost's defaults"
            )

    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> ModelAdapter:
        from privguard.models.adapters.sklearn import SklearnAdapter

        index = {as_text(c): i for i, c in enumerate(self.classes)}
        yi = np.array([index[as_text(v)] for v in np.asarray(y).tolist()], dtype=np.int64)
        if self.framework == "xgboost":
            from xgboost import XGBClassifier

            est: Any = XGBClassifier(**self.params, random_state=seed, n_jobs=1)
            present = np.unique(yi)  # XGBoost wants labels 0..k-1 with none missing
            remap = {int(c): i for i, c in enumerate(present)}
            est.fit(np.asarray(x, dtype=np.float64), np.array([remap[int(v)] for v in yi]))
            from privguard.models.adapters.generic import PredictorAdapter

            return PredictorAdapter(_Columns(est, present, len(self.classes)), self.classes)
        else:
            from lightgbm import LGBMClassifier

            est = LGBMClassifier(**self.params, random_state=seed, n_jobs=1, verbose=-1)
            est.fit(np.asarray(x, dtype=np.float64), yi)
        return SklearnAdapter(est, classes=list(range(len(self.classes))))


class _Columns:
    """A reference classifier that saw only ``present`` of ``k`` classes, answering all ``k``
    columns (zero for the classes it never saw)."""

    def __init__(self, est: Any, present: np.ndarray, k: int) -> None:
        self.est, self.present, self.k = est, present, k

    def predict_proba(self, x: Any) -> np.ndarray:
        p = np.asarray(self.est.predict_proba(np.asarray(x, dtype=np.float64)))
        out = np.zeros((len(p), self.k), dtype=np.float64)
        out[:, self.present] = p
        return out


def _xgb_params(booster: Any, rounds: int) -> dict[str, Any]:
    """What an XGBoost model file records of its training: the number of rounds and the tree
    depth reached (read from the trees). XGBoost model files do not record the learning rate,
    sampling or regularisation; those take XGBoost's defaults, and the recipe says so."""
    depth = 0
    for tree in booster.get_dump(dump_format="json"):
        stack = [(json.loads(tree), 0)]
        while stack:
            node, d = stack.pop()
            kids = node.get("children") or []
            if kids:
                depth = max(depth, d + 1)
                stack.extend((k, d + 1) for k in kids)
    return {"n_estimators": int(rounds), "max_depth": max(depth, 1)}


def _lgb_params(params: dict[str, Any], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_estimators": int(rounds)}
    for src, dst, cast in (
        ("learning_rate", "learning_rate", float),
        ("num_leaves", "num_leaves", int),
        ("max_depth", "max_depth", int),
        ("min_data_in_leaf", "min_child_samples", int),
        ("min_sum_hessian_in_leaf", "min_child_weight", float),
        ("bagging_fraction", "subsample", float),
        ("bagging_freq", "subsample_freq", int),
        ("feature_fraction", "colsample_bytree", float),
        ("lambda_l2", "reg_lambda", float),
        ("lambda_l1", "reg_alpha", float),
    ):
        if src in params:
            out[dst] = cast(params[src])
    return out


# -- files -----------------------------------------------------------------------------------


def _head(p: Path, n: int = 4096) -> bytes:
    try:
        with p.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_xgb_file(p: Path) -> bool:
    if not p.is_file():
        return False
    suffix = p.suffix.lower()
    return suffix == ".ubj" or (suffix == ".json" and b'"learner"' in _head(p))


def _is_lgb_file(p: Path) -> bool:
    return p.is_file() and _head(p, 64).split(b"\n", 1)[0].strip() == b"tree"


def load_xgboost(path: str | Path, **options: Any) -> BoosterAdapter:
    """An XGBoost ``.json`` / ``.ubj`` model file, read by XGBoost's own parser."""
    p = Path(path)
    try:
        import xgboost as xgb
    except ImportError:
        raise ModelError(
            f"{p} is an XGBoost model: install xgboost-cpu (pip install privguard[byom])"
        ) from None
    try:
        booster = xgb.Booster(model_file=str(p))
    except xgb.core.XGBoostError as e:
        first = (str(e).strip().splitlines() or ["error"])[0]
        raise ModelError(f"{p} is not a valid XGBoost model: {first[:200]}") from None
    return BoosterAdapter(booster, source=str(p), **options)


def load_lightgbm(path: str | Path, **options: Any) -> BoosterAdapter:
    """A LightGBM text model file, read by LightGBM's own parser."""
    p = Path(path)
    try:
        import lightgbm as lgb
    except ImportError:
        raise ModelError(
            f"{p} is a LightGBM model: install lightgbm (pip install privguard[byom])"
        ) from None
    try:
        booster = lgb.Booster(model_file=str(p))
    except lgb.basic.LightGBMError as e:
        first = (str(e).strip().splitlines() or ["error"])[0]
        raise ModelError(f"{p} is not a valid LightGBM model: {first[:200]}") from None
    return BoosterAdapter(booster, source=str(p), **options)


register_adapter(
    lambda m: _is_xgb_booster(m) or _is_lgb_booster(m), BoosterAdapter, name="booster", priority=45
)
register_loader(_is_xgb_file, load_xgboost, name="XGBoost .json/.ubj", priority=55)
register_loader(_is_lgb_file, load_lightgbm, name="LightGBM text model", priority=55)
