"""LiRA online end to end on a 6,000-row tabular target, reference models stacked or not.

Issue 18's measure: ``lira-online`` on a 6,000-row tabular target (adult) >= 4x faster end to
end than before stacked reference training, with the same TPR@1%FPR within its confidence
interval. The target: privguard's default recipe (2x256 MLP, Adam) trained on 6,000 of a
15,000-record stratified sample of adult (``--rows``; train fraction 0.4), ``--epochs`` epochs.
The attack (``--references`` online reference models, default 16) runs in this process twice
per ``--repeat``, interleaved: ``Compute(stacked=False)`` (one model after another: the path
before issue 18) and ``Compute(stacked=True)`` (the default), same seed. Each run records wall
seconds, this process's CPU seconds (the fair measure on a loaded machine: wall time then
counts other processes' turns), TPR@1%FPR with its Clopper-Pearson 95% interval, and the AUC.
Run ``python benchmarks/lira_speed.py --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import privguard  # noqa: E402
from _common import clean, print_table, run_header, write_json_atomic  # noqa: E402
from privguard.attacks import Compute  # noqa: E402
from privguard.attacks.membership.lira import LiraOnline  # noqa: E402
from privguard.audit.metrics import membership_metrics  # noqa: E402
from privguard.audit.runner import _Truth  # noqa: E402
from privguard.data import load_dataset  # noqa: E402


def sample(name: str, rows: int, seed: int):
    """A stratified random ``rows``-record sample of a built-in tabular dataset."""
    ds = load_dataset(name)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(ds.y):
        idx = np.flatnonzero(ds.y == c)
        keep.append(rng.choice(idx, size=round(rows * len(idx) / len(ds.y)), replace=False))
    keep = np.sort(np.concatenate(keep))
    extra = {k: np.asarray(v)[keep] for k, v in (ds.extra or {}).items()}
    return dataclasses.replace(ds, x=ds.x[keep], y=ds.y[keep], extra=extra)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="adult")
    ap.add_argument("--rows", type=int, default=15000, help="sampled records (0.4 are members)")
    ap.add_argument("--epochs", type=int, default=20, help="target recipe epochs (default 20)")
    ap.add_argument("--references", type=int, default=16, help="online reference models")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved before/after pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=here / "results" / "lira_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    header = run_header("lira_speed", argv)
    ds = sample(args.dataset, args.rows, args.seed)
    config = privguard.TrainConfig(seed=args.seed, epochs=args.epochs)
    target = privguard.train(ds, config)
    truth = _Truth.build(ds, target.split, args.seed)
    print(
        f"{args.dataset}: {len(target.split.members)} members, {args.epochs} epochs; "
        f"lira-online with {args.references} references",
        file=sys.stderr,
    )
    runs = []
    for rep in range(args.repeat):
        for stacked in (False, True):
            know = truth.knowledge(target, ds, None, needs_sensitive=False)
            know.compute = Compute(n_jobs=1, stacked=stacked)
            load = os.getloadavg()[0]
            c0, t0 = time.process_time(), time.perf_counter()
            guesses = LiraOnline(n_reference=args.references).run(target.oracle("probs"), know)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            m, _, _ = membership_metrics(
                guesses.scores, guesses.decisions, truth.is_member, seed=args.seed
            )
            run = {
                "repeat": rep,
                "stacked": stacked,
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "tpr_at_1pct_fpr": m["tpr_at_fpr_0.01"],
                "tpr_ci": [m["tpr_at_fpr_0.01_ci_low"], m["tpr_at_fpr_0.01_ci_high"]],
                "auc": m["auc"],
                "load_average_before": round(load, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
                "note": guesses.notes[0],
            }
            runs.append(run)
            print(run, file=sys.stderr, flush=True)
    before = [r for r in runs if not r["stacked"]]
    after = [r for r in runs if r["stacked"]]
    wall_ratio = [
        round(b["wall_seconds"] / a["wall_seconds"], 2) for b, a in zip(before, after, strict=True)
    ]
    cpu_ratio = [
        round(b["cpu_seconds"] / a["cpu_seconds"], 2) for b, a in zip(before, after, strict=True)
    ]
    same = all(
        a["tpr_ci"][0] <= b["tpr_at_1pct_fpr"] <= a["tpr_ci"][1]
        and b["tpr_ci"][0] <= a["tpr_at_1pct_fpr"] <= b["tpr_ci"][1]
        for b, a in zip(before, after, strict=True)
    )
    results = {
        **header,
        "dataset": args.dataset,
        "rows_sampled": args.rows,
        "members": int(len(target.split.members)),
        "target_epochs": args.epochs,
        "references": args.references,
        "target_metrics": target.metrics,
        "runs": runs,
        "speedup_wall_per_pair": wall_ratio,
        "speedup_cpu_per_pair": cpu_ratio,
        "tpr_each_within_the_others_ci": same,
    }
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json_atomic(args.out, clean(results))
    print_table(
        f"lira-online on {args.dataset} ({len(target.split.members)} members)",
        ["references", "wall s", "CPU s", "TPR@1%FPR [95% CI]", "AUC", "load"],
        [
            [
                "stacked" if r["stacked"] else "one at a time (before)",
                f"{r['wall_seconds']:.1f}",
                f"{r['cpu_seconds']:.1f}",
                f"{r['tpr_at_1pct_fpr']:.4f} [{r['tpr_ci'][0]:.4f}, {r['tpr_ci'][1]:.4f}]",
                f"{r['auc']:.4f}",
                f"{r['load_average_before']:.1f}",
            ]
            for r in runs
        ],
    )
    print(f"speed-up, wall: {wall_ratio}; CPU: {cpu_ratio}; TPRs agree within CIs: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
