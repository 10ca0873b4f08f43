"""Can a one-run audit catch DP-SGD that shuffles its batches while the accountant assumes
Poisson sampling? White-box Dirac gradient canaries on the exact mechanism (and, to compare
with benchmarks/dp_bugs.py's black-box rows, two planted bugs).

A Dirac gradient canary is a gradient of norm ``C`` along a coordinate no real record touches
(Nasr, Hayes, Steinke, Balle, Tramer, Jagielski, Carlini, Terzis, "Tight Auditing of
Differentially Private Machine Learning", USENIX Security 2023; Steinke, Nasr & Jagielski,
NeurIPS 2023, Section 7). Along that coordinate DP-SGD's update at step t is exactly
``lr / B * (C * [canary in batch t] + sigma * C * z_t)``: nothing else enters, which is why the
canary is the strongest one and why the mechanism can be simulated exactly here, in units of
``C``, for m canaries at once (one coordinate each). In the corpus' softmax regression on
mnist-5k the weights of the always-blank pixels are such coordinates, so these are the scores a
gradient-canary audit of that trainer would see.

For each sampling (``poisson``: every step with probability q; ``shuffled``: one uniformly
random step of each epoch of K = 1/q steps, the canary's batch unknown to the auditor;
``fixed-order``: the same known step each epoch, i.e. no shuffling at all) and two observers
(``last``: the final model only, score = the sum of the updates; ``all``: every intermediate
update, score = the likelihood ratio that is optimal against that sampling), m canaries each
join with probability 1/2 and :func:`privguard.audit.dp_user.audit_both` bounds epsilon from
the scores, as ``dp-audit`` would. Also printed: the epsilon (at delta) that the sampled
mechanism really has against each observer, computed by Monte Carlo of its privacy loss (the
Gaussian mechanism with mu = E / (sigma sqrt(T)) for ``last``; the K-way mixture per epoch for
``shuffled``/``all``). An audit can flag the claim only when that true epsilon exceeds it.

Run ``python benchmarks/dp_shuffling.py`` (``--seeds``, ``--canaries``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import norm

from _common import finish_run, markdown_table, print_table, run_header
from privguard.audit.dp_user import audit_both
from privguard.training.dp import noise_for

DELTA = 1e-5
N_TRAIN, BATCH, EPOCHS = 4500, 100, 5  # the Opacus corpus of benchmarks/dp_bugs.py
SAMPLINGS = ("poisson", "shuffled", "fixed-order")
# planted bugs of benchmarks/dp_bugs.py on the same coordinate, for comparison with its
# black-box rows: Poisson sampling with noise on one step per epoch, or sigma / 10
BUG_VARIANTS = ("noise-once-per-epoch", "small-noise")
OBSERVERS = ("last", "all")


def updates(
    sampling: str,
    m: int,
    k: int,
    epochs: int,
    sigma: float,
    included: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(m, epochs, k) updates along each canary's coordinate, in units of C."""
    x = sigma * rng.standard_normal((m, epochs, k))
    if sampling == "noise-once-per-epoch":
        x[:, :, :-1] = 0.0
    elif sampling == "small-noise":
        x /= 10.0
    rows = np.flatnonzero(included)
    if sampling in ("poisson", *BUG_VARIANTS):
        x[rows] += rng.random((len(rows), epochs, k)) < 1.0 / k
    elif sampling == "shuffled":
        x[rows, :, :] += np.eye(k)[rng.integers(0, k, size=(len(rows), epochs))]
    else:  # fixed-order: the canary's batch is the first of every epoch
        x[rows, :, 0] += 1.0
    return x


def score(sampling: str, observer: str, x: np.ndarray, sigma: float) -> np.ndarray:
    """Each canary's score: the last iterate's coordinate, or the log-likelihood ratio of all
    updates, optimal against the sampling."""
    k = x.shape[2]
    if observer == "last":
        return x.sum(axis=(1, 2))
    llr = (x - 0.5) / sigma**2
    if sampling == "poisson":
        q = 1.0 / k
        return np.logaddexp(np.log1p(-q), np.log(q) + llr).sum(axis=(1, 2))
    if sampling == "shuffled":
        return (logsumexp(llr, axis=2) - np.log(k)).sum(axis=1)
    return llr[:, :, 0].sum(axis=1)


def gaussian_epsilon(mu: float, delta: float) -> float:
    def gap(e: float) -> float:
        return norm.cdf(-e / mu + mu / 2) - np.exp(e) * norm.cdf(-e / mu - mu / 2) - delta

    return 0.0 if gap(0.0) < 0 else float(brentq(gap, 0.0, 200.0))


