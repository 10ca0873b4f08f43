"""What DP-SGD costs in training time: Opacus vs plain PyTorch on the same model and data.

For each target (digits MLP, mnist-5k MLP, mnist-5k CNN: privguard's architectures, Adam, batch
size 64, one torch thread) the members of the seed-0 split are trained three ways, each timed
per epoch through the training loop's progress callback (so model building and, for DP, the
accountant's noise calibration are excluded; the first epoch is dropped as warm-up):

- ``plain``: privguard's non-private path (``train_module``, a plain PyTorch loop over
  shuffled batches of 64);
- ``dp-ghost``: ``privguard.models.train.train_private`` as used by ``privguard train
  --dp-epsilon``: Opacus with Poisson sampling (expected batch 64) and ghost clipping;
- ``dp-hooks``: the same through Opacus' classic per-record-gradient engine (``hooks``).

The issue's goal is a DP/plain epoch-time ratio of at most 3. Each figure is the median over
epochs of ``--repeats`` runs. Test accuracies after these few epochs (DP at epsilon = 1 over
them) are recorded too, as a sanity check that the runs train, not as accuracy results.
Run ``python benchmarks/dp_cost.py --help``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import privguard
from _common import finish_run, run_header
from privguard.data import load_dataset, make_split
from privguard.models.torch_predictor import TorchPredictor
from privguard.models.train import train_module, train_private

# name, dataset, TrainConfig overrides, timed epochs
TARGETS: list[tuple[str, str, dict[str, Any], int]] = [
    ("digits-mlp", "digits", {"model": "mlp"}, 8),
    ("mnist-5k-mlp", "mnist-5k", {"model": "mlp"}, 4),
    ("mnist-5k-cnn", "mnist-5k", {"model": "cnn"}, 3),
]
EPSILON = 1.0
GOAL = 3.0


def epoch_times(fn):
    """Run ``fn(progress)``; return the seconds between successive epoch callbacks (the
    first, which includes setup, dropped), the model and the training log."""
    stamps: list[float] = []
    start = time.perf_counter()

    def progress(step: str, done: int, total: int) -> None:
        stamps.append(time.perf_counter())

    model, log = fn(progress)
    times = np.diff([start, *stamps]).tolist()
    return (times[1:] if len(times) > 1 else times), model, log


def measure(name: str, data: str, overrides: dict[str, Any], epochs: int, repeats: int):
    ds = load_dataset(data)
    split = make_split(ds.y, seed=0)
    x, y = ds.x[split.members], ds.y[split.members]
    xt, yt = ds.x[split.nonmembers], ds.y[split.nonmembers]
    row: dict[str, Any] = {"target": name, "members": len(x), "epochs_timed": epochs - 1}
    for way in ("plain", "dp-ghost", "dp-hooks"):
        cfg = privguard.TrainConfig(
            **overrides, epochs=epochs, batch_size=64, seed=0,
            dp_epsilon=None if way == "plain" else EPSILON,
        )  # fmt: skip
        per_epoch: list[float] = []
        for rep in range(repeats):
            if way == "plain":

                def fn(progress, cfg=cfg, rep=rep):
                    return train_module(cfg, x, y, ds.n_classes, seed=rep, progress=progress)
            else:
                mode = way.removeprefix("dp-")

                def fn(progress, cfg=cfg, rep=rep, mode=mode):
                    return train_private(
                        cfg, x, y, ds.n_classes, seed=rep, grad_sample_mode=mode, progress=progress
                    )

            times, model, log = epoch_times(fn)
            per_epoch += times
        row[f"{way}_s_per_epoch"] = round(statistics.median(per_epoch), 4)
        predictor = TorchPredictor(model, ds.input_shape, ds.n_classes)
        row[f"{way}_test_accuracy"] = round(
            float((predictor.predict_logits(xt).argmax(axis=1) == yt).mean()), 4
        )
        if way != "plain":
            row[f"{way}_noise_multiplier"] = log["privacy"]["noise_multiplier"]
    for way in ("dp-ghost", "dp-hooks"):
        row[f"{way}_ratio"] = round(row[f"{way}_s_per_epoch"] / row["plain_s_per_epoch"], 2)
    return row


def print_tables(results: dict[str, Any]) -> None:
    print(
        f"{'target':<14}{'members':>8}{'plain s/ep':>12}{'ghost s/ep':>12}{'ratio':>7}"
        f"{'hooks s/ep':>12}{'ratio':>7}"
    )
    for r in results["rows"]:
        print(
            f"{r['target']:<14}{r['members']:>8}{r['plain_s_per_epoch']:>12.4f}"
            f"{r['dp-ghost_s_per_epoch']:>12.4f}{r['dp-ghost_ratio']:>7.2f}"
            f"{r['dp-hooks_s_per_epoch']:>12.4f}{r['dp-hooks_ratio']:>7.2f}"
        )


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| target | members | plain PyTorch s/epoch | DP-SGD (ghost) s/epoch | ratio "
        "| DP-SGD (hooks) s/epoch | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['target']} | {r['members']} | {r['plain_s_per_epoch']:.4f} | "
            f"{r['dp-ghost_s_per_epoch']:.4f} | **{r['dp-ghost_ratio']:.2f}x** | "
            f"{r['dp-hooks_s_per_epoch']:.4f} | {r['dp-hooks_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per way (default 3)")
    parser.add_argument("--only", help="one target name")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "dp_cost.json"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run_header("dp_cost", argv)
    results.update({"epsilon": EPSILON, "batch_size": 64, "goal_ratio": GOAL, "rows": []})
    for name, data, overrides, epochs in TARGETS:
        if args.only and name != args.only:
            continue
        results["rows"].append(measure(name, data, overrides, epochs, args.repeats))
        print(f"done {name}", file=sys.stderr)
    finish_run(results, args.out, start, print_tables=print_tables, markdown=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
