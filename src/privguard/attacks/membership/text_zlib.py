"""zlib attack (Carlini et al., USENIX Security 2021): a text that is merely simple (repetitive,
short) has a low loss whether or not it was trained on; dividing by its zlib entropy, the
compressed length in bytes of its UTF-8, calibrates for that. Score = −(mean NLL) / zlib bytes
(higher = member)."""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.membership.documents import (
    DocumentAttack,
    DocumentKnowledge,
    mean_logprob,
    target_stats,
    zlib_bytes,
)
from privguard.attacks.registry import register
from privguard.oracle import Access


@register
class TextZlib(DocumentAttack):
    name = "text-zlib"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = (
        "Carlini et al., Extracting Training Data from Large Language Models, USENIX Security 2021"
    )
    description = "Loss over zlib entropy: score = mean log p(x_t | x_<t) / zlib-compressed bytes."

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        lp = mean_logprob(target_stats(oracle, knowledge))
        return lp / np.array([zlib_bytes(d) for d in knowledge.candidates], dtype=np.float64)
