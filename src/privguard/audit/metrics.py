"""Membership metrics, computed in one place from the attack's scores and the ground truth.

- ``auc``: area under the ROC curve.
- ``advantage``: max over thresholds of TPR - FPR (Yeom et al. 2018's membership advantage).
- ``tpr_at_fpr_0.01`` / ``tpr_at_fpr_0.001``: the highest TPR at a false-positive rate no
  higher than 1% / 0.1% (Carlini et al., "Membership Inference Attacks From First Principles",
  S&P 2022). With N non-members, FPR <= a allows floor(a N) false positives; when that is 0 the
  figure is not resolved by the sample and the report says so.
- ``attacker_*``: the attacker's own decisions (threshold chosen without ground truth).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import beta, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

FPR_LEVELS = (0.01, 0.001)
DELTA = 1e-5  # the delta of epsilon_lower_bound
BOOTSTRAP = 200  # resamples behind the AUC's confidence interval


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, alpha: float) -> float:
    ok = fpr <= alpha + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_points(fpr: np.ndarray, tpr: np.ndarray, n_nonmembers: int, n_points: int = 200):
    """The ROC on a log-spaced FPR grid (what the log-log plot needs, a few hundred points)."""
    lo = 1.0 / max(n_nonmembers, 1)
    grid = np.unique(np.r_[0.0, np.geomspace(lo, 1.0, n_points)])
    return grid.tolist(), [tpr_at_fpr(fpr, tpr, a) for a in grid]


def clopper_pearson(k: np.ndarray, n: int, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided (1 - alpha) binomial confidence interval(s) for k successes of n."""
    k = np.asarray(k, dtype=np.float64)
    lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo), np.nan_to_num(hi, nan=1.0)


def epsilon_lower_bound(
    fpr: np.ndarray, tpr: np.ndarray, n_in: int, n_out: int, delta: float = DELTA
) -> float:
    """The largest epsilon that some threshold of the ROC rules out with 95% confidence.

    An (epsilon, delta)-DP training algorithm forces TPR <= e^eps FPR + delta and
    1 - FPR <= e^eps (1 - TPR) + delta at every threshold (Kairouz et al. 2015's hypothesis-test
    view, used to audit DP-SGD by Jagielski, Ullman and Oprea, NeurIPS 2020). Plugging in a
    Clopper-Pearson lower bound for the rates on the left and an upper bound for those on the
    right (each at 97.5%, so both hold together at 95%) gives a bound that sampling noise alone
    exceeds in at most 5% of audits.
    """
    if n_in == 0 or n_out == 0:
        return 0.0
    tp, fp = np.rint(tpr * n_in), np.rint(fpr * n_out)
    tpr_lo, _ = clopper_pearson(tp, n_in)
    _, fpr_hi = clopper_pearson(fp, n_out)
    tnr_lo, _ = clopper_pearson(n_out - fp, n_out)
    _, fnr_hi = clopper_pearson(n_in - tp, n_in)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log((tpr_lo - delta) / fpr_hi)
        e2 = np.log((tnr_lo - delta) / fnr_hi)
    eps = np.nan_to_num(np.maximum(e1, e2), nan=0.0, neginf=0.0, posinf=0.0)
    return float(max(0.0, eps.max(initial=0.0)))


def bootstrap_auc(
    ranks: np.ndarray, is_member: np.ndarray, *, n_boot: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the AUC over stratified bootstrap resamples."""
    rng = np.random.default_rng(seed)
    pos, neg = ranks[is_member], ranks[~is_member]
    if len(pos) == 0 or len(neg) == 0:
        return 0.0, 1.0
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        p = pos[rng.integers(0, len(pos), len(pos))]
        q = neg[rng.integers(0, len(neg), len(neg))]
        r = rankdata(np.r_[p, q])
        aucs[b] = (r[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def membership_metrics(
    scores: np.ndarray, decisions: np.ndarray, is_member: np.ndarray, *, seed: int = 0
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    decisions = np.asarray(decisions, dtype=bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    # +inf / -inf scores are legitimate extremes and NaN ranks lowest; roc_curve needs finite
    # values, and ranks (ties kept) give exactly the same curve.
    finite = rankdata(np.nan_to_num(scores, nan=-np.inf, posinf=np.inf, neginf=-np.inf))
    fpr, tpr, _ = roc_curve(is_member, finite, drop_intermediate=False)
    auc_lo, auc_hi = bootstrap_auc(finite, is_member, seed=seed)
    metrics: dict[str, float] = {
        "auc": round(float(roc_auc_score(is_member, finite)), 6),
        "auc_ci_low": round(auc_lo, 6),
        "auc_ci_high": round(auc_hi, 6),
        "advantage": round(float(np.max(tpr - fpr)), 6),
        "epsilon_lower_bound": round(epsilon_lower_bound(fpr, tpr, n_in, n_out), 6),
        "epsilon_lower_bound_delta": DELTA,
        "n_members": n_in,
        "n_nonmembers": n_out,
    }
    notes: list[str] = []
    for a in FPR_LEVELS:
        allowed = math.floor(a * n_out + 1e-9)
        t = tpr_at_fpr(fpr, tpr, a)
        lo, hi = clopper_pearson(np.array([round(t * n_in)]), n_in)
        metrics[f"tpr_at_fpr_{a:g}"] = round(t, 6)
        metrics[f"tpr_at_fpr_{a:g}_ci_low"] = round(float(lo[0]), 6)
        metrics[f"tpr_at_fpr_{a:g}_ci_high"] = round(float(hi[0]), 6)
        metrics[f"fpr_{a:g}_false_positives_allowed"] = allowed
        if allowed == 0:
            notes.append(
                f"TPR at {a:.1%} FPR rests on 0 allowed false positives among {n_out} "
                "non-members: not resolved by this sample (needs at least "
                f"{math.ceil(1 / a)} non-members)"
            )
    att_tpr = float(decisions[is_member].mean()) if n_in else 0.0
    att_fpr = float(decisions[~is_member].mean()) if n_out else 0.0
    metrics.update(
        {
            "attacker_tpr": round(att_tpr, 6),
            "attacker_fpr": round(att_fpr, 6),
            "attacker_advantage": round(att_tpr - att_fpr, 6),
            "attacker_balanced_accuracy": round((att_tpr + 1 - att_fpr) / 2, 6),
        }
    )
    grid, tprs = roc_points(fpr, tpr, n_out)
    return metrics, {"roc": {"fpr": grid, "tpr": tprs}}, notes
