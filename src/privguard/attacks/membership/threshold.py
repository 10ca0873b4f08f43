"""Metric-threshold membership inference.

A member tends to get a lower loss, a higher confidence in its true class and a less uncertain
output than a record the model never saw. Each attack here turns the oracle's probability vector
into one such statistic and calls "member" above a threshold:

- ``loss-threshold``: the cross-entropy loss, one global threshold.
  Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk in Machine Learning: Analyzing the
  Connection to Overfitting", IEEE CSF 2018.
- ``confidence-threshold``, ``entropy-threshold``, ``modified-entropy-threshold``: the true
  class's confidence, the prediction entropy, and the modified entropy
  Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i), with class-dependent
  thresholds. Song and Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning
  Models", USENIX Security 2021.

Thresholds come from the attacker's own data, never from ground truth: following Song and
Mittal, a shadow model is trained with the target's training recipe on half of the auxiliary
pool, and for each class the threshold that best separates the shadow's members from the other
half is taken. When the recipe is unknown, the attack falls back to a population threshold
(Ye et al., "Enhanced Membership Inference Attacks against Machine Learning Models", CCS 2022,
attack P): the 95th percentile of the statistic over the auxiliary records, queried through the
oracle, i.e. a 5% false-positive rate on the population.

Numerics: the statistics are computed in float64 in forms that keep their resolution when the
model is very confident (shared/PAPERS.md, "Loss precision"): the loss is
log1p(sum_{i != y} p_i / p_y), and confidence is ranked through -log(sum_{i != y} p_i), a
monotone transform of p_y that does not saturate at 1.0.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from privguard.attacks.base import Attack, Knowledge, MembershipGuesses, Progress, Setting
from privguard.attacks.membership.calibration import shadow_key, shadow_model
from privguard.attacks.registry import register
from privguard.oracle import Access, Oracle

TINY = 1e-300
POPULATION_FPR = 0.05


def _rest(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_y, sum of the other classes' probabilities), both float64 and clipped away from 0."""
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(y))
    py = p[rows, y]
    # Summing the small entries directly is exact where 1 - p_y would round to 0.
    masked = p.copy()
    masked[rows, y] = 0.0
    others = masked.sum(axis=1)
    return np.clip(py, TINY, 1.0), np.clip(others, TINY, None)


def neg_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    py, others = _rest(p, y)
    return -np.log1p(others / py)


def confidence(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, others = _rest(p, y)
    return -np.log(others)


def neg_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=1)


def neg_modified_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    py, others = _rest(p, y)
    log_py = -np.log1p(others / py)  # log p_y, exact where p_y rounds to 1
    own = -others * log_py  # -(1 - p_y) log p_y, with 1 - p_y taken as the others' sum
    masked = p.copy()
    masked[np.arange(len(y)), y] = 0.0
    rest = -(masked * np.log1p(-np.minimum(masked, 1.0 - 1e-16))).sum(axis=1)
    return -(own + rest)


