"""Loss attack on documents (Yeom et al., CSF 2018): a language model fits the documents it was
fine-tuned on better, so the score is the mean token log-probability (minus the loss)."""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.membership.documents import (
    DocumentAttack,
    DocumentKnowledge,
    mean_logprob,
    target_stats,
)
from privguard.attacks.registry import register
from privguard.oracle import Access


@register
class TextLoss(DocumentAttack):
    name = "text-loss"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = "Yeom et al., Privacy Risk in Machine Learning, CSF 2018"
    description = "Members have a lower mean token loss: score = mean log p(x_t | x_<t)."

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        return mean_logprob(target_stats(oracle, knowledge))
