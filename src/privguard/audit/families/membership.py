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
from privguard.attacks.membership.blind_baseline import BlindGuesses
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.metrics import membership_metrics
from privguard.audit.risk import membership_assessment, membership_risk


class MembershipEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        self.truth = truth
        self.scores: dict[str, np.ndarray] = {}

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        t = self.truth
        if isinstance(guesses, BlindGuesses):
            scores = blind_scores(guesses.features, t.is_member, seed=t.seed)
            return membership_metrics(scores, scores > 0.5, t.is_member, seed=t.seed)
        return membership_metrics(guesses.scores, guesses.decisions, t.is_member, seed=t.seed)

    def keep(self, result: Any, guesses: Any) -> dict[str, dict[str, Any]]:
        if isinstance(guesses, BlindGuesses):
            self.blind_auc = float(result.metrics["auc"])
            return {}
        self.scores[result.name] = np.asarray(guesses.scores, dtype=np.float64)
        return {}

    def finish(self, results: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        extra: dict[str, Any] = {}
        blind = getattr(self, "blind_auc", None)
        if blind is not None and blind >= BLIND_WARNING_AUC:
            extra["distribution_warning"] = (
                f"A model-free word-count classifier tells members from non-members (AUC "
                f"{blind:.2f}): the two sets differ in distribution, so the membership numbers "
                "are not evidence of memorization."
            )
        if not self.scores:
            return {}, extra
        files = {"membership-scores.npz": self.truth.score_table(self.scores)}
        extra["most_exposed"] = self.truth.most_exposed(list(results), self.scores)
        return files, extra


BLIND_WARNING_AUC = 0.6  # Das et al. 2024: a blind classifier this good invalidates the split


def blind_scores(features: np.ndarray, is_member: np.ndarray, *, seed: int) -> np.ndarray:
    """Out-of-fold member probabilities of a logistic regression on the blind baseline's
    features (5 stratified folds, fewer when a set is small): trained on part of the member and
    non-member documents, scored on the rest (Das et al. 2024)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(is_member, dtype=bool)
    folds = int(min(5, y.sum(), (~y).sum()))
    out = np.full(len(y), 0.5)
    if folds < 2:
        return out
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(features[train], y[train])
        out[test] = clf.predict_proba(features[test])[:, 1]
    return out


MEMBERSHIP = register_family(
    Family(
        name="membership",
        guesses=(MembershipGuesses, BlindGuesses),
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
