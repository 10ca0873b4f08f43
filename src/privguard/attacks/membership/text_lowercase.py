"""Lowercase attack (Carlini et al., USENIX Security 2021): a model that memorized a document
knows its exact casing, so lowercasing it costs more loss than on a text it never saw. Score =
mean NLL of the lowercased document / mean NLL of the document (higher = member); two passes
of the target (the document, its lowercase), each cached."""

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
class TextLowercase(DocumentAttack):
    name = "text-lowercase"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = (
        "Carlini et al., Extracting Training Data from Large Language Models, USENIX Security 2021"
    )
    description = "Loss of the lowercased text over the loss of the text (memorized casing)."

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        nll = -mean_logprob(target_stats(oracle, knowledge))
        low = -mean_logprob(target_stats(oracle, knowledge, lower=True))
        return low / np.maximum(nll, 1e-12)
