"""Does ``privguard dp-audit --train-fn`` catch planted DP-SGD bugs, and stay quiet on correct
DP-SGD?

The corpus is :mod:`privguard.testing.dp_bugs`: softmax regression trained with DP-SGD on
mnist-5k (30 epochs, expected batch 50, lr 2, clipping norm 1, the RDP accountant's noise
for the claimed epsilon), correct or with one planted bug. Each run audits one training with
:func:`privguard.audit.dp_user.dp_audit` (m canaries, the Steinke and the f-DP bound each at
p/2 = 2.5%, the larger compared with the claim) and counts how often the claim is flagged as
violated:

- each planted bug at a claimed epsilon of 1 (target: flagged in >= 90% of seeds);
- correct DP-SGD at a claimed epsilon of 1, 4 and 8 (target: flagged in <= 5% of seeds, the
  designed confidence).

Rates come with 95% Clopper-Pearson intervals; also recorded: the mean of both bounds, how
often the f-DP bound is at least the Steinke bound, and seconds per run.

Run ``python benchmarks/dp_bugs.py --seeds 20`` (``--only small-noise,correct-1`` for a
subset; ``--canary flipped`` for mislabelled real records instead of quiet canaries;
``--canary gradient`` for white-box Dirac gradient canaries put into the Opacus optimiser's
per-record gradients before clipping, :mod:`privguard.audit.dp_canaries`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import finish_run, markdown_table, parse_only, print_table, run_header
from privguard.audit.dp_user import dp_audit
from privguard.audit.metrics import clopper_pearson
from privguard.data import load_dataset
from privguard.errors import ConfigError
from privguard.testing.dp_bugs import BUGS, dp_trainer, opacus_trainer

DELTA = 1e-5
EPOCHS, BATCH = 5, 100  # the Opacus corpus: 225 steps on mnist-5k
CONFIGS: list[tuple[str, str | None, float]] = [(bug, bug, 1.0) for bug in BUGS] + [
    (f"correct-{eps:g}", None, eps) for eps in (1.0, 4.0, 8.0)
]


def trainer(corpus: str, eps: float, bug: str | None) -> Any:
    if corpus == "opacus":
        return opacus_trainer(epsilon=eps, delta=DELTA, bug=bug, epochs=EPOCHS, batch_size=BATCH)
    return dp_trainer(epsilon=eps, delta=DELTA, bug=bug)


def measure(
    name: str,
    bug: str | None,
    eps: float,
    ds: Any,
    seeds: range,
    m: int,
    canary: str,
    corpus: str,
) -> dict[str, Any]:
    flagged, steinke, fdp, seconds, errors, checks = [], [], [], [], [], []
    cpu, rows_added = [], []
    train = trainer(corpus, eps, bug)
    for seed in seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = dp_audit(
                train,
                ds.x,
                ds.y,
                claimed_epsilon=eps,
                delta=DELTA,
                canaries=m,
                seed=seed,
                canary=canary,
                data_name=ds.name,
            )
        except ConfigError as e:  # e.g. the record check firing: counted, not flagged
            errors.append({"seed": seed, "error": str(e)})
            print(f"  {name} seed {seed}: error: {e}", flush=True)
            continue
        if res.record_check is not None:
            checks.append(res.record_check)
        if res.gradient is not None:
            rows_added.append(res.gradient["rows_added"])
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        flagged.append(res.violated)
        steinke.append(res.steinke.epsilon_lower_bound)
        fdp.append(res.fdp.epsilon_lower_bound)
        print(
            f"  {name} seed {seed}: Steinke {steinke[-1]:.3f} f-DP {fdp[-1]:.3f} "
            f"{'VIOLATED' if res.violated else 'ok'} ({seconds[-1]:.1f}s wall, "
            f"{cpu[-1]:.1f}s CPU)",
            flush=True,
        )
    hits = int(sum(flagged))
    return {
        "config": name,
        "bug": bug,
        "claimed_epsilon": eps,
        **rates(hits, len(flagged), steinke, fdp),
        "fdp_ge_steinke": int(sum(f >= s for f, s in zip(fdp, steinke, strict=True))),
        "seconds_per_run": round(float(np.mean(seconds)), 2) if seconds else None,
        "cpu_seconds_per_run": round(float(np.mean(cpu)), 2) if cpu else None,
        "canary_rows_injected": rows_added,
        "errors": errors,
        "record_check_accuracy_given_labels": [c["accuracy_given_labels"] for c in checks],
        "record_check_accuracy_original_labels": [c["accuracy_original_labels"] for c in checks],
    }


def rates(hits: int, seeds: int, steinke: list[float], fdp: list[float]) -> dict[str, Any]:
    """A row's flag rate with its Clopper-Pearson 95% interval and the mean bounds (a row
    whose every audit stopped with an error has none: its ``errors`` say why)."""
    if seeds == 0:
        return {
            "seeds": 0,
            "flagged": 0,
            "flag_rate": None,
            "flag_rate_ci": None,
            "mean_steinke": None,
            "mean_fdp": None,
            "steinke": [],
            "fdp": [],
        }
    lo, hi = clopper_pearson(np.array([hits]), seeds)
    return {
        "seeds": seeds,
        "flagged": hits,
        "flag_rate": round(hits / seeds, 4),
        "flag_rate_ci": [round(float(lo[0]), 4), round(float(hi[0]), 4)],
        "mean_steinke": round(float(np.mean(steinke)), 4),
        "mean_fdp": round(float(np.mean(fdp)), 4),
        "steinke": steinke,
        "fdp": fdp,
    }


def rows_of(results: dict[str, Any]) -> list[list[str]]:
    return [_row(r) if r["seeds"] else _failed_row(r) for r in results["rows"]]


def _failed_row(r: dict[str, Any]) -> list[str]:
    """A row whose every audit stopped with an error (the first error says why)."""
    reason = r["errors"][0]["error"] if r["errors"] else "no audit ran"
    return [r["config"], f"{r['claimed_epsilon']:g}", "0", reason, "", "", "", "", "", "", ""]


def _row(r: dict[str, Any]) -> list[str]:
    return [
        r["config"],
        f"{r['claimed_epsilon']:g}",
        str(r["seeds"]),
        f"{r['flagged']}/{r['seeds']} = {r['flag_rate']:.2f}",
        f"[{r['flag_rate_ci'][0]:.2f}, {r['flag_rate_ci'][1]:.2f}]",
        f"{r['mean_steinke']:.2f}",
        f"{r['mean_fdp']:.2f}",
        f"{r['fdp_ge_steinke']}/{r['seeds']}",
        str(len(r["errors"])),
        f"{r['seconds_per_run']:.1f}",
        "" if r.get("cpu_seconds_per_run") is None else f"{r['cpu_seconds_per_run']:.1f}",
    ]


HEADER = [
    "training",
    "claimed ε",
    "seeds",
    "flagged",
    "95% CI",
    "mean ε_lb Steinke",
    "mean ε_lb f-DP",
    "f-DP ≥ Steinke",
    "errors",
    "s/audit",
    "CPU s/audit",
]


def print_tables(results: dict[str, Any]) -> None:
    print_table("planted DP-SGD bugs and correct DP-SGD", HEADER, rows_of(results))


def markdown(results: dict[str, Any]) -> str:
    return markdown_table(HEADER, rows_of(results))


def combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One row from two runs of the same config on different seeds."""
    seeds = a["seeds"] + b["seeds"]
    secs = (a["seconds_per_run"] * a["seeds"] + b["seconds_per_run"] * b["seeds"]) / seeds
    out = dict(a)
    if a.get("cpu_seconds_per_run") is not None and b.get("cpu_seconds_per_run") is not None:
        out["cpu_seconds_per_run"] = round(
            (a["cpu_seconds_per_run"] * a["seeds"] + b["cpu_seconds_per_run"] * b["seeds"]) / seeds,
            2,
        )
    out["canary_rows_injected"] = a.get("canary_rows_injected", []) + b.get(
        "canary_rows_injected", []
    )
    out.update(
        {
            **rates(
                a["flagged"] + b["flagged"], seeds, a["steinke"] + b["steinke"], a["fdp"] + b["fdp"]
            ),
            "fdp_ge_steinke": a["fdp_ge_steinke"] + b["fdp_ge_steinke"],
            "seconds_per_run": round(secs, 2),
            "errors": a["errors"] + b["errors"],
        }
    )
    for key in ("record_check_accuracy_given_labels", "record_check_accuracy_original_labels"):
        out[key] = a[key] + b[key]
    return out


