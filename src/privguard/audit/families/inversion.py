"""The model-inversion family: reconstructions against the classes and the training members.

Evaluator: :class:`privguard.audit.inversion_eval.InversionEvaluator` (attack accuracy by two
independent classifiers, member closeness). Each attack's reconstructions go to
``artifacts/inversion-<attack>.npz``. Without member truth (an endpoint audited without its
model directory) the metrics that compare with training members are not reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.base import InversionGuesses
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.risk import inversion_assessment, inversion_risk

# Metrics that compare reconstructions with the training members; without member truth nobody
# knows who those are.
MEMBER_METRICS = (
    "mse_to_class_mean",
    "ssim_to_class_mean",
    "nearest_member_distance",
    "nearest_nonmember_distance",
    "member_closeness",
    "member_closeness_pvalue",
)


class InversionFamilyEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        from privguard.audit.inversion_eval import InversionEvaluator

        self.truth = truth
        self.inner = InversionEvaluator(truth.ds, truth.split, truth.seed)

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        metrics, curves, notes = self.inner.evaluate(guesses)
        if not self.truth.members_known:
            for k in MEMBER_METRICS:
                metrics.pop(k, None)
            notes = [n for n in notes if "member" not in n]
            notes.append(
                "audited without the model directory: who was trained on is unknown, so member "
                "closeness and distances to training members are not measured (pass --model DIR)"
            )
            curves.pop("class_means", None)
        return metrics, curves, notes

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        return {
            f"inversion-{result.name}.npz": {
                "reconstructions": np.asarray(guesses.reconstructions, dtype=np.float32),
                "labels": np.asarray(guesses.labels, dtype=np.int64),
            }
        }


INVERSION = register_family(
    Family(
        name="inversion",
        guesses=InversionGuesses,
        evaluator=InversionFamilyEvaluator,
        risk=inversion_risk,
        assessment=inversion_assessment,
        key_metrics=(
            ("attack_accuracy_consensus", "both"),
            ("member_closeness", "closeness"),
            ("attack_accuracy", "acc"),
        ),
        note="attack accuracy by an SVM / by both evaluators; member closeness (0.5 = none)",
        artifacts=("inversion-<attack>.npz",),
        needs_member_truth=False,
    )
)
