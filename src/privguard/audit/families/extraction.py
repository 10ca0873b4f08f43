"""The model-extraction family: a stolen copy against the real model.

Evaluator: :class:`privguard.audit.extraction_eval.ExtractionEvaluator` (fidelity on held-out
records, accuracy, queries to 95% fidelity). Each copy is saved as a model directory under
``artifacts/stolen-<attack>/``. Extraction copies the model rather than leaking training data,
so the sweep reports its cost beside the training-data risk.
"""

from __future__ import annotations

from typing import Any

from privguard.attacks.base import ExtractionGuesses
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.risk import extraction_assessment, extraction_risk


class ExtractionFamilyEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        from privguard.audit.extraction_eval import ExtractionEvaluator

        self.truth = truth
        self.inner = ExtractionEvaluator(truth.target, truth.ds, truth.split, truth.seed)

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        return self.inner.evaluate(guesses)

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        from privguard.audit.extraction_eval import stolen_target

        stolen = stolen_target(self.truth.audited, guesses, result.name, result.metrics)
        files = {f"stolen-{result.name}/{f}": blob for f, blob in stolen.files().items()}
        result.notes.append(
            f"the copy is saved as a model directory in artifacts/stolen-{result.name}/: audit "
            "it with --model (e.g. white-box inversion through the copy)"
        )
        return files


EXTRACTION = register_family(
    Family(
        name="extraction",
        guesses=ExtractionGuesses,
        evaluator=ExtractionFamilyEvaluator,
        risk=extraction_risk,
        assessment=extraction_assessment,
        key_metrics=(("fidelity", "fidelity"), ("accuracy", "acc.")),
        artifacts=("stolen-<attack>/",),
        needs_member_truth=True,
        leaks_training_data=False,
    )
)
