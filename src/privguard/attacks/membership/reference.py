"""Reference (shadow) models: more models trained the way the target was, on the attacker's data.

The strongest membership attacks compare the target's output on a record with the outputs of
*reference models* that are known to have (IN) or not to have (OUT) trained on it:

- Shokri, Stronati, Song, Shmatikov, "Membership Inference Attacks Against Machine Learning
  Models", IEEE S&P 2017 (shadow models, :mod:`.shadow`);
- Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
  Principles", IEEE S&P 2022 (LiRA, :mod:`.lira`);
- Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership Inference Attacks", ICML 2024
  (RMIA, :mod:`.rmia`).

Threat model: the attacker knows the target's training recipe (architecture, optimiser,
epochs; ``Knowledge.recipe``) and holds records from the same population (the auxiliary pool).
*Online* attacks also train on the candidate records themselves: the pool is candidates + aux and
every pool record is IN the same share of the K models (a balanced design, as in LiRA's code),
the share of its data the target trained on, so a reference model trains on as many records as
the target did (:func:`train_share`). *Offline* attacks train only on the auxiliary pool, so their
models never see a candidate and can be trained before the candidates are known; each trains on
its own random half of it.

Cost: reference training is nearly all of these attacks' cost (shared/PAPERS.md, "Reference
costs"): K trainings of the target's recipe, e.g. ~1 s per 100-epoch 2x256 MLP on 719 digits on
one thread; 32 of them took 24 s with two local processes here (2 cores). The jobs are
independent: they fan out through joblib to local processes (``Knowledge.compute.n_jobs``) or, when
``Knowledge.compute.scheduler`` names one, to a Dask distributed cluster; model k is seeded from
(seed, k) only, so where it runs never changes the result. Trained PyTorch models are cached on
disk (``Knowledge.compute.cache_dir``) as safetensors + JSON under a key that hashes the recipe,
the exact training rows, the seed and the index; an entry whose weights do not match their
recorded hash is retrained, never used. Within one audit the attacks share one set of models
per (online/offline, K, seed) through :meth:`Knowledge.cached`.

Each worker returns its model's float64 logits on every pool record (and on shifted copies of
image records, for LiRA's augmentation averaging), so the attacks never move models around.

Example:
    >>> refs, shared = reference_set(knowledge, mode="online", n_models=16, seed=0, attack="x")
    >>> refs.logits.shape      # (models, views, pool records, classes)
    >>> refs.inclusion.shape   # (models, pool records): which records each model trained on
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp

from privguard.attacks.base import Knowledge, MembershipGuesses, Progress
from privguard.compute import dask_client
from privguard.errors import ConfigError

CACHE_FORMAT = 1
CACHE_SUBDIR = "reference-models"
#: each reference model must train on at least this many records, and two of every class
MIN_TRAIN_RECORDS = 20
#: online reference models train on this share of the pool at least (and at most 1 - it)
MIN_SHARE = 0.25
TINY = 1e-300
Shift = tuple[int, int]
IMAGE_SHIFTS: tuple[Shift, ...] = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))


# -- what the attacks get back --------------------------------------------------------------


@dataclass
class ReferenceSet:
    """K reference models' outputs on a pool of records.

    Attributes:
        logits: ``(K, V, N, C)`` float64: model k's logits on view v of pool record n (view 0 is
            the record itself, the others are the copies given by ``shifts``).
        inclusion: ``(K, N)`` bool: whether model k trained on pool record n.
        shifts: the ``(dy, dx)`` pixel shift of each view (``((0, 0),)`` for tabular data).
        trained: models trained for this set; ``reused``: models loaded from the disk cache.
        how: how the trained ones were trained, for the report (``" stacked (2 vectorised
            groups)"``, or ``" one at a time (why)"``).
        cache_dir: where the models are cached (``None``: not cached).
        notes: what the report should say about how the set was made.
    """

    logits: np.ndarray
    inclusion: np.ndarray
    shifts: tuple[Shift, ...]
    trained: int
    reused: int
    cache_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    how: str = ""

    @property
    def n_models(self) -> int:
        return int(self.inclusion.shape[0])

    def head(self, n: int) -> ReferenceSet:
        """The first ``n`` models (an offline set of ``n`` is the first ``n`` of a larger one)."""
        return ReferenceSet(
            logits=self.logits[:n],
            inclusion=self.inclusion[:n],
            shifts=self.shifts,
            trained=min(self.trained, n),
            reused=max(0, min(self.reused, n - min(self.trained, n))),
            cache_dir=self.cache_dir,
            notes=[n for n in self.notes if not n.startswith("models 1-")],
            how=self.how,
        )

    def phi(self, y: np.ndarray, *, from_probs: bool = False) -> np.ndarray:
        """LiRA's logit-scaled confidence of every model on every view of every pool record,
        ``(K, V, N)`` float64. ``from_probs`` computes it as a probability-only attacker does
        (from the float64 softmax), to match a target queried at ``probs`` access."""
        k, v, n, c = self.logits.shape
        z = self.logits.reshape(k * v * n, c)
        yy = np.tile(np.asarray(y, dtype=np.int64), k * v)
        out = phi_from_probs(softmax(z), yy) if from_probs else phi_from_logits(z, yy)
        return out.reshape(k, v, n)


@dataclass
class ReferenceGuesses(MembershipGuesses):
    """Membership guesses of a reference-model attack, with the model bookkeeping the report
    shows: ``reference_models`` used; of them ``trained_models`` trained in this attack,
    ``reused_models`` loaded from the disk cache, and ``shared_models`` taken from an earlier
    attack of the same audit (trained or loaded there)."""

    reference_models: int = 0
    trained_models: int = 0
    reused_models: int = 0
    shared_models: int = 0


# -- statistics, in float64 forms that keep their resolution on confident models ------------


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def phi_from_logits(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """phi = log p_y - log sum_{y' != y} p_{y'} = z_y - logsumexp_{y' != y} z_{y'}.

    Exact at any margin (``logsumexp(z) - z_y`` rounds to 0 past a margin of ~37)."""
    z = np.asarray(z, dtype=np.float64)
    rows = np.arange(len(y))
    zy = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return zy - logsumexp(others, axis=1)


def phi_from_probs(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """phi from a probability vector (what a ``probs`` oracle gives): float64, clipped away from
    0, with the other classes' mass summed directly (exact where 1 - p_y rounds to 0)."""
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(y))
    py = np.clip(p[rows, y], TINY, 1.0)
    masked = p.copy()
    masked[rows, y] = 0.0
    others = np.clip(masked.sum(axis=1), TINY, None)
    return np.log(py) - np.log(others)


