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


def test_confidence_intervals_contain_the_estimates_and_shrink_with_data():
    rng = np.random.default_rng(1)
    widths = []
    for n in (200, 2000):
        truth = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        scores = truth * 0.5 + rng.random(2 * n)
        m, _, _ = membership_metrics(scores, scores > 0.75, truth)
        assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
        assert m["tpr_at_fpr_0.01_ci_low"] <= m["tpr_at_fpr_0.01"] <= m["tpr_at_fpr_0.01_ci_high"]
        widths.append(m["auc_ci_high"] - m["auc_ci_low"])
    assert widths[1] < widths[0] / 2


def test_epsilon_lower_bound_is_zero_for_chance_and_grows_with_separation():
    rng = np.random.default_rng(2)
    truth = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    chance, _, _ = membership_metrics(rng.random(2000), np.zeros(2000, bool), truth)
    assert chance["epsilon_lower_bound"] < 0.3
    weak, _, _ = membership_metrics(truth * 0.2 + rng.random(2000), np.zeros(2000, bool), truth)
    perfect, _, _ = membership_metrics(truth.astype(float), truth, truth)
    assert 0 < weak["epsilon_lower_bound"] < perfect["epsilon_lower_bound"]
    # perfect separation on 1000 + 1000 records can certify no more than about log(1000 / 3.7)
    assert 5.0 < perfect["epsilon_lower_bound"] < 6.0
