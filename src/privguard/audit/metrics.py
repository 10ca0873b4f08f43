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
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

FPR_LEVELS = (0.01, 0.001)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, alpha: float) -> float:
    ok = fpr <= alpha + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_points(fpr: np.ndarray, tpr: np.ndarray, n_nonmembers: int, n_points: int = 200):
    """The ROC on a log-spaced FPR grid (what the log-log plot needs, a few hundred points)."""
    lo = 1.0 / max(n_nonmembers, 1)
    grid = np.unique(np.r_[0.0, np.geomspace(lo, 1.0, n_points)])
    return grid.tolist(), [tpr_at_fpr(fpr, tpr, a) for a in grid]


def membership_metrics(
    scores: np.ndarray, decisions: np.ndarray, is_member: np.ndarray
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    decisions = np.asarray(decisions, dtype=bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    # +inf / -inf scores are legitimate extremes and NaN ranks lowest; roc_curve needs finite
    # values, and ranks (ties kept) give exactly the same curve.
    finite = rankdata(np.nan_to_num(scores, nan=-np.inf, posinf=np.inf, neginf=-np.inf))
    fpr, tpr, _ = roc_curve(is_member, finite, drop_intermediate=False)
    metrics: dict[str, float] = {
        "auc": round(float(roc_auc_score(is_member, finite)), 6),
        "advantage": round(float(np.max(tpr - fpr)), 6),
        "n_members": n_in,
        "n_nonmembers": n_out,
    }
    notes: list[str] = []
    for a in FPR_LEVELS:
        allowed = math.floor(a * n_out + 1e-9)
        metrics[f"tpr_at_fpr_{a:g}"] = round(tpr_at_fpr(fpr, tpr, a), 6)
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
