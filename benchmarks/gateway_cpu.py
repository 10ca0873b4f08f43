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


def measure(target: Any, x: np.ndarray, tmp: Path, batch: int, n: int) -> dict[str, float]:
    from privguard.gateway.app import create_app
    from privguard.gateway.config import GatewayConfig
    from privguard.gateway.keys import create_key

    config = tmp / f"gateway-{batch}.toml"
    config.write_text(GATEWAY_CONFIG.format(fpkey=tmp / "fp.key"))
    app = create_app(
        target, GatewayConfig.from_toml(config), db=f"sqlite:///{tmp / f'log-{batch}.db'}"
    )
    gw = app.state.gateway
    key, _ = create_key(gw.store, "bench", "client", "bench")
    bodies = _bodies(x, batch, 64)

    async def run() -> tuple[float, float]:
        gw.writer.start()

        async def one(i: int) -> None:
            async def body() -> bytes:
                return bodies[i % len(bodies)]

            await gw.predict(key, body, time.perf_counter())

        for i in range(0, 64, 8):  # warm-up
            await asyncio.gather(*(one(i + j) for j in range(8)))
        c0 = _cpu()
        for i in range(0, n, 8):
            await asyncio.gather(*(one(i + j) for j in range(8)))
        c1 = _cpu()
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
    return {
        "batch": batch,
        "requests": n,
        "gateway_cpu_ms_per_request": round(gateway * 1e3, 4),
        "bare_cpu_ms_per_request": round(bare * 1e3, 4),
        "bare_over_gateway": round(bare / gateway, 3),
        "log_commits": gw.writer.stats.commits,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="", help="names this run (e.g. the source tree)")
    ap.add_argument("--requests", type=int, default=800, help="measured requests per batch size")
    ap.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    ap.add_argument("--out", default=None, help="JSON output path")
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
    with tempfile.TemporaryDirectory(prefix="pg-cpu-") as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            n = args.requests if batch == 1 else max(80, args.requests // 2)
            results["rows"].append(measure(target, ds.x, Path(tmp), batch, n))
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    label = args.label or "run"
    out = args.out or str(Path(__file__).parent / "results" / f"{BENCH}_{label}.json")

    def table(res: dict[str, Any]) -> None:
        print(f"\n{res['label'] or 'gateway'} ({res['privguard']})")
        print("batch  gateway ms CPU/request  bare ms CPU/request  bare/gateway  log commits")
        for r in res["rows"]:
            print(
                f"{r['batch']:>5}  {r['gateway_cpu_ms_per_request']:>22.3f}  "
                f"{r['bare_cpu_ms_per_request']:>19.3f}  {r['bare_over_gateway']:>12.2f}  "
                f"{r['log_commits']:>11}"
            )

    finish_run(results, Path(out), start, print_tables=table, markdown=None)


if __name__ == "__main__":
    main()
