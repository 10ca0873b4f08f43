"""Reference-free and few-reference membership attacks: strong attacks at a fraction of LiRA's cost.

- ``qmia``: Bertran, Tang, Roth, Kearns, Morgenstern, Wu, "Scalable Membership Inference Attacks
  via Quantile Regression", NeurIPS 2023. The attack trains *no* model like the target. It fits
  one regression model on population records the target never trained on (the auxiliary pool)
  that predicts, from a record (x, y), the distribution of the target's score s(x, y) on
  non-members; a candidate whose score lies above the predicted (1 - alpha) quantile q_alpha(x, y)
  is called a member, so the false-positive rate is about alpha by construction, per record and
  not only on average. As in the paper's large-scale experiments we fit the Gaussian
  parametrisation: a small network outputs mu(x, y) and log sigma(x, y), trained by the Gaussian
  negative log-likelihood, so every quantile is q_alpha = mu + sigma * Phi^-1(1 - alpha) and the
  ROC score is the standardised (s - mu) / sigma. The score s is the paper's hinge score, the
  logit margin phi = log p_y - log sum_{y' != y} p_{y'} (exact from logits or float64 probabilities,
  :mod:`.reference`). The paper's regressor is a large pretrained network fine-tuned on public
  data, whose learned representation is what makes per-record quantiles predictable; privguard's
  attacker has a few hundred population records, too few to learn "how hard is this record" from
  raw pixels or fields. So the regressor also sees a learned difficulty feature: the logit margin
  of the true label under a generic population classifier (standardised logistic regression,
  2-fold cross-fitted on the aux pool, so every aux record's feature comes from a model that did
  not train on it, like every candidate's). It needs no knowledge of the target's recipe and
  trains no model like the target. With so few records one regressor's quantiles are noisy, so
  ``ensemble`` regressors (different seeds and held-out shares) are averaged as a Gaussian
  mixture, moment-matched to one Gaussian (ensembles of small quantile regressors: Zhang, Bertran,
  Roth, "Order of Magnitude Speedups for LLM Membership Inference", EMNLP 2024). On digits and
  heart-disease (3 seeds) the difficulty feature and the 5-model ensemble raised the AUC by about
  0.01-0.03 over one regressor on raw features, but not its TPR@1%FPR (docs/benchmarks.md,
  against LiRA). Cost: one query per candidate and aux record, two logistic regressions and a few
  small regression fits (seconds).
- ``difficulty-calibration``: Watson, Guo, Cormode, Sablayrolles, "On the Importance of Difficulty
  Calibration in Membership Inference Attacks", ICLR 2022. The target's loss on a record minus
  the average loss of a few *offline* reference models on it (models that never saw the
  candidates): the references say how hard the record is, so an easy non-member no longer looks
  like a member. With 4 references (trained stacked, :mod:`privguard.models.stacked`, and
  shared with ``lira-offline``/``rmia`` when K and the seed agree) it costs a fraction of LiRA's
  16 online models. Threshold: the (1 - alpha) quantile of the calibrated score on the auxiliary
  records (non-members by construction), i.e. about an alpha false-positive rate.

Threat model: black-box probability access to the target and population data (both); the
training recipe too for ``difficulty-calibration``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from privguard.attacks.base import Attack, Knowledge, MembershipGuesses, Progress, Setting
from privguard.attacks.membership.reference import (
    guesses,
    log_p_true,
    reference_notes,
    reference_set,
    target_phi,
)
from privguard.attacks.registry import register
from privguard.errors import ConfigError
from privguard.models.threads import single_thread
from privguard.oracle import Access, Oracle

#: share of the auxiliary records held out to stop the regressor's training early
QMIA_VALIDATION = 0.2
MIN_AUX = 20
#: folds of the cross-fitted population classifier behind the difficulty feature
DIFFICULTY_FOLDS = 2
LOG_FLOOR = 1e-12


def _features(
    x: np.ndarray, y: np.ndarray, n_classes: int, difficulty: np.ndarray | None = None
) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
    parts = [flat, onehot]
    if difficulty is not None:
        parts.append(np.asarray(difficulty, dtype=np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def _margin(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p_y - log(1 - p_y) under a fitted scikit-learn classifier; a label it never saw
    counts as p_y = 0 (floored)."""
    p = model.predict_proba(x)
    col = {int(c): i for i, c in enumerate(model.classes_)}
    idx = np.array([col.get(int(c), -1) for c in y])
    py = np.where(idx >= 0, p[np.arange(len(y)), np.maximum(idx, 0)], 0.0)
    py = np.clip(py, LOG_FLOOR, 1 - LOG_FLOOR)
    return np.log(py) - np.log1p(-py)


