"""The attribute-inference family: guessed values of a hidden field against the true ones.

Evaluator: :func:`privguard.audit.attribute_eval.attribute_metrics` (accuracy and advantage over
the no-model baseline, on members and non-members).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from privguard.attacks.base import AttributeGuesses
from privguard.audit.attribute_eval import attribute_metrics, risk_attribute
from privguard.audit.families import Evaluator, Family, Scored, register_family
from privguard.audit.risk import attribute_assessment


class AttributeEvaluator(Evaluator):
    def __init__(self, truth: Any) -> None:
        self.truth = truth

    def evaluate(self, cls: type, guesses: Any) -> Scored:
        t = self.truth
        assert t.hidden_values is not None
        missing = t.hidden_missing if t.hidden_missing is not None else None
        if missing is None or not missing.any():
            metrics, curves, notes = attribute_metrics(
                guesses, t.hidden_values, t.is_member, t.value_names
            )
            metrics["n_missing_excluded"] = 0
            return metrics, curves, notes
        # a missing sensitive value is not a value to guess: those records are left out
        keep = ~missing
        kept = replace(
            guesses,
            values=np.asarray(guesses.values)[keep],
            baseline=np.asarray(guesses.baseline)[keep],
        )
        metrics, curves, notes = attribute_metrics(
            kept, t.hidden_values[keep], t.is_member[keep], t.value_names
        )
        metrics["n_missing_excluded"] = int(missing.sum())
        notes.append(
            f"{int(missing.sum())} record(s) whose sensitive value is missing were left out of "
            "the scores (a missing value is not a value to guess)"
        )
        return metrics, curves, notes


ATTRIBUTE = register_family(
    Family(
        name="attribute",
        guesses=AttributeGuesses,
        evaluator=AttributeEvaluator,
        risk=risk_attribute,
        assessment=attribute_assessment,
        key_metrics=(
            ("advantage_members", "adv. members"),
            ("member_advantage_gap", "member gap"),
            ("accuracy", "acc."),
            ("baseline_accuracy", "baseline"),
            ("accuracy_members", "acc. members"),
        ),
        note="advantage = accuracy beyond the no-model baseline",
        needs_member_truth=True,
    )
)
