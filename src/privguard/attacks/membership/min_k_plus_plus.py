"""Min-K%++ (Zhang et al., ICLR 2025): training documents sit at local maxima of the model's
likelihood along each token, so a token's log-probability is compared with what the model
expects at that position. Per token z_t = (log p(x_t|x_<t) − μ_t) / σ_t with
μ_t = Σ_v p(v|x_<t) log p(v|x_<t) and σ_t² = Σ_v p(v|x_<t) (log p(v|x_<t) − μ_t)² over the
whole vocabulary; score = mean of the k% smallest z_t (higher = member)."""

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
class MinKPlusPlus(DocumentAttack):
    name = "min-k-plus-plus"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = (
        "Zhang et al., Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large "
        "Language Models, ICLR 2025"
    )
    description = "Min-K% on tokens normalised by the next-token distribution's mean and spread."
    settings = (Setting("k", float, 0.2, "share of lowest normalised tokens averaged", 0.01, 1.0),)

    def __init__(self, *, k: float = 0.2) -> None:
        self.k = k

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        out = []
        for s in target_stats(oracle, knowledge):
            z = (s[0] - s[1]) / np.maximum(s[2], 1e-12)
            out.append(lowest_mean(z, self.k))
        return np.array(out, dtype=np.float64)
