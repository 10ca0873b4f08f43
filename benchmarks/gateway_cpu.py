"""CPU time per request of the gateway's predict path, without HTTP, vs the bare model's work.

``Gateway.predict`` (rate limit, validation, answer, output policy, budget, audit log with its
group commit; no monitor) is driven directly on an event loop, 8 requests in flight, and the
process's CPU time (every thread: the log writer's too) is divided by the requests; then the
bare server's work for the same bodies (``json.loads``, the model, ``json.dumps``). CPU time is
far less disturbed by other jobs on the machine than throughput is, so this is the figure to
compare two versions of the gateway on a loaded machine: run it once per source tree,
interleaved (issue 19):

    PYTHONPATH=../main/src python benchmarks/gateway_cpu.py --label main
    PYTHONPATH=src python benchmarks/gateway_cpu.py --label branch

With ``--monitor`` the gateway also runs the query monitor (every detector, actions ``record``,
fitted as in ``gateway_throughput.py``), and the CPU of the detectors' background task is counted
too (the queue is drained before the clock stops), with each detector's share and the monitor's
own stages (``prepare``: checks and projection; ``neighbours``: the distance matrix shared by
the buffer detectors) in microseconds per request. ``--profile N`` prints the N functions of
largest cumulative time (cProfile) of each measured phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_run, machine_info  # noqa: E402
from gateway_throughput import GATEWAY_CONFIG, _bodies  # noqa: E402

BENCH = "gateway_cpu"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Stages:
    """CPU seconds spent in each detector's ``observe`` and in the monitor's own stages, by
    wrapping them on the instances (works on any privguard tree that has these names)."""

    def __init__(self, monitor: Any) -> None:
        import privguard.gateway.monitor.monitor as mm

        self.cpu: dict[str, float] = {}
        for det in monitor.detectors:
            det.observe = self._wrap(det.name, det.observe)
        monitor.prepare = self._wrap("prepare", monitor.prepare)
        mm.with_neighbours = self._wrap("neighbours", mm.with_neighbours)

    def _wrap(self, name: str, fn: Any) -> Any:
        self.cpu[name] = 0.0

        def timed(*a: Any, **kw: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.cpu[name] += time.thread_time() - c0

        return timed

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)


def measure(
    target: Any,
    x: np.ndarray,
    tmp: Path,
    batch: int,
    n: int,
    monitor: Any = None,
    profile: int = 0,
) -> dict[str, Any]:
    from privguard.gateway.app import create_app
    from privguard.gateway.config import GatewayConfig
    from privguard.gateway.keys import create_key

    config = tmp / f"gateway-{batch}.toml"
    text = GATEWAY_CONFIG.format(fpkey=tmp / "fp.key")
    if monitor is not None:  # the detectors in this process, where their CPU is counted
        text += '\n[monitor]\nrunner = "thread"\n'
    config.write_text(text)
    app = create_app(
        target,
        GatewayConfig.from_toml(config),
        db=f"sqlite:///{tmp / f'log-{batch}-{monitor is not None}.db'}",
        monitor=monitor,
    )
    gw = app.state.gateway
    if monitor is not None:
        monitor.reset()
    stages = _Stages(monitor) if monitor is not None else None
    key, _ = create_key(gw.store, "bench", "client", "bench")
    bodies = _bodies(x, batch, 64)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile(time.thread_time)  # the event loop thread's CPU

    async def run() -> tuple[float, float]:
        gw.writer.start()
        if monitor is not None:
            gw.observations.start()

        async def one(i: int) -> None:
            async def body() -> bytes:
                return bodies[i % len(bodies)]

            await gw.predict(key, body, time.perf_counter())

        for i in range(0, 64, 8):  # warm-up
            await asyncio.gather(*(one(i + j) for j in range(8)))
        if monitor is not None:
            await gw.observations.drain(120)
            stages.reset()
        if prof is not None:
            prof.enable()
        c0 = _cpu()
        for i in range(0, n, 8):
            await asyncio.gather(*(one(i + j) for j in range(8)))
        if monitor is not None:
            await gw.observations.drain(600)  # the detectors' work counts
        c1 = _cpu()
        if prof is not None:
            prof.disable()
        if monitor is not None:
            await gw.observations.stop()
        gw.writer.stop()
        for i in range(n):  # the bare server's work
            doc = json.loads(bodies[i % len(bodies)])
            xb = np.asarray(doc["inputs"], dtype=np.float32).reshape(-1, *target.input_shape)
            p = target.predict_proba(xb)
            json.dumps({"labels": p.argmax(axis=1).tolist(), "probs": p.tolist()})
        c2 = _cpu()
        return (c1 - c0) / n, (c2 - c1) / n

    gateway, bare = asyncio.run(run())
    gw.store.close()
    if prof is not None:
        import pstats

        print(f"\n--- cProfile, batch {batch}, monitor {'on' if monitor else 'off'} ---")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(profile)
    row: dict[str, Any] = {
        "batch": batch,
        "monitor": monitor is not None,
        "requests": n,
        "gateway_cpu_ms_per_request": round(gateway * 1e3, 4),
        "bare_cpu_ms_per_request": round(bare * 1e3, 4),
        "bare_over_gateway": round(bare / gateway, 3),
        "log_commits": gw.writer.stats.commits,
    }
    if monitor is not None:
        row["monitor_dropped"] = gw.observations.dropped
        rounds = getattr(gw.observations, "rounds", 0)  # older trees do not count them
        row["monitor_batches_per_round"] = (
            round(gw.observations.processed / rounds, 2) if rounds else None
        )
        row["monitor_us_per_request"] = {k: round(v * 1e6 / n, 1) for k, v in stages.cpu.items()}
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="", help="names this run (e.g. the source tree)")
    ap.add_argument("--requests", type=int, default=800, help="measured requests per batch size")
    ap.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--monitor", action="store_true", help="also the gateway with the monitor on")
    ap.add_argument("--profile", type=int, default=0, help="print this many cProfile rows")
    args = ap.parse_args(argv)
    import torch

    import privguard
    from privguard.data import load_dataset

    torch.set_num_threads(1)
    start = time.perf_counter()
    ds = load_dataset("digits")
    target = privguard.train(
        ds, privguard.TrainConfig(model="mlp", hidden=[256, 256], epochs=5, seed=0)
    )
    results: dict[str, Any] = {
        "benchmark": BENCH,
        "label": args.label,
        "privguard": str(Path(privguard.__file__).parent),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "rows": [],
    }
    monitor = None
    if args.monitor:  # as gateway_throughput.py's monitored server: every detector, "record"
        from privguard.gateway.monitor import DETECTORS, Monitor

        split = target.split
        monitor = Monitor(actions=dict.fromkeys(DETECTORS, "record")).fit(
            ds.x[split.members], ds.x[split.nonmembers], target.predict_proba
        )
    with tempfile.TemporaryDirectory(prefix="pg-cpu-") as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            n = args.requests if batch == 1 else max(80, args.requests // 2)
            results["rows"].append(measure(target, ds.x, Path(tmp), batch, n, profile=args.profile))
            if monitor is not None:
                results["rows"].append(
                    measure(target, ds.x, Path(tmp), batch, n, monitor, args.profile)
                )
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    label = args.label or "run"
    out = args.out or str(Path(__file__).parent / "results" / f"{BENCH}_{label}.json")

    def table(res: dict[str, Any]) -> None:
        print(f"\n{res['label'] or 'gateway'} ({res['privguard']})")
        print(
            "batch  monitor  gateway ms CPU/request  bare ms CPU/request  bare/gateway  log commits"
        )
        for r in res["rows"]:
            print(
                f"{r['batch']:>5}  {'on' if r.get('monitor') else 'off':>7}  "
                f"{r['gateway_cpu_ms_per_request']:>22.3f}  "
                f"{r['bare_cpu_ms_per_request']:>19.3f}  {r['bare_over_gateway']:>12.2f}  "
                f"{r['log_commits']:>11}"
            )
        for r in res["rows"]:
            if r.get("monitor_us_per_request"):
                print(
                    f"batch {r['batch']} monitor us CPU/request: {r['monitor_us_per_request']} "
                    f"({r['monitor_batches_per_round']} batches per round)"
                )

    finish_run(results, Path(out), start, print_tables=table, markdown=None)


if __name__ == "__main__":
    main()
