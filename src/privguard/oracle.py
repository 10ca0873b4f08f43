"""The oracle: everything an attacker may ask a model, and nothing more.

Every attack talks to a target through an :class:`Oracle`. An oracle has an access level
(``label`` < ``topk`` < ``probs`` < ``logits`` < ``whitebox``), counts queries (one per input
record) and enforces an optional query budget. Asking for more than the access level gives raises
:class:`~privguard.errors.AccessError` naming the access needed; spending past the budget raises
:class:`~privguard.errors.BudgetExhaustedError`.

A model becomes an oracle through a *predictor* adapter (:func:`as_predictor`): PyTorch modules,
scikit-learn estimators with ``predict_proba``, or any callable returning class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from privguard.errors import AccessError, BudgetExhaustedError, ConfigError, DataError

ABSTAIN = -1  # the label of a record an output policy declined to answer


class Access(IntEnum):
    """What an attacker gets back per query; each level includes those below it."""

    LABEL = 0
    TOPK = 1
    PROBS = 2
    LOGITS = 3
    WHITEBOX = 4

    @classmethod
    def parse(cls, value: str | Access) -> Access:
        if isinstance(value, Access):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(a.label for a in cls)
            raise ConfigError(f"unknown access level {value!r}; use one of: {names}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@runtime_checkable
class Predictor(Protocol):
    """What an oracle needs from a model. ``predict_proba`` returns float64 ``(n, classes)``."""

    n_classes: int
    input_shape: tuple[int, ...]

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...


class QueryMeter:
    """The bookkeeping every oracle shares: an access level, a query count and a budget.

    :class:`Oracle` (classifiers) and
    :class:`~privguard.attacks.memorization.oracle.TextOracle` (text models) count queries in
    their own unit (records, sequences) through :meth:`_count`; everything else is here.
    """

    def __init__(self, access: Access | str = Access.PROBS, *, budget: int | None = None) -> None:
        self.access = Access.parse(access)
        self.budget = budget
        self.queries = 0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def _alternative(self) -> str:
        """What to suggest besides raising the access level (appended to an AccessError)."""
        return ""

    def require(self, needed: Access, who: str = "this attack") -> None:
        if self.access < needed:
            raise AccessError(
                f"{who} needs '{needed.label}' access but the oracle gives only "
                f"'{self.access.label}'; raise --access to {needed.label}{self._alternative()}"
            )

    def _count(self, n: int) -> None:
        """Spend ``n`` queries, or raise BudgetExhaustedError without spending any."""
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExhaustedError(
                f"query budget of {self.budget} spent ({self.queries} used, {n} more asked); "
                "raise the budget or ask fewer queries"
            )
        self.queries += n


def top_k(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely classes of each row of ``p`` (ties: lower class first) and their
    scores, both ``(n, k)``: the one top-k projection of the oracle, the ``topk`` output policy
    and the gateway."""
    p = np.asarray(p)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)
    return idx, np.take_along_axis(p, idx, axis=1)


