"""What a document-membership attacker knows, and the token statistics its attacks share.

The attacker holds candidate documents (members and non-members of a language model's
fine-tuning set, shuffled; never which is which), optionally the public base model the target
was fine-tuned from (the reference), and queries the target through a
:class:`~privguard.attacks.memorization.oracle.TextOracle`. Every score comes from one batched
float64 forward pass per model over the candidates (token log-probabilities and Min-K%++'s
per-position mean and standard deviation), computed once and shared by all the attacks
(:func:`target_stats`, :func:`reference_stats`). Documents longer than ``max_tokens`` tokens are
scored in consecutive windows and stay one record.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privguard.attacks.base import Attack, Compute, MembershipGuesses, SharedWork
from privguard.oracle import Access


@dataclass
class DocumentKnowledge(SharedWork):
    """The attacker's side of a document membership audit.

    Attributes:
        candidates: the documents to score, members and non-members shuffled together.
        reference: the public base model (a text model with ``token_stats``), or ``None``.
        max_tokens: tokens per scored window (longer documents are windowed, one record).
        seed: seeds every random choice.
    """

    candidates: list[str]
    reference: Any = None
    max_tokens: int = 128
    seed: int = 0
    kind: str = "documents"
    compute: Compute = field(default_factory=Compute)
    progress: Any = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)


def target_stats(oracle: Any, knowledge: DocumentKnowledge, *, lower: bool = False) -> list:
    """The target's per-token statistics of every candidate (``(3, n_tokens)`` each), from one
    cached pass (``lower``: of the lowercased documents, log-probabilities alone,
    ``(1, n_tokens)``: text-lowercase needs no more)."""
    docs = [d.lower() for d in knowledge.candidates] if lower else knowledge.candidates
    key = "target-stats-lower" if lower else "target-stats"
    label = "scoring documents: target model" + (", lowercased" if lower else "")
    return knowledge.cached(
        key,
        lambda: oracle.token_stats(
            docs,
            max_tokens=knowledge.max_tokens,
            progress=knowledge.progress,
            label=label,
            moments=not lower,
        ),
    )


def reference_stats(knowledge: DocumentKnowledge) -> list:
    """The reference (base) model's token log-probabilities of every candidate
    (``(1, n_tokens)`` each: text-reference needs no more), cached."""
    ref = knowledge.reference
    return knowledge.cached(
        "reference-stats",
        lambda: ref.token_stats(
            knowledge.candidates,
            max_tokens=knowledge.max_tokens,
            progress=knowledge.progress,
            label="scoring documents: reference model",
            moments=False,
        ),
    )


def mean_logprob(stats: list) -> np.ndarray:
    """Mean token log-probability of each document (−loss), float64."""
    return np.array([s[0].mean() for s in stats], dtype=np.float64)


def lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``k`` share (0–1] of smallest values (at least one)."""
    n = max(1, int(len(values) * k))
    return float(np.sort(values)[:n].mean())


def zlib_bytes(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021's zlib entropy)."""
    return len(zlib.compress(text.encode("utf-8")))


class DocumentAttack(Attack[Any, DocumentKnowledge]):
    """Shared declaration of the document membership attacks: a text model's token scores."""

    family = "membership"
    needs = Access.PROBS
    kinds: ClassVar[tuple[str, ...]] = ("documents",)

    @abstractmethod
    def scores(self, oracle: Any, knowledge: DocumentKnowledge) -> np.ndarray:
        """One membership score per candidate document (higher: more likely a member)."""

    def run(self, oracle: Any, knowledge: DocumentKnowledge, progress=None) -> MembershipGuesses:
        self.check_access(oracle)
        knowledge.progress = progress  # the shared scoring pass reports per batch
        s = np.asarray(self.scores(oracle, knowledge), dtype=np.float64)
        note = (
            "member call: score above the candidates' median (no calibration data); scores "
            f"from one shared float64 pass, documents windowed at {knowledge.max_tokens} tokens"
        )
        return MembershipGuesses(s, s > np.median(s), [note])
