"""What every text model offers a text oracle, and what every text target's training shares.

:class:`TextModel` is the interface the memorization attacks query (through
:class:`privguard.attacks.memorization.oracle.TextOracle`): log-likelihoods of whole texts and
seeded sampling. The character LM (:mod:`privguard.models.text.char`) and Hugging Face causal LMs
(:mod:`privguard.models.text.hf`) implement it. The held-out split of a corpus and the
bits-per-character measure are shared by both trainers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from privguard.data.corpus import Canary, Corpus

Progress = Callable[[str, int, int], None]
TEXT_KINDS = ("char-lm", "hf-lm")
LN2 = math.log(2.0)


class TextModel(ABC):
    """What a text oracle needs from a model. Log-likelihoods are natural-log, per whole text,
    conditioned on the start of a line and including the closing newline when ``end=True``."""

    granularity: str = "token"

    @abstractmethod
    def log_likelihood(self, texts: list[str], *, end: bool = False) -> np.ndarray:
        """Log-likelihood of each text, ``(len(texts),)`` float64."""

    @abstractmethod
    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        """``n`` generations of at most ``max_len`` units, seeded, top-k sampling."""


def bits_per_char(predictor: TextModel, lines: Sequence[str], *, end: bool = False) -> float:
    """Bits per character of ``lines`` (each line's closing newline counted as a character);
    ``end`` includes the newline's own likelihood, as the Hugging Face models are measured."""
    ll = predictor.log_likelihood(list(lines), end=end)
    return float(-ll.sum() / LN2 / sum(len(line) + 1 for line in lines))


def holdout_split(
    corpus: Corpus, canaries: Sequence[Canary], holdout: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """``(train lines, held-out lines)``: a seeded ``holdout`` share of the lines that are not
    canary copies is kept out of training to measure generalisation."""
    canary_texts = {c.text for c in canaries}
    plain = [i for i, line in enumerate(corpus.lines) if line not in canary_texts]
    n_hold = int(round(holdout * len(plain)))
    held = set(rng.choice(plain, size=n_hold, replace=False).tolist()) if n_hold else set()
    train_lines = [line for i, line in enumerate(corpus.lines) if i not in held]
    test_lines = [corpus.lines[i] for i in sorted(held)]
    return train_lines, test_lines
