"""Any model that answers with probabilities or logits: an object with ``predict_proba``, or a
plain callable.

- :class:`ProbaAdapter`: an object with ``predict_proba`` that is not a scikit-learn estimator
  (those go to :mod:`privguard.models.adapters.sklearn`), e.g. a wrapper around a served model;
- :class:`CallableAdapter`: ``fn(x) -> (n, classes)``, probabilities (``output="probs"``, the
  default) or logits (``output="logits"``).

Probabilities are checked on every answer: non-negative rows that sum to 1 (within 1e-3); a
callable that returns logits without ``output="logits"`` is a one-line
:class:`~privguard.errors.DataError` that says so. The class list comes from ``classes=[...]``,
the object's ``classes_``, ``n_classes=K`` (classes ``0..K-1``) or the object's ``n_classes``;
without any of them the adapter cannot tell which output column is which label and says so.

Neither has a training recipe of its own: reference-model attacks (LiRA, RMIA, shadow models)
use the attacker's proxy (:mod:`privguard.models.adapters.proxy`), and the report says so.

Example:
    >>> adapter = adapt(lambda x: model_api(x), classes=["no", "yes"], output="logits")
    >>> privguard.audit(adapter, members=train_df, nonmembers=holdout_df, label="y")
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    class_labels,
    register_adapter,
)

OUTPUTS = ("probs", "logits")
SUM_TOLERANCE = 1e-3


def resolve_classes(
    model: Any, classes: Sequence[Any] | None, n_classes: int | None, *, what: str
) -> list[Any]:
    """The class labels of a model's output columns, from the options or the object."""
    if classes is not None:
        out = class_labels(list(classes))
        if n_classes is not None and int(n_classes) != len(out):
            raise ConfigError(f"classes= names {len(out)} classes but n_classes={n_classes}")
        if len(out) < 2 or len(set(map(str, out))) != len(out):
            raise ConfigError(f"classes= must name at least two distinct classes, got {out}")
        return out
    own = getattr(model, "classes_", None)
    if own is not None:
        return class_labels(list(own))
    k = n_classes if n_classes is not None else getattr(model, "n_classes", None)
    if isinstance(k, int | np.integer) and int(k) >= 2:
        return list(range(int(k)))
    raise ConfigError(
        f"privguard cannot tell which output of {what} is which class: pass classes=[...] (the "
        "label of each output column, in order) or n_classes=K"
    )


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_probabilities(p: np.ndarray, *, who: str) -> np.ndarray:
    """``p`` when its rows are probability vectors; a :class:`DataError` otherwise."""
    sums = p.sum(axis=1)
    if len(p) and (p.min() < -SUM_TOLERANCE or np.abs(sums - 1).max() > SUM_TOLERANCE):
        worst = float(sums[np.argmax(np.abs(sums - 1))])
        raise DataError(
            f"{who} returned rows that are not probabilities (a row sums to {worst:.4g}); if it "
            "returns logits or scores, pass output='logits'"
        )
    return np.clip(p, 0.0, 1.0)


class _AnswerAdapter(ModelAdapter):
    """Shared by adapters whose model only answers queries: input handling, output kind,
    proxy recipe."""

    framework = "callable"

    def _setup(
        self,
        classes: list[Any],
        *,
        output: str,
        takes_frame: bool,
        columns: Sequence[str] | None,
        input_shape: Sequence[int] | None,
        dtype: Any,
    ) -> None:
        if output not in OUTPUTS:
            raise ConfigError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
        self.output = output
        self.classes = classes
        self.n_classes = len(classes)
        self.takes_frame = bool(takes_frame or columns is not None)
        self.columns = [str(c) for c in columns] if columns is not None else None
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else ()
        self.dtype = np.dtype(dtype)

    @abstractmethod
    def _raw(self, x: Any) -> np.ndarray:
        """The model's own answer (probabilities or logits) for records ``x``."""

    def _who(self) -> str:
        return f"the {self.framework} model"

    def _answer(self, x: Any) -> np.ndarray:
        if not self.takes_frame:
            x = np.asarray(x, dtype=self.dtype)
        try:
            out = self._raw(x)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"{self._who()} refused the records: {first}") from None
        return check_proba(out, len(x), self.n_classes, who=self._who())

    def predict_proba(self, x: Any) -> np.ndarray:
        out = self._answer(x)
        if self.output == "logits":
            return softmax(out)
        return check_probabilities(out, who=self._who())

    def predict_logits(self, x: Any) -> np.ndarray:
        out = self._answer(x)
        if self.output == "logits":
            return out
        return np.log(np.clip(check_probabilities(out, who=self._who()), 1e-300, None))

    def recipe(self) -> Recipe | None:
        from privguard.models.adapters.proxy import ProxyRecipe

        return ProxyRecipe(self.classes)

    def describe(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "type": self._type_name(),
            "classes": [str(c) for c in self.classes],
            "output": self.output,
            "input": "DataFrame" if self.takes_frame else "array",
        }

    def _type_name(self) -> str:
        return "model"


