"""Label-only membership inference: the machinery both label-only attacks share.

Choquette-Choo, Tramèr, Carlini, Papernot, "Label-Only Membership Inference Attacks", ICML 2021.
Boundary search: Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", IEEE S&P 2020.

Threat model. The attacker gets only the predicted class of each query — no confidences — which
is all a model behind a label-only API, or behind any confidence-masking defence (rounding,
top-1, noise, MemGuard), still gives away. A model fits its training records not only exactly
but *robustly*: the label of a member survives more perturbation than that of a record the
model never saw. Both attacks measure that robustness with label queries alone, so a defence
that only masks confidences (the label unchanged) leaves their scores exactly as they were.

The attacks, each in its own module:

- :mod:`privguard.attacks.membership.label_only_augmentation` (``label-only-augmentation``):
  how many perturbed copies of the record keep its label;
- :mod:`privguard.attacks.membership.label_only_boundary` (``label-only-boundary``): the L2
  distance from the record to the decision boundary (HopSkipJump).

This module holds what they share: the run (budget check, shadow calibration or population
threshold, measurement), the paper constant and the population threshold.

Thresholds come from the attacker's own data, never from ground truth: as for the metric
thresholds (:mod:`privguard.attacks.membership.threshold`), a shadow model is trained with the
target's recipe on half of the auxiliary pool (the same split and seed), the attack is run
against the *shadow* — with label queries, costing the target none — and the threshold with the
best balanced accuracy on the shadow's members and non-members is used. Without a recipe the
threshold is the lowest score at most 5% of up to ``population_records`` auxiliary records
reach, measured through the oracle (these queries count), with fixed default perturbations.

Budget. The cost is known up front; if the oracle's budget cannot cover even one query per
candidate the attack refuses with a :class:`~privguard.errors.ConfigError` that states what it
needs. Otherwise candidates are measured in order (their order carries no information) while the
budget lasts, never starting one the budget could not finish; those left unmeasured get the
least-member score (0) and a note says how many.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import roc_auc_score

from privguard.attacks.base import Attack, Knowledge, MembershipGuesses, Progress
from privguard.attacks.membership.calibration import shadow_key as _shadow_key
from privguard.attacks.membership.calibration import shadow_model
from privguard.attacks.membership.threshold import POPULATION_FPR, best_threshold
from privguard.errors import ConfigError
from privguard.oracle import Access, Oracle

PAPER = "Choquette-Choo et al., Label-Only Membership Inference Attacks, ICML 2021"
CHUNK = 256  # candidates measured together (one batch of queries per step)


@dataclass
class _Scores:
    """One measurement: scores (0 where unmeasured), which records were measured, queries spent."""

    scores: np.ndarray
    measured: np.ndarray
    queries: int


class _LabelOnlyAttack(Attack):
    """Shared run: budget check, shadow calibration (or population fallback), measurement.

    A subclass lists the settings it can run with (``options``; the shadow model picks among
    several), says what one costs per candidate, and measures records with one of them.
    """

    family = "membership"
    needs = Access.LABEL
    tag: ClassVar[int] = 0  # separates the attacks' random streams

    def __init__(
        self, *, shadow_fraction: float, population_records: int, calibration_records: int
    ) -> None:
        if not 0 < shadow_fraction < 1 or min(population_records, calibration_records) < 1:
            raise ConfigError(
                "shadow_fraction must lie in (0, 1); population_records and calibration_records "
                "must be at least 1"
            )
        self.shadow_fraction = shadow_fraction
        self.population_records = population_records
        self.calibration_records = calibration_records

    # -- what each attack supplies ------------------------------------------------------------
    def options(self, knowledge: Knowledge) -> list[Any]:
        """The settings the shadow model chooses among (the first is the no-recipe default)."""
        return [None]

    @abstractmethod
    def cost(self, option: Any, knowledge: Knowledge) -> int:
        """Most label queries one candidate costs with ``option``."""

    def describe(self, option: Any) -> str:
        return ""

    @abstractmethod
    def measure(
        self,
        oracle: Oracle,
        x: np.ndarray,
        y: np.ndarray,
        knowledge: Knowledge,
        rng: np.random.Generator,
        limit: int | None,
        option: Any,
        progress: Progress | None = None,
    ) -> _Scores:
        """Score records ``x`` (labels ``y``) through ``oracle`` with ``option``, spending at most
        ``limit`` queries (``None``: no limit) and never starting a record it cannot finish."""

    # -- the common run -----------------------------------------------------------------------
    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> MembershipGuesses:
        self.check_access(oracle)
        x, y = knowledge.candidates_x, knowledge.candidates_y
        if x is None or y is None:
            raise ConfigError(f"the {self.name} attack needs candidate records and their labels")
        n = len(y)
        options = self.options(knowledge)
        per = max(self.cost(o, knowledge) for o in options)
        remaining = oracle.remaining
        if remaining is not None and remaining < n:
            raise ConfigError(
                f"the {self.name} attack needs up to {per} label queries per candidate, "
                f"{per * n} for {n} candidates, and cannot run on fewer than one per candidate: "
                f"the query budget leaves {remaining}; raise --budget to at least {n} "
                f"({per * n} to measure every candidate)"
            )
        notes: list[str] = []
        threshold: float | None = None
        option = options[0]
        if knowledge.recipe is not None:
            fresh = not knowledge.has_cached(_shadow_key(self.shadow_fraction))
            option, threshold, note = self._calibrate_on_shadow(options, knowledge, progress)
            notes.append(
                note + (" (its training time is counted in this attack's seconds)" if fresh else "")
            )
        self.option_ = option
        self.queries_per_candidate_ = self.cost(option, knowledge)
        rng = np.random.default_rng([knowledge.seed, self.tag, 0])
        got = self.measure(oracle, x, y, knowledge, rng, remaining, option, progress)
        unmeasured = int((~got.measured).sum())
        if unmeasured:
            notes.append(
                f"query budget spent: {unmeasured} of {n} candidates were not measured and got "
                "the least-member score (0); raise --budget to measure them all"
            )
        if threshold is None:
            threshold, note = self._population_threshold(oracle, knowledge, option, progress)
            notes.append(note)
        decisions = got.measured & (got.scores >= threshold)
        return MembershipGuesses(scores=got.scores, decisions=decisions, notes=notes)

    def _calibrate_on_shadow(
        self, options: list[Any], knowledge: Knowledge, progress: Progress | None
    ) -> tuple[Any, float, str]:
        """Run the attack against the shadow model with each option; keep the option with the
        best AUC on the shadow's own members / non-members, and its best threshold."""
        shadow, ins, outs = shadow_model(knowledge, self.shadow_fraction, progress)
        shadow_oracle = Oracle(shadow, Access.LABEL)
        pick = np.random.default_rng([knowledge.seed, self.tag, 3])
        ins = np.sort(pick.permutation(ins)[: self.calibration_records])
        outs = np.sort(pick.permutation(outs)[: self.calibration_records])
        x, y = knowledge.aux_x, knowledge.aux_y
        truth = np.r_[np.ones(len(ins)), np.zeros(len(outs))]
        best: tuple[float, int, np.ndarray] | None = None
        tried = []
        for k, option in enumerate(options):
            rng = np.random.default_rng([knowledge.seed, self.tag, 1, k])
            s_in = self.measure(shadow_oracle, x[ins], y[ins], knowledge, rng, None, option)
            s_out = self.measure(shadow_oracle, x[outs], y[outs], knowledge, rng, None, option)
            scores = np.r_[s_in.scores, s_out.scores]
            auc = float(roc_auc_score(truth, scores)) if 0 < len(ins) < len(truth) else 0.5
            tried.append(f"{self.describe(option)}: {auc:.3f}".lstrip(": "))
            if best is None or auc > best[0]:
                best = (auc, k, scores)
        assert best is not None
        auc, k, scores = best
        threshold = best_threshold(scores[: len(ins)], scores[len(ins) :])
        note = (
            "threshold set on a shadow model trained with the target's recipe on half of the "
            "attacker's auxiliary data and attacked with label queries like the target (no target "
            f"queries; shadow AUC {auc:.3f})"
        )
        if len(options) > 1:
            note += (
                f"; perturbation chosen on the shadow: {self.describe(options[k])} (shadow AUC "
                f"of each: {'; '.join(tried)})"
            )
        return options[k], threshold, note

    def _population_threshold(
        self, oracle: Oracle, knowledge: Knowledge, option: Any, progress: Progress | None
    ) -> tuple[float, str]:
        """No recipe: the lowest score that at most 5% of auxiliary records reach (measured
        through the oracle on up to ``population_records`` of them; these queries count)."""
        rng = np.random.default_rng([knowledge.seed, self.tag, 2])
        k = min(self.population_records, len(knowledge.aux_y))
        pick = np.sort(rng.permutation(len(knowledge.aux_y))[:k])
        got = self.measure(
            oracle, knowledge.aux_x[pick], knowledge.aux_y[pick], knowledge, rng,
            oracle.remaining, option, progress,
        )  # fmt: skip
        aux = got.scores[got.measured]
        if len(aux) < 20:
            return np.inf, (
                "training recipe unknown and too little query budget left to measure the "
                f"auxiliary population ({len(aux)} records): nobody is called a member"
            )
        return population_threshold(aux, POPULATION_FPR), (
            "training recipe unknown: threshold set at a 5% false-positive rate on "
            f"{len(aux)} auxiliary records measured through the oracle ({got.queries} queries, "
            "no shadow model)"
            + (f"; perturbation {self.describe(option)}" if self.describe(option) else "")
        )


def population_threshold(aux_scores: np.ndarray, fpr: float) -> float:
    """The lowest score ``t`` with at most a fraction ``fpr`` of ``aux_scores >= t``; ``inf`` when
    even the highest score is reached by more (discrete scores tie at the top)."""
    values = np.unique(aux_scores)
    reach = np.array([(aux_scores >= v).mean() for v in values])
    ok = values[reach <= fpr]
    return float(ok.min()) if len(ok) else np.inf


def _report(progress: Progress | None, step: str) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    return tick