def log_p_true(phi: np.ndarray) -> np.ndarray:
    """log p_y from phi: -log(1 + e^-phi), exact both when p_y is tiny and when it rounds to 1."""
    return -np.logaddexp(0.0, -np.asarray(phi, dtype=np.float64))


def log_p_rest(phi: np.ndarray) -> np.ndarray:
    """log(1 - p_y) from phi: -log(1 + e^phi)."""
    return -np.logaddexp(0.0, np.asarray(phi, dtype=np.float64))


# -- design: which records each model trains on --------------------------------------------


def balanced_inclusion(
    n_models: int, n_records: int, seed: int, fraction: float = 0.5
) -> np.ndarray:
    """``(K, N)`` bool for online attacks: every record is IN ``fraction * K`` of the models
    (rounded at random when that is not a whole number), the models chosen at random per
    record, so each model trains on about ``fraction`` of the records (with ``fraction=0.5``,
    the design of LiRA's code). Seeded."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xBA1]))
    want = fraction * n_models
    n_in = np.floor(want).astype(int) + (rng.random(n_records) < want - np.floor(want))
    rank = np.argsort(np.argsort(rng.random((n_models, n_records)), axis=0), axis=0)
    return rank < n_in[None, :]


def random_halves(n_models: int, n_records: int, seed: int) -> np.ndarray:
    """``(K, N)`` bool for offline attacks: each model trains on its own uniformly random half of
    the records, independently of the others (so any two models share about a quarter: unlike a
    balanced design with K=2, where the two halves are complements, a model's OUT records then
    mix IN and OUT of another, which tuning RMIA's ``a`` on the reference models needs)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0FF]))
    half = n_records // 2
    out = np.zeros((n_models, n_records), dtype=bool)
    for k in range(n_models):
        out[k, rng.permutation(n_records)[:half]] = True
    return out


def model_seed(seed: int, index: int) -> int:
    """The training seed of reference model ``index``: a function of (seed, index) only."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def image_shifts(knowledge: Knowledge) -> tuple[Shift, ...]:
    """The views LiRA averages over: the record and its four one-pixel translations for images
    of at least 4x4 pixels (never a horizontal flip: a mirrored digit is another symbol); the
    record alone for tabular data."""
    shape = np.shape(knowledge.candidates_x)[1:]
    if knowledge.kind == "image" and len(shape) == 3 and min(shape[1:]) >= 4:
        return IMAGE_SHIFTS
    return ((0, 0),)


def shift_images(x: np.ndarray, shift: Shift, fill: float) -> np.ndarray:
    """``x`` ``(n, c, h, w)`` translated by ``(dy, dx)`` pixels; uncovered pixels get ``fill``."""
    dy, dx = shift
    if dy == 0 and dx == 0:
        return x
    out = np.full_like(x, fill)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def views(x: np.ndarray, shifts: Sequence[Shift], fill: float) -> list[np.ndarray]:
    return [shift_images(x, s, fill) for s in shifts]


def finite_logits(z: np.ndarray) -> np.ndarray:
    """float64 logits with log(0) (a scikit-learn model's log-probability of an impossible
    class) replaced by log(1e-300), so phi stays finite."""
    return np.nan_to_num(np.asarray(z, dtype=np.float64), neginf=np.log(TINY), posinf=-np.log(TINY))


# -- the shared sets the attacks use -------------------------------------------------------


def require_recipe(knowledge: Knowledge, attack: str) -> None:
    if knowledge.recipe is None:
        raise ConfigError(
            f"the {attack} attack needs the target's training recipe to train reference models "
            "like it; audit a model trained by privguard (its model.json records the recipe), "
            "or choose an attack that needs no recipe (loss-threshold)"
        )
    if knowledge.candidates_x is None or knowledge.candidates_y is None:
        raise ConfigError(f"the {attack} attack needs candidate records to decide on")


def min_models(attack: str, n_models: int, least: int, why: str) -> None:
    if n_models < least:
        raise ConfigError(
            f"{attack}: {why} needs at least {least} reference models, not {n_models}"
        )


def train_share(knowledge: Knowledge) -> float:
    """The share of the pool each online reference model trains on: the share of its data the
    target trained on, as its recipe records it (``train_fraction``), else a half.

    Matching the target's training-set size matters: reference models trained on more records
    than the target are more confident on everything, which shifts their phi away from the
    target's (by ~0.9 on digits with halves against the target's 40%) and costs LiRA about a
    third of its TPR at 1% FPR."""
    share = getattr(getattr(knowledge.recipe, "config", None), "train_fraction", None)
    if share is None:
        return 0.5
    return float(min(max(share, MIN_SHARE), 1 - MIN_SHARE))


def reference_set(
    knowledge: Knowledge,
    *,
    mode: str,
    n_models: int,
    seed: int,
    attack: str,
    progress: Progress | None = None,
) -> tuple[ReferenceSet, bool]:
    """The audit's shared set of ``n_models`` reference models for ``mode``. Pool rows
    ``0..n_candidates-1`` are the candidates, the rest the aux records, in order, for both modes:

    - ``"online"``: every candidate and aux record is IN the same share of the models, the
      share of its data the target trained on (:func:`train_share`, :func:`balanced_inclusion`);
    - ``"offline"``: the models train on random halves of the aux records only
      (:func:`random_halves`); no candidate is IN any model.

    Every model is evaluated on every pool row (and the image shifts of :func:`image_shifts`), so
    all attacks of an audit can share one set per (mode, K, seed). Returns the set and whether it
    was shared with an earlier attack. Raises :class:`ConfigError` when the pool cannot give
    every model enough data.
    """
    require_recipe(knowledge, attack)
    if mode not in ("online", "offline"):
        raise ValueError(f"unknown reference mode {mode!r}")
    n_cand = len(knowledge.candidates_y)
    pool_x = np.concatenate([knowledge.candidates_x, knowledge.aux_x])
    pool_y = np.concatenate([knowledge.candidates_y, knowledge.aux_y]).astype(np.int64)
    share = train_share(knowledge) if mode == "online" else 0.5
    trainable = pool_y if mode == "online" else pool_y[n_cand:]
    check_pool(trainable, n_models, share, attack=attack, mode=mode)
    key = f"reference:{mode}:{n_models}:{seed}:{share}"
    shared = knowledge.has_cached(key)
    # Offline sets are nested: model k's rows (random_halves) and seed (model_seed) depend on
    # (seed, k) only, so K offline models are the first K of any larger set with the same seed.
    # An audit's offline attacks (difficulty-calibration's 4, lira-offline's and rmia's 8,
    # shadow-models) share one set: a smaller one is the head of a larger, a larger one trains
    # only the models a smaller one lacks.
    nested = knowledge.cached(f"reference:offline-sets:{seed}:{share}", dict)
    if mode == "offline" and not shared:
        larger = [m for m in nested if m > n_models]
        if larger:
            return knowledge.cached(key, lambda: nested[min(larger)].head(n_models)), True

    def make() -> ReferenceSet:
        start = 0
        if mode == "online":
            inclusion = balanced_inclusion(n_models, len(pool_y), seed, share)
        else:
            inclusion = np.zeros((n_models, len(pool_y)), dtype=bool)
            inclusion[:, n_cand:] = random_halves(n_models, len(pool_y) - n_cand, seed)
            start = max((m for m in nested if m < n_models), default=0)
        from privguard.attacks.membership.reference_training import train_reference_models

        refs = train_reference_models(
            knowledge,
            pool_x,
            pool_y,
            inclusion[start:],
            seed=seed,
            shifts=image_shifts(knowledge),
            progress=progress,
            first=start,
        )
        if start:
            head = nested[start]
            refs = ReferenceSet(
                logits=np.concatenate([head.logits, refs.logits]),
                inclusion=inclusion,
                shifts=refs.shifts,
                trained=refs.trained,
                reused=refs.reused,
                cache_dir=refs.cache_dir,
                notes=[
                    f"models 1-{start} were trained for an earlier attack (same rows and "
                    f"seeds) and reused, models {start + 1}-{n_models} trained for this one",
                    *refs.notes,
                ],
                how=refs.how,
            )
        if mode == "offline":
            nested[n_models] = refs
        return refs

    return knowledge.cached(key, make), shared


def check_pool(
    pool_y: np.ndarray, n_models: int, share: float = 0.5, *, attack: str, mode: str
) -> None:
    """Every model trains on ``share`` of the pool: that share needs ``MIN_TRAIN_RECORDS``
    records and two of each class. The number of models does not change how much data each
    gets (every model draws its own share), so a pool too small for one model is too small for
    any number."""
    if n_models < 1:
        raise ConfigError(f"{attack}: the number of reference models must be at least 1")
    counts = np.bincount(np.asarray(pool_y, dtype=np.int64))
    counts = counts[counts > 0]
    what = "auxiliary" if mode == "offline" else "candidate + auxiliary"
    each = int(len(pool_y) * share)
    rarest = int(counts.min() * share) if len(counts) else 0
    if each < MIN_TRAIN_RECORDS or rarest < 2:
        need = int(np.ceil(MIN_TRAIN_RECORDS / share))
        raise ConfigError(
            f"{attack}: {len(pool_y)} {what} records cannot support {n_models} reference "
            f"model(s); 0 are possible: each model trains on {share:.0%} of them ({each} "
            f"records, {rarest} of the rarest class) and needs at least {MIN_TRAIN_RECORDS} "
            f"records and two of every class; give the attacker more auxiliary data (at least "
            f"{need} records, {int(np.ceil(2 / share))} of every class)"
        )


def reference_notes(refs: ReferenceSet, shared: bool, mode: str) -> list[str]:
    pool = "candidates + auxiliary pool" if mode == "online" else "auxiliary pool only"
    if shared:
        head = f"{refs.n_models} {mode} reference models ({pool}) shared with an earlier attack"
    else:
        head = (
            f"{refs.n_models} {mode} reference models ({pool}): {refs.trained} trained"
            f"{refs.how if refs.trained else ''}, "
            f"{refs.reused} reused from the cache"
            + (f" at {refs.cache_dir}" if refs.cache_dir else "")
        )
    return [head, *refs.notes]


def guesses(
    scores: np.ndarray,
    decisions: np.ndarray,
    refs: ReferenceSet,
    shared: bool,
    notes: list[str],
) -> ReferenceGuesses:
    return ReferenceGuesses(
        scores=np.asarray(scores, dtype=np.float64),
        decisions=np.asarray(decisions, dtype=bool),
        notes=notes,
        reference_models=refs.n_models,
        trained_models=0 if shared else refs.trained,
        reused_models=0 if shared else refs.reused,
        shared_models=refs.n_models if shared else 0,
    )


def target_phi(oracle: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, bool]:
    """The target's phi on ``x`` (one query per record), from logits when the oracle gives them,
    else from its probabilities; and whether it came from probabilities."""
    from privguard.oracle import Access

    if oracle.access >= Access.LOGITS:
        return phi_from_logits(finite_logits(oracle.logits(x)), y), False
    return phi_from_probs(oracle.proba(x), y), True


__all__ = [
    "ReferenceGuesses",
    "ReferenceSet",
    "balanced_inclusion",
    "check_pool",
    "dask_client",
    "image_shifts",
    "log_p_rest",
    "log_p_true",
    "model_seed",
    "phi_from_logits",
    "phi_from_probs",
    "random_halves",
    "reference_set",
    "shift_images",
    "train_share",
]
