"""The two one-run bounds against an independent, direct implementation of the papers'
formulas on fixed score vectors (to 1e-6), and the f-DP bound against the Steinke bound.

Counting convention (both implementations): the k+ highest scores are guessed IN and the k-
lowest OUT, ties broken by the canaries' positions (earlier first among equal scores for IN,
later first for OUT); r = k+ + k- guesses, v of them right. No ROC area is involved."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from privguard.audit.dp_audit import (
    count_correct,
    epsilon_lower_bound,
    fdp_epsilon_lower_bound,
    gaussian_mu,
    guess_top_bottom,
)
from privguard.audit.dp_user import audit_both
from privguard.errors import ConfigError

N = NormalDist()


# -- the independent implementation -------------------------------------------------------------


def direct_counts(scores, included, k_plus, k_minus):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ins, outs = order[:k_plus], order[len(order) - k_minus :] if k_minus else []
    v = sum(bool(included[i]) for i in ins) + sum(not included[i] for i in outs)
    return k_plus + k_minus, v


def binom_pmf(j, r, q):
    return math.exp(
        math.lgamma(r + 1)
        - math.lgamma(j + 1)
        - math.lgamma(r - j + 1)
        + j * math.log(q)
        + (r - j) * math.log1p(-q)
    )


def steinke_p(m, r, v, eps, delta):
    """Steinke, Nasr & Jagielski (2023), Theorem 3.1 / Algorithm 2, term by term."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [binom_pmf(j, r, q) for j in range(r + 1)]
    beta = sum(pmf[v:])
    alpha, running = 0.0, 0.0
    for i in range(1, v + 1):
        running += pmf[v - i]
        alpha = max(alpha, running / i)
    return beta + 2 * m * delta * alpha


def largest_rejected(rejects, hi=60.0):
    """Largest eps in [0, hi] with rejects(eps), by bisection to 1e-10 (0 when none)."""
    if not rejects(0.0):
        return 0.0
    lo = 0.0
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
    return lo


def gdp_mu(eps, delta):
    """Dong, Roth & Su (2022), Corollary 2.13, solved for mu by bisection."""

    def d(mu):
        return N.cdf(-eps / mu + mu / 2) - math.exp(eps) * N.cdf(-eps / mu - mu / 2)

    lo, hi = 1e-9, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) < delta else (lo, mid)
    return (lo + hi) / 2


def fdp_rejects(m, r, v, mu, p):
    """Mahloujifar, Melis & Chaudhuri (2025), the h/r recursion written out in full arrays."""
    h = [0.0] * (v + 1)
    rr = [0.0] * (v + 1)
    rr[v], h[v] = p * v / m, p * (r - v) / m
    for i in range(v - 1, -1, -1):
        x = rr[i + 1]
        inv = 1.0 if x >= 1 else N.cdf(N.inv_cdf(x) - mu)
        h[i] = max(h[i + 1], inv)
        rr[i] = min(1.0, rr[i + 1] + i / (r - i) * (h[i] - h[i + 1]))
    return rr[0] + h[0] > r / m


# -- fixed score vectors ------------------------------------------------------------------------


def score_vector(seed, m, shift):
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    scores = np.round(rng.normal(size=m) + shift * included, 2)  # rounding makes ties
    return scores, included


VECTORS = [
    (0, 200, 1.0, 20, 20),
    (1, 500, 2.0, 50, 50),
    (2, 1000, 3.0, 100, 100),
    (3, 1000, 1.5, 250, 0),
    (4, 300, 0.0, 30, 30),
]


@pytest.mark.parametrize("seed, m, shift, kp, km", VECTORS)
def test_counts_and_both_bounds_match_the_direct_formulas(seed, m, shift, kp, km):
    scores, included = score_vector(seed, m, shift)
    r, v = count_correct(guess_top_bottom(scores, kp, km), included)
    assert (r, v) == direct_counts(scores.tolist(), included.tolist(), kp, km)
    for delta in (1e-5, 1e-3):
        ours = epsilon_lower_bound(r, v, delta=delta, p=0.05, m=m)
        theirs = largest_rejected(lambda e, d=delta: steinke_p(m, r, v, e, d) < 0.05)
        assert abs(ours - theirs) <= 1e-6, (ours, theirs)
        ours_f = fdp_epsilon_lower_bound(r, v, delta=delta, p=0.05, m=m)
        theirs_f = largest_rejected(lambda e, d=delta: fdp_rejects(m, r, v, gdp_mu(e, d), 0.05))
        assert abs(ours_f - theirs_f) <= 1e-6, (ours_f, theirs_f)
        # the f-DP bound is the tighter one on the same guesses
        assert ours_f >= ours
    if shift == 0.0:  # no signal: nothing ruled out
        assert epsilon_lower_bound(r, v, delta=1e-5, m=m) == 0.0


def test_gaussian_mu_is_the_gaussian_mechanism_at_that_epsilon_delta():
    for eps, delta in [(0.5, 1e-5), (1.0, 1e-5), (4.0, 1e-6), (8.0, 1e-5)]:
        assert gaussian_mu(eps, delta) == pytest.approx(gdp_mu(eps, delta), abs=1e-8)
    # larger epsilon at the same delta: a larger mu (weaker privacy)
    assert gaussian_mu(1.0, 1e-5) < gaussian_mu(2.0, 1e-5) < gaussian_mu(8.0, 1e-5)


def test_fdp_bound_is_larger_and_saturates_higher():
    # all of 100 guesses right on 1000 canaries
    s = epsilon_lower_bound(100, 100, delta=1e-5, m=1000)
    f = fdp_epsilon_lower_bound(100, 100, delta=1e-5, m=1000)
    assert 3.4 < s < f
    assert fdp_epsilon_lower_bound(200, 100, delta=1e-5, m=1000) == 0.0  # chance
    with pytest.raises(ConfigError, match="delta must lie in"):
        fdp_epsilon_lower_bound(10, 5, delta=0.0)


def test_audit_both_splits_p_between_the_two_bounds():
    scores, included = score_vector(5, 1000, 2.5)
    (steinke, fdp), rows = audit_both(scores, included, delta=1e-5)
    assert len(rows) == 4 and steinke.confidence == fdp.confidence == 0.975
    level = 0.05 / 8  # 4 guesses x 2 methods
    best_s = max(epsilon_lower_bound(g["r"], g["v"], delta=1e-5, p=level, m=1000) for g in rows)
    assert steinke.epsilon_lower_bound == pytest.approx(best_s, abs=1e-6)
    assert fdp.epsilon_lower_bound >= steinke.epsilon_lower_bound > 1.0
