"""Min-K% Prob (Shi et al., ICLR 2024): an unseen document has a few very unlikely tokens; a
member has fewer. Score = mean of the k% smallest token log-probabilities log p(x_t|x_<t)
(k = 20% the paper's default; at least one token), higher = member."""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.base import Setting
from privguard.attacks.membership.documents import (
    DocumentAttack,
    DocumentKnowledge,
    lowest_mean,
    target_stats,
)
from privguard.attacks.registry import register
from privguard.oracle import Access


@register
class MinK(DocumentAttack):
    name = "min-k"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = "Shi et al., Detecting Pretraining Data from Large Language Models, ICLR 2024"
    description = "Mean log-probability of the k% least likely tokens (Min-K% Prob)."
    settings = (Setting("k", float, 0.2, "share of the least likely tokens averaged", 0.01, 1.0),)

    def __init__(self, *, k: float = 0.2) -> None:
        self.k = k

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        return np.array([lowest_mean(s[0], self.k) for s in target_stats(oracle, knowledge)])
