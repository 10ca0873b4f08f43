"""Reference-model attack (Carlini et al., USENIX Security 2021; Mireshghallah et al., EMNLP
2022): a document that is simply easy has a low loss under any model; one the target was
fine-tuned on has a lower loss under the target than under the base model it came from. Score
= NLL_reference(x) − NLL_target(x) (mean per token, higher = member). The reference is the
attacker's own copy of the public base model (``--reference hf:DIR`` or ``smollm2``); it is
queried directly, not through the target's oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.membership.documents import (
    DocumentAttack,
    DocumentKnowledge,
    mean_logprob,
    reference_stats,
    target_stats,
)
from privguard.attacks.registry import register
from privguard.oracle import Access


@register
class TextReference(DocumentAttack):
    name = "text-reference"
    family = "membership"
    needs = Access.PROBS
    kinds = ("documents",)
    paper = (
        "Carlini et al., USENIX Security 2021; Mireshghallah et al., Quantifying Privacy "
        "Risks of Masked Language Models Using Membership Inference Attacks, EMNLP 2022"
    )
    description = "Reference model's loss minus the target's: what fine-tuning learned."

    @classmethod
    def unsuitable(cls, knowledge: Any) -> str | None:
        why = super().unsuitable(knowledge)
        if why is None and getattr(knowledge, "reference", None) is None:
            return (
                "text-reference needs the base model the target was fine-tuned from: pass "
                "--reference hf:DIR (or smollm2)"
            )
        return why

    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        target = mean_logprob(target_stats(oracle, knowledge))
        return target - mean_logprob(reference_stats(knowledge))
