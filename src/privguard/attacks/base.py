"""What every attack is: settings in the constructor, work in ``run``, guesses out.

An attack is given an :class:`~privguard.oracle.Oracle` and the attacker's
:class:`Knowledge`; it returns its guesses and never sees ground truth (which records are
members, the true record, the real model). An evaluator in ``privguard.audit`` scores the
guesses against the truth the auditor holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privguard.oracle import Access, Oracle

Progress = Callable[[str, int, int], None]


@dataclass
class Knowledge:
    """What the attacker knows besides the oracle.

    Attributes:
        aux_x, aux_y: auxiliary records from the same population (not members, not evaluated).
        candidates_x, candidates_y: records whose membership is to be decided (membership
            attacks); their order carries no information.
        recipe: how the target was trained (``fit(x, y, seed=...) -> predictor``), or ``None``
            when unknown; shadow- and reference-model attacks need it.
        bounds: ``(low, high)`` valid input range.
        seed: seeds every random choice the attack makes.
    """

    aux_x: np.ndarray
    aux_y: np.ndarray
    candidates_x: np.ndarray | None = None
    candidates_y: np.ndarray | None = None
    recipe: Any = None
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """Work several attacks share (a shadow model, say), done once per audit."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


@dataclass
class MembershipGuesses:
    """A membership attack's output for the candidates, in the candidates' order.

    ``scores``: higher means "more likely a member". ``decisions``: the attacker's own
    member/non-member call (threshold chosen without ground truth).
    """

    scores: np.ndarray
    decisions: np.ndarray
    notes: list[str] = field(default_factory=list)


class Attack:
    """Base class. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    family: ClassVar[str]
    needs: ClassVar[Access]
    paper: ClassVar[str]
    description: ClassVar[str] = ""

    def run(self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None) -> Any:
        raise NotImplementedError  # pragma: no cover - every registered attack overrides it

    def check_access(self, oracle: Oracle) -> None:
        oracle.require(self.needs, f"the {self.name} attack")
