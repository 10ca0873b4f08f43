"""RMIA: membership inference by pairwise likelihood ratios against population samples.

Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership Inference Attacks", ICML 2024.

For a candidate x and a population record z (a record of the same population that the target
did not train on: here the attacker's auxiliary pool), RMIA compares

    LR(x, z) = [p(x | theta) / p(x)] / [p(z | theta) / p(z)]

where p(. | theta) is the target's probability of the record's true class and p(.) the same
probability averaged over reference models. Score(x) = the fraction of population records z
with LR(x, z) > gamma. Both population terms are kept: p(z) is averaged over reference models
exactly like p(x) (dropping it is only valid for a single fixed model, shared/PAPERS.md).

- Online (``offline=False``): the reference models train on candidates + aux, each candidate IN
  the target's training share of them (:func:`.reference.train_share`), and p(x) averages over
  all of them.
- Offline (the default): the reference models train on halves of the aux pool only, and
  p(x) = 1/2 ((1 + a) p_OUT(x) + (1 - a)), where p_OUT averages over models that did not train
  on x; ``a`` corrects for what IN models would have added. As in the paper, ``a`` is tuned on
  the reference models themselves: each in turn plays the target, its own training records are
  the members, and the ``a`` in {0, 0.1, ..., 1} with the highest mean AUC against the other
  models is kept. With one reference model nothing can be tuned and ``a`` = ``DEFAULT_A`` (0.3;
  tuning picked 0-0.1 on digits and mnist-5k, where a = 0 and a = 0.3 differ by 0.004 AUC).

For a fixed population the score is a monotone function of LR(x) = p(x | theta) / p(x), so ties
(several candidates beating every z) are broken by LR(x) itself, adding less than one population
step. The decision uses the fraction alone: member when x beats at least ``beta`` (95%) of the
population, which for a non-member drawn like z happens about 5% of the time.

Numerics: probabilities are handled as logs and as the mass of the other classes, both taken from
phi = log p_y - log sum_{y' != y} p_{y'} in float64, so p_y near 1 (an overfit model on its
members) keeps its resolution.

Threat model: the attacker knows the training recipe and holds auxiliary data from the same
population. Cost: K trainings of the recipe (shared with the other reference-model attacks of an
audit and cached), one target query per candidate and one per population record.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from privguard.attacks.base import Attack, Knowledge, Progress, Setting
from privguard.attacks.membership.reference import (
    ReferenceGuesses,
    guesses,
    log_p_rest,
    log_p_true,
    reference_notes,
    reference_set,
    target_phi,
)
from privguard.attacks.registry import register
from privguard.errors import ConfigError
from privguard.oracle import Access, Oracle

A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_A = 0.3


def log_p_mixture(lp: np.ndarray, lq: np.ndarray, mask: np.ndarray, c: float) -> np.ndarray:
    """log of 1 - c * mean_k q_k over the models where ``mask`` ``(K, N)`` is set, with
    ``lp = log p_k`` and ``lq = log(1 - p_k)`` ``(K, N)``; = log((1 - c) + c * mean_k p_k).

    Exact whether the mean is near 0 or near 1. Rows without any model give NaN."""
    count = mask.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_count = np.log(count)
        lq_mean = logsumexp(np.where(mask, lq, -np.inf), axis=0) - log_count
        lp_mean = logsumexp(np.where(mask, lp, -np.inf), axis=0) - log_count
        cq = c * np.exp(lq_mean)
        near_one = np.log1p(-np.minimum(cq, 0.5))
        general = np.logaddexp(np.log1p(-c), np.log(c) + lp_mean) if c < 1 else lp_mean
    out = np.where(cq < 0.5, near_one, general)
    return np.where(count > 0, out, np.nan)


@register
class RMIA(Attack):
    """RMIA (see the module docstring).

    Settings:
        n_reference: reference models (8; one is enough offline).
        offline: train them on the aux pool only (``True``) or also on the candidates.
        a: the offline approximation's parameter (``None``: tuned on the reference models).
        gamma: the likelihood-ratio margin a candidate must beat a population record by.
        beta: the attacker's decision: member when beating this share of the population.
        seed: seeds the reference design and training (default: the knowledge's seed).

    Example:
        >>> guesses = RMIA(n_reference=2).run(target.oracle("probs"), knowledge)
    """

    name = "rmia"
    family = "membership"
    needs = Access.PROBS
    paper = "Zarifzadeh, Liu, Shokri, Low-Cost High-Power Membership Inference Attacks, ICML 2024"
    description = (
        "Share of population records that the candidate beats in likelihood ratio "
        "p(x|target)/p(x) against reference models; works with one or a few reference models."
    )
    settings = (
        Setting("n_reference", int, 8, "reference models (one is enough offline)", 1, 1024),
        Setting("offline", bool, True, "train references on the aux pool only"),
        Setting("gamma", float, 1.0, "likelihood-ratio margin over a population record", 1e-6),
        Setting(
            "beta", float, 0.95, "member when beating this share of the population", 0.01, 0.99
        ),
    )

    def __init__(
        self,
        *,
        n_reference: int = 8,
        offline: bool = True,
        a: float | None = None,
        gamma: float = 1.0,
        beta: float = 0.95,
        seed: int | None = None,
    ) -> None:
        self.n_reference = n_reference
        self.offline = offline
        self.a = a
        self.gamma = gamma
        self.beta = beta
        self.seed = seed

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> ReferenceGuesses:
        self.check_access(oracle)
        if self.a is not None and not 0 <= self.a <= 1:
            raise ConfigError("rmia: a must lie in [0, 1]")
        if self.gamma <= 0 or not 0 < self.beta < 1:
            raise ConfigError("rmia: gamma must be positive and beta lie in (0, 1)")
        if not self.offline and self.n_reference < 2:
            raise ConfigError("rmia online needs at least 2 reference models (IN and OUT)")
        mode = "offline" if self.offline else "online"
        seed = knowledge.seed if self.seed is None else self.seed
        refs, shared = reference_set(
            knowledge,
            mode=mode,
            n_models=self.n_reference,
            seed=seed,
            attack=self.name,
            progress=progress,
        )
        y = np.concatenate([knowledge.candidates_y, knowledge.aux_y]).astype(np.int64)
        n = len(knowledge.candidates_y)
        phi_t_x, from_probs = target_phi(oracle, knowledge.candidates_x, knowledge.candidates_y)
        phi_t_z, _ = target_phi(oracle, knowledge.aux_x, knowledge.aux_y)
        phi_r = refs.phi(y, from_probs=from_probs)[:, 0, :]  # (K, N)
        lp, lq = log_p_true(phi_r), log_p_rest(phi_r)
        notes = reference_notes(refs, shared, mode)
        if self.offline:
            use = ~refs.inclusion
            if self.a is not None:
                a = self.a
                notes.append(f"offline, a = {a:g} (given)")
            elif refs.n_models >= 2:
                a = tune_a(lp[:, n:], lq[:, n:], refs.inclusion[:, n:])
                notes.append(f"offline, a = {a:g} (tuned on the reference models)")
            else:
                a = DEFAULT_A
                notes.append(f"offline with one reference model: a = {a:g} (nothing to tune on)")
            c = (1 + a) / 2
        else:
            use = np.ones_like(refs.inclusion)
            c = 1.0
            notes.append("online: p(x) averages IN and OUT reference models")
        log_px = log_p_mixture(lp, lq, use, c)
        lr_x = log_p_true(phi_t_x) - log_px[:n]
        lr_z = log_p_true(phi_t_z) - log_px[n:]
        lr_z = np.sort(lr_z[np.isfinite(lr_z)])  # z that no OUT model saw are left out
        if len(lr_z) == 0:
            raise ConfigError(
                "rmia: no population record is OUT of any reference model; add models"
            )
        frac = np.searchsorted(lr_z, lr_x - np.log(self.gamma), side="left") / len(lr_z)
        # Break ties within one population level by LR(x), which the fraction is monotone in.
        scores = frac + rankdata(lr_x) / (len(lr_x) + 1) / (len(lr_z) + 1)
        notes.append(
            f"{len(lr_z)} population records (auxiliary records with a reference model to "
            f"average over; {len(knowledge.aux_y)} target queries), "
            f"gamma = {self.gamma:g}; member when the candidate beats at least "
            f"{self.beta:.0%} of them (about a {1 - self.beta:.0%} false-positive rate)"
        )
        return guesses(scores, frac >= self.beta, refs, shared, notes)


def tune_a(lp: np.ndarray, lq: np.ndarray, inclusion: np.ndarray) -> float:
    """The offline ``a`` with the best mean AUC when each reference model in turn is attacked
    with the others: its training records are the members, the rest of the aux pool the
    non-members, and p_OUT(x) averages the other models that did not train on x.

    ``lp``, ``lq``: ``(K, N_aux)`` log p and log(1 - p) of the true class under each model;
    ``inclusion``: ``(K, N_aux)``."""
    k = len(inclusion)
    aucs = np.zeros(len(A_GRID))
    used = 0
    for j in range(k):
        others = np.delete(np.arange(k), j)
        use = ~inclusion[others]
        rows = use.any(axis=0)
        member = inclusion[j, rows]
        if member.all() or not member.any():
            continue
        used += 1
        for i, a in enumerate(A_GRID):
            log_px = log_p_mixture(
                lp[others][:, rows], lq[others][:, rows], use[:, rows], (1 + a) / 2
            )
            aucs[i] += roc_auc_score(member, lp[j, rows] - log_px)
    if used == 0:
        return DEFAULT_A
    return float(A_GRID[int(np.argmax(aucs))])


__all__ = ["A_GRID", "DEFAULT_A", "RMIA", "log_p_mixture", "tune_a"]