def true_epsilon(
    sampling: str,
    observer: str,
    k: int,
    epochs: int,
    sigma: float,
    rng: np.random.Generator,
    samples: int = 200_000,
) -> float:
    """The epsilon at DELTA that the mechanism has against the observer (add/remove one
    canary): exact for Gaussian cases, Monte Carlo of the privacy loss for the mixtures."""
    t = k * epochs
    if observer == "last":
        noise = {"noise-once-per-epoch": sigma**2 * epochs, "small-noise": sigma**2 * t / 100}
        if sampling in ("poisson", *BUG_VARIANTS):  # Bin(T, q) C plus noise, as a Gaussian
            var = noise.get(sampling, sigma**2 * t) + epochs * (1 - 1 / k)
            return gaussian_epsilon(epochs / np.sqrt(var), DELTA)
        return gaussian_epsilon(epochs / (sigma * np.sqrt(t)), DELTA)
    if sampling == "fixed-order":
        return gaussian_epsilon(np.sqrt(epochs) / sigma, DELTA)
    if sampling == "poisson":
        return None  # the accountant's own case: RDP gives at most the claim
    losses = np.zeros(samples)
    for start in range(0, samples, 20_000):
        n = min(20_000, samples - start)
        inc = np.ones(n, dtype=bool)
        x = updates("shuffled", n, k, epochs, sigma, inc, rng)
        losses[start : start + n] = score("shuffled", "all", x, sigma)

    def excess(e: float) -> float:
        return float(np.mean(np.clip(1 - np.exp(e - losses), 0, None))) - DELTA

    return 0.0 if excess(0.0) < 0 else float(brentq(excess, 0.0, 50.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--canaries", type=int, default=5000)
    parser.add_argument("--epsilons", default="1,4,8")
    parser.add_argument("--only", default="", help="comma-separated samplings / bugs")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "dp_shuffling.json"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module=r"opacus(\.|$)")
    start = time.perf_counter()
    results = run_header("dp_shuffling", argv)
    k = round(N_TRAIN / BATCH)
    results.update(
        {
            "n": N_TRAIN,
            "batch": BATCH,
            "epochs": EPOCHS,
            "steps": k * EPOCHS,
            "m": args.canaries,
            "delta": DELTA,
            "p": 0.05,
            "rows": [],
        }
    )
    for eps in [float(e) for e in args.epsilons.split(",")]:
        sigma = noise_for(eps, DELTA, 1.0 / k, k * EPOCHS)
        cases = [(sa, ob) for sa in SAMPLINGS for ob in OBSERVERS]
        if eps == 1.0:
            cases += [(b, "last") for b in BUG_VARIANTS]
        if args.only:
            cases = [c for c in cases if c[0] in args.only.split(",")]
        for sampling, observer in cases:
            rng = np.random.default_rng(12345)
            bounds, flagged = [], 0
            for _seed in range(args.seeds):
                inc = rng.random(args.canaries) < 0.5
                x = updates(sampling, args.canaries, k, EPOCHS, sigma, inc, rng)
                (s, f), _ = audit_both(score(sampling, observer, x, sigma), inc, delta=DELTA)
                best = max(s.epsilon_lower_bound, f.epsilon_lower_bound)
                bounds.append(best)
                flagged += best > eps
            true = true_epsilon(sampling, observer, k, EPOCHS, sigma, rng)
            row = {
                "claimed_epsilon": eps,
                "sigma": round(sigma, 4),
                "sampling": sampling,
                "observer": observer,
                "seeds": args.seeds,
                "flagged": int(flagged),
                "mean_bound": round(float(np.mean(bounds)), 4),
                "max_bound": round(float(np.max(bounds)), 4),
                "true_epsilon": None if true is None else round(true, 3),
            }
            results["rows"].append(row)
            print(row, flush=True)
    finish_run(results, args.out, start, print_tables=print_tables, markdown=markdown)
    return 0


HEADER = ["claimed ε", "σ", "sampling", "observer", "true ε", "flagged", "mean ε_lb", "max ε_lb"]


def rows_of(results: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f"{r['claimed_epsilon']:g}",
            f"{r['sigma']:.3f}",
            r["sampling"],
            r["observer"],
            "≤ claim" if r["true_epsilon"] is None else f"{r['true_epsilon']:.2f}",
            f"{r['flagged']}/{r['seeds']}",
            f"{r['mean_bound']:.2f}",
            f"{r['max_bound']:.2f}",
        ]
        for r in results["rows"]
    ]


def print_tables(results: dict[str, Any]) -> None:
    print_table("Dirac gradient canaries: shuffled vs Poisson sampling", HEADER, rows_of(results))


def markdown(results: dict[str, Any]) -> str:
    return markdown_table(HEADER, rows_of(results))


if __name__ == "__main__":
    sys.exit(main())