def difficulty_feature(
    aux_x: np.ndarray, aux_y: np.ndarray, cand_x: np.ndarray, cand_y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """How hard each record is for a model that never trained on it: the true label's logit
    margin under a standardised logistic regression fitted on the other fold of the aux pool
    (aux records) or averaged over the fold models (candidates). ``None`` when a fold holds a
    single class (nothing to fit)."""
    xa = np.asarray(aux_x, dtype=np.float64).reshape(len(aux_x), -1)
    xc = np.asarray(cand_x, dtype=np.float64).reshape(len(cand_x), -1)
    fold = np.random.default_rng(seed).permutation(len(aux_y)) % DIFFICULTY_FOLDS
    f_aux, f_cand = np.zeros(len(aux_y)), np.zeros(len(cand_y))
    for k in range(DIFFICULTY_FOLDS):
        fit_on = fold != k
        if len(np.unique(aux_y[fit_on])) < 2:
            return None
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
        model.fit(xa[fit_on], aux_y[fit_on])
        f_aux[~fit_on] = _margin(model, xa[~fit_on], aux_y[~fit_on])
        f_cand += _margin(model, xc, cand_y) / DIFFICULTY_FOLDS
    return f_aux, f_cand


class GaussianQuantileRegressor:
    """mu(f) and sigma(f) of a score given features f, fitted by the Gaussian negative
    log-likelihood (Bertran et al. 2023, Gaussian parametrisation of the quantile model): an MLP
    with one hidden ReLU layer, Adam, weight decay, early stopping on a held-out share."""

    def __init__(
        self, *, hidden: int = 64, epochs: int = 300, lr: float = 3e-3, seed: int = 0
    ) -> None:
        self.hidden, self.epochs, self.lr, self.seed = hidden, epochs, lr, seed

    def fit(self, f: np.ndarray, s: np.ndarray) -> GaussianQuantileRegressor:
        rng = np.random.default_rng(self.seed)
        self.mean_ = f.mean(0)
        std = f.std(0)
        self.scale_ = np.where(std < 1e-3, 1.0, std)  # constant columns (blank pixels) stay put
        self.s_mean_, self.s_scale_ = float(s.mean()), float(s.std() + 1e-6)
        ft = torch.from_numpy(((f - self.mean_) / self.scale_).astype(np.float32))
        st = torch.from_numpy(((s - self.s_mean_) / self.s_scale_).astype(np.float32))
        order = rng.permutation(len(s))
        n_val = max(1, int(len(s) * QMIA_VALIDATION))
        val, tr = torch.from_numpy(order[:n_val]), torch.from_numpy(order[n_val:])
        with single_thread():
            torch.manual_seed(self.seed)
            self.net_ = nn.Sequential(
                nn.Linear(f.shape[1], self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2)
            )
            opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=1e-3)
            best, best_state, stale = np.inf, None, 0
            for _ in range(self.epochs):  # full batch: the aux pool is small
                opt.zero_grad()
                loss = self._nll(ft[tr], st[tr])
                loss.backward()
                opt.step()
                with torch.no_grad():
                    v = float(self._nll(ft[val], st[val]))
                if v < best - 1e-5:
                    best, stale = v, 0
                    best_state = {k: t.clone() for k, t in self.net_.state_dict().items()}
                else:
                    stale += 1
                    if stale >= 20:
                        break
            if best_state is not None:
                self.net_.load_state_dict(best_state)
        return self

    def _nll(self, f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self.net_(f)
        mu, log_sigma = out[:, 0], out[:, 1].clamp(-6, 6)
        return (log_sigma + 0.5 * ((s - mu) / log_sigma.exp()) ** 2).mean()

    def predict(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the score at each row of ``f``, float64."""
        ft = torch.from_numpy(((f - self.mean_) / self.scale_).astype(np.float32))
        with single_thread(), torch.no_grad():
            out = self.net_(ft).double().numpy()
        mu = out[:, 0] * self.s_scale_ + self.s_mean_
        sigma = np.exp(np.clip(out[:, 1], -6, 6)) * self.s_scale_
        return mu, sigma


class QuantileEnsemble:
    """``n`` :class:`GaussianQuantileRegressor` fits (seeds ``seed * 1000 + i``, so each holds
    out a different validation share) averaged as an equal-weight Gaussian mixture and
    moment-matched: mu = mean mu_i, sigma^2 = mean (sigma_i^2 + mu_i^2) - mu^2."""

    def __init__(self, *, n: int = 5, hidden: int = 64, seed: int = 0) -> None:
        self.models = [
            GaussianQuantileRegressor(hidden=hidden, seed=seed * 1000 + i) for i in range(n)
        ]

    def fit(self, f: np.ndarray, s: np.ndarray) -> QuantileEnsemble:
        for m in self.models:
            m.fit(f, s)
        return self

    def predict(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [m.predict(f) for m in self.models]
        mu = np.mean([o[0] for o in out], axis=0)
        second = np.mean([o[1] ** 2 + o[0] ** 2 for o in out], axis=0)
        return mu, np.sqrt(np.maximum(second - mu**2, 1e-12))


@register
class QMIA(Attack):
    """Quantile-regression membership inference (Bertran et al., NeurIPS 2023; module docstring).

    Settings:
        alpha: the false-positive rate the per-record threshold aims at.
        hidden: hidden units of each quantile regressor.
        ensemble: quantile regressors averaged (:class:`QuantileEnsemble`).
        difficulty: give the regressors the cross-fitted population classifier's margin
            (:func:`difficulty_feature`).
        seed: seeds the regressors and the folds (default: the knowledge's seed).

    Example:
        >>> QMIA(alpha=0.01).run(target.oracle("probs"), knowledge).scores
    """

    name = "qmia"
    family = "membership"
    needs = Access.PROBS
    paper = (
        "Bertran et al., Scalable Membership Inference Attacks via Quantile Regression, "
        "NeurIPS 2023"
    )
    description = (
        "Reference-free: a quantile regressor fitted on population records predicts each "
        "record's non-member score distribution; member above its (1 - alpha) quantile."
    )
    settings = (
        Setting("alpha", float, 0.05, "target false-positive rate of the threshold", 1e-4, 0.5),
        Setting("hidden", int, 64, "hidden units of the quantile regressor", 4, 4096),
        Setting("ensemble", int, 5, "quantile regressors averaged", 1, 64),
        Setting(
            "difficulty",
            bool,
            True,
            "also give the regressor a cross-fitted population classifier's margin",
        ),
    )

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        hidden: int = 64,
        ensemble: int = 5,
        difficulty: bool = True,
        seed: int | None = None,
    ) -> None:
        self.alpha = alpha
        self.hidden = hidden
        self.ensemble = ensemble
        self.difficulty = difficulty
        self.seed = seed

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> MembershipGuesses:
        self.check_access(oracle)
        if not 0 < self.alpha < 1:
            raise ConfigError("qmia: alpha must lie in (0, 1)")
        if knowledge.candidates_x is None or knowledge.candidates_y is None:
            raise ConfigError("the qmia attack needs candidate records to decide on")
        if knowledge.aux_y is None or len(knowledge.aux_y) < MIN_AUX:
            n = 0 if knowledge.aux_y is None else len(knowledge.aux_y)
            raise ConfigError(
                f"qmia fits its quantile regressor on the attacker's population records: "
                f"{n} given, at least {MIN_AUX} needed"
            )
        seed = knowledge.seed if self.seed is None else self.seed
        aux_y = np.asarray(knowledge.aux_y, dtype=np.int64)
        cand_y = np.asarray(knowledge.candidates_y, dtype=np.int64)
        n_classes = int(max(aux_y.max(), cand_y.max())) + 1
        if progress is not None:
            progress("quantile regression", 0, 1)
        s_aux, _ = target_phi(oracle, knowledge.aux_x, aux_y)
        s_cand, from_probs = target_phi(oracle, knowledge.candidates_x, cand_y)
        diff = None
        if self.difficulty:
            diff = difficulty_feature(knowledge.aux_x, aux_y, knowledge.candidates_x, cand_y, seed)
        d_aux, d_cand = (None, None) if diff is None else diff
        reg = QuantileEnsemble(n=self.ensemble, hidden=self.hidden, seed=seed).fit(
            _features(knowledge.aux_x, aux_y, n_classes, d_aux), s_aux
        )
        mu, sigma = reg.predict(_features(knowledge.candidates_x, cand_y, n_classes, d_cand))
        scores = (s_cand - mu) / sigma
        decisions = scores > norm.ppf(1 - self.alpha)
        if progress is not None:
            progress("quantile regression", 1, 1)
        notes = [
            f"{self.ensemble} quantile regressor(s) (Gaussian, {self.hidden} hidden units) "
            "fitted on "
            f"{len(aux_y)} auxiliary records; no reference models",
            "regressor features: the record and its label"
            + (
                f", and its margin under a {DIFFICULTY_FOLDS}-fold cross-fitted logistic "
                "regression on the auxiliary records"
                if diff is not None
                else ""
            ),
            f"decision: score above the predicted {1 - self.alpha:g} quantile "
            f"(aims at a {self.alpha:g} false-positive rate)",
        ]
        if from_probs:
            notes.append("scores computed from probabilities (the oracle gives no logits)")
        return MembershipGuesses(scores=scores, decisions=decisions, notes=notes)


@register
class DifficultyCalibration(Attack):
    """Difficulty-calibrated loss with a few offline reference models (Watson et al., ICLR
    2022; module docstring).

    Settings:
        n_reference: offline reference models (trained on halves of the aux pool).
        alpha: the false-positive rate the population threshold aims at.
        seed: seeds the reference design and training (default: the knowledge's seed).
    """

    name = "difficulty-calibration"
    family = "membership"
    needs = Access.PROBS
    paper = (
        "Watson et al., On the Importance of Difficulty Calibration in Membership Inference "
        "Attacks, ICLR 2022"
    )
    description = (
        "Few-reference: the target's loss minus the mean loss of a few offline reference models "
        "on the record; member above the population's (1 - alpha) quantile."
    )
    settings = (
        Setting("n_reference", int, 4, "offline reference models", 1, 1024),
        Setting("alpha", float, 0.05, "target false-positive rate of the threshold", 1e-4, 0.5),
    )

    def __init__(
        self, *, n_reference: int = 4, alpha: float = 0.05, seed: int | None = None
    ) -> None:
        self.n_reference = n_reference
        self.alpha = alpha
        self.seed = seed

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> MembershipGuesses:
        self.check_access(oracle)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"{self.name}: alpha must lie in (0, 1)")
        seed = knowledge.seed if self.seed is None else self.seed
        refs, shared = reference_set(
            knowledge,
            mode="offline",
            n_models=self.n_reference,
            seed=seed,
            attack=self.name,
            progress=progress,
        )
        n_cand = len(knowledge.candidates_y)
        pool_y = np.concatenate([knowledge.candidates_y, knowledge.aux_y]).astype(np.int64)
        pool_x = np.concatenate([knowledge.candidates_x, knowledge.aux_x])
        phi_t, from_probs = target_phi(oracle, pool_x, pool_y)
        phi_r = refs.phi(pool_y, from_probs=from_probs)[:, 0, :]  # (K, N), the record itself
        # calibrated score: -loss_target + mean_k loss_ref_k, loss = -log p_y
        ref_loss = -log_p_true(phi_r)
        out = ~refs.inclusion  # aux records a reference trained on are not used for it
        mean_ref_loss = np.where(out, ref_loss, 0.0).sum(0) / np.maximum(out.sum(0), 1)
        score = log_p_true(phi_t) + mean_ref_loss
        usable = out[:, n_cand:].any(0)
        aux_scores = score[n_cand:][usable]
        threshold = float(np.quantile(aux_scores, 1 - self.alpha)) if len(aux_scores) else np.inf
        scores = score[:n_cand]
        notes = reference_notes(refs, shared, "offline")
        notes.append(
            f"threshold: the {1 - self.alpha:g} quantile of the calibrated score on "
            f"{len(aux_scores)} auxiliary records"
        )
        return guesses(scores, scores > threshold, refs, shared, notes)
