"""The membership family: scores (higher = more likely a member) against who was trained on.

Evaluator: :func:`privguard.audit.metrics.membership_metrics` (AUC, advantage, TPR at low FPR);
after all attacks, every candidate's score under every attack goes to
``artifacts/membership-scores.npz`` and the members the strongest attack singles out to the
summary's ``most_exposed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privguard.attacks.base import MembershipGuesses
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.metrics import membership_metrics
from privguard.audit.risk import membership_assessment, membership_risk


class MembershipEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        self.truth = truth
        self.scores: dict[str, np.ndarray] = {}

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        t = self.truth
        return membership_metrics(guesses.scores, guesses.decisions, t.is_member, seed=t.seed)

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        self.scores[result.name] = np.asarray(guesses.scores, dtype=np.float64)
        return {}

    def finish(self, results: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        if not self.scores:
            return {}, {}
        files = {"membership-scores.npz": self.truth.score_table(self.scores)}
        return files, {"most_exposed": self.truth.most_exposed(list(results), self.scores)}


MEMBERSHIP = register_family(
    Family(
        name="membership",
        guesses=MembershipGuesses,
        evaluator=MembershipEvaluator,
        risk=membership_risk,
        assessment=membership_assessment,
        key_metrics=(
            ("auc", "AUC"),
            ("tpr_at_fpr_0.01", "TPR@1%"),
            ("tpr_at_fpr_0.001", "TPR@0.1%"),
            ("advantage", "adv."),
        ),
        artifacts=("membership-scores.npz",),
        needs_member_truth=True,
    )
)
