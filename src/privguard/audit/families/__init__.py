"""Attack families as records: what the engine, the report, the CLI, risk and the sweep need
to know about a family, in one place.

Each module of this package defines one family's evaluator and registers its :class:`Family`
with :func:`register_family`; :func:`family` finds every module here on first use (a
``pkgutil`` walk), so a new family is its attacks' package (``attacks/<family>/``) and one
module here — nothing else branches on family names.

Example:
    >>> from privguard.audit.families import family
    >>> fam = family("membership")
    >>> fam.risk({"auc": 0.9, "advantage": 0.5})
    'high'
    >>> [m for m, _ in fam.key_metrics][:2]
    ['auc', 'tpr_at_fpr_0.01']
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privguard.errors import ConfigError

Metrics = dict[str, float]
Scored = tuple[Metrics, dict[str, Any], list[str]]  # metrics, curves, notes


class Evaluator(ABC):
    """Scores one family's guesses against the truth only the auditor holds.

    Built once per audit (by :attr:`Family.evaluator`, on the family's first scored attack).
    The engine calls :meth:`evaluate` after each attack, :meth:`keep` with its result (files
    for ``OUT/artifacts/``, notes on the result), and :meth:`finish` once all attacks ran
    (files and ``summary`` entries over all of them).
    """

    @abstractmethod
    def evaluate(self, cls: type, guesses: Any) -> Scored:
        """Metrics, curves and notes of one attack's guesses."""

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        """Artifacts of one scored attack (``{file name: {array name: array}}``)."""
        return {}

    def finish(self, results: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Artifacts and summary entries over all of the family's scored attacks."""
        return {}, {}


@dataclass(frozen=True)
class Family:
    """One attack family.

    Attributes:
        name: as attacks set ``family`` (``"membership"``).
        guesses: the type(s) its attacks return.
        evaluator: ``evaluator(truth) -> Evaluator``; ``truth`` is the audit's
            :mod:`privguard.audit.truth` object.
        risk: ``risk(metrics) -> "low" | "medium" | "high"`` (thresholds in docs/metrics.md).
        assessment: ``assessment(metrics) -> (level, reason)``: the same rule with the metric
            and threshold that set the level, in words (``AttackResult.risk_reason``); ``None``:
            the report gives a generic reason.
        key_metrics: ``(metric, short label)`` pairs that sum an attack of the family up, most
            telling first: the report shows the first two present, the CLI's summary table the
            first few (:meth:`columns`).
        note: how to read the key metrics (the CLI table's title).
        artifacts: the files it writes under ``OUT/artifacts/`` (patterns, for the docs).
        needs_member_truth: whether scoring needs to know who the model was trained on (an
            endpoint audit without the model directory cannot score it).
        leaks_training_data: whether its success means training data leaks (the sweep's
            risk); extraction copies the model instead.
        unsuitable: ``unsuitable(truth, attack_class)`` -> why the truth held cannot score that
            attack (``None``: it can), checked before the attack runs.
    """

    name: str
    guesses: type | tuple[type, ...]
    evaluator: Callable[[Any], Evaluator]
    risk: Callable[[Mapping[str, float]], str]
    key_metrics: tuple[tuple[str, str], ...]
    assessment: Callable[[Mapping[str, float]], tuple[str, str]] | None = None
    note: str = ""
    artifacts: tuple[str, ...] = ()
    needs_member_truth: bool = True
    leaks_training_data: bool = True
    unsuitable: Callable[[Any, type], str | None] | None = None

    def columns(
        self, metrics: Sequence[Mapping[str, Any]], limit: int = 4
    ) -> list[tuple[str, str]]:
        """The key metrics present in any of ``metrics`` (one mapping per attack), at most
        ``limit``: the columns of a summary table of these attacks."""
        present = [(m, label) for m, label in self.key_metrics if any(m in x for x in metrics)]
        if not present and metrics:
            present = [(k, k) for k in list(metrics[0])[:3]]
        return present[:limit]


FAMILIES: dict[str, Family] = {}
_discovered = False


def register_family(fam: Family) -> Family:
    """Make ``fam`` known under its name (called by each module of this package)."""
    FAMILIES[fam.name] = fam
    return fam


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)


def family(name: str) -> Family:
    """The record of family ``name``; a ConfigError when no module of this package defines it."""
    _discover()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"no evaluator for the {name} family: add privguard/audit/families/{name}.py "
            f"(known: {', '.join(sorted(FAMILIES))})"
        ) from None


def all_families() -> list[Family]:
    _discover()
    return list(FAMILIES.values())


def key_metrics(family_name: str) -> tuple[tuple[str, str], ...]:
    """``(metric, short label)`` pairs of a family (empty for an unknown one)."""
    _discover()
    fam = FAMILIES.get(family_name)
    return fam.key_metrics if fam else ()


__all__ = [
    "Evaluator",
    "FAMILIES",
    "Family",
    "Scored",
    "all_families",
    "family",
    "key_metrics",
    "register_family",
]
