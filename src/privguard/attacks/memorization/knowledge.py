"""What a memorization attacker knows besides the text oracle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privguard.attacks.base import Compute, SharedWork
from privguard.data.corpus import CanaryFormat


@dataclass
class TextKnowledge(SharedWork):
    """The attacker's side of a memorization audit.

    Attributes:
        formats: the canary formats whose candidate spaces are ranked (never which canaries were
            inserted: that is the evaluator's truth).
        public_lines: public text from the same population (other people's records, public
            documents), for the extraction attack's reference model.
        extrapolate: whether exposure may be estimated from a skew-normal fit when a candidate
            space is too large to rank exactly.
        seed: seeds every random choice of the attacks.
    """

    formats: list[CanaryFormat]
    public_lines: list[str] = field(default_factory=list)
    extrapolate: bool = False
    seed: int = 0
    kind: str = "text"
    compute: Compute = field(default_factory=Compute)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
