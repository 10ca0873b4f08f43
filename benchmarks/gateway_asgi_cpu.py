"""CPU time per ``POST /v1/predict`` through the whole ASGI app, in-process, gateway vs bare.

``benchmarks/gateway_cpu.py`` drives ``Gateway.predict`` alone; this drives the whole app --
middleware (security headers, metrics, body limit, authentication), FastAPI's router and the
route -- with a hand-made ASGI request (no socket, no uvicorn, no load generator), 8 in flight,
and divides the process's CPU time (every thread) by the requests; then the same for the bare
server of ``gateway_throughput.py`` (FastAPI, parse, model, JSON). What is left between these
figures and the throughput benchmark's is uvicorn, the HTTP parser, the load generator and
waiting. Run it from the tree to measure (the shared environment puts the working directory's
``src`` first on ``sys.path``):

    python benchmarks/gateway_asgi_cpu.py --batch 1
    python benchmarks/gateway_asgi_cpu.py --batch 64 --profile 30
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_throughput import GATEWAY_CONFIG, MODEL_ENV, _bodies, bare_app  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _call(app, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"status {sent[0]['status']}: {sent[1:]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1, help="records per request")
    ap.add_argument("--requests", type=int, default=0, help="measured requests (default by batch)")
    ap.add_argument("--profile", type=int, default=0, help="cProfile rows of the gateway's run")
    args = ap.parse_args(argv)
    import torch

    import privguard
    from privguard.data import load_dataset
    from privguard.gateway.app import create_app
    from privguard.gateway.config import GatewayConfig
    from privguard.gateway.keys import create_key

    torch.set_num_threads(1)
    ds = load_dataset("digits")
    target = privguard.train(
        ds, privguard.TrainConfig(model="mlp", hidden=[256, 256], epochs=5, seed=0)
    )
    n = args.requests or (1600 if args.batch == 1 else 400)
    with tempfile.TemporaryDirectory(prefix="pg-asgi-") as tmp_name:
        tmp = Path(tmp_name)
        model = target.save(tmp / "model")
        os.environ[MODEL_ENV] = str(model)
        config = tmp / "gateway.toml"
        config.write_text(GATEWAY_CONFIG.format(fpkey=tmp / "fp.key"))
        app = create_app(
            privguard.load_target(str(model)),
            GatewayConfig.from_toml(config),
            db=f"sqlite:///{tmp / 'log.db'}",
        )
        _, secret = create_key(app.state.gateway.store, "bench", "client", "bench")
        bodies = _bodies(ds.x, args.batch, 64)
        servers = [
            ("gateway", app, [(b"authorization", f"Bearer {secret}".encode())]),
            ("bare", bare_app(), []),
        ]

        async def run() -> dict[str, float]:
            out = {}
            async with app.router.lifespan_context(app):
                for name, server, headers in servers:
                    for i in range(0, 64, 8):  # warm-up
                        await asyncio.gather(
                            *(_call(server, bodies[(i + j) % 64], headers) for j in range(8))
                        )
                    prof = None
                    if args.profile and name == "gateway":
                        prof = cProfile.Profile(time.thread_time)
                        prof.enable()
                    c0 = _cpu()
                    for i in range(0, n, 8):
                        await asyncio.gather(
                            *(_call(server, bodies[(i + j) % 64], headers) for j in range(8))
                        )
                    out[name] = (_cpu() - c0) / n * 1e3
                    if prof is not None:
                        prof.disable()
                        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
            return out

        res = asyncio.run(run())
    print(
        f"batch {args.batch}, {n} requests ({Path(privguard.__file__).parent}), load "
        f"{os.getloadavg()[0]:.1f}: gateway {res['gateway']:.3f} ms CPU / request, bare "
        f"{res['bare']:.3f}"
    )


if __name__ == "__main__":
    main()
