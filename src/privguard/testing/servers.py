"""Run ``privguard serve`` as a child process on a free loopback port: for tests, benchmarks
and notebooks that need a real server and a real client.

    >>> with GatewayProcess(["--model", "model", "--config", "gateway.toml"]) as gw:
    ...     httpx.get(gw.url + "/healthz")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from privguard.errors import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class GatewayProcess:
    """``privguard serve ARGS --port P`` in a child process; :meth:`wait_ready` polls
    ``/healthz``. ``https=True`` when ARGS serve TLS (``verify`` is then the CA file)."""

    def __init__(
        self,
        args: list[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_file: str | Path | None = None,
        verify: str | bool = True,
    ) -> None:
        self.args = list(args)
        self.host = host
        self.port = port or free_port(host)
        self.env = env
        self.log_file = Path(log_file) if log_file else None
        self.https = "--tls-cert" in self.args
        self.verify = verify
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    def start(self) -> GatewayProcess:
        cmd = [sys.executable, "-m", "privguard.cli", "serve", *self.args]
        cmd += ["--host", self.host, "--port", str(self.port)]
        env = {**os.environ, **(self.env or {})}
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def wait_ready(self, timeout: float = 120.0) -> GatewayProcess:
        import httpx

        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"the gateway exited with code {self.proc.returncode} before it was ready"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                r = httpx.get(self.url + "/healthz", verify=self.verify, timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ConfigError(f"the gateway was not ready after {timeout:.0f} s")

    def kill(self) -> None:
        """``kill -9`` the server and its workers (the whole process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful: the log writer drains), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> GatewayProcess:
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn in a daemon thread (lifespan included) on a free
    port; yields the base URL and stops the server on exit."""
    import uvicorn

    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
