"""Stacked vs one-at-a-time training of the small CNN on a CPU, in CPU seconds.

Issue 18 asked for 64 mnist-5k CNN references >= 3x faster stacked. This measures the stacked
trainer (``privguard.models.stacked.train_stacked``, ``torch.func.vmap`` over the CNN) against
``TrainingRecipe.fit`` one copy after another — the same recipe (2 conv blocks of 16/32
channels, a 128-unit dense layer, Adam), rows and seeds — interleaved, one torch thread, in this
process's CPU seconds (wall seconds are also recorded; on a loaded machine they count other
processes' turns). The result decides the reference-training path: where stacking the CNN is
slower, privguard trains CNN references one at a time on a CPU (stacked on a GPU). Run
``python benchmarks/stacked_cnn.py --help``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean, print_table, run_header, write_json_atomic  # noqa: E402
from privguard.data import load_dataset  # noqa: E402
from privguard.models.stacked import train_stacked  # noqa: E402
from privguard.models.train import TrainConfig, TrainingRecipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist-5k")
    ap.add_argument("--models", type=int, default=16, help="copies (default 16)")
    ap.add_argument("--rows", type=int, default=1000, help="training rows per copy")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved pairs")
    ap.add_argument("--out", type=Path, default=here / "results" / "stacked_cnn.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    header = run_header("stacked_cnn", argv)
    ds = load_dataset(args.dataset)
    x, y = np.asarray(ds.x, np.float32), np.asarray(ds.y, np.int64)
    n_classes = int(y.max()) + 1
    config = TrainConfig(model="cnn", hidden=[128], epochs=args.epochs)
    rng = np.random.default_rng(0)
    rows = [np.sort(rng.choice(len(y), args.rows, replace=False)) for _ in range(args.models)]
    seeds = list(range(args.models))
    recipe = TrainingRecipe(config, n_classes)
    runs = []
    for rep in range(args.repeat):
        for how in ("one at a time", "stacked"):
            load = os.getloadavg()[0]
            c0, t0 = time.process_time(), time.perf_counter()
            if how == "stacked":
                train_stacked(config, x, y, n_classes, rows, seeds)
            else:
                for r, s in zip(rows, seeds, strict=True):
                    recipe.fit(x[r], y[r], seed=s)
            runs.append(
                {
                    "repeat": rep,
                    "how": how,
                    "cpu_seconds": round(time.process_time() - c0, 2),
                    "wall_seconds": round(time.perf_counter() - t0, 2),
                    "load_average_before": round(load, 2),
                }
            )
            print(runs[-1], file=sys.stderr, flush=True)
    seq = [r["cpu_seconds"] for r in runs if r["how"] != "stacked"]
    stk = [r["cpu_seconds"] for r in runs if r["how"] == "stacked"]
    ratios = [round(a / b, 2) for a, b in zip(seq, stk, strict=True)]
    results = {
        **header,
        "recipe": config.architecture(x.shape[1:], n_classes),
        "models": args.models,
        "rows_per_model": args.rows,
        "epochs": args.epochs,
        "runs": runs,
        "stacked_speedup_cpu_per_pair": ratios,
    }
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json_atomic(args.out, clean(results))
    print_table(
        f"{args.models} CNNs on {args.dataset}, {args.rows} rows x {args.epochs} epoch(s)",
        ["run", "CPU s", "wall s", "load"],
        [
            [
                f"{r['how']} #{r['repeat'] + 1}",
                f"{r['cpu_seconds']:.1f}",
                f"{r['wall_seconds']:.1f}",
                f"{r['load_average_before']:.1f}",
            ]
            for r in runs
        ],
    )
    print(f"stacked speed-up in CPU seconds per pair: {ratios}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
