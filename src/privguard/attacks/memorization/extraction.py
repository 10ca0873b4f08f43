"""Training-data extraction from a language model.

Carlini, Tramèr, Wallace, Jagielski, Herbert-Voss, Lee, Roberts, Brown, Song, Erlingsson, Oprea
and Raffel, "Extracting Training Data from Large Language Models", USENIX Security 2021.

The attack generates many samples from the model (top-k sampling, k = 40, from the start of a
line), removes duplicates, and ranks them by how much more likely the target model finds them
than it "should" — the paper's membership-inference metrics, each a ratio in which a low value
is suspicious:

- ``perplexity``: the target's per-character log-perplexity alone;
- ``zlib``: the target's log-perplexity (bits) over the zlib-compressed length (bits), so
  repetitive, trivially compressible text does not rank first;
- ``lowercase``: the target's log-perplexity of the sample over that of the lowercased sample
  (memorized text keeps its exact casing);
- ``reference``: the target's log-perplexity over a reference model's, trained by the attacker
  on public text of the same kind (other people's records, public documents) — the paper's
  "smaller model" comparison.

The attack submits the top k samples, merged round-robin from the four rankings; the evaluator
checks every sample against the training corpus for verbatim memorized text and reports the
precision at k (the attack never sees the corpus).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from privguard.attacks.base import Attack, Progress, Setting
from privguard.attacks.memorization.knowledge import TextKnowledge
from privguard.attacks.memorization.oracle import LN2, TextOracle
from privguard.attacks.registry import register
from privguard.oracle import Access

METRICS = ("perplexity", "zlib", "lowercase", "reference")


@dataclass
class ExtractionGuesses:
    """Deduplicated samples, each metric's ranking (sample indices, most suspicious first),
    the submitted top-k and the per-sample scores."""

    samples: list[str]
    rankings: dict[str, np.ndarray]
    submitted: list[int]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    k: int = 100
    notes: list[str] = field(default_factory=list)


@register
class Extract(Attack[TextOracle, TextKnowledge]):
    """Generate, rank by perplexity ratios, submit the top k."""

    name: ClassVar[str] = "extract"
    family: ClassVar[str] = "memorization"
    needs: ClassVar[Access] = Access.PROBS
    kinds: ClassVar[tuple[str, ...]] = ("text",)
    alias: ClassVar[str | None] = "extraction"  # on a text model: training-data extraction
    paper: ClassVar[str] = (
        "Carlini, Tramèr, Wallace, Jagielski, Herbert-Voss, Lee, Roberts, Brown, Song, "
        "Erlingsson, Oprea, Raffel, Extracting Training Data from Large Language Models, "
        "USENIX Security 2021"
    )
    description: ClassVar[str] = (
        "Samples many generations, ranks them by perplexity, zlib, lowercase and "
        "reference-model ratios, and submits the most suspicious as extracted training data."
    )

    settings = (
        Setting("n_samples", int, 1000, "lines sampled from the model", 1),
        Setting("k", int, 100, "samples submitted as extracted (precision at k)", 1),
    )

    def __init__(
        self,
        *,
        n_samples: int = 1000,
        max_len: int = 120,
        top_k: int = 40,
        k: int = 100,
        min_chars: int = 12,
        reference_epochs: int = 3,
    ) -> None:
        self.n_samples = n_samples
        self.max_len = max_len
        self.top_k = top_k
        self.k = k
        self.min_chars = min_chars
        self.reference_epochs = reference_epochs
        self.check_settings(
            [
                (n_samples >= 1, "n_samples must be positive"),
                (k >= 1, "k must be positive"),
                (max_len >= min_chars, "max_len must be at least min_chars"),
            ]
        )

    def run(
        self, oracle: TextOracle, knowledge: TextKnowledge, progress: Progress | None = None
    ) -> ExtractionGuesses:
        self.check_access(oracle)
        notes: list[str] = []
        if progress is not None:
            progress("extract: sampling", 0, 3)
        # Character models count max_len in characters, token models in tokens (~4 chars).
        length = self.max_len if oracle.granularity == "char" else max(8, self.max_len // 4)
        raw = oracle.sample(self.n_samples, max_len=length, seed=knowledge.seed, top_k=self.top_k)
        samples = list(dict.fromkeys(s.strip() for s in raw))
        samples = [s for s in samples if len(s) >= self.min_chars]
        notes.append(
            f"{len(raw)} samples generated, {len(samples)} distinct ones of at least "
            f"{self.min_chars} characters ranked"
        )
        if not samples:
            return ExtractionGuesses(
                [], {m: np.zeros(0, int) for m in METRICS}, [], k=self.k, notes=notes
            )
        if progress is not None:
            progress("extract: scoring", 1, 3)
        target_bits = -oracle.log_likelihood(samples) / LN2
        lower_bits = -oracle.log_likelihood([s.lower() for s in samples]) / LN2
        chars = np.array([len(s) for s in samples], dtype=np.float64)
        zlib_bits = np.array([8.0 * len(zlib.compress(s.encode("utf-8"))) for s in samples])
        scores = {
            "perplexity": target_bits / chars,
            "zlib": target_bits / zlib_bits,
            "lowercase": target_bits / np.maximum(lower_bits, 1e-9),
        }
        reference = self._reference(knowledge, notes)
        if reference is not None:
            ref_bits = -reference.log_likelihood(samples) / LN2
            scores["reference"] = target_bits / np.maximum(ref_bits, 1e-9)
        rankings = {m: np.argsort(s, kind="stable") for m, s in scores.items()}
        submitted = _round_robin(list(rankings.values()), self.k)
        if progress is not None:
            progress("extract: done", 3, 3)
        return ExtractionGuesses(samples, rankings, submitted, scores, self.k, notes)

    def _reference(self, knowledge: TextKnowledge, notes: list[str]):
        """A small character model the attacker trains on public text (cached per audit)."""
        if not knowledge.public_lines:
            notes.append("no public text: the reference-model ratio was not computed")
            return None

        def make():
            from privguard.data.corpus import Corpus
            from privguard.models.text import LMConfig, train_char_lm

            config = LMConfig(
                epochs=self.reference_epochs,
                window=16,
                embed=16,
                hidden=128,
                holdout=0.0,
                seed=knowledge.seed + 1,
            )
            return train_char_lm(Corpus("public", knowledge.public_lines), config).predictor

        model = knowledge.cached("extract:reference", make)
        notes.append(
            f"reference model: a character LM trained by the attacker on "
            f"{len(knowledge.public_lines):,} lines of public text"
        )
        return model


def _round_robin(rankings: list[np.ndarray], k: int) -> list[int]:
    chosen: list[int] = []
    seen: set[int] = set()
    depth = 0
    longest = max((len(r) for r in rankings), default=0)
    while len(chosen) < k and depth < longest:
        for r in rankings:
            if depth < len(r) and int(r[depth]) not in seen:
                seen.add(int(r[depth]))
                chosen.append(int(r[depth]))
                if len(chosen) == k:
                    break
        depth += 1
    return chosen