def best_threshold(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """The threshold t maximising the accuracy of "member iff score >= t" on balanced
    shadow members / non-members (ties broken towards the higher threshold)."""
    s = np.concatenate([in_scores, out_scores])
    is_in = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    order = np.argsort(-s, kind="stable")
    s, is_in = s[order], is_in[order]
    w_in, w_out = 1.0 / len(in_scores), 1.0 / len(out_scores)
    # Calling the top j records members: TPR - FPR after each distinct score.
    gain = np.cumsum(np.where(is_in == 1, w_in, -w_out))
    last_of_run = np.r_[s[1:] != s[:-1], True]
    j = int(np.argmax(np.where(last_of_run, gain, -np.inf)))
    if gain[j] <= 0:
        return float(s[0]) + 1.0  # nothing separates: call nobody a member
    return float(s[j])


class _ThresholdAttack(Attack):
    family = "membership"
    needs = Access.PROBS
    statistic: ClassVar = staticmethod(neg_loss)
    per_class: ClassVar[bool] = True

    settings = (
        Setting(
            "shadow_fraction", float, 0.5, "share of the aux pool the shadow trains on", 0.1, 0.9
        ),
    )

    def __init__(self, *, shadow_fraction: float = 0.5) -> None:
        self.shadow_fraction = shadow_fraction

    @property
    def _shadow_key(self) -> str:
        return shadow_key(self.shadow_fraction)

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> MembershipGuesses:
        self.check_access(oracle)
        x, y = knowledge.candidates_x, knowledge.candidates_y
        scores = type(self).statistic(oracle.proba(x), y)
        notes: list[str] = []
        if knowledge.recipe is not None:
            fresh = not knowledge.has_cached(self._shadow_key)
            thresholds = self._shadow_thresholds(knowledge, progress)
            notes.append(
                "threshold(s) set on a shadow model trained with the target's recipe on half "
                "of the attacker's auxiliary data"
                + (" (its training time is counted in this attack's seconds)" if fresh else "")
            )
        else:
            aux_scores = type(self).statistic(oracle.proba(knowledge.aux_x), knowledge.aux_y)
            t = float(np.quantile(aux_scores, 1 - POPULATION_FPR))
            thresholds = {None: t}
            notes.append(
                "training recipe unknown: threshold set at a 5% false-positive rate on the "
                "auxiliary population (no shadow model)"
            )
        decisions = np.array(
            [s >= thresholds.get(int(c), thresholds[None]) for s, c in zip(scores, y, strict=True)]
        )
        return MembershipGuesses(scores=scores, decisions=decisions, notes=notes)

    def _shadow_thresholds(self, knowledge: Knowledge, progress) -> dict[int | None, float]:
        p_in, y_in, p_out, y_out = knowledge.cached(
            f"shadow-outputs-{self.shadow_fraction}",
            lambda: _shadow_outputs(knowledge, self.shadow_fraction, progress),
        )
        stat = type(self).statistic
        s_in, s_out = stat(p_in, y_in), stat(p_out, y_out)
        thresholds: dict[int | None, float] = {None: best_threshold(s_in, s_out)}
        if self.per_class:
            for c in np.unique(np.concatenate([y_in, y_out])):
                a, b = s_in[y_in == c], s_out[y_out == c]
                if len(a) >= 2 and len(b) >= 2:
                    thresholds[int(c)] = best_threshold(a, b)
        return thresholds


def _shadow_outputs(knowledge: Knowledge, fraction: float, progress):
    """The shared shadow model's outputs on its own training half (members) and the rest."""
    shadow, ins, outs = shadow_model(knowledge, fraction, progress)
    x, y = knowledge.aux_x, knowledge.aux_y
    return shadow.predict_proba(x[ins]), y[ins], shadow.predict_proba(x[outs]), y[outs]


@register
class LossThreshold(_ThresholdAttack):
    name = "loss-threshold"
    paper = "Yeom et al., Privacy Risk in Machine Learning, IEEE CSF 2018"
    description = "Member if the cross-entropy loss on the record is below a threshold."
    statistic = staticmethod(neg_loss)
    per_class = False


@register
class ConfidenceThreshold(_ThresholdAttack):
    name = "confidence-threshold"
    paper = "Song & Mittal, Systematic Evaluation of Privacy Risks of ML Models, USENIX Sec 2021"
    description = "Member if the confidence in the true class is above a class-dependent threshold."
    statistic = staticmethod(confidence)


@register
class EntropyThreshold(_ThresholdAttack):
    name = "entropy-threshold"
    paper = "Song & Mittal, Systematic Evaluation of Privacy Risks of ML Models, USENIX Sec 2021"
    description = "Member if the prediction entropy is below a class-dependent threshold."
    statistic = staticmethod(neg_entropy)


@register
class ModifiedEntropyThreshold(_ThresholdAttack):
    name = "modified-entropy-threshold"
    paper = "Song & Mittal, Systematic Evaluation of Privacy Risks of ML Models, USENIX Sec 2021"
    description = (
        "Member if the modified entropy (low for confident correct predictions, high for "
        "confident wrong ones) is below a class-dependent threshold."
    )
    statistic = staticmethod(neg_modified_entropy)
