"""What every attack is: settings in the constructor, work in ``run``, guesses out.

An attack is given an :class:`~privguard.oracle.Oracle` and the attacker's
:class:`Knowledge`; it returns its guesses and never sees ground truth (which records are
members, the true record, the real model). An evaluator in ``privguard.audit`` scores the
guesses against the truth the auditor holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from privguard.errors import ConfigError
from privguard.oracle import Access, QueryMeter

Progress = Callable[[str, int, int], None]


@dataclass
class Compute:
    """Where an attack's heavy, independent work (shadow and reference models) runs.

    Attributes:
        n_jobs: local worker processes (joblib's loky backend); 1 runs in-process.
        scheduler: address of a Dask distributed scheduler (``tcp://host:8786``) or a
            ``distributed.Client``; when set, joblib's ``dask`` backend sends the jobs there.
        cache_dir: where trained reference models are kept between runs (keyed by a hash of
            data, split, recipe, seed and index); ``None`` disables the cache.
        stacked: train reference models of small PyTorch recipes as one stacked model per
            worker (:mod:`privguard.models.stacked`); ``False`` trains one at a time.
        device: ``cpu``, ``cuda`` or ``auto`` for reference-model training and the inversion
            prior (:mod:`privguard.attacks.inversion.generative`).
    """

    n_jobs: int = 1
    scheduler: Any = None
    cache_dir: str | None = None
    #: train reference models stacked (:mod:`privguard.models.stacked`) when the recipe allows
    stacked: bool = True
    #: where reference models train: ``cpu``, ``cuda`` or ``auto``
    device: str = "cpu"


class SharedWork:
    """The once-per-audit cache of a knowledge record (:class:`Knowledge`, the text and
    document knowledges); the record declares the ``_cache`` dict field itself."""

    _cache: dict[str, Any]

    def has_cached(self, key: str) -> bool:
        return key in self._cache

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """Work several attacks share (a shadow model, say), done once per audit."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


@dataclass
class Knowledge(SharedWork):
    """What the attacker knows besides the oracle.

    Attributes:
        aux_x, aux_y: auxiliary records from the same population (not members, not evaluated).
        candidates_x, candidates_y: records whose membership is to be decided (membership
            attacks); their order carries no information.
        recipe: how the target was trained (``fit(x, y, seed=...) -> predictor``), or ``None``
            when unknown; shadow- and reference-model attacks need it.
        bounds: ``(low, high)`` valid input range.
        seed: seeds every random choice the attack makes.
        kind: ``"image"`` or ``"tabular"`` (what the inputs are).
        class_names: the target's class names, index = label.
        target_classes: the classes an inversion attack should reconstruct (``None``: all).
        sensitive: the hidden attribute of an attribute-inference audit and its encoding.
        partial_x, partial_y: records whose sensitive attribute is hidden (its columns are NaN,
            so the model cannot be queried until the attacker fills them in) with their labels.
        compute: where shadow / reference model training runs, and its cache.
    """

    aux_x: np.ndarray
    aux_y: np.ndarray
    candidates_x: np.ndarray | None = None
    candidates_y: np.ndarray | None = None
    recipe: Any = None
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    kind: str = "image"
    class_names: list[str] = field(default_factory=list)
    target_classes: list[int] | None = None
    sensitive: SensitiveAttribute | None = None
    partial_x: np.ndarray | None = None
    partial_y: np.ndarray | None = None
    compute: Compute = field(default_factory=Compute)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class MembershipGuesses:
    """A membership attack's output for the candidates, in the candidates' order.

    ``scores``: higher means "more likely a member". ``decisions``: the attacker's own
    member/non-member call (threshold chosen without ground truth).
    """

    scores: np.ndarray
    decisions: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class InversionGuesses:
    """Reconstructions, one per attacked class: ``reconstructions`` ``(n, *input_shape)`` in the
    input bounds, ``labels`` ``(n,)`` the class each is meant to show. ``queries_per_class`` is
    filled by black-box attacks."""

    reconstructions: np.ndarray
    labels: np.ndarray
    notes: list[str] = field(default_factory=list)
    queries_per_class: list[int] = field(default_factory=list)


@dataclass
class AttributeGuesses:
    """Guessed value index of the sensitive attribute for each partial record (in
    ``Knowledge.partial_x`` order), and the no-model baseline's guesses for the same records
    (the best guess from the auxiliary data alone)."""

    values: np.ndarray
    baseline: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class ExtractionGuesses:
    """A stolen model and how it was obtained.

    ``model`` is the substitute as a predictor (``predict_proba``, ``predict_logits`` and, being
    a PyTorch module, ``loss_gradient``); ``architecture`` its ``build_model`` description, so it
    can be saved as a model directory. ``queries`` is what the attack spent. ``checkpoints``
    are ``(queries spent, substitute then)`` pairs in query order: the evaluator scores each on
    its own data for the fidelity-vs-queries curve, so the attack never sees evaluation data.
    ``parameters`` (equation solving only): the recovered logit differences to class 0,
    ``(k - 1, d + 1)``, weights then bias. ``outputs``: what the attack learned from
    (``probs``, ``topk`` or ``labels``).
    """

    model: Any
    architecture: dict[str, Any]
    queries: int
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)
    parameters: np.ndarray | None = None
    outputs: str = "probs"
    notes: list[str] = field(default_factory=list)


@dataclass
class SensitiveAttribute:
    """A sensitive field as it appears in the model's input.

    ``columns`` are positions in the flattened record; ``codes[v]`` is what those columns hold
    when the field has value ``values[v]`` (a one-hot row for a categorical field, the scaled
    number for a numeric one).
    """

    name: str
    columns: list[int]
    values: list[str]
    codes: np.ndarray

    def fill(self, x: np.ndarray, value: int | np.ndarray) -> np.ndarray:
        """A copy of flattened records ``x`` ``(n, d)`` with the field set to ``value`` (one index
        for all records, or one per record)."""
        out = np.array(x, dtype=np.float32, copy=True)
        out[:, self.columns] = self.codes[value]
        return out

    def decode(self, x: np.ndarray) -> np.ndarray:
        """The value index each flattened record holds (nearest code)."""
        cols = np.asarray(x, dtype=np.float64)[:, self.columns]
        d = ((cols[:, None, :] - self.codes[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)


@dataclass(frozen=True)
class Setting:
    """One setting an attack declares: settable from ``privguard audit --set NAME.KEY=VALUE``,
    a plan file's ``[attacks.NAME]`` table and ``privguard.audit(settings={NAME: {KEY: ...}})``.

    ``type`` is ``int``, ``float``, ``bool`` or ``str``; ``low`` / ``high`` bound numbers
    (inclusive), ``choices`` lists the allowed strings. The default is the constructor's.
    """

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def span(self) -> str:
        """The allowed range, ``"4..1024"`` (``""`` when unbounded)."""
        if self.low is None and self.high is None:
            return ""
        lo = "" if self.low is None else f"{self.low:g}"
        hi = "" if self.high is None else f"{self.high:g}"
        return f"{lo}..{hi}"

    def describe(self) -> str:
        """``n_reference (int, 2..256, default 16): ...`` for error messages and listings."""
        kind = self.type.__name__
        if self.choices:
            kind += ": " + " | ".join(self.choices)
        elif self.span():
            kind += f", {self.span()}"
        return f"{self.name} ({kind}, default {self.default!r}): {self.help}"

    def _kind(self) -> str:
        kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        return kinds.get(self.type, self.type.__name__)

    def parse(self, value: Any, who: str) -> Any:
        """``value`` checked (and converted from a string, for ``--set``) or a ConfigError
        naming the attack, the setting and what it takes."""
        v = value
        if isinstance(v, str) and self.type is not str:
            text = v.strip()
            try:
                if self.type is bool:
                    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    v = text.lower() in ("true", "1", "yes")
                else:
                    v = self.type(text)
            except ValueError:
                raise ConfigError(
                    f"{who}: {self.name} takes {self._kind()}, not {value!r}"
                ) from None
        ok = isinstance(v, self.type) and not (self.type is not bool and isinstance(v, bool))
        if self.type is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise ConfigError(f"{who}: {self.name} takes {self._kind()}, not {value!r}")
        if self.choices and v not in self.choices:
            raise ConfigError(
                f"{who}: {self.name} is one of {', '.join(self.choices)}, not {value!r}"
            )
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            raise ConfigError(f"{who}: {self.name} must be in {self.span()}, not {value!r}")
        return v


class KnowledgeLike(Protocol):
    """What every knowledge object has, classifier (:class:`Knowledge`) or text."""

    seed: int
    kind: str


OracleT = TypeVar("OracleT", bound=QueryMeter)
KnowledgeT = TypeVar("KnowledgeT", bound=KnowledgeLike)


class Attack(ABC, Generic[OracleT, KnowledgeT]):
    """Base class. Subclasses set the class attributes and implement :meth:`run`.

    Classifier attacks take an :class:`~privguard.oracle.Oracle` and :class:`Knowledge`
    (``Attack[Oracle, Knowledge]``, the default when unparameterised); text attacks a
    ``TextOracle`` and ``TextKnowledge``. ``settings`` declares what the constructor takes
    from the outside (:class:`Setting`); ``alias`` is a name that means this attack on data of
    its ``kinds`` (``extraction`` on a text model is ``extract``).
    """

    name: ClassVar[str]
    family: ClassVar[str]
    needs: ClassVar[Access]
    paper: ClassVar[str]
    description: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")
    settings: ClassVar[tuple[Setting, ...]] = ()
    alias: ClassVar[str | None] = None

    @classmethod
    def unsuitable(cls, knowledge: KnowledgeLike) -> str | None:
        """Why this attack does not apply to the audited data, or ``None`` when it does."""
        if knowledge.kind not in cls.kinds:
            return f"the {cls.name} attack needs {' or '.join(cls.kinds)} data"
        return None

    @classmethod
    def configure(cls, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """``values`` checked against the declared settings (strings from ``--set`` converted);
        an unknown key or a bad value is a ConfigError naming the valid ones."""
        declared = {s.name: s for s in cls.settings}
        out: dict[str, Any] = {}
        for key, value in (values or {}).items():
            k = str(key).strip().replace("-", "_")
            if k not in declared:
                valid = "; ".join(s.describe() for s in cls.settings) or "none"
                raise ConfigError(
                    f"the {cls.name} attack has no setting {key!r}; its settings: {valid}"
                )
            out[k] = declared[k].parse(value, f"the {cls.name} attack")
        return out

    @classmethod
    def create(cls, values: Mapping[str, Any] | None = None) -> Attack[OracleT, KnowledgeT]:
        """An instance with the checked ``values`` applied over the constructor's defaults."""
        return cls(**cls.configure(values))

    @abstractmethod
    def run(self, oracle: OracleT, knowledge: KnowledgeT, progress: Progress | None = None) -> Any:
        """Attack through ``oracle`` with ``knowledge``; return the family's guesses."""

    def check_settings(self, checks: list[tuple[bool, str]]) -> None:
        """Raise a ConfigError naming this attack for the first ``(ok, message)`` that fails."""
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{self.name}: {message}")

    def check_access(self, oracle: QueryMeter) -> None:
        oracle.require(self.needs, f"the {self.name} attack")
