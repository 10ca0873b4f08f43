"""What one task costs on a 2-worker Dask LocalCluster, beside loky: empty jobs, no training.

Runs ``--tasks`` jobs that return at once (each with a 460 kB array argument, the size of
digits' reference pool) through privguard's Dask path (``privguard.compute.fan_out``:
``client.submit``, the array scattered once), through joblib's dask backend (what privguard
used before) and through loky's two processes, alternating ``--repeat`` times; prints the wall
milliseconds per task and the main process's CPU milliseconds per task.
Run ``python benchmarks/dask_task_overhead.py --help``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _nothing(x: np.ndarray, i: int) -> int:
    return i


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    from privguard.compute import fan_out

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    x = np.zeros((1797, 64), np.float32)
    jobs = [(x, i) for i in range(args.tasks)]
    print(f"load before {os.getloadavg()}")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        list(fan_out(_nothing, jobs[:4], scheduler=client))  # warm-up, connections
        ways = {
            "privguard Dask path (client.submit)": lambda: list(
                fan_out(_nothing, jobs, scheduler=client)
            ),
            "joblib dask backend (before)": lambda: _joblib("dask", jobs, client=client),
            "loky, 2 processes": lambda: _joblib("loky", jobs, n_jobs=2),
        }
        for rep in range(args.repeat):
            for name, run in ways.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = run()
                assert out == list(range(args.tasks))
                wall = (time.perf_counter() - t0) / args.tasks * 1e3
                cpu = (time.process_time() - c0) / args.tasks * 1e3
                print(f"#{rep + 1} {name}: {wall:.1f} ms/task wall, {cpu:.1f} ms/task main CPU")
    print(f"load after {os.getloadavg()}")
    return 0


def _joblib(backend: str, jobs, **kw) -> list:
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend=backend, **kw):
        return list(Parallel(batch_size=1)(delayed(_nothing)(*a) for a in jobs))


if __name__ == "__main__":
    raise SystemExit(main())