def merge(paths: list[Path], out: Path) -> int:
    """One results file from runs of disjoint rows (run in parallel): the first file's header,
    every file's rows in CONFIGS order, each run's command, wall time and load kept."""
    runs = [json.loads(p.read_text()) for p in paths]
    results = {k: v for k, v in runs[0].items() if k != "rows"}
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        for r in run["rows"]:
            rows[r["config"]] = combine(rows[r["config"]], r) if r["config"] in rows else r
    results["rows"] = [rows[name] for name, _, _ in CONFIGS if name in rows]
    results["runs"] = [{k: v for k, v in run.items() if k != "rows"} for run in runs]
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(markdown(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="audited runs per row (20)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (0)")
    parser.add_argument("--corpus", default="opacus", help="opacus (default) or numpy")
    parser.add_argument("--canaries", type=int, default=1000, help="canaries m (1000)")
    parser.add_argument(
        "--canary",
        default="quiet",
        help="quiet (default), flipped, or gradient (white-box Dirac gradient canaries "
        "attached to the Opacus optimiser; --corpus opacus only)",
    )
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--only", default="", help="comma-separated rows, e.g. small-noise")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "dp_bugs.json"
    )
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="merge the rows of these results files into --out"
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.canary == "gradient" and args.corpus != "opacus":
        parser.error("--canary gradient needs --corpus opacus (the canaries attach to Opacus)")
    warnings.filterwarnings("ignore", module=r"opacus(\.|$)")
    torch.set_num_threads(1)  # tiny models: one thread each, so parallel runs do not fight
    only = parse_only(args.only) if args.only else set()
    start = time.perf_counter()
    results = run_header("dp_bugs", argv)
    results.update(
        {
            "data": args.data,
            "m": args.canaries,
            "canary": args.canary,
            "corpus": args.corpus,
            "epochs": EPOCHS if args.corpus == "opacus" else 30,
            "batch_size": BATCH if args.corpus == "opacus" else 50,
            "delta": DELTA,
            "p": 0.05,
            "rows": [],
        }
    )
    ds = load_dataset(args.data)
    for name, bug, eps in CONFIGS:
        if only and name not in only:
            continue
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        results["rows"].append(
            measure(name, bug, eps, ds, seeds, args.canaries, args.canary, args.corpus)
        )
    finish_run(results, args.out, start, print_tables=print_tables, markdown=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
