"""The bare server of the gateway benchmarks: the model alone behind FastAPI and uvicorn (JSON in,
model, JSON out), what ``gateway_throughput.py`` and ``gateway_asgi_cpu.py`` compare the gateway
with. ``PRIVGUARD_BENCH_JSON=orjson`` makes it parse and write JSON with orjson, as the gateway
does (the ``bare-orjson`` server)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request  # at module level: the route's annotations resolve here
from fastapi.responses import Response

MODEL_ENV = "PRIVGUARD_BENCH_MODEL"
JSON_ENV = "PRIVGUARD_BENCH_JSON"


# -- the bare server -------------------------------------------------------------------------


def bare_app():
    """The model alone behind FastAPI: JSON in, model, JSON out."""
    import json

    import orjson
    import torch

    import privguard

    torch.set_num_threads(1)  # the gateway runs its model on one thread too
    target = privguard.load_target(os.environ[MODEL_ENV])
    shape = target.input_shape
    # bare-orjson: the same server with the gateway's JSON library (orjson)
    fast = os.environ.get(JSON_ENV) == "orjson"
    loads, dumps = (orjson.loads, orjson.dumps) if fast else (json.loads, json.dumps)
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        body = loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32).reshape(-1, *shape)
        p = target.predict_proba(x)
        out = {"labels": p.argmax(axis=1).tolist(), "probs": p.tolist()}
        return Response(dumps(out), media_type="application/json")

    @app.post("/v1/noop")
    async def noop(request: Request) -> Response:
        """Reads the body, answers a constant: what uvicorn + the load generator can do."""
        await request.body()
        return Response('{"labels": []}', media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare(model: str, port: int, workers: int) -> None:
    import uvicorn

    os.environ[MODEL_ENV] = model
    uvicorn.run(
        "_bare_server:bare_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        app_dir=str(Path(__file__).resolve().parent),
    )


class BareProcess:
    """This script in ``--serve-bare`` mode as a child process."""

    def __init__(self, model: Path, workers: int, json_lib: str = "json") -> None:
        from privguard.testing.servers import free_port

        self.json_lib = json_lib
        self.port = free_port()
        script = Path(__file__).with_name("gateway_throughput.py")  # its --serve-bare mode
        self.args = [sys.executable, str(script), "--serve-bare", str(model)]
        self.args += ["--port", str(self.port), "--workers", str(workers)]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BareProcess:
        import subprocess

        env = {**os.environ, JSON_ENV: self.json_lib}
        self.proc = subprocess.Popen(self.args, start_new_session=True, env=env)
        _wait_ready(self.url, self.proc)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)


def _wait_ready(url: str, proc, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready after {timeout:.0f} s")
