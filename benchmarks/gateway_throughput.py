"""Throughput of the serving gateway vs the bare model behind the same uvicorn.

Two servers, each a child process on a loopback port, the same model, the same uvicorn
(``--workers N``, access log off):

- **gateway**: ``privguard serve`` with one tier that runs every stage of a request: API-key
  authentication (SHA-256 lookup, cached), a moving-window rate limit (in memory, set high enough
  never to refuse), input validation (shape, finite values, feature bounds), a daily budget, the
  output policy (``round:3``) and the audit log (SQLite in WAL mode, group commit: each answer is
  sent only after its row is committed);
- **bare**: a minimal FastAPI app defined here that parses ``{"inputs": [...]}``, runs the model
  and returns labels and probabilities, nothing else;
- **noop** (a ceiling, not a competitor): the bare server's ``POST /v1/noop``, which reads the
  body and answers a constant — what uvicorn and the load generator manage without any work;
- **bare-orjson**: the bare server parsing and writing JSON with orjson, as the gateway does
  since issue 19 (the goal is against **bare**; this row shows how much of the gateway's
  standing is its JSON library);
- **monitored** (the gateway with every detector on, in a thread, the default) and
  **monitored-process** (the same with ``[monitor] runner = "process"``: the detectors in a
  child process; ``--no-process-runner`` skips it). Runs before 2026-12-05 18:50 UTC named
  ``monitored`` the child process (then the default) and ``monitored-thread`` the thread.

A bounded load generator (``httpx.AsyncClient``, ``--concurrency`` requests in flight, a warm-up
then ``--seconds`` of measurement per run) posts batches of 1 and of 64 real digits records and
records every request's latency. Runs alternate bare / gateway and repeat ``--repeats`` times;
the table shows each server's median run, and gateway / bare is the median of the ratios taken
within each repeat (the machine's other load drifts between repeats). Goal (issue 7): gateway
≥ 80% of bare throughput at batch 1.

    python benchmarks/gateway_throughput.py                 # ~6 min on 2 cores
    python benchmarks/gateway_throughput.py --quick         # ~1 min
    python benchmarks/gateway_throughput.py --workers 2 --markdown

The load generator runs on the same machine as the servers and competes with them for the CPUs;
both servers face the same generator, so the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bare_server import JSON_ENV, MODEL_ENV, BareProcess, bare_app, serve_bare  # noqa: E402,F401
from _common import finish_run, machine_info  # noqa: E402

BENCH = "gateway_throughput"
GOAL = 0.80
SERVERS = ("noop", "bare", "gateway", "monitored")  # monitored: the gateway, detectors on
# optional: "baseline" (the plain gateway from another source tree, --baseline-src) and
# "monitored-redis" (the monitored gateway with --redis: detector state shared through Redis)

GATEWAY_CONFIG = """
[server]
fingerprint_key_file = "{fpkey}"

