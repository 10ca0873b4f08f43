"""The memorization family (text models): canary exposure and training-data extraction.

Evaluators: :func:`privguard.audit.memorization_eval.exposure_metrics` against the inserted
canaries, :func:`~privguard.audit.memorization_eval.extraction_metrics` against the training
corpus; the truth is a :class:`privguard.audit.truth.TextTruth`.
"""

from __future__ import annotations

from typing import Any

from privguard.attacks.memorization.discoverable import DiscoverableGuesses
from privguard.attacks.memorization.exposure import ExposureGuesses
from privguard.attacks.memorization.extraction import ExtractionGuesses as TextExtractionGuesses
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.risk import memorization_assessment, memorization_risk


def unsuitable(truth: Any, cls: type) -> str | None:
    """Exposure needs the inserted canaries, extraction the training corpus."""
    name = getattr(cls, "name", "")
    if name == "exposure" and not truth.canaries:
        return (
            "no canaries are recorded for this model: train or fine-tune it with "
            "`privguard train --canary FORMAT` to measure exposure"
        )
    if name == "extract" and truth.corpus is None:
        return "extraction needs the training corpus to check samples against: pass --data"
    return None


def risk(m: dict[str, float]) -> str:
    """Discoverable extraction: high when members are completed exactly at least 10 points more
    often than non-members, medium at 1 point; the other attacks: ``memorization_risk``."""
    if "exact_match_excess" in m:
        excess = m["exact_match_excess"]
        return "high" if excess >= 0.10 else "medium" if excess >= 0.01 else "low"
    return memorization_risk(m)


class MemorizationEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        self.truth = truth

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        from privguard.audit.memorization_eval import exposure_metrics, extraction_metrics

        t = self.truth
        if isinstance(guesses, DiscoverableGuesses):
            from privguard.audit.memorization_eval import discoverable_metrics

            return discoverable_metrics(guesses, t.is_member)
        if isinstance(guesses, ExposureGuesses):
            return exposure_metrics(guesses, t.canaries, seed=t.seed)
        assert t.corpus is not None
        return extraction_metrics(guesses, t.corpus.lines, t.canaries)

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        if isinstance(guesses, DiscoverableGuesses):
            from privguard.audit.memorization_eval import most_extracted

            self.extracted = most_extracted(guesses, self.truth)
        return {}

    def finish(self, results: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        extracted = getattr(self, "extracted", None)
        return {}, ({"most_extracted": extracted} if extracted is not None else {})


MEMORIZATION = register_family(
    Family(
        name="memorization",
        guesses=(ExposureGuesses, TextExtractionGuesses, DiscoverableGuesses),
        evaluator=MemorizationEvaluator,
        risk=risk,
        assessment=memorization_assessment,
        key_metrics=(
            ("exposure_bits_top_repeats", "exposure"),
            ("exposure_bits_max", "max"),
            ("precision_at_100", "prec@100"),
            ("canaries_extracted", "canaries"),
            ("exposure", "exposure"),
            ("epsilon_lower_bound", "ε lower bound"),
            ("exposure_bits_reference_mean", "reference"),
        ),
        needs_member_truth=True,  # the canaries inserted into training are its member truth
        unsuitable=unsuitable,
    )
)
