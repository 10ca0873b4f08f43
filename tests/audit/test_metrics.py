import numpy as np
import pytest

from privguard.audit.metrics import membership_metrics, tpr_at_fpr
from privguard.audit.risk import membership_risk


def test_perfect_and_random_scores():
    truth = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    perfect = truth.astype(float)
    m, _, notes = membership_metrics(perfect, truth, truth)
    assert m["auc"] == 1.0 and m["advantage"] == 1.0 and m["tpr_at_fpr_0.01"] == 1.0
    assert m["attacker_advantage"] == 1.0
    assert m["fpr_0.01_false_positives_allowed"] == 5
    assert any("0.1% FPR" in n for n in notes)  # 500 non-members cannot resolve 0.1%

    rng = np.random.default_rng(0)
    m, _, _ = membership_metrics(rng.random(1000), rng.random(1000) > 0.5, truth)
    assert abs(m["auc"] - 0.5) < 0.05 and m["tpr_at_fpr_0.01"] < 0.05
    assert membership_risk(m) == "low"


def test_tpr_at_fpr_takes_the_best_point_under_the_limit():
    fpr = np.array([0.0, 0.005, 0.01, 0.02, 1.0])
    tpr = np.array([0.0, 0.2, 0.3, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.3
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.0


def test_infinite_scores_are_ranked_not_dropped():
    truth = np.array([True, True, False, False])
    m, _, _ = membership_metrics(np.array([np.inf, 3.0, 1.0, -np.inf]), truth, truth)
    assert m["auc"] == pytest.approx(1.0)