[tiers.bench]
access = "probs"
policy = "round:3"
rate_limits = "100000/second"
daily_budget = 1000000000
max_batch = 64
"""


# -- the load generator ------------------------------------------------------------------------


async def _load(
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    *,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """``concurrency`` workers post bodies back to back; only requests started after the
    warm-up and finished before its end + ``seconds`` are measured."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {**headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + seconds

        async def worker(w: int) -> None:
            i = w
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                r = await client.post(url, content=bodies[i % len(bodies)])
                t1 = time.perf_counter()
                i += concurrency
                if t0 >= t_measure and t1 <= t_end:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        latencies.append(t1 - t0)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    lat = np.asarray(latencies) * 1000
    return {
        "requests": int(len(lat)),
        "requests_per_second": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _bodies(x: np.ndarray, batch: int, n: int = 256) -> list[bytes]:
    """``n`` request bodies of ``batch`` real records each (rows cycle through the data)."""
    import json

    flat = x.reshape(len(x), -1)
    out = []
    for i in range(n):
        rows = flat[(np.arange(batch) + i * batch) % len(flat)]
        out.append(json.dumps({"inputs": rows.tolist()}).encode())
    return out


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import privguard
    from privguard.data import load_dataset

    torch.set_num_threads(1)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": BENCH,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "versions": _versions(),
        "settings": {
            "model": f"digits MLP {args.hidden}, {args.epochs} epochs",
            "workers": args.workers,
            "concurrency": args.concurrency,
            "seconds_per_run": args.seconds,
            "warmup_seconds": args.warmup,
            "repeats": args.repeats,
            "batches": args.batches,
            "gateway_tier": "probs access, policy round:3, rate limit 100000/second (moving "
            "window, in memory), daily budget 1e9 records, SQLite WAL audit log",
        },
        "runs": [],
    }
    ds = load_dataset("digits")
    hidden = [int(h) for h in args.hidden.split(",")]
    target = privguard.train(
        ds, privguard.TrainConfig(model="mlp", hidden=hidden, epochs=args.epochs, seed=0)
    )
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = target.save(tmp / "model")
        config = tmp / "gateway.toml"
        config.write_text(textwrap.dedent(GATEWAY_CONFIG.format(fpkey=tmp / "fp.key")))
        db = f"sqlite:///{tmp / 'log-gateway.db'}"  # the plain gateway's (_gateway)
        serve = partial(_gateway, tmp, model, args.workers)
        gateway, secret = serve("gateway", config)
        # The same gateway with the query monitor on: every detector runs on every batch and
        # its findings are stored, but acts by "record" only, so the benign load is never
        # throttled and the cost measured is the detectors' own.
        from privguard.gateway.monitor import DETECTORS, Monitor

        split = target.split
        Monitor(actions=dict.fromkeys(DETECTORS, "record")).fit(
            ds.x[split.members], ds.x[split.nonmembers], target.predict_proba
        ).save(tmp / "monitor")
        config_mon = tmp / "gateway-monitor.toml"
        config_mon.write_text(config.read_text() + f'\n[monitor]\npath = "{tmp / "monitor"}"\n')
        monitored, secret_mon, admin_mon = serve("monitor", config_mon, admin=True)
        extra = {}
        if args.baseline_src:  # the same plain gateway, from another source tree (A/B)
            src = str(Path(args.baseline_src).resolve())
            extra["baseline"] = serve("baseline", config, env={"PYTHONPATH": src})
        if not args.no_process_runner:  # the monitored gateway, detectors in a child (A/B)
            config_proc = tmp / "gateway-monitor-process.toml"
            config_proc.write_text(config_mon.read_text() + 'runner = "process"\n')
            extra["monitored-process"] = serve("monitor-process", config_proc)
        if args.redis:  # the monitored gateway with Redis: shared holds and detector state
            extra["monitored-redis"] = serve(
                "monitor-redis",
                config_mon,
                key_name=f"bench-{os.getpid()}-{time.time_ns()}",  # a state Redis never saw
                args=["--redis", args.redis],
            )
        results["settings"]["servers"] = list(SERVERS) + ["bare-orjson"] + list(extra)
        with contextlib.ExitStack() as stack:
            for proc, _ in extra.values():
                stack.enter_context(proc)
            stack.enter_context(gateway)
            stack.enter_context(monitored)
            bare = stack.enter_context(BareProcess(model, args.workers))
            bare_fast = stack.enter_context(BareProcess(model, args.workers, "orjson"))
            servers = {
                "noop": (bare.url + "/v1/noop", {}),
                "bare": (bare.url + "/v1/predict", {}),
                "bare-orjson": (bare_fast.url + "/v1/predict", {}),
                "gateway": (gateway.url + "/v1/predict", {"Authorization": f"Bearer {secret}"}),
                "monitored": (
                    monitored.url + "/v1/predict",
                    {"Authorization": f"Bearer {secret_mon}"},
                ),
            }
            for name, (proc, secret_x) in extra.items():
                servers[name] = (proc.url + "/v1/predict", {"Authorization": f"Bearer {secret_x}"})
            results["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
            for batch in args.batches:
                bodies = _bodies(ds.x, batch)
                for rep in range(args.repeats):
                    for name, (url, headers) in servers.items():
                        m = asyncio.run(
                            _load(
                                url,
                                headers,
                                bodies,
                                concurrency=args.concurrency,
                                warmup=args.warmup,
                                seconds=args.seconds,
                            )
                        )
                        m.update(server=name, batch=batch, repeat=rep)
                        m["records_per_second"] = m["requests_per_second"] * batch
                        m["load_average"] = round(os.getloadavg()[0], 2)
                        results["runs"].append(m)
                        print(
                            f"batch {batch:>3} {name:<8} rep {rep}: "
                            f"{m['requests_per_second']:8.1f} req/s  p50 {m['p50_ms']} ms  "
                            f"p99 {m['p99_ms']} ms  {m['statuses']}",
                            file=sys.stderr,
                        )
            # the detectors run off the request path (issue 19): the batches they could not
            # observe (a full queue) make the monitored figure cheaper than the detectors are
            results["monitor_dropped_batches"] = _dropped(monitored.url, admin_mon)
            results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        rows = store_rows(db)
    results["gateway_log_rows"] = rows
    results["summary"] = summarise(results["runs"], args.batches, results["settings"]["servers"])
    return finish_run(
        results,
        Path(args.out),
        start,
        print_tables=print_table,
        markdown=markdown if args.markdown else None,
    )


def _gateway(
    tmp: Path,
    model: Path,
    workers: int,
    name: str,
    config: Path,
    *,
    key_name: str = "bench",
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    admin: bool = False,
) -> tuple[Any, ...]:
    """``privguard serve`` of ``model`` under ``config`` with a database of its own and a client
    key: (the process, its key's secret[, an admin key's secret])."""
    from privguard.gateway.keys import create_key
    from privguard.gateway.store import Store
    from privguard.testing.servers import GatewayProcess

    db = f"sqlite:///{tmp / f'log-{name}.db'}"
    store = Store(db)
    store.migrate()
    _, secret = create_key(store, key_name, "client", "bench")
    secrets = [secret]
    if admin:
        secrets.append(create_key(store, f"{key_name}-admin", "admin", "bench")[1])
    store.close()
    proc = GatewayProcess(
        ["--model", str(model), "--config", str(config), "--db", db]
        + ["--workers", str(workers), *(args or [])],
        log_file=tmp / f"serve-{name}.log",
        env=env,
    )
    return (proc, *secrets)


def _dropped(url: str, admin: str) -> float | None:
    """``privguard_monitor_dropped_total`` of the monitored gateway (its ``/metrics``)."""
    import httpx

    text = httpx.get(url + "/metrics", headers={"X-API-Key": admin}, timeout=30).text
    for line in text.splitlines():
        if line.startswith("privguard_monitor_dropped_total "):
            return float(line.split()[1])
    return None


def store_rows(db: str) -> int:
    """Rows the gateway's audit log holds after the runs (one per answered request)."""
    from sqlalchemy import func, select

    from privguard.gateway.store import Store
    from privguard.gateway.store.models import QueryLog

    store = Store(db)
    try:
        with store.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(QueryLog)).scalar_one())
    finally:
        store.close()


