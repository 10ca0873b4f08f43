"""Blind baseline (Das, Zhang & Tramèr, "Blind Baselines Beat Membership Inference Attacks for
Foundation Models", 2024): a check of the evaluation, not of the model. It never queries the
model; it turns each candidate document into bag-of-words and word-bigram counts (hashed into a
fixed number of columns). The membership evaluator then trains a logistic regression on part of
the member and non-member documents and scores the rest (5 seeded folds, so every document gets
an out-of-fold score) — only the auditor, who holds the truth, can do that. When this model-free
classifier separates the sets (AUC ≥ 0.6), members and non-members differ in distribution (dates,
topics, length) and no membership attack's AUC on them is evidence of memorization; the report's
headline says so.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privguard.attacks.base import Attack, Setting
from privguard.attacks.membership.documents import DocumentKnowledge
from privguard.attacks.registry import register
from privguard.oracle import Access

WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class BlindGuesses:
    """Model-free features of the candidates, ``(n, n_features)`` float32 (log1p counts), in the
    candidates' order; the evaluator cross-fits a classifier on them against the truth."""

    features: np.ndarray
    notes: list[str] = field(default_factory=list)


def bag_of_ngrams(docs: list[str], n_features: int) -> np.ndarray:
    """Hashed counts of lower-cased words and word bigrams (crc32 buckets), plus the document's
    length in words, as ``log1p`` values."""
    x = np.zeros((len(docs), n_features + 1), dtype=np.float32)
    for i, d in enumerate(docs):
        words = WORD.findall(d.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for g in grams:
            x[i, zlib.crc32(g.encode()) % n_features] += 1
        x[i, -1] = len(words)
    return np.log1p(x)


@register
class BlindBaseline(Attack[Any, DocumentKnowledge]):
    name = "blind-baseline"
    family = "membership"
    needs = Access.LABEL
    kinds = ("documents",)
    paper = (
        "Das, Zhang & Tramèr, Blind Baselines Beat Membership Inference Attacks for Foundation "
        "Models, 2024"
    )
    description = "Never queries the model: can word counts alone tell members from non-members?"
    settings = (Setting("n_features", int, 4096, "hashed word / bigram columns", 64, 1 << 18),)

    def __init__(self, *, n_features: int = 4096) -> None:
        self.n_features = n_features

    def run(self, oracle: Any, knowledge: DocumentKnowledge, progress=None) -> BlindGuesses:
        self.check_access(oracle)
        x = bag_of_ngrams(list(knowledge.candidates), self.n_features)
        return BlindGuesses(x, ["no model query: a bag-of-words classifier, cross-fitted"])
