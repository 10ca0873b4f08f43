"""Label-only membership inference: how robust the predicted label is around a record.

Choquette-Choo, Tramèr, Carlini, Papernot, "Label-Only Membership Inference Attacks", ICML 2021.
Boundary search: Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", IEEE S&P 2020.

Threat model. The attacker gets only the predicted class of each query — no confidences — which
is all a model behind a label-only API, or behind any confidence-masking defence (rounding,
top-1, noise, MemGuard), still gives away. A model fits its training records not only exactly
but *robustly*: the label of a member survives more perturbation than that of a record the
model never saw. Both attacks measure that robustness with label queries alone, so a defence
that only masks confidences (the label unchanged) leaves their scores exactly as they were.

- ``label-only-augmentation``: query the label of the candidate and of ``N`` perturbed copies;
  a candidate the target misclassifies scores 0, otherwise the score is the number of the
  ``N + 1`` copies labelled with its true class (the paper's noise-robustness rule; the count is
  sufficient for i.i.d. copies). Perturbations, as in the paper: Gaussian noise on continuous
  features and independent bit flips on binary ones (features that take only the two bound
  values in the auxiliary data; flips only where every feature is binary — on mixed records
  they broke one-hot groups and lost signal), clipped to the input bounds; for images also
  translations by ``d`` pixels in every direction with ``|i| + |j| = d`` (4d copies per ``d``,
  edges repeated; no flips, which would change a digit). The kind and strength that work depend
  on the model — on the digits MLP measured here translations carried nothing beyond the
  train/test gap while pixel noise did, and the best noise strength differed five-fold between
  targets — so with the training recipe they are chosen on the shadow model (below) by its AUC.
  Cost: exactly ``N + 1`` label queries per candidate (31 by default for noise, 5 or 13 for
  translations).
- ``label-only-boundary``: the L2 distance from the candidate to the nearest input the target
  labels otherwise, estimated with HopSkipJump (untargeted, L2). Start from the nearest auxiliary
  records of another class, then uniform random inputs, until the target labels one otherwise;
  binary-search the segment to the boundary; then repeat HopSkipJump's iteration — estimate the
  boundary's normal from the signs of ``directions`` random probes at radius ``dist / d``, step
  along it by ``dist / sqrt(t)`` halving until the label is still wrong, binary-search back
  towards the candidate — keeping the closest boundary point (inputs clipped to the bounds).
  Against linear models, whose true distance is known: within 1-2% of it at 200 queries on 10
  features; on 64-pixel digits 1.47x it (median) at 200 queries and 1.08x at 2000, ranking
  records like the true distance (correlation 0.96) at either budget — the ranking is what
  membership needs, and 400 queries did not raise the AUC on the MLPs measured.
  Candidates the target misclassifies get distance 0, as in the paper; one for which no start is
  found gets the diagonal of the input box. Cost: one label query per candidate, then at most
  ``queries_per_candidate`` in all (default 200) for each correctly classified one.

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
from privguard.attacks.registry import register
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


# -- augmentation -------------------------------------------------------------------------------


def translations(distances: tuple[int, ...]) -> list[tuple[int, int]]:
    """All pixel shifts ``(i, j)`` with ``|i| + |j| = d`` for each ``d`` (4d per distance)."""
    out: list[tuple[int, int]] = []
    for d in distances:
        for i in range(-d, d + 1):
            rest = d - abs(i)
            out += [(i, rest), (i, -rest)] if rest else [(i, 0)]
    return out


def shift(x: np.ndarray, di: int, dj: int) -> np.ndarray:
    """Images ``(n, c, h, w)`` moved ``di`` rows down and ``dj`` columns right, edge values
    repeated into the gap (``scipy.ndimage.shift(mode="nearest")``, as in the paper)."""
    h, w = x.shape[-2:]
    a, b = abs(di), abs(dj)
    pad = [(0, 0)] * (x.ndim - 2) + [(a, a), (b, b)]
    padded = np.pad(x, pad, mode="edge")
    return padded[..., a - di : a - di + h, b - dj : b - dj + w]


def binary_columns(knowledge: Knowledge) -> np.ndarray:
    """Flattened tabular features that take only the two bound values in the auxiliary data
    (one-hot columns and 0/1 flags): these are flipped, the others get Gaussian noise. Image
    pixels are never treated as bits (a blank corner is still a grey level)."""
    flat = knowledge.aux_x.reshape(len(knowledge.aux_x), -1)
    if knowledge.kind == "image":
        return np.zeros(flat.shape[1], dtype=bool)
    lo, hi = knowledge.bounds
    return np.all((flat == lo) | (flat == hi), axis=0)


@dataclass(frozen=True)
class Perturbation:
    """How the augmented copies are made: pixel ``shifts`` (translations at each distance), or
    ``copies`` noisy copies with Gaussian ``sigma`` on continuous and ``flip`` on binary
    features."""

    kind: str
    shifts: tuple[int, ...] = ()
    copies: int = 0
    sigma: float = 0.0
    flip: float = 0.0

    @property
    def n_copies(self) -> int:
        return len(translations(self.shifts)) if self.kind == "translate" else self.copies

    def describe(self) -> str:
        if self.kind == "translate":
            return f"translations by {', '.join(map(str, self.shifts))} px"
        return f"noise sigma={self.sigma:g}, flip={self.flip:g}"


SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2)
FLIPS = (0.01, 0.02, 0.05)  # only for records with no continuous feature (all bits)
SHIFTS = ((1,), (1, 2))
# Without a recipe nothing can be tuned: the strengths that did best on the overfit MLPs
# measured here (digits: 0.1; diabetes 0.02, heart-disease flat over 0.02-0.05).
UNTUNED_SIGMA = {False: 0.02, True: 0.1}
UNTUNED_FLIP = 0.02


@register
class LabelOnlyAugmentation(_LabelOnlyAttack):
    """Member if the predicted label survives small translations or noise."""

    name = "label-only-augmentation"
    paper = PAPER
    description = (
        "Label-only: counts how many of N augmented copies of the record (pixel shifts, feature "
        "noise, bit flips; the kind and strength chosen on a shadow model) keep the true label; "
        "a misclassified record scores 0."
    )
    tag = 1

    def __init__(
        self,
        *,
        perturbation: str = "auto",
        copies: int = 30,
        sigma: float | None = None,
        flip: float | None = None,
        shifts: tuple[int, ...] | None = None,
        shadow_fraction: float = 0.5,
        population_records: int = 200,
        calibration_records: int = 500,
    ) -> None:
        """Args:
        perturbation: ``translate`` (images), ``noise``, or ``auto``: with the training recipe,
            the shadow model picks among noise at each strength in ``SIGMAS`` and, for images,
            translations by ``(1,)`` and ``(1, 2)`` pixels; without it, noise.
        copies: noisy copies per record (noise); translations make 4 per pixel distance.
        sigma, flip: fixed noise strength (Gaussian std on continuous features in input units,
            flip probability of binary features); ``None``: sigma chosen on the shadow model
            among ``SIGMAS`` (without a recipe 0.1 for images, 0.02 for tabular data) and no
            flips, unless every feature is binary (then flips chosen among ``FLIPS``, 0.02
            without a recipe).
        shifts: fixed translation distances in pixels (default ``(1, 2)`` for ``translate``).
        shadow_fraction: share of the auxiliary pool the shadow model trains on.
        population_records: auxiliary records measured through the oracle for the threshold
            when the recipe is unknown.
        calibration_records: most shadow members (and as many non-members) attacked.
        """
        super().__init__(
            shadow_fraction=shadow_fraction,
            population_records=population_records,
            calibration_records=calibration_records,
        )
        if perturbation not in ("auto", "translate", "noise"):
            raise ConfigError("perturbation must be 'auto', 'translate' or 'noise'")
        bad = (
            copies < 1
            or (sigma is not None and sigma < 0)
            or (flip is not None and not 0 <= flip <= 1)
            or (shifts is not None and (not shifts or any(d < 1 for d in shifts)))
        )
        if bad:
            raise ConfigError(
                "label-only-augmentation needs copies >= 1, sigma >= 0, flip in [0, 1] and "
                "shifts of at least one pixel"
            )
        self.perturbation = perturbation
        self.copies = copies
        self.sigma = sigma
        self.flip = flip
        self.shifts = tuple(shifts) if shifts is not None else None

    def options(self, knowledge: Knowledge) -> list[Perturbation]:
        image = knowledge.kind == "image" and knowledge.aux_x.ndim == 4
        if self.perturbation == "translate":
            if not image:
                raise ConfigError(
                    "translations need images of shape (channels, height, width); use "
                    "perturbation='noise' for these records"
                )
            return [Perturbation("translate", shifts=self.shifts or (1, 2))]
        binary = binary_columns(knowledge)
        tune = knowledge.recipe is not None
        if self.sigma is not None:
            sigmas: tuple[float, ...] = (self.sigma,)
        elif binary.all():
            sigmas = (0.0,)  # nothing continuous to add noise to
        else:
            sigmas = SIGMAS if tune else (UNTUNED_SIGMA[knowledge.kind == "image"],)
        if self.flip is not None:
            flips: tuple[float, ...] = (self.flip,)
        elif binary.all():
            flips = FLIPS if tune else (UNTUNED_FLIP,)
        else:
            # On mixed records flips broke one-hot groups and cost signal at every strength
            # measured here (heart-disease shadow AUC 0.60 -> 0.55-0.58): noise only.
            flips = (0.0,)
        noise = [
            Perturbation("noise", copies=self.copies, sigma=s, flip=f)
            for s in sigmas
            for f in flips
        ]
        if self.perturbation == "auto" and image and tune:
            shifts = [self.shifts] if self.shifts else list(SHIFTS)
            return noise + [Perturbation("translate", shifts=d) for d in shifts]
        return noise

    def cost(self, option: Perturbation, knowledge: Knowledge) -> int:
        return option.n_copies + 1

    def describe(self, option: Perturbation) -> str:
        return option.describe()

    def _copies(
        self,
        x: np.ndarray,
        option: Perturbation,
        knowledge: Knowledge,
        rng: np.random.Generator,
        binary: np.ndarray,
    ) -> np.ndarray:
        """``(n, N + 1, *shape)``: each record followed by its ``N`` augmented copies."""
        if option.kind == "translate":
            moved = [shift(x, di, dj) for di, dj in translations(option.shifts)]
            return np.stack([x, *moved], axis=1)
        lo, hi = knowledge.bounds
        n, shape = len(x), x.shape[1:]
        flat = x.reshape(n, 1, -1).astype(np.float64)
        noisy = np.repeat(flat, option.copies, axis=1)
        gauss = rng.normal(0.0, option.sigma, size=noisy.shape)
        flips = rng.random(noisy.shape) < option.flip
        noisy = np.where(binary, np.where(flips, lo + hi - noisy, noisy), noisy + gauss)
        out = np.concatenate([flat, np.clip(noisy, lo, hi)], axis=1).astype(np.float32)
        return out.reshape(n, option.copies + 1, *shape)

    def measure(
        self,
        oracle: Oracle,
        x: np.ndarray,
        y: np.ndarray,
        knowledge: Knowledge,
        rng: np.random.Generator,
        limit: int | None,
        option: Perturbation,
        progress: Progress | None = None,
    ) -> _Scores:
        per = self.cost(option, knowledge)
        binary = binary_columns(knowledge)
        tick = _report(progress, "label-only augmentation queries")
        n = len(y)
        scores = np.zeros(n)
        measured = np.zeros(n, dtype=bool)
        spent, i = 0, 0
        while i < n:
            m = min(CHUNK, n - i)
            if limit is not None:
                m = min(m, (limit - spent) // per)
            if m <= 0:
                break
            batch = self._copies(x[i : i + m], option, knowledge, rng, binary)
            labels = oracle.labels(batch.reshape(m * per, *x.shape[1:])).reshape(m, per)
            right = labels == y[i : i + m, None]
            # A misclassified record scores 0 whatever its copies do (the paper's rule for noise):
            # the gap attack's signal is kept, the copies rank the correctly classified ones.
            scores[i : i + m] = np.where(right[:, 0], right.sum(axis=1), 0)
            measured[i : i + m] = True
            spent += m * per
            i += m
            tick(i, n)
        return _Scores(scores, measured, spent)


# -- decision boundary --------------------------------------------------------------------------


@register
class LabelOnlyBoundary(_LabelOnlyAttack):
    """Member if the decision boundary is far from the record (HopSkipJump, labels only)."""

    name = "label-only-boundary"
    paper = PAPER + " (boundary search: Chen et al., HopSkipJumpAttack, IEEE S&P 2020)"
    description = (
        "Label-only: estimates the L2 distance from the record to the model's decision boundary "
        "with HopSkipJump label queries; records far from the boundary are called members."
    )
    tag = 2

    def __init__(
        self,
        *,
        queries_per_candidate: int = 200,
        directions: int = 20,
        search_steps: int = 10,
        halvings: int = 4,
        start_tries: int = 10,
        shadow_fraction: float = 0.5,
        population_records: int = 100,
        calibration_records: int = 500,
    ) -> None:
        """Args:
        queries_per_candidate: most label queries spent on one candidate, its label included.
        directions: random probes per estimate of the boundary's normal.
        search_steps: halvings of each binary search (precision ``2**-search_steps`` of the
            current distance).
        halvings: most halvings of the step along the normal before an iteration gives up.
        start_tries: queries spent looking for a start on the other side of the boundary (the
            first half on the nearest auxiliary records of other classes, then random inputs).
        shadow_fraction, population_records, calibration_records: as for
            :class:`LabelOnlyAugmentation`.
        """
        super().__init__(
            shadow_fraction=shadow_fraction,
            population_records=population_records,
            calibration_records=calibration_records,
        )
        setup = 1 + start_tries + search_steps
        if queries_per_candidate < setup or directions < 2 or search_steps < 1 or halvings < 0:
            raise ConfigError(
                f"label-only-boundary needs queries_per_candidate >= {setup} (label, start and "
                "first binary search), directions >= 2 and search_steps >= 1"
            )
        self.queries_per_candidate = queries_per_candidate
        self.directions = directions
        self.search_steps = search_steps
        self.halvings = halvings
        self.start_tries = start_tries

    def cost(self, option: Any, knowledge: Knowledge) -> int:
        return self.queries_per_candidate

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
        n = len(y)
        scores = np.zeros(n)
        measured = np.zeros(n, dtype=bool)
        if limit is not None and limit < n:
            return _Scores(scores, measured, 0)
        correct = oracle.labels(x) == y
        spent = n
        measured[~correct] = True  # misclassified: already across the boundary, distance 0
        todo = np.flatnonzero(correct)
        per = self.queries_per_candidate - 1
        tick = _report(progress, "label-only boundary search")
        pool_x = knowledge.aux_x.reshape(len(knowledge.aux_x), -1).astype(np.float64)
        i = 0
        while i < len(todo):
            m = min(CHUNK, len(todo) - i)
            if limit is not None:
                m = min(m, (limit - spent) // per)
            if m <= 0:
                break
            idx = todo[i : i + m]
            dist, used = self._search(oracle, x[idx], y[idx], pool_x, knowledge, rng)
            scores[idx] = dist
            measured[idx] = True
            spent += used
            i += m
            tick(i, len(todo))
        return _Scores(scores, measured, spent)

    def _search(
        self,
        oracle: Oracle,
        x: np.ndarray,
        y: np.ndarray,
        pool_x: np.ndarray,
        knowledge: Knowledge,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, int]:
        """HopSkipJump (untargeted, L2) for a batch of correctly classified records, in lock
        step; each record spends at most ``queries_per_candidate - 1`` queries."""
        shape = x.shape[1:]
        lo, hi = knowledge.bounds
        m = len(x)
        x0 = x.reshape(m, -1).astype(np.float64)
        d = x0.shape[1]
        spent = np.zeros(m, dtype=np.int64)

        def is_adv(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
            np.add.at(spent, rows, 1)
            q = np.clip(points, lo, hi).astype(np.float32).reshape(len(rows), *shape)
            return oracle.labels(q) != y[rows]

        # Start: the nearest auxiliary records of other classes (half the tries), then uniform
        # noise; a record for which no try is labelled otherwise gets the box's diagonal.
        far = np.sqrt(d) * (hi - lo)  # no boundary found: as far as the input box allows
        d2 = (x0**2).sum(1)[:, None] - 2 * x0 @ pool_x.T + (pool_x**2).sum(1)[None, :]
        d2[knowledge.aux_y[None, :] == y[:, None]] = np.inf
        nearest = np.argsort(d2, axis=1, kind="stable")[:, : self.start_tries // 2]
        start = np.full_like(x0, np.nan)
        for t in range(self.start_tries):
            rows = np.flatnonzero(np.isnan(start[:, 0]))
            if len(rows) == 0:
                break
            cand = rng.uniform(lo, hi, size=(len(rows), d))
            if t < min(self.start_tries // 2, nearest.shape[1]):
                near = nearest[rows, t]
                usable = np.isfinite(d2[rows, near])
                cand[usable] = pool_x[near[usable]]
            ok = is_adv(cand, rows)
            start[rows[ok]] = cand[ok]
        found = ~np.isnan(start[:, 0])
        best = np.full(m, far)
        rows = np.flatnonzero(found)
        point = np.array(x0)
        if len(rows):
            point[rows] = self._bisect(x0[rows], start[rows], rows, is_adv)
            best[rows] = np.linalg.norm(point[rows] - x0[rows], axis=1)

        delta_scale = 1.0 / d  # HopSkipJump's delta = sqrt(d) * theta * dist, theta = d^-1.5
        step_cost = self.directions + self.halvings + 1 + self.search_steps
        cur = best.copy()
        t = 0
        while True:
            t += 1
            rows = np.flatnonzero(found & (spent + step_cost <= self.queries_per_candidate - 1))
            if len(rows) == 0:
                break
            # Normal of the boundary at each current point, from the signs of random probes.
            b = self.directions
            u = rng.normal(size=(len(rows), b, d))
            u /= np.linalg.norm(u, axis=2, keepdims=True)
            delta = (delta_scale * cur[rows])[:, None, None]
            probes = np.clip(point[rows, None, :] + delta * u, lo, hi)
            adv = is_adv(probes.reshape(len(rows) * b, d), np.repeat(rows, b)).reshape(-1, b)
            phi = np.where(adv, 1.0, -1.0)
            mean = phi.mean(axis=1, keepdims=True)
            centred = np.where(np.abs(mean) == 1.0, phi, phi - mean)
            v = (centred[:, :, None] * u).mean(axis=1)
            norm = np.linalg.norm(v, axis=1, keepdims=True)
            v = np.where(norm > 0, v / np.maximum(norm, 1e-300), 0.0)
            # Geometric step along the normal: halve until the point is adversarial again.
            xi = cur[rows] / np.sqrt(t)
            moved = np.full((len(rows), d), np.nan)
            pending = np.arange(len(rows))
            for _ in range(self.halvings + 1):
                if len(pending) == 0:
                    break
                trial = np.clip(point[rows[pending]] + xi[pending, None] * v[pending], lo, hi)
                ok = is_adv(trial, rows[pending])
                moved[pending[ok]] = trial[ok]
                xi[pending[~ok]] /= 2.0
                pending = pending[~ok]
            good = np.flatnonzero(~np.isnan(moved[:, 0]))
            if len(good) == 0:
                continue
            r = rows[good]
            new = self._bisect(x0[r], moved[good], r, is_adv)
            dist = np.linalg.norm(new - x0[r], axis=1)
            point[r], cur[r] = new, dist
            best[r] = np.minimum(best[r], dist)
        return best, int(spent.sum())

    def _bisect(
        self,
        x0: np.ndarray,
        adv: np.ndarray,
        rows: np.ndarray,
        is_adv: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """The point on the segment from ``x0`` (not adversarial) to ``adv`` (adversarial)
        closest to ``x0`` that is still adversarial, to ``search_steps`` halvings."""
        low = np.zeros(len(rows))
        high = np.ones(len(rows))
        for _ in range(self.search_steps):
            mid = (low + high) / 2
            ok = is_adv(x0 + mid[:, None] * (adv - x0), rows)
            high = np.where(ok, mid, high)
            low = np.where(ok, low, mid)
        return x0 + high[:, None] * (adv - x0)
