"""One-run DP auditing (Steinke, Nasr & Jagielski, NeurIPS 2023): the bound, randomised
response with known epsilon, and real training runs with and without DP."""

import json

import numpy as np
import pytest
from scipy.stats import binom

import privguard
from privguard.audit.dp_audit import (
    audit_scores,
    count_correct,
    epsilon_lower_bound,
    guess_top_bottom,
    one_run_audit,
    p_value,
    randomised_response,
)
from privguard.cli import main
from privguard.errors import ConfigError


def test_the_bound_saturates_where_the_paper_says():
    # all r guesses right: the bound cannot exceed the epsilon at which q^r = 0.05
    assert epsilon_lower_bound(100, 100) == pytest.approx(3.49, abs=0.005)
    assert epsilon_lower_bound(1000, 1000) == pytest.approx(5.81, abs=0.005)
    # the delta term only lowers it; chance-level guessing rules nothing out
    assert epsilon_lower_bound(100, 100, delta=1e-5, m=1000) < epsilon_lower_bound(100, 100)
    assert epsilon_lower_bound(1000, 500) == 0.0
    assert epsilon_lower_bound(1000, 520) == 0.0  # 52% is within sampling noise of 50%
    bounds = [epsilon_lower_bound(1000, v) for v in (600, 700, 800, 900)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    # the bound is ruled out (p-value below 0.05), a hair more is not
    eps = epsilon_lower_bound(1000, 731, delta=1e-5)
    assert p_value(1000, 1000, 731, eps, 1e-5) < 0.05 <= p_value(1000, 1000, 731, eps + 1e-5, 1e-5)
    with pytest.raises(ConfigError, match="0 <= v <= r <= m"):
        epsilon_lower_bound(10, 11)


def test_guessing_top_and_bottom():
    scores = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.3])
    included = np.array([True, False, True, False, False, True])
    g = guess_top_bottom(scores, 2, 2)
    assert g.tolist() == [1, -1, 0, 1, -1, 0]
    assert count_correct(g, included) == (4, 3)
    with pytest.raises(ConfigError, match="do not fit 6 canaries"):
        guess_top_bottom(scores, 4, 3)


@pytest.mark.parametrize("epsilon, paper_mean", [(1.0, 0.88), (2.0, 1.83), (4.0, 3.63)])
def test_randomised_response_matches_the_paper(epsilon, paper_mean):
    """m = 1000 canaries through epsilon-DP randomised response, every report taken as the
    guess (r = m): the mean bound over 100 seeds is the paper's, and exceeds the true epsilon
    in about 5% of runs at most."""
    bounds = []
    for seed in range(100):
        included, reports = randomised_response(1000, epsilon, np.random.default_rng(seed))
        r, v = count_correct(reports, included)
        bounds.append(epsilon_lower_bound(r, v, delta=0.0, m=1000))
    bounds = np.array(bounds)
    assert bounds.mean() == pytest.approx(paper_mean, abs=0.05)
    assert (bounds > epsilon).sum() <= 10  # measured 4, 4, 3 of 100 (binomial sd ~2)
    # exact exceedance: the bound is monotone in v, so it exceeds eps iff v >= v*
    v_star = next(v for v in range(500, 1001) if epsilon_lower_bound(1000, v) > epsilon)
    exact = binom.sf(v_star - 1, 1000, np.exp(epsilon) / (1 + np.exp(epsilon)))
    assert 0.02 < exact <= 0.05


def test_pre_declared_guess_counts_share_the_p_value():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = np.where(included, 1.0, 0.0) + rng.normal(0, 0.1, 1000)  # a perfect separator
    best, all_ = audit_scores(scores, included, delta=1e-5)
    assert [g.r for g in all_] == [100, 200, 500, 1000]
    # 473 included: guessing 500 IN must miss 27, so the best is 250 + 250 guesses, all right
    assert included.sum() == 473 and (all_[-1].r, all_[-1].v) == (1000, 973)
    assert (best.r, best.v) == (500, 500)
    # Bonferroni over 4 choices (p = 0.0125 each): above the single-choice p = 0.05 bound of
    # r = v = 500 would be cheating; it is below it
    single = epsilon_lower_bound(500, 500, delta=1e-5, m=1000)
    assert 4.0 < best.epsilon_lower_bound < single


@pytest.fixture(scope="module")
def plain_audit():
    """A non-private 2x256 MLP on digits: 719 members + ~500 of 1000 mislabelled canaries."""
    config = privguard.TrainConfig(model="mlp", epochs=60, seed=0)
    return one_run_audit("digits", config, canaries=1000, seed=0)


def test_one_run_audit_of_an_overfit_model_rules_out_small_epsilon(plain_audit):
    res = plain_audit
    assert res.m == 1000 and 450 < res.n_included < 550
    assert res.epsilon_accountant is None and res.privacy is None
    # measured 2.98 (488 of 500 guesses right; 100 epochs: 3.68, 497 of 500): the model
    # memorises its mislabelled canaries, far beyond what epsilon = 1 would allow
    assert res.epsilon_lower_bound > 2.0
    assert res.v / res.r > 0.95
    assert res.delta == pytest.approx(1 / (10 * res.n_train))


@pytest.mark.parametrize("seed", [0, 1])
def test_one_run_audit_of_dp_training_stays_below_its_epsilon(seed):
    config = privguard.TrainConfig(model="mlp", epochs=15, lr=1e-2, seed=seed, dp_epsilon=1.0)
    res = one_run_audit("digits", config, canaries=1000, seed=seed)
    assert 0.97 <= res.epsilon_accountant <= 1.0
    assert res.epsilon_lower_bound <= 1.0  # measured 0.0 for both seeds (58/100, 49/100 right)
    assert res.privacy["n_records"] == res.n_train == 719 + res.n_included
    assert res.test_accuracy > 0.5  # 78 held-out records; measured 0.68 and 0.67


def test_cli_dp_audit_writes_its_report_and_rejects_bad_input(capsys, tmp_path):
    out_dir = tmp_path / "dp"
    args = ["dp-audit", "--data", "digits", "--model", "logreg", "--epochs", "10"]
    code = main([*args, "--lr", "3e-2", "--canaries", "200", "--out", str(out_dir)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "epsilon lower bound" in cap.out and "non-private" in cap.out
    report = json.loads((out_dir / "dp-audit.json").read_text())["dp_audit"]
    assert report["m"] == 200 and report["epsilon_accountant"] is None
    assert report["epsilon_lower_bound"] >= 0 and len(report["guesses"]) == 4
    # the f-DP bound beside it, on the same guesses: never below the Steinke one
    assert report["fdp_epsilon_lower_bound"] == max(g["fdp"] for g in report["guesses"])
    assert all(g["fdp"] >= g["epsilon_lower_bound"] for g in report["guesses"])
    for flags, needle in [
        (("--canaries", "5000"), "--canaries must lie between 2 and 1078"),
        (("--canary", "odd"), "unknown canary kind"),
        (("--dp-epsilon", "0"), "positive epsilon"),
    ]:
        bad = tmp_path / "bad"
        code = main(["dp-audit", "--data", "digits", *flags, "--out", str(bad)])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and not bad.exists()
