"""The adapter interface: how a model the user already trained answers privguard's queries.

A :class:`ModelAdapter` wraps a user's fitted model (a scikit-learn estimator, a PyTorch module,
an ONNX session, ...) in the model's *own* input representation: ``predict_proba`` takes what
the model takes (a NumPy array, or a pandas DataFrame of raw columns for a pipeline that does
its own encoding) and returns class probabilities in the order of :attr:`ModelAdapter.classes`.
An adapter never refits, mutates or re-encodes the model it wraps.

How reference models (LiRA, RMIA, shadow models) are trained "like the target" is the adapter's
:meth:`ModelAdapter.recipe`: a :class:`Recipe` whose ``fit(x, y, *, seed)`` takes records in the
same representation and labels from :attr:`ModelAdapter.classes`, and returns a new predictor
(never the user's object). Its ``kind`` says where it comes from: ``clone`` (a scikit-learn
clone), ``train_fn`` (a user's training hook), ``recipe-file`` (``--recipe recipe.toml``) or
``proxy`` (a model privguard chose; weaker than the target's own recipe, and the report says so).

Two registries let adapters for more frameworks be added as files without editing this one:

- :func:`register_adapter` ``(predicate, factory)``: :func:`adapt` tries them in priority order
  on a Python object;
- :func:`register_loader` ``(match, load)``: :func:`load_model_file` tries them on a path given
  to ``privguard audit --model`` (by suffix or by sniffing the file); a loader never runs code
  from the file.

Modules in ``privguard.models.adapters`` are imported on first use, so a module that calls
``register_adapter`` / ``register_loader`` at import time is discovered automatically.

Example:
    >>> adapter = adapt(fitted_pipeline)
    >>> adapter.predict_proba(df.drop(columns="income"))     # (n, classes)
    >>> adapter.recipe().kind
    'clone'
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError, ModelError

RECIPE_KINDS = ("clone", "train_fn", "recipe-file", "proxy")


class Recipe(ABC):
    """How to train another model like the target (known to a shadow-model attacker).

    Attributes:
        kind: ``clone``, ``train_fn``, ``recipe-file`` or ``proxy`` (see the module docstring).
        description: one sentence for the report: how the reference models were trained.
    """

    kind: str = "clone"
    description: str = ""

    @abstractmethod
    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> Any:
        """Train a fresh model on ``x`` (the target's input representation) and ``y`` (labels
        from the target's ``classes``); return a predictor (``predict_proba`` / ``predict_logits``
        in the target's class order). Never touches the user's model."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description}


class ModelAdapter(ABC):
    """A user's fitted model, queried in its own input representation.

    Satisfies :class:`privguard.oracle.Predictor`.

    Attributes:
        n_classes: width of ``predict_proba``'s output.
        input_shape: shape of one record as the model takes it (``(n_columns,)`` for a model
            on a DataFrame).
        dtype: the NumPy dtype the model computes in (``float64`` for scikit-learn); the oracle
            passes queries through in this dtype instead of casting them to float32.
        classes: the model's class labels, index = output column (``classes_`` for
            scikit-learn; ``0..n_classes-1`` when the model does not name them).
        takes_frame: ``True`` when the model wants a pandas DataFrame of raw columns.
        columns: the column names a DataFrame model was fitted on (``None`` if unknown).
        framework: short name for the report (``sklearn``, ``torch``, ``onnx``, ...).
    """

    n_classes: int
    input_shape: tuple[int, ...]
    dtype: Any = np.float32
    classes: list[Any]
    takes_frame: bool = False
    columns: list[str] | None = None
    framework: str = "model"

    @abstractmethod
    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities, float64 ``(n, n_classes)``."""

    def predict_logits(self, x: Any) -> np.ndarray:
        """Pre-softmax scores; by default log-probabilities (logits up to a constant)."""
        return np.log(np.clip(self.predict_proba(x), 1e-300, None))

    @abstractmethod
    def recipe(self) -> Recipe | None:
        """How to train reference models like this one, or ``None`` when unknown."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the report says about the model (framework, type, parameters, ...)."""

    @abstractmethod
    def fingerprint(self) -> bytes:
        """A byte dump of the parameters and fitted state: equal before and after an audit."""


# -- registries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    priority: int
    name: str
    match: Callable[..., bool]
    make: Callable[..., ModelAdapter]


_ADAPTERS: list[_Entry] = []
_LOADERS: list[_Entry] = []
_discovered = False


def register_adapter(
    predicate: Callable[[Any], bool],
    factory: Callable[..., ModelAdapter],
    *,
    name: str | None = None,
    priority: int = 100,
) -> None:
    """Make :func:`adapt` turn objects for which ``predicate(model)`` holds into
    ``factory(model, **options)``. Lower ``priority`` is tried first (catch-alls such as a
    plain callable should use a high number). Registering the same ``name`` again replaces it."""
    _add(_ADAPTERS, _Entry(priority, name or factory.__qualname__, predicate, factory))


def register_loader(
    match: Callable[[Path], bool],
    load: Callable[..., ModelAdapter],
    *,
    name: str | None = None,
    priority: int = 100,
) -> None:
    """Make :func:`load_model_file` load paths for which ``match(path)`` holds (a suffix test,
    or a look at the file's first bytes) with ``load(path, **options)``. ``load`` must never
    run code from the file (no pickle, no ``trust_remote_code``)."""
    _add(_LOADERS, _Entry(priority, name or load.__qualname__, match, load))


def _add(registry: list[_Entry], entry: _Entry) -> None:
    registry[:] = [e for e in registry if e.name != entry.name]
    registry.append(entry)
    registry.sort(key=lambda e: e.priority)


def discover() -> None:
    """Import every module of this package once, so their registrations take effect."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("privguard.models.adapters")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"privguard.models.adapters.{info.name}")


def adapt(model: Any, **options: Any) -> ModelAdapter:
    """The :class:`ModelAdapter` for a user's fitted model (an adapter is returned as is).

    ``options`` go to the adapter's factory (e.g. ``trusted=`` types for a ``.skops`` path,
    ``train_fn=`` for a PyTorch module). A path (``str`` / ``Path``) is loaded through
    :func:`load_model_file`.

    Raises:
        ConfigError: no registered adapter knows this kind of object.
    """
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, str | Path):
        return load_model_file(model, **options)
    discover()
    for entry in _ADAPTERS:
        if entry.match(model):
            return entry.make(model, **options)
    raise ConfigError(
        f"privguard cannot audit a {type(model).__module__}.{type(model).__qualname__}: give a "
        "fitted scikit-learn estimator or Pipeline, a PyTorch module, an ONNX session, or a "
        "callable returning class probabilities (see docs/byom.md)"
    )


def load_model_file(path: str | Path, **options: Any) -> ModelAdapter:
    """Load a model file through the registered loaders (``.skops`` for scikit-learn, more as
    adapter modules register them), never running code from the file.

    Raises:
        ModelError: the path does not exist, or no loader knows its kind.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"no model at {p}; give a model file (e.g. model.skops) or directory")
    discover()
    for entry in _LOADERS:
        if entry.match(p):
            return entry.make(p, **options)
    kinds = ", ".join(e.name for e in _LOADERS) or "none"
    raise ModelError(
        f"{p} is not a model file privguard can load (known kinds: {kinds}); give a privguard "
        "model directory or one of those"
    )


def registered() -> dict[str, list[str]]:
    """Names of the registered adapters and loaders, in the order they are tried."""
    discover()
    return {"adapters": [e.name for e in _ADAPTERS], "loaders": [e.name for e in _LOADERS]}


def check_proba(p: Any, n: int, n_classes: int, *, who: str = "the model") -> np.ndarray:
    """A model's answer as float64 ``(n, n_classes)``; :class:`DataError` for a wrong width or
    NaN / infinite values (every adapter checks its answers through this one place)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise DataError(f"{who} returned shape {p.shape} for {n} records; expected (n, classes)")
    if p.shape[1] != n_classes:
        raise DataError(
            f"{who} returned {p.shape[1]} outputs per record but {n_classes} classes are "
            "expected; check that the labels match the model's classes"
        )
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).any(axis=1).sum())
        raise DataError(
            f"{who} returned NaN or infinite outputs for {bad} of {n} records; check the model "
            "and the input it is given"
        )
    return p


def class_labels(classes: Sequence[Any]) -> list[Any]:
    """Plain Python values of a model's class labels (NumPy scalars converted)."""
    return [c.item() if isinstance(c, np.generic) else c for c in classes]
