"""How fast privguard trains LiRA's reference models: 32 MLPs on digits, three ways.

The issue's speed target: 32 reference MLPs on digits (the target's recipe: 2x256, 100 epochs)
in <= 30 s on 2 cores. Times
``privguard.attacks.membership.reference_training.train_reference_models`` on exactly the pool and
inclusion matrix LiRA online builds (candidates + auxiliary records, every record IN the
target's training share of the models, one-pixel image shifts evaluated) with

- ``n_jobs=1``: in this process, one model after another, and stacked
  (:mod:`privguard.models.stacked`), alternating ``--repeat`` times;
- two local worker processes (joblib / loky, privguard's ``--jobs 2``) against a Dask
  ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` passed as
  ``Compute.scheduler`` (the ``--scheduler`` path): the same two processes, the same grouping
  (one model per job, or one stacked group per worker), both warm. Each side's first call is
  timed on its own (loky spawns its workers inside it; the cluster's start-up and its workers'
  warm-up, :mod:`privguard.dask_worker`, are timed separately), then ``--dask-repeat`` rounds
  alternate loky and Dask so a change in load hits both, and each round's Dask / loky ratio is
  reported, in wall seconds and in CPU seconds of all processes (this one and its workers);
- for scale, the first call on a fresh cluster whose workers were *not* warmed (they import
  privguard and set up PyTorch inside it), one model per job and stacked.

Every run's logits are checked: bit-identical within each way of training (sequential,
stacked), wherever it ran. Each run records this process's CPU seconds beside the wall seconds
(on a loaded machine the fair measure of in-process work), the work in FLOPs (torch's FLOP
counter on one model) and the GFLOP/s achieved. Every model runs with one torch thread
(privguard's worker sets it).
Run ``python benchmarks/reference_speed.py --help``.
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
from typing import Any

import numpy as np
import psutil
import torch

import privguard
from privguard.attacks import Compute
from privguard.attacks.membership.reference import (
    balanced_inclusion,
    image_shifts,
    train_share,
)
from privguard.attacks.membership.reference_training import train_reference_models
from privguard.audit.runner import _Truth

TARGET_SECONDS = 30.0


def setup(n_models: int, seed: int, epochs: int, dataset: str = "digits", model: str = "mlp"):
    config = privguard.TrainConfig(seed=seed, epochs=epochs, model=model)
    if model == "cnn":
        config.hidden = [128]
    target = privguard.train(dataset, config)
    ds = target.load_data()
    truth = _Truth.build(ds, target.split, seed)
    know = truth.knowledge(target, ds, None, needs_sensitive=False)
    pool_x = np.concatenate([know.candidates_x, know.aux_x])
    pool_y = np.concatenate([know.candidates_y, know.aux_y]).astype(np.int64)
    inclusion = balanced_inclusion(n_models, len(pool_y), seed, train_share(know))
    return target, know, pool_x, pool_y, inclusion


def flop_count(target, know, n_models: int, rows: int, epochs: int) -> dict[str, float]:
    """The arithmetic both paths must do (torch's FLOP counter on one model): training
    (forward + backward per record seen, ``rows x epochs`` per model) and the evaluation of
    every pool view; the same for sequential and stacked."""
    from torch.utils.flop_counter import FlopCounterMode

    from privguard.models.nets import build_model

    arch = target.recipe.config.architecture(know.candidates_x.shape[1:], target.recipe.n_classes)
    model = build_model(arch)
    xb = torch.from_numpy(np.ascontiguousarray(know.candidates_x[:64], np.float32))
    yb = torch.from_numpy(np.asarray(know.candidates_y[:64], np.int64))
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    train_per_record = fc.get_total_flops() / len(xb)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(xb)
    eval_per_record = fc.get_total_flops() / len(xb)
    pool = len(know.candidates_y) + len(know.aux_y)
    train = n_models * rows * epochs * train_per_record
    evaluate = n_models * pool * len(image_shifts(know)) * eval_per_record
    return {"train": train, "evaluate": evaluate, "total": train + evaluate}


def matmul_peak() -> float:
    """What one thread's float32 matmul reaches here now (a 1024x1024 GEMM), for scale."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    return round(2 * 1024**3 * 10 / (time.perf_counter() - t0) / 1e9, 1)


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and every live descendant: its loky
    workers, the LocalCluster's nannies and workers."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def timed(know, pool_x, pool_y, inclusion, seed: int, compute: Compute):
    know.compute = compute
    all0 = tree_cpu()
    c0, t0 = time.process_time(), time.perf_counter()
    refs = train_reference_models(
        know, pool_x, pool_y, inclusion, seed=seed, shifts=image_shifts(know)
    )
    # this process's CPU seconds: on a loaded machine the fair measure of in-process work
    # (wall time then counts the other processes' turns); worker processes' CPU is not in it
    secs = time.perf_counter() - t0
    timed.cpu = time.process_time() - c0
    timed.cpu_all = tree_cpu() - all0
    return refs, secs


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=32, help="reference models (default 32)")
    ap.add_argument("--epochs", type=int, default=100, help="target recipe epochs (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits", help="digits (default) or mnist-5k")
    ap.add_argument("--model", default="mlp", help="target model kind: mlp (default) or cnn")
    ap.add_argument("--device", default="cpu", help="stacked training device: cpu, cuda, auto")
    ap.add_argument(
        "--repeat", type=int, default=1, help="sequential/stacked in-process pairs (interleaved)"
    )
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated runs to skip: inprocess,stacked,loky-dask (the two-process "
        "comparison), dask-stacked (its stacked half), dask-cold (a cluster not warmed)",
    )
    ap.add_argument(
        "--dask-repeat",
        type=int,
        default=3,
        help="interleaved rounds of loky and Dask, warm (default 3)",
    )
    ap.add_argument(
        "--out", type=Path, default=here / "results" / "reference_speed.json", help="JSON path"
    )
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip & {"loky", "dask"}:  # the names before loky and Dask ran as one comparison
        skip |= {"loky-dask", "dask-cold"}
    torch.set_num_threads(1)
    load_before = [round(v, 2) for v in os.getloadavg()]

    target, know, pool_x, pool_y, inclusion = setup(
        args.models, args.seed, args.epochs, args.dataset, args.model
    )
    rows_per_model = inclusion.sum(axis=1)
    print(
        f"{args.dataset} {args.model} target {target.config.hidden} x {args.epochs} epochs; "
        f"{args.models} models, "
        f"{int(rows_per_model.mean())} training rows each, pool {len(pool_y)} rows, "
        f"{len(image_shifts(know))} views evaluated",
        file=sys.stderr,
    )
    runs: dict[str, dict[str, Any]] = {}
    logits: dict[str, np.ndarray] = {}

    def record(name: str, how: str, refs, secs: float, **extra: Any) -> None:
        load = [round(v, 2) for v in os.getloadavg()]
        runs[name] = {
            "how": how,
            "seconds": round(secs, 2),
            "cpu_seconds_this_process": round(timed.cpu, 2),
            "cpu_seconds_all_processes": round(timed.cpu_all, 2),
            "seconds_per_model": round(secs / args.models, 3),
            "ratio_to_target": round(secs / TARGET_SECONDS, 2),
            "load_average_after": load,
            **extra,
        }
        logits[name] = refs.logits
        print(f"  {name}: {secs:.1f} s (load {load})", file=sys.stderr, flush=True)

    seq = {"stacked": False}
    stk = {"stacked": True, "device": args.device}
    # sequential and stacked alternate (--repeat pairs), so a change in load hits both
    pairs: list[tuple[float, float]] = []
    cpu_pairs: list[tuple[float, float]] = []
    for rep in range(args.repeat):
        tag = f" #{rep + 1}" if rep else ""
        pair = []
        if "inprocess" not in skip:
            refs, secs = timed(know, pool_x, pool_y, inclusion, args.seed, Compute(n_jobs=1, **seq))
            record("in-process n_jobs=1" + tag, "this process, one model after another", refs, secs)
            pair.append(secs)
        if "stacked" not in skip:
            refs, secs = timed(know, pool_x, pool_y, inclusion, args.seed, Compute(n_jobs=1, **stk))
            record(
                "stacked in-process" + tag,
                f"this process, all models as stacked groups (device {args.device})",
                refs,
                secs,
            )
            pair.append(secs)
        if len(pair) == 2:
            pairs.append((pair[0], pair[1]))
            cpu_pairs.append(
                (
                    runs["in-process n_jobs=1" + tag]["cpu_seconds_this_process"],
                    runs["stacked in-process" + tag]["cpu_seconds_this_process"],
                )
            )
    if "dask-cold" not in skip:
        # before this change's warm-up: a fresh cluster whose workers meet privguard in the
        # first call (what the morning's quiet run timed against a warm loky)
        from distributed import Client, LocalCluster

        import privguard.compute as pc

        warm, pc._warm = pc._warm, lambda client: None
        try:
            for suffix, extra in (("", seq), (", stacked", stk)):
                t0 = time.perf_counter()
                with (
                    LocalCluster(
                        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
                    ) as cluster,
                    Client(cluster) as client,
                ):
                    startup = time.perf_counter() - t0
                    refs, secs = timed(
                        know,
                        pool_x,
                        pool_y,
                        inclusion,
                        args.seed,
                        Compute(scheduler=client, **extra),
                    )
                record(
                    f"dask cold workers{suffix}",
                    "a fresh LocalCluster 2x1, not warmed: imports and set-up in the first call",
                    refs,
                    secs,
                    cluster_startup_seconds=round(startup, 2),
                    worker_warmup_seconds=0.0,
                )
        finally:
            pc._warm = warm
    dask_pairs: dict[str, list[dict[str, float]]] = {}
    if "loky-dask" not in skip:
        from distributed import Client, LocalCluster

        from privguard.compute import dask_client

        ways = [("", seq)] + ([] if "dask-stacked" in skip else [(", stacked", stk)])
        t0 = time.perf_counter()
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            dask_client(client)  # what fan_out does first: warm the workers (once per client)
            warmup = time.perf_counter() - t0
            print(f"  cluster start-up {startup:.1f} s, warm-up {warmup:.1f} s", file=sys.stderr)
            # first calls: loky spawns its two workers inside the timing; the cluster's
            # workers were started and warmed above
            refs, secs = timed(know, pool_x, pool_y, inclusion, args.seed, Compute(n_jobs=2, **seq))
            record(
                "loky n_jobs=2, first call",
                "joblib loky, 2 worker processes spawned here",
                refs,
                secs,
            )
            refs, secs = timed(
                know, pool_x, pool_y, inclusion, args.seed, Compute(scheduler=client, **seq)
            )
            record(
                "dask LocalCluster 2x1, first call",
                "distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True), "
                "workers warmed when the client connected",
                refs,
                secs,
                cluster_startup_seconds=round(startup, 2),
                worker_warmup_seconds=round(warmup, 2),
            )
            for rep in range(args.dask_repeat):
                for suffix, extra in ways:
                    tag = f"{suffix} #{rep + 1}"
                    refs, secs = timed(
                        know, pool_x, pool_y, inclusion, args.seed, Compute(n_jobs=2, **extra)
                    )
                    record(f"loky warm{tag}", "joblib loky, 2 workers, reused", refs, secs)
                    loky = (secs, timed.cpu_all)
                    refs, secs = timed(
                        know,
                        pool_x,
                        pool_y,
                        inclusion,
                        args.seed,
                        Compute(scheduler=client, **extra),
                    )
                    record(f"dask warm{tag}", "the LocalCluster above, reused", refs, secs)
                    dask_pairs.setdefault("stacked" if suffix else "one model per job", []).append(
                        {
                            "loky_seconds": round(loky[0], 2),
                            "dask_seconds": round(secs, 2),
                            "wall_ratio": round(secs / loky[0], 3),
                            "cpu_ratio_all_processes": round(timed.cpu_all / loky[1], 3),
                        }
                    )

    names = list(logits)
    plain = [n for n in names if "stacked" not in n]
    stacked = [n for n in names if "stacked" in n]
    # each way of running is deterministic: sequential runs agree bit for bit, stacked runs too
    identical = all(
        np.array_equal(logits[g[0]], logits[n]) for g in (plain, stacked) if g for n in g[1:]
    )
    agreement = None
    if plain and stacked:
        a, b = logits[plain[0]], logits[stacked[0]]
        agreement = {
            "median_abs_logit_difference": float(np.median(np.abs(a - b))),
            "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
        }
    ratios = [a / b for a, b in pairs]
    if ratios:
        runs["stacked in-process"]["speedup_vs_in_process_sequential"] = round(ratios[0], 2)
    work = flop_count(target, know, args.models, int(rows_per_model.mean()), args.epochs)
    for r in runs.values():
        r["achieved_gflop_per_s"] = round(work["total"] / r["seconds"] / 1e9, 1)
        if "this process" in r["how"]:
            cpu = r["cpu_seconds_this_process"]
            r["achieved_gflop_per_cpu_s"] = round(work["total"] / cpu / 1e9, 1)
    dask_vs_loky = {
        way: {
            "pairs": pairs_,
            "median_wall_ratio": round(float(np.median([p["wall_ratio"] for p in pairs_])), 3),
            "median_cpu_ratio_all_processes": round(
                float(np.median([p["cpu_ratio_all_processes"] for p in pairs_])), 3
            ),
        }
        for way, pairs_ in dask_pairs.items()
    }
    results = {
        "benchmark": "reference_speed",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"privguard": privguard.__version__, "torch": torch.__version__},
        "device": args.device,
        "load_average_before": load_before,
        "recipe": {
            "dataset": args.dataset,
            "model": args.model,
            "hidden": list(target.config.hidden),
            "epochs": args.epochs,
            "seed": args.seed,
        },
        "n_models": args.models,
        "training_rows_per_model": int(rows_per_model.mean()),
        "pool_rows": int(len(pool_y)),
        "views": len(image_shifts(know)),
        "target_seconds": TARGET_SECONDS,
        "runs": runs,
        "stacked_speedup_per_pair": [round(r, 2) for r in ratios],
        "stacked_speedup_median": round(float(np.median(ratios)), 2) if ratios else None,
        "stacked_cpu_speedup_per_pair": [round(a / b, 2) for a, b in cpu_pairs],
        "flops": work,
        "matmul_peak_gflop_per_s": matmul_peak(),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "dask_vs_loky_warm": dask_vs_loky,
        "dask_goal_ratio": 1.2,
        "logits_identical": identical,
        "stacked_vs_sequential": agreement,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, args.out)

    header = ["run", "seconds", "CPU s (this)", "CPU s (all)", "GFLOP/s (wall)", "load after"]
    table = [header] + [
        [
            n,
            f"{r['seconds']:.1f}",
            f"{r['cpu_seconds_this_process']:.1f}",
            f"{r['cpu_seconds_all_processes']:.1f}",
            f"{r['achieved_gflop_per_s']:.1f}",
            " ".join(f"{v:.2f}" for v in r["load_average_after"]),
        ]
        for n, r in runs.items()
    ]
    print("| " + " | ".join(table[0]) + " |\n|" + "---|" * len(header))
    for row in table[1:]:
        print("| " + " | ".join(row) + " |")
    for n, r in runs.items():
        if "cluster_startup_seconds" in r:
            print(
                f"\n{n}: cluster start-up {r['cluster_startup_seconds']} s and worker warm-up "
                f"{r['worker_warmup_seconds']} s, not included above"
            )
    for way, d in dask_vs_loky.items():
        print(
            f"Dask / loky, warm, {way}: wall {[p['wall_ratio'] for p in d['pairs']]} "
            f"(median {d['median_wall_ratio']}), CPU of all processes "
            f"{[p['cpu_ratio_all_processes'] for p in d['pairs']]} "
            f"(median {d['median_cpu_ratio_all_processes']}); goal <= 1.2"
        )
    print(f"stacked vs sequential: {agreement}")
    print(
        f"work: {work['total'] / 1e9:.0f} GFLOP ({work['train'] / 1e9:.0f} training); one-thread "
        f"1024^2 matmul here now: {results['matmul_peak_gflop_per_s']} GFLOP/s"
    )
    if ratios:
        print(f"stacked speed-up per interleaved pair: {results['stacked_speedup_per_pair']}")
        print(f"  in CPU seconds of this process: {results['stacked_cpu_speedup_per_pair']}")
    for n, r in runs.items():
        for key in ("speedup_vs_in_process_sequential",):
            if key in r:
                print(f"{n}: {key} = {r[key]}")
    print(f"logits identical within each way: {identical}; results in {args.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
