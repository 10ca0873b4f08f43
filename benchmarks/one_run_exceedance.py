"""How often the one-run epsilon lower bound exceeds the true epsilon, on a mechanism whose
epsilon is known exactly.

Steinke, Nasr and Jagielski (NeurIPS 2023) audit with m canaries, each included with
probability 1/2; their bound holds at 95% confidence, so it may exceed the true epsilon in up
to ~5% of runs by design. The mechanism here is epsilon-DP randomised response (each canary's
inclusion bit reported truthfully with probability e^eps / (1 + e^eps)), for which the paper's
test is tight; the auditor guesses the reported bits (r = m = 1000, delta = 0).

For eps = 1, 2, 4 and ``--seeds`` seeds each: the mean bound (the paper: 0.88 / 1.83 / 3.63),
the empirical exceedance rate with its 95% Clopper-Pearson interval, and the exact exceedance
probability (the bound is monotone in the number v of correct guesses, so it exceeds eps
exactly when v >= v*, and P[Binomial(m, q) >= v*] is computed in closed form).
The same is measured with delta = 1e-5, which only lowers the bound. The "competitor" is the
paper's own table.

Run ``python benchmarks/one_run_exceedance.py --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import binom

from _common import finish_run, run_header
from privguard.audit.dp_audit import count_correct, epsilon_lower_bound, randomised_response
from privguard.audit.metrics import clopper_pearson

EPSILONS = (1.0, 2.0, 4.0)
PAPER_MEAN = {1.0: 0.88, 2.0: 1.83, 4.0: 3.63}
M = 1000


def measure(epsilon: float, seeds: int, delta: float) -> dict[str, Any]:
    # The bound depends on v alone: compute it once per v that occurs.
    vs = np.empty(seeds, dtype=np.int64)
    for seed in range(seeds):
        included, reports = randomised_response(M, epsilon, np.random.default_rng(seed))
        vs[seed] = count_correct(reports, included)[1]
    table = {int(v): epsilon_lower_bound(M, int(v), delta=delta, m=M) for v in np.unique(vs)}
    bounds = np.array([table[int(v)] for v in vs])
    over = int((bounds > epsilon).sum())
    lo, hi = clopper_pearson(np.array([over]), seeds)
    # smallest v whose bound exceeds epsilon (binary search: the bound is monotone in v)
    a, b = 0, M + 1
    while a < b:
        mid = (a + b) // 2
        if epsilon_lower_bound(M, mid, delta=delta, m=M) > epsilon:
            b = mid
        else:
            a = mid + 1
    exact = float(binom.sf(a - 1, M, expit(epsilon))) if a <= M else 0.0
    return {
        "epsilon": epsilon,
        "delta": delta,
        "seeds": seeds,
        "mean_bound": round(float(bounds.mean()), 4),
        "std_bound": round(float(bounds.std()), 4),
        "paper_mean": PAPER_MEAN[epsilon],
        "ratio_to_paper": round(float(bounds.mean()) / PAPER_MEAN[epsilon], 3),
        "exceedances": over,
        "exceedance_rate": round(over / seeds, 4),
        "exceedance_ci": [round(float(lo[0]), 4), round(float(hi[0]), 4)],
        "exact_exceedance": round(exact, 4),
        "max_bound": round(float(bounds.max()), 4),
    }


def print_tables(results: dict[str, Any]) -> None:
    print(
        f"{'eps':>5}{'delta':>8}{'seeds':>7}{'mean eps_lb':>12}{'paper':>7}{'exceed':>9}"
        f"{'95% CI':>17}{'exact':>8}"
    )
    for r in results["rows"]:
        ci = f"[{r['exceedance_ci'][0]:.3f}, {r['exceedance_ci'][1]:.3f}]"
        print(
            f"{r['epsilon']:>5g}{r['delta']:>8g}{r['seeds']:>7}{r['mean_bound']:>12.3f}"
            f"{r['paper_mean']:>7.2f}{r['exceedance_rate']:>9.3f}{ci:>17}"
            f"{r['exact_exceedance']:>8.3f}"
        )


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| true ε | δ | seeds | mean ε_lb (± sd) | paper | exceedance rate [95% CI] | exact |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['epsilon']:g} | {r['delta']:g} | {r['seeds']} | {r['mean_bound']:.3f} "
            f"(± {r['std_bound']:.3f}) | {r['paper_mean']:.2f} | {r['exceedance_rate']:.3f} "
            f"[{r['exceedance_ci'][0]:.3f}, {r['exceedance_ci'][1]:.3f}] | "
            f"{r['exact_exceedance']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2000, help="runs per epsilon (2000)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "one_run_exceedance.json"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run_header("one_run_exceedance", argv)
    results.update({"m": M, "p": 0.05, "rows": []})
    for delta in (0.0, 1e-5):
        for eps in EPSILONS:
            results["rows"].append(measure(eps, args.seeds, delta))
    finish_run(results, args.out, start, print_tables=print_tables, markdown=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
