"""Reference-free / few-reference membership attacks against LiRA online: power and cost.

Issue 18's measure: ``qmia`` (Bertran et al., NeurIPS 2023) and ``difficulty-calibration``
(Watson et al., ICLR 2022) should reach >= 0.8x ``lira-online``'s TPR at 1% FPR at <= 10% of its
time. ``rmia-2`` (RMIA with two offline reference models; Zarifzadeh et al., ICML 2024) is the
few-reference attack measured beside them. For each dataset and seed this trains the default
target (privguard's default recipe, ``--epochs`` epochs), audits it with each attack (one
audit per attack, so none shares another's reference models; the disk cache is off) and records
each attack's TPR@1%FPR, AUC and seconds from report.json. Run ``python
benchmarks/cheap_attacks.py --help``.

``--attacks`` runs a subset and ``--merge`` replaces those attacks' rows in an existing results
file (targets are trained deterministically from the seed, so a rerun audits the same model):
an attack changed after the full run is re-measured without retraining LiRA's references. Times
from two invocations are then compared across runs; each row records the load average before and
after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

import privguard

ATTACKS = ("qmia", "difficulty-calibration", "rmia-2", "lira-online")
#: benchmark names that are a registered attack with settings: name -> (attack, settings)
VARIANTS = {"rmia-2": ("rmia", {"n_reference": 2})}


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits,heart-disease")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="subset of " + ",".join(ATTACKS))
    ap.add_argument(
        "--merge", action="store_true", help="replace only these attacks' rows in --out"
    )
    ap.add_argument(
        "--rows-from",
        type=Path,
        action="append",
        default=[],
        help="results file whose rows replace --out's rows of the same dataset, seed and attack "
        "(with --merge; --attacks '' then only combines files)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="reference-model processes (default 1)")
    ap.add_argument(
        "--out", type=Path, default=here / "results" / "cheap_attacks.json", help="JSON path"
    )
    args = ap.parse_args(argv)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        ap.error(f"unknown attacks {unknown}; choose from {ATTACKS}")
    rows = []
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()] if attacks else []:
        for seed in [int(s) for s in args.seeds.split(",")]:
            target = privguard.train(ds, privguard.TrainConfig(seed=seed, epochs=args.epochs))
            for name in attacks:
                load_before = [round(v, 2) for v in os.getloadavg()]
                t0 = time.perf_counter()
                attack, settings = VARIANTS.get(name, (name, {}))
                report = privguard.audit(
                    target,
                    attacks=[attack],
                    seed=seed,
                    n_jobs=args.jobs,
                    settings={attack: settings} if settings else None,
                )
                wall = time.perf_counter() - t0
                (res,) = [a for a in report.attacks if a.name == attack]
                row = {
                    "dataset": ds,
                    "seed": seed,
                    "epochs": args.epochs,
                    "attack": name,
                    "tpr_at_1pct_fpr": res.metrics.get("tpr_at_fpr_0.01"),
                    "auc": res.metrics.get("auc"),
                    "attack_seconds": round(res.seconds, 2),
                    "audit_wall_seconds": round(wall, 2),
                    "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "load_average_before": load_before,
                    "load_average_after": [round(v, 2) for v in os.getloadavg()],
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    command = "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))
    commands = [command]
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        commands = previous.get("commands", [previous.get("command")]) + commands
        old = previous["rows"]
        for extra in args.rows_from:
            more = json.loads(extra.read_text())
            commands += more.get("commands", [])
            key = {(r["dataset"], r["seed"], r["attack"]) for r in more["rows"]}
            old = [r for r in old if (r["dataset"], r["seed"], r["attack"]) not in key]
            old += more["rows"]
        done = {(r["dataset"], r["seed"], r["attack"]) for r in rows}
        rows = [r for r in old if (r["dataset"], r["seed"], r["attack"]) not in done] + rows
    summary = []
    for ds in sorted({r["dataset"] for r in rows}):
        for seed in sorted({r["seed"] for r in rows}):
            by = {r["attack"]: r for r in rows if r["dataset"] == ds and r["seed"] == seed}
            lira = by.get("lira-online")
            if not lira:
                continue
            for name in ATTACKS[:-1]:
                if name not in by:
                    continue
                r = by[name]
                summary.append(
                    {
                        "dataset": ds,
                        "seed": seed,
                        "attack": name,
                        "tpr_ratio_to_lira": round(
                            r["tpr_at_1pct_fpr"] / lira["tpr_at_1pct_fpr"], 2
                        )
                        if lira["tpr_at_1pct_fpr"]
                        else None,
                        "time_ratio_to_lira": round(
                            r["attack_seconds"] / lira["attack_seconds"], 3
                        ),
                    }
                )
    per_dataset = []  # over seeds: mean TPR against lira-online's mean TPR, summed seconds
    for ds in sorted({r["dataset"] for r in rows}):
        lira = [r for r in rows if r["dataset"] == ds and r["attack"] == "lira-online"]
        seeds = {r["seed"] for r in lira}  # compare on the seeds LiRA was measured on
        for name in ATTACKS[:-1]:
            mine = [
                r for r in rows if r["dataset"] == ds and r["attack"] == name and r["seed"] in seeds
            ]
            if not lira or not mine:
                continue
            tpr = sum(r["tpr_at_1pct_fpr"] for r in mine) / len(mine)
            tpr_l = sum(r["tpr_at_1pct_fpr"] for r in lira) / len(lira)
            per_dataset.append(
                {
                    "dataset": ds,
                    "attack": name,
                    "seeds": len(mine),
                    "tpr_at_1pct_fpr": round(tpr, 4),
                    "lira_tpr_at_1pct_fpr": round(tpr_l, 4),
                    "auc": round(sum(r["auc"] for r in mine) / len(mine), 4),
                    "lira_auc": round(sum(r["auc"] for r in lira) / len(lira), 4),
                    "tpr_ratio_to_lira": round(tpr / tpr_l, 2) if tpr_l else None,
                    "time_ratio_to_lira": round(
                        sum(r["attack_seconds"] for r in mine)
                        / sum(r["attack_seconds"] for r in lira),
                        3,
                    ),
                    "lira_seconds_mean": round(
                        sum(r["attack_seconds"] for r in lira) / len(lira), 1
                    ),
                }
            )
    out = {
        "benchmark": "cheap_attacks",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commands": commands,
        "machine": {
            "platform": platform.platform(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "note": "2 cores shared with other engineers' jobs (loaded)",
        },
        "versions": {"privguard": privguard.__version__, "torch": torch.__version__},
        "rows": rows,
        "summary": summary,
        "per_dataset": per_dataset,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("| dataset | seed | attack | TPR@1%FPR ratio to lira-online | time ratio |")
    print("|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['dataset']} | {s['seed']} | {s['attack']} | {s['tpr_ratio_to_lira']} | "
            f"{s['time_ratio_to_lira']} |"
        )
    print()
    print("| dataset | attack | seeds | TPR@1%FPR (lira) | AUC (lira) | TPR ratio | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for s in per_dataset:
        print(
            f"| {s['dataset']} | {s['attack']} | {s['seeds']} | {s['tpr_at_1pct_fpr']} "
            f"({s['lira_tpr_at_1pct_fpr']}) | {s['auc']} ({s['lira_auc']}) | "
            f"{s['tpr_ratio_to_lira']} | {s['time_ratio_to_lira']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