class Oracle(QueryMeter):
    """Query interface at one access level, with query counting and an optional budget.

    Example:
        >>> oracle = target.oracle("probs", budget=10_000)
        >>> p = oracle.proba(x)          # (n, classes)
        >>> oracle.queries               # n
    """

    def __init__(
        self,
        predictor: Predictor,
        access: Access | str = Access.PROBS,
        *,
        budget: int | None = None,
        top_k: int = 3,
    ) -> None:
        super().__init__(access, budget=budget)
        self.predictor = predictor
        self.top_k = top_k

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return self.predictor.n_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.predictor.input_shape)

    def _alternative(self) -> str:
        return f" or choose an attack that works with {self.access.label} access"

    def _spend(self, x: np.ndarray) -> np.ndarray:
        # queries pass through in the dtype the model computes in (a float64 scikit-learn
        # model is asked in float64), float32 for models that do not say
        x = np.asarray(x, dtype=getattr(self.predictor, "dtype", None) or np.float32)
        if x.shape[1:] != self.input_shape:
            if x.ndim == len(self.input_shape):  # a single record
                x = x[None]
            if x.shape[1:] != self.input_shape:
                raise DataError(
                    f"queries must have shape (n, {', '.join(map(str, self.input_shape))}), "
                    f"got {x.shape}"
                )
        self._count(len(x))
        return x

    # -- what an attacker can ask --------------------------------------------------------
    def labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted class per record, ``(n,)`` int64; ``-1`` where an output policy abstained.
        Needs ``label`` access."""
        p = self.predictor.predict_proba(self._spend(x))
        labels = np.argmax(p, axis=1).astype(np.int64)
        labels[p.sum(axis=1) <= 0] = ABSTAIN
        return labels

    def topk(self, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most likely classes and their probabilities, both ``(n, k)``."""
        self.require(Access.TOPK)
        k = min(k or self.top_k, self.n_classes)
        return top_k(self.predictor.predict_proba(self._spend(x)), k)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Full probability vectors, ``(n, classes)`` float64. Needs ``probs`` access."""
        self.require(Access.PROBS)
        return self.predictor.predict_proba(self._spend(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Pre-softmax scores (log-probabilities up to a constant), float64."""
        self.require(Access.LOGITS)
        return self.predictor.predict_logits(self._spend(x))

    def loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the cross-entropy loss w.r.t. the inputs. Needs ``whitebox`` access."""
        self.require(Access.WHITEBOX)
        grad = getattr(self.predictor, "loss_gradient", None)
        if grad is None:
            raise AccessError(
                "this model gives no input gradients (white-box access needs a PyTorch model)"
            )
        return grad(self._spend(x), np.asarray(y, dtype=np.int64))


# -- adapters ------------------------------------------------------------------------------


class CallablePredictor:
    """Wraps ``fn(x) -> probabilities``; logits are taken as log-probabilities."""

    def __init__(self, fn: Callable[[np.ndarray], Any], n_classes: int, input_shape) -> None:
        self.fn = fn
        self.n_classes = int(n_classes)
        self.input_shape = tuple(input_shape)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(self.fn(x), dtype=np.float64)
        if p.shape != (len(x), self.n_classes):
            raise DataError(
                f"the model returned shape {p.shape}; expected ({len(x)}, {self.n_classes}) "
                "class probabilities"
            )
        return p

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(x), 1e-300, None))


class SklearnPredictor(CallablePredictor):
    """A fitted scikit-learn classifier with ``predict_proba``; inputs are flattened and passed
    in float64, the dtype scikit-learn computes in."""

    dtype = np.float64

    def __init__(self, estimator: Any, input_shape) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"{type(estimator).__name__} has no predict_proba; privguard needs a classifier "
                "that returns class probabilities"
            )
        self.estimator = estimator
        super().__init__(
            lambda x: estimator.predict_proba(x.reshape(len(x), -1)),
            len(estimator.classes_),
            input_shape,
        )

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_log_proba"):
            return np.asarray(
                self.estimator.predict_log_proba(x.reshape(len(x), -1)), dtype=np.float64
            )
        return super().predict_logits(x)


def as_predictor(model: Any, *, input_shape=None, n_classes: int | None = None) -> Predictor:
    """Adapt a PyTorch module, scikit-learn classifier or callable to the :class:`Predictor`
    interface. ``input_shape`` is the shape of one record; ``n_classes`` is needed for
    callables and PyTorch modules whose output size cannot be read off."""
    if isinstance(model, Predictor):
        return model
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            from privguard.models.torch_predictor import TorchPredictor

            if input_shape is None or n_classes is None:
                raise ConfigError("a PyTorch module needs input_shape and n_classes")
            return TorchPredictor(model, input_shape, n_classes)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if hasattr(model, "predict_proba"):
        if input_shape is None:
            n_in = getattr(model, "n_features_in_", None)
            if n_in is None:
                raise ConfigError("pass input_shape for this estimator")
            input_shape = (int(n_in),)
        return SklearnPredictor(model, input_shape)
    if callable(model):
        if input_shape is None or n_classes is None:
            raise ConfigError("a callable model needs input_shape and n_classes")
        return CallablePredictor(model, n_classes, input_shape)
    raise ConfigError(
        f"cannot use a {type(model).__name__} as a model: give a PyTorch module, a scikit-learn "
        "classifier with predict_proba, or a callable returning probabilities"
    )