class ProbaAdapter(_AnswerAdapter):
    """An object with ``predict_proba`` (and, if it has one, ``predict_logits``), used as is.

    Args:
        model: the object; only ``predict_proba`` / ``predict_logits`` are called.
        classes / n_classes: the label of each output column (see the module docstring).
        output: ``probs`` (what ``predict_proba`` returns) or ``logits``.
        takes_frame / columns: the model takes a pandas DataFrame (with these columns).
        input_shape / dtype: one record's shape and the dtype the model computes in.
    """

    framework = "predict_proba"

    def __init__(
        self,
        model: Any,
        *,
        classes: Sequence[Any] | None = None,
        n_classes: int | None = None,
        output: str = "probs",
        takes_frame: bool = False,
        columns: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
        dtype: Any = np.float32,
        **_: Any,
    ) -> None:
        if not callable(getattr(model, "predict_proba", None)):
            raise ConfigError(f"{type(model).__name__} has no predict_proba")
        self.model = model
        cls = resolve_classes(model, classes, n_classes, what=type(model).__name__)
        if columns is None and getattr(model, "feature_names_in_", None) is not None:
            columns = list(model.feature_names_in_)
        self._setup(
            cls,
            output=output,
            takes_frame=takes_frame,
            columns=columns,
            input_shape=input_shape or getattr(model, "input_shape", None),
            dtype=getattr(model, "dtype", None) or dtype,
        )

    def _raw(self, x: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x))

    def predict_logits(self, x: Any) -> np.ndarray:
        if callable(getattr(self.model, "predict_logits", None)):
            x = x if self.takes_frame else np.asarray(x, dtype=self.dtype)
            z = np.asarray(self.model.predict_logits(x), dtype=np.float64)
            check_proba(np.where(np.isinf(z), 0.0, z), len(x), self.n_classes, who=self._who())
            return z
        return super().predict_logits(x)

    def _type_name(self) -> str:
        return f"{type(self.model).__module__}.{type(self.model).__qualname__}"

    def fingerprint(self) -> bytes:
        return object_fingerprint(self.model)


class CallableAdapter(_AnswerAdapter):
    """A callable ``fn(x) -> (n, classes)`` returning probabilities or logits.

    Args: as :class:`ProbaAdapter`; ``output`` says what ``fn`` returns.
    """

    framework = "callable"

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        classes: Sequence[Any] | None = None,
        n_classes: int | None = None,
        output: str = "probs",
        takes_frame: bool = False,
        columns: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
        dtype: Any = np.float32,
        **_: Any,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"{type(fn).__name__} is not callable")
        self.fn = fn
        cls = resolve_classes(fn, classes, n_classes, what=getattr(fn, "__name__", "the callable"))
        self._setup(
            cls,
            output=output,
            takes_frame=takes_frame,
            columns=columns,
            input_shape=input_shape,
            dtype=dtype,
        )

    def _raw(self, x: Any) -> np.ndarray:
        return np.asarray(self.fn(x))

    def _type_name(self) -> str:
        fn = self.fn
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"

    def fingerprint(self) -> bytes:
        return object_fingerprint(self.fn)


class PredictorAdapter(ModelAdapter):
    """A privguard :class:`~privguard.oracle.Predictor` (a proxy or reference model privguard
    trained) over the target's class list; never the user's model."""

    framework = "privguard"

    def __init__(self, predictor: Any, classes: list[Any], *, takes_frame: bool = False) -> None:
        self.predictor = predictor
        self.classes = list(classes)
        self.n_classes = len(self.classes)
        self.input_shape = tuple(getattr(predictor, "input_shape", ()) or ())
        self.dtype = np.dtype(getattr(predictor, "dtype", np.float32) or np.float32)
        self.takes_frame = takes_frame

    def predict_proba(self, x: Any) -> np.ndarray:
        return check_proba(self.predictor.predict_proba(x), len(x), self.n_classes)

    def predict_logits(self, x: Any) -> np.ndarray:
        if hasattr(self.predictor, "predict_logits"):
            return np.asarray(self.predictor.predict_logits(x), dtype=np.float64)
        return super().predict_logits(x)

    def recipe(self) -> Recipe | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"framework": self.framework, "type": type(self.predictor).__name__}

    def fingerprint(self) -> bytes:
        return object_fingerprint(self.predictor)


def object_fingerprint(obj: Any) -> bytes:
    """sha256 over an object's state (arrays, parameters, a function's code and closure)."""
    from privguard.models.adapters.sklearn import _feed

    h = hashlib.sha256()
    code = getattr(obj, "__code__", None)
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode(errors="replace"))
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                _feed(h, cell.cell_contents, {})
            except ValueError:  # an empty cell
                h.update(b"<empty>")
    _feed(h, obj, {})
    return h.digest()


def _has_predict_proba(model: Any) -> bool:
    return callable(getattr(model, "predict_proba", None)) and not isinstance(model, type)


def _is_callable(model: Any) -> bool:
    return callable(model) and not isinstance(model, type)


register_adapter(_has_predict_proba, ProbaAdapter, name="predict_proba", priority=900)
register_adapter(_is_callable, CallableAdapter, name="callable", priority=1000)
