"""scikit-learn models the user already fitted: estimators and Pipelines, and ``.skops`` files.

:class:`SklearnAdapter` queries a fitted classifier with ``predict_proba`` as it is: a model
fitted on a DataFrame (a ``Pipeline`` with a ``ColumnTransformer`` on raw columns, categoricals
and missing values included) gets a DataFrame with exactly the columns it was fitted on; a model
fitted on arrays gets a float64 array. Its recipe (:class:`CloneRecipe`, kind ``clone``) trains
reference models with ``sklearn.base.clone`` on the same raw representation, never refitting the
user's object.

``.skops`` files load with an explicit allowlist of exact type names (:data:`TRUSTED_TYPES`,
what skops reports for the estimators, pipelines and transformers privguard supports beyond
its own defaults): anything else is refused with :class:`~privguard.errors.ModelError` naming
the type, and ``trusted=[...]`` (CLI ``--trust TYPE``) is the only way to add one. Whole
packages are never trusted: skops calls a type named in the file to rebuild an object, so a
file naming e.g. a NumPy test helper that ``exec``s a string would run code on load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    class_labels,
    register_adapter,
    register_loader,
)

# Types a fitted scikit-learn model privguard supports holds besides skops' own defaults
# (estimators, sklearn internals of gradient boosting, builtins, NumPy arrays). Each is a class
# whose reconstruction runs no code of the file's choosing, or a plain function reference.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "functools.partial",
    "sklearn.utils.validation.check_array",
)


def is_sklearn_classifier(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(model, BaseEstimator) and hasattr(model, "predict_proba")


class SklearnAdapter(ModelAdapter):
    """A fitted scikit-learn classifier (or Pipeline) with ``predict_proba``, used as it is.

    Args:
        estimator: the fitted model; it is never refitted or modified.
        classes: the full class list when this is a reference model that saw only some of the
            target's classes (its outputs are padded with zeros to that width).
    """

    framework = "sklearn"
    dtype = np.float64

    def __init__(self, estimator: Any, *, classes: Iterable[Any] | None = None) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"{type(estimator).__name__} has no predict_proba; privguard needs a classifier "
                "that returns class probabilities"
            )
        own = getattr(estimator, "classes_", None)
        if own is None:
            raise ConfigError(
                f"{type(estimator).__name__} is not fitted; privguard audits a model you have "
                "already trained (fit it first)"
            )
        self.estimator = estimator
        self._own = class_labels(own)
        self.classes = class_labels(classes) if classes is not None else list(self._own)
        self.n_classes = len(self.classes)
        missing = [c for c in self._own if c not in self.classes]
        if missing:
            raise DataError(f"the model predicts classes {missing} outside {self.classes}")
        self._columns_out = [self.classes.index(c) for c in self._own]
        names = getattr(estimator, "feature_names_in_", None)
        self.takes_frame = names is not None
        self.columns = [str(c) for c in names] if names is not None else None
        n_in = getattr(estimator, "n_features_in_", None)
        if n_in is None and self.columns is not None:
            n_in = len(self.columns)
        self.input_shape = (int(n_in),) if n_in is not None else ()

    # -- answering ------------------------------------------------------------------------
    def _input(self, x: Any) -> Any:
        if self.takes_frame:
            import pandas as pd

            if not isinstance(x, pd.DataFrame):
                raise DataError(
                    f"{type(self.estimator).__name__} was fitted on a DataFrame with columns "
                    f"{self.columns}; give it a DataFrame"
                )
            return x
        x = np.asarray(x)
        return x.reshape(len(x), -1)

    def predict_proba(self, x: Any) -> np.ndarray:
        n = len(x)
        try:
            p = self.estimator.predict_proba(self._input(x))
        except (ValueError, TypeError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"{type(self.estimator).__name__} refused the records: {first}"
            ) from None
        p = check_proba(p, n, len(self._own), who=type(self.estimator).__name__)
        if self.n_classes == len(self._own):
            return p
        out = np.zeros((n, self.n_classes), dtype=np.float64)
        out[:, self._columns_out] = p
        return out

    # -- what the report and the attacks learn ----------------------------------------------
    def recipe(self) -> CloneRecipe:
        return CloneRecipe(self.estimator, self.classes)

    def describe(self) -> dict[str, Any]:
        est = self.estimator
        d: dict[str, Any] = {
            "framework": "sklearn",
            "type": f"{type(est).__module__}.{type(est).__qualname__}",
            "classes": [str(c) for c in self.classes],
            "input": "DataFrame" if self.takes_frame else "array",
        }
        if self.columns is not None:
            d["columns"] = list(self.columns)
        steps = getattr(est, "steps", None)
        if steps:
            d["steps"] = [f"{name}: {type(step).__name__}" for name, step in steps]
        return d

    def fingerprint(self) -> bytes:
        h = hashlib.sha256()
        _feed(h, self.estimator, {})
        return h.digest()


class CloneRecipe(Recipe):
    """``sklearn.base.clone`` of the target (same hyper-parameters, unfitted), fitted on the
    same raw representation as the target; ``random_state`` parameters take the seed."""

    kind = "clone"

    def __init__(self, estimator: Any, classes: list[Any]) -> None:
        self.estimator = estimator
        self.classes = list(classes)
        self.description = (
            f"reference models are clones of the target's {type(estimator).__name__} (same "
            "hyper-parameters, sklearn.base.clone) trained on the same raw columns"
        )

    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> SklearnAdapter:
        from sklearn.base import clone

        est = clone(self.estimator)
        seeds = {k: seed for k in est.get_params() if k.split("__")[-1] == "random_state"}
        if seeds:
            est.set_params(**seeds)
        if not hasattr(x, "columns"):
            x = np.asarray(x).reshape(len(x), -1)
        try:
            est.fit(x, np.asarray(y))
        except ValueError as e:
            raise DataError(f"a reference model could not be trained: {e}") from None
        return SklearnAdapter(est, classes=self.classes)


def _feed(h: Any, obj: Any, seen: dict[int, Any]) -> None:
    """Hash an object's parameters and fitted state, walking estimators, containers and arrays.
    ``seen`` keeps every visited object alive, so a temporary's id is never reused."""
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    if isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype}{obj.shape}".encode())
        h.update(
            obj.tobytes() if obj.dtype != object else repr(obj.tolist()).encode(errors="replace")
        )
        return
    if obj is None or isinstance(obj, bool | int | float | str | bytes | np.generic):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
        return
    seen[id(obj)] = obj
    if isinstance(obj, dict):
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k], seen)
        return
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
        for item in items:
            _feed(h, item, seen)
        return
    state = None
    if hasattr(obj, "__getstate__"):
        try:
            state = obj.__getstate__()
        except TypeError:
            state = None
    if state is None:
        state = getattr(obj, "__dict__", None)
    h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
    if isinstance(state, dict | tuple | list):
        _feed(h, state, seen)
    else:
        h.update(repr(obj).encode(errors="replace"))


