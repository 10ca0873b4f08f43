"""Discoverable extraction (Carlini et al., "Quantifying Memorization Across Neural Language
Models", ICLR 2023): a training string [p || s] is extractable when greedy decoding from its
prefix p (P tokens) reproduces its suffix s (the next S tokens) exactly.

The attacker holds candidate documents (members and non-members, shuffled) and a generation
API: for each document with at least P + S tokens it sends the first P tokens, greedily decodes
S tokens, and compares them with the document's own next S tokens: exact match, and the longest
run of consecutive matching tokens (aligned position by position). The evaluator compares the
rates of members with those of non-members (the control: a non-member completed exactly is
predictable text, not memorized text). Documents shorter than P + S tokens are left out and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privguard.attacks.base import Attack, Setting
from privguard.attacks.membership.documents import DocumentKnowledge
from privguard.attacks.registry import register
from privguard.oracle import Access


@dataclass
class DiscoverableGuesses:
    """Per candidate, in the candidates' order: ``exact`` (1.0 / 0.0; NaN when the document is
    shorter than prefix + suffix), ``longest_run`` (matching tokens in a row, NaN likewise),
    ``suffixes`` (the generated suffix's text, ``""`` when left out) and whether the report may
    show document text (``redact``)."""

    exact: np.ndarray
    longest_run: np.ndarray
    suffixes: list[str]
    prefix_tokens: int
    suffix_tokens: int
    redact: bool = False
    notes: list[str] = field(default_factory=list)


def longest_run(a: list[int], b: list[int]) -> int:
    """Longest run of positions where ``a`` and ``b`` agree."""
    best = cur = 0
    for x, y in zip(a, b, strict=False):
        cur = cur + 1 if x == y else 0
        best = max(best, cur)
    return best


@register
class DiscoverableExtraction(Attack[Any, DocumentKnowledge]):
    name = "discoverable-extraction"
    family = "memorization"
    needs = Access.LABEL
    kinds = ("documents",)
    paper = "Carlini et al., Quantifying Memorization Across Neural Language Models, ICLR 2023"
    description = "Greedy-decode each document's suffix from its prefix: is it reproduced?"
    settings = (
        Setting("prefix", int, 32, "prefix tokens given to the model", 1, 4096),
        Setting("suffix", int, 32, "suffix tokens decoded and compared", 1, 4096),
        Setting("redact", bool, False, "keep document text out of the report"),
    )

    def __init__(self, *, prefix: int = 32, suffix: int = 32, redact: bool = False) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.redact = redact

    def run(self, oracle: Any, knowledge: DocumentKnowledge, progress=None) -> DiscoverableGuesses:
        self.check_access(oracle)
        p, s = self.prefix, self.suffix
        toks = [oracle.tokens(d) for d in knowledge.candidates]
        usable = [i for i, t in enumerate(toks) if len(t) >= p + s]
        n = len(toks)
        exact = np.full(n, np.nan)
        run = np.full(n, np.nan)
        texts = [""] * n
        gen = oracle.greedy([toks[i][:p] for i in usable], s, progress=progress) if usable else []
        for i, g in zip(usable, gen, strict=True):
            true = toks[i][p : p + s]
            exact[i] = float(g == true)
            run[i] = float(longest_run(g, true))
            texts[i] = "" if self.redact else oracle.decode(g)
        notes = [
            f"prefix {p} tokens, suffix {s} tokens, greedy decoding; {n - len(usable)} of {n} "
            "documents are shorter than prefix + suffix and left out"
        ]
        return DiscoverableGuesses(exact, run, texts, p, s, self.redact, notes)
