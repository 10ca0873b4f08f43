"""LiRA: the likelihood-ratio membership attack with reference models.

Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
Principles", IEEE S&P 2022.

The statistic is the logit-scaled confidence of the true class,
phi = log p_y - log sum_{y' != y} p_{y'}, which is close to Gaussian across models trained with
the same recipe on random data. For each candidate the attack fits Gaussians to phi under
reference models that trained on it (IN) and did not (OUT), and asks how much more likely the
target's phi is under IN than under OUT:

- ``lira-online``: IN and OUT Gaussians; score = log N(phi; mu_in, s_in) - log N(phi; mu_out,
  s_out). The reference models train on candidates + aux, each record IN the same share of them
  as the target's training share of its data (see :func:`.reference.train_share`: matching the
  target's training-set size keeps the reference phi comparable), so they are trained after the
  candidates are known.
- ``lira-offline``: OUT models only (trained on halves of the aux pool, never on a candidate); a
  one-sided test, score = -log P(phi_OUT >= phi_target), in a form that does not saturate.

Means are medians over models (as in the paper's code). Variance: ``"per-example"`` is the
paper's per-candidate variance; ``"fixed"`` one pooled within-candidate variance per side and
view, which the paper found better below 64 reference models (its CIFAR-10 figures with 16:
per-example AUC 0.668, fixed 0.686). ``"auto"`` (the default) shrinks each candidate's own
variance towards the pooled one, which counts as ``SHRINK_PRIOR`` = 8 pseudo-models: with 16
models it is mostly the fixed variance, with 64 and more mostly the per-example one. Measured on
digits (32 online models): TPR at 1% FPR 0.068 per-example, 0.060 fixed, 0.078 shrunk.

Augmentation (``augment=True``): for images, phi is also taken on the record's four one-pixel
translations (never a horizontal flip: a mirrored digit is another symbol) and the per-view
scores are averaged; each view costs one target query per candidate. It is off by default:
on MLP targets trained without augmentation the shifted views add more noise than signal
(digits, 16 models: TPR at 1% FPR 0.050 without, 0.029 with); turn it on for models trained
with augmentation.

With ``logits`` access phi comes from the logits (z_y - logsumexp_{y' != y} z_{y'}); with
``probs`` from the float64 probabilities with the other classes' mass summed directly, so a
confident output keeps its resolution (shared/PAPERS.md, "Loss precision").

Decisions, without ground truth: online, member when the likelihood ratio favours IN (score > 0,
the likelihood-ratio test at equal priors). Offline, the threshold is set on the population: the
auxiliary records (non-members by construction) are scored the same way against the reference
models that did not train on them, and a candidate is called a member above their
``1 - alpha`` quantile (about an ``alpha`` = 5% false-positive rate; this costs one target
query per auxiliary record and view). A fixed p-value cut would not do: offline reference models
train on fewer records than the target and are less confident, so nearly every record would
look like a member.

Threat model: the attacker knows the training recipe, holds auxiliary data from the same
population and, online, the candidates. Cost: K trainings of the recipe (the reference models,
shared with the other reference-model attacks of an audit and cached on disk), plus one target
query per candidate and view.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from scipy.stats import norm

from privguard.attacks.base import Attack, Knowledge, Progress, Setting
from privguard.attacks.membership.reference import (
    ReferenceGuesses,
    ReferenceSet,
    guesses,
    min_models,
    reference_notes,
    reference_set,
    shift_images,
    target_phi,
)
from privguard.attacks.registry import register
from privguard.errors import ConfigError
from privguard.oracle import Access, Oracle

#: pseudo-observations of the pooled variance in each candidate's own variance ("auto")
SHRINK_PRIOR = 8.0
VARIANCES = ("auto", "fixed", "per-example")
VARIANCE_NOTES = {
    "auto": f"per-example shrunk to pooled ({SHRINK_PRIOR:g} pseudo-models)",
    "fixed": "fixed (pooled)",
    "per-example": "per-example",
}
PAPER = "Carlini et al., Membership Inference Attacks From First Principles, IEEE S&P 2022"


class _Lira(Attack):
    """LiRA (see the module docstring).

    Settings:
        n_reference: reference models (online: 16, each candidate IN the target's training share
            of them; offline: 8, on halves of the aux pool).
        variance: ``"auto"`` (per-example shrunk to pooled), ``"fixed"`` or ``"per-example"``.
        augment: also query one-pixel shifts of image records and average (off by default).
        alpha: offline only: the false-positive rate the decision threshold aims at.
        seed: seeds the reference design and training (default: the knowledge's seed).

    Example:
        >>> guesses = LiraOnline(n_reference=16).run(target.oracle("logits"), knowledge)
        >>> guesses.scores, guesses.decisions, guesses.reused_models
    """

    family = "membership"
    needs = Access.PROBS
    paper = PAPER
    mode = "online"
    least = 4
    settings = (
        Setting(
            "n_reference", int, 16, "reference models, half of them IN each candidate", 4, 1024
        ),
        Setting("variance", str, "auto", "per-example, fixed or auto (shrunk)", choices=VARIANCES),
        Setting("augment", bool, False, "also query one-pixel shifts of image records"),
    )

    def __init__(
        self,
        *,
        n_reference: int = 16,
        variance: str = "auto",
        augment: bool = False,
        alpha: float = 0.05,
        seed: int | None = None,
    ) -> None:
        self.n_reference = n_reference
        self.variance = variance
        self.augment = augment
        self.alpha = alpha
        self.seed = seed

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> ReferenceGuesses:
        self.check_access(oracle)
        if self.variance not in VARIANCES:
            raise ConfigError(f"{self.name}: variance must be one of {', '.join(VARIANCES)}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"{self.name}: alpha must lie in (0, 1)")
        why = "IN and OUT models for every candidate" if self.mode == "online" else "a variance"
        min_models(self.name, self.n_reference, self.least, why)
        seed = knowledge.seed if self.seed is None else self.seed
        refs, shared = reference_set(
            knowledge,
            mode=self.mode,
            n_models=self.n_reference,
            seed=seed,
            attack=self.name,
            progress=progress,
        )
        x, y = knowledge.candidates_x, knowledge.candidates_y
        n = len(y)
        shifts = refs.shifts if self.augment else refs.shifts[:1]
        phi_t, from_probs = _target_views(oracle, knowledge, x, y, shifts)
        phi_r = refs.phi(_pool_labels(knowledge), from_probs=from_probs)[:, : len(shifts), :n]
        prior = {"fixed": np.inf, "per-example": 0.0, "auto": SHRINK_PRIOR}[self.variance]
        scores = self._score(phi_t, phi_r, refs.inclusion[:, :n], prior)
        decisions, decision_note = self._decide(scores, oracle, knowledge, refs, shifts, prior)
        notes = reference_notes(refs, shared, self.mode)
        notes.append(
            f"phi from the target's {'probabilities' if from_probs else 'logits'}; "
            f"{VARIANCE_NOTES[self.variance]} variance; "
            + (
                f"averaged over {len(shifts)} views (the record and one-pixel shifts)"
                if len(shifts) > 1
                else "no augmentation"
            )
        )
        notes.append(decision_note)
        return guesses(scores, decisions, refs, shared, notes)

    @abstractmethod
    def _score(self, phi_t, phi_r, inclusion, prior) -> np.ndarray:
        """Membership score per candidate from the target's and the references' statistics."""

    @abstractmethod
    def _decide(self, scores, oracle, knowledge, refs, shifts, prior):
        """Member / non-member calls and a note saying how the threshold was set."""


def _target_views(
    oracle: Oracle, knowledge: Knowledge, x: np.ndarray, y: np.ndarray, shifts
) -> tuple[np.ndarray, bool]:
    """The target's phi on each view of ``x``, ``(V, n)``, and whether it came from
    probabilities (one query per record and view)."""
    fill = float(np.min(knowledge.bounds[0]))
    out, from_probs = [], False
    for s in shifts:
        phi, from_probs = target_phi(oracle, shift_images(x, s, fill), y)
        out.append(phi)
    return np.stack(out), from_probs


def _pool_labels(knowledge: Knowledge) -> np.ndarray:
    return np.concatenate([knowledge.candidates_y, knowledge.aux_y]).astype(np.int64)


def gaussian_fit(phi: np.ndarray, mask: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Median and standard deviation of ``phi`` ``(K, V, n)`` over the models where ``mask``
    ``(K, n)`` is set, per view and candidate.

    The variance is each candidate's own (residuals about its mean, ``c - 1`` degrees of
    freedom) shrunk towards the pooled within-candidate variance of its view, which counts as
    ``prior`` pseudo-observations: ``prior=0`` is the paper's per-example variance,
    ``prior=inf`` its fixed (global) one."""
    m = np.broadcast_to(mask[:, None, :], phi.shape)
    count = m.sum(axis=0)
    if (count < 1).any():
        raise ConfigError("some candidates have no reference model on one side; add models")
    vals = np.where(m, phi, np.nan)
    mu = np.nanmedian(vals, axis=0)
    ss = np.nansum((vals - np.nanmean(vals, axis=0)) ** 2, axis=0)
    dof = count - 1
    pooled = ss.sum(axis=1, keepdims=True) / np.maximum(dof.sum(axis=1, keepdims=True), 1)
    pooled = np.maximum(pooled, 1e-24)
    if np.isinf(prior):
        var = np.broadcast_to(pooled, mu.shape)
    elif prior == 0:
        if (dof < 1).any():
            raise ConfigError("per-example variance needs at least 2 models on each side")
        # A candidate whose models all agree would get an infinitely sharp Gaussian.
        var = np.maximum(ss / dof, 1e-6 * pooled)
    else:
        var = (ss + prior * pooled) / (dof + prior)
    return mu, np.sqrt(var)


@register
class LiraOnline(_Lira):
    name = "lira-online"
    description = (
        "Likelihood ratio of the target's logit-scaled confidence under reference models that "
        "did and did not train on the record (online: references train on the candidates)."
    )
    mode = "online"
    least = 4

    def _score(self, phi_t, phi_r, inclusion, prior):
        mu_in, sd_in = gaussian_fit(phi_r, inclusion, prior)
        mu_out, sd_out = gaussian_fit(phi_r, ~inclusion, prior)
        llr = norm.logpdf(phi_t, mu_in, sd_in) - norm.logpdf(phi_t, mu_out, sd_out)
        return llr.mean(axis=0)

    def _decide(self, scores, oracle, knowledge, refs, shifts, prior):
        return scores > 0, "member when the likelihood ratio favours IN (score > 0)"


@register
class LiraOffline(_Lira):
    name = "lira-offline"
    description = (
        "One-sided test of the target's logit-scaled confidence against reference models that "
        "never trained on the record (offline: references train on the auxiliary pool only)."
    )
    mode = "offline"
    least = 2
    settings = (
        Setting(
            "n_reference", int, 8, "reference models trained on halves of the aux pool", 2, 1024
        ),
        Setting("variance", str, "auto", "per-example, fixed or auto (shrunk)", choices=VARIANCES),
        Setting("augment", bool, False, "also query one-pixel shifts of image records"),
        Setting("alpha", float, 0.05, "false-positive rate the decision aims at", 1e-4, 0.5),
    )

    def __init__(
        self,
        *,
        n_reference: int = 8,
        variance: str = "auto",
        augment: bool = False,
        alpha: float = 0.05,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            n_reference=n_reference, variance=variance, augment=augment, alpha=alpha, seed=seed
        )

    def _score(self, phi_t, phi_r, inclusion, prior):
        mu_out, sd_out = gaussian_fit(phi_r, ~inclusion, prior)
        # -log P(phi_OUT >= phi_target): logsf keeps its resolution far in the tail.
        return (-norm.logsf((phi_t - mu_out) / sd_out)).mean(axis=0)

    def _decide(self, scores, oracle, knowledge, refs, shifts, prior):
        """Threshold at the ``1 - alpha`` quantile of the auxiliary population's scores, each
        aux record scored against the reference models that did not train on it."""
        n = len(knowledge.candidates_y)
        inc = refs.inclusion[:, n:]
        keep = (~inc).sum(axis=0) >= 1
        aux_x, aux_y = knowledge.aux_x[keep], np.asarray(knowledge.aux_y)[keep]
        phi_t, from_probs = _target_views(oracle, knowledge, aux_x, aux_y, shifts)
        labels = _pool_labels(knowledge)
        phi_r = refs.phi(labels, from_probs=from_probs)[:, : len(shifts), n:][:, :, keep]
        population = self._score(phi_t, phi_r, inc[:, keep], prior)
        threshold = float(np.quantile(population, 1 - self.alpha))
        note = (
            f"member above the {1 - self.alpha:.0%} quantile of {keep.sum()} auxiliary "
            f"(non-member) records' scores, about a {self.alpha:.0%} false-positive rate "
            f"({keep.sum() * len(shifts)} target queries)"
        )
        return scores > threshold, note


__all__ = ["LiraOffline", "LiraOnline", "ReferenceSet", "gaussian_fit"]