def summarise(
    runs: list[dict[str, Any]], batches: list[int], servers: list[str] | tuple[str, ...] = SERVERS
) -> list[dict[str, Any]]:
    """Per batch size: the median run of each server, and each gateway / bare."""
    out = []
    for batch in batches:
        row: dict[str, Any] = {"batch": batch, "servers": list(servers)}
        for name in servers:
            mine = [r for r in runs if r["server"] == name and r["batch"] == batch]
            med = sorted(mine, key=lambda r: r["requests_per_second"])[len(mine) // 2]
            row[name] = {
                "requests_per_second": round(med["requests_per_second"], 1),
                "records_per_second": round(med["records_per_second"], 1),
                "p50_ms": round(med["p50_ms"], 2),
                "p99_ms": round(med["p99_ms"], 2),
                "all_runs_requests_per_second": [round(r["requests_per_second"], 1) for r in mine],
                "non_200": sum(v for k, v in med["statuses"].items() if k != "200"),
            }
        # Each repeat runs noop, bare and gateway back to back: their ratio is taken within one
        # repeat (the machine's other load drifts between repeats) and the median reported.
        of_medians = row["gateway"]["requests_per_second"] / row["bare"]["requests_per_second"]
        row["ratio_of_medians"] = round(of_medians, 3)
        ratios = [
            g["requests_per_second"] / b["requests_per_second"]
            for g, b in zip(
                [r for r in runs if r["server"] == "gateway" and r["batch"] == batch],
                [r for r in runs if r["server"] == "bare" and r["batch"] == batch],
                strict=True,
            )
        ]
        row["ratio_per_repeat"] = [round(v, 3) for v in ratios]
        with_monitor = [
            g["requests_per_second"] / b["requests_per_second"]
            for g, b in zip(
                [r for r in runs if r["server"] == "monitored" and r["batch"] == batch],
                [r for r in runs if r["server"] == "bare" and r["batch"] == batch],
                strict=True,
            )
        ]
        row["monitored_ratio_per_repeat"] = [round(v, 3) for v in with_monitor]
        row["monitored_throughput_ratio"] = round(statistics.median(with_monitor), 3)
        for name in [n for n in servers if n not in SERVERS]:  # baseline, monitored-redis
            per = [
                g["requests_per_second"] / b["requests_per_second"]
                for g, b in zip(
                    [r for r in runs if r["server"] == name and r["batch"] == batch],
                    [r for r in runs if r["server"] == "bare" and r["batch"] == batch],
                    strict=True,
                )
            ]
            row[f"{name}_ratio_per_repeat"] = [round(v, 3) for v in per]
            row[f"{name}_throughput_ratio"] = round(statistics.median(per), 3)
        if "bare-orjson" in servers:  # against the bare server with the gateway's JSON library
            fast = [r for r in runs if r["server"] == "bare-orjson" and r["batch"] == batch]
            for name in ("gateway", "monitored"):
                per = [
                    g["requests_per_second"] / b["requests_per_second"]
                    for g, b in zip(
                        [r for r in runs if r["server"] == name and r["batch"] == batch],
                        fast,
                        strict=True,
                    )
                ]
                row[f"{name}_vs_bare_orjson"] = round(statistics.median(per), 3)
        ratio = statistics.median(ratios)
        row["throughput_ratio"] = round(ratio, 3)
        if batch == 1:
            row["goal"] = f"gateway >= {GOAL:.0%} of bare throughput"
            row["verdict"] = "PASS" if ratio >= GOAL else "MISS"
        out.append(row)
    return out


def _versions() -> dict[str, str]:
    import fastapi
    import httpx
    import torch
    import uvicorn

    import privguard

    return {
        "privguard": privguard.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"\n{s['model']}; {s['workers']} uvicorn worker(s) each; {s['concurrency']} requests in "
        f"flight; {s['seconds_per_run']} s per run, median of {s['repeats']}"
    )
    head = f"{'batch':>5} {'server':<8} {'req/s':>9} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(head)
    for row in results["summary"]:
        for name in row.get("servers", SERVERS):
            m = row[name]
            print(
                f"{row['batch']:>5} {name:<8} {m['requests_per_second']:>9.1f} "
                f"{m['records_per_second']:>10.1f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}"
            )
        line = (
            f"      gateway / bare throughput: {row['throughput_ratio']:.2f} (median of "
            f"{', '.join(f'{r:.2f}' for r in row['ratio_per_repeat'])})"
        )
        if "verdict" in row:
            line += f"  ({row['goal']}: {row['verdict']})"
        print(line)
        print(
            f"      gateway with the monitor on / bare: {row['monitored_throughput_ratio']:.2f} "
            f"(median of {', '.join(f'{r:.2f}' for r in row['monitored_ratio_per_repeat'])})"
        )
        if "gateway_vs_bare_orjson" in row:
            print(
                f"      against bare-orjson: gateway {row['gateway_vs_bare_orjson']:.2f}, "
                f"monitored {row['monitored_vs_bare_orjson']:.2f}"
            )
        for name in [n for n in row.get("servers", SERVERS) if n not in SERVERS]:
            print(
                f"      {name} / bare: {row[f'{name}_throughput_ratio']:.2f} (median of "
                f"{', '.join(f'{r:.2f}' for r in row[f'{name}_ratio_per_repeat'])})"
            )
    print(f"gateway audit log rows after the runs: {results['gateway_log_rows']}")
    print(
        "monitored gateway: batches its detectors could not observe (queue full): "
        f"{results.get('monitor_dropped_batches')}"
    )


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| batch | server | requests/s | records/s | p50 ms | p99 ms | gateway / bare |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["summary"]:
        for name in row.get("servers", SERVERS):
            m = row[name]
            ratio = {
                "gateway": f"**{row['throughput_ratio']:.2f}**",
                "monitored": f"**{row['monitored_throughput_ratio']:.2f}**",
                **{
                    n: f"{row[f'{n}_throughput_ratio']:.2f}"
                    for n in row.get("servers", SERVERS)
                    if n not in SERVERS
                },
            }.get(name, "")
            lines.append(
                f"| {row['batch']} | {name} | {m['requests_per_second']:.1f} | "
                f"{m['records_per_second']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                f"{ratio} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per server and batch size")
    ap.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    ap.add_argument("--hidden", default="256,256", help="MLP hidden widths")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the served MLP")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 4 s")
    ap.add_argument(
        "--baseline-src",
        default=None,
        help="also run the plain gateway from this source tree (e.g. another checkout's src/)",
    )
    ap.add_argument(
        "--redis",
        default=None,
        help="also run the monitored gateway with this Redis (shared detector state)",
    )
    ap.add_argument(
        "--no-process-runner",
        action="store_true",
        help='skip the monitored gateway with [monitor] runner = "process" (the A/B of the '
        "detectors' child process)",
    )
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--markdown", action="store_true", help="also print the table in Markdown")
    ap.add_argument("--serve-bare", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare, args.port, args.workers)
        return
    if args.quick:
        args.repeats, args.seconds, args.warmup = 1, 4.0, 1.0
    args.batches = [int(b) for b in args.batches.split(",")]
    default = f"results/{BENCH}{'_quick' if args.quick else ''}.json"
    args.out = args.out or str(Path(__file__).resolve().parent / default)
    run(args)


if __name__ == "__main__":
    main()