# -- .skops files ---------------------------------------------------------------------------


def load_skops(
    path: str | Path, *, trusted: Iterable[str] = (), data: bytes | None = None, **_: Any
) -> SklearnAdapter:
    """Load a ``.skops`` file: only skops' default types, :data:`TRUSTED_TYPES` and the exact
    type names in ``trusted`` are accepted; anything else raises :class:`ModelError` naming it."""
    return SklearnAdapter(load_skops_estimator(path, trusted=trusted, data=data))


def load_skops_estimator(
    path: str | Path, *, trusted: Iterable[str] = (), data: bytes | None = None
) -> Any:
    """The estimator in a ``.skops`` file (or ``data``, its bytes), after the type check."""
    import skops.io as sio

    p = Path(path)
    extra = [str(t).strip() for t in trusted if str(t).strip()]
    for t in extra:
        if t.endswith((".", "*")) or "." not in t:
            raise ConfigError(
                f"--trust {t!r}: name one exact type (module.Class), not a package or pattern"
            )
    try:
        blob = data if data is not None else p.read_bytes()
        untrusted = sio.get_untrusted_types(data=blob)
    except OSError as e:
        raise ModelError(f"cannot read {p}: {e.strerror or e}") from None
    except Exception as e:  # a file that is not a skops archive: zip / JSON errors
        raise ModelError(
            f"{p} is not a valid .skops file ({type(e).__name__}); save the model with "
            "skops.io.dump"
        ) from None
    allowed = set(TRUSTED_TYPES) | set(extra)
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise ModelError(
            f"{p} contains type(s) privguard does not trust: {', '.join(refused)}; if you know "
            "the file is safe, add each with --trust TYPE (Python: trusted=[...])"
        )
    try:
        return sio.loads(blob, trusted=[t for t in untrusted if t in allowed])
    except Exception as e:
        raise ModelError(f"{p} could not be loaded ({type(e).__name__}: {e})") from None


register_adapter(is_sklearn_classifier, SklearnAdapter, name="sklearn", priority=50)
register_loader(
    lambda p: p.is_file() and p.suffix.lower() == ".skops", load_skops, name=".skops", priority=50
)
