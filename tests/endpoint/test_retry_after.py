"""``Retry-After`` from an endpoint, however malformed, never crashes an audit: a real HTTP
server on loopback answers 429 with the header under test, then the probabilities."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from privguard.endpoint.mapping import EndpointMap
from privguard.endpoint.transport import HttpPredictor, _retry_after
from privguard.errors import BudgetExhaustedError

PROBS = [0.25, 0.75]


def _server(retry_after: str, refusals: int = 1) -> ThreadingHTTPServer:
    """Answers the first ``refusals`` POSTs with 429 + ``Retry-After: retry_after``."""
    state = {"left": refusals}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state["left"] > 0:
                state["left"] -= 1
                self._send(429, {"error": "slow down"}, {"Retry-After": retry_after})
                return
            self._send(200, {"probs": [PROBS for _ in body["instances"]]}, {})

        def _send(self, status: int, payload: dict, headers: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def mapping(tmp_path) -> EndpointMap:
    path = tmp_path / "api.toml"
    path.write_text(
        '[request]\ninputs = "instances"\n\n[response]\nprobs = "probs"\n\n'
        '[model]\ninput_shape = [2]\nclasses = ["a", "b"]\n'
    )
    return EndpointMap.load(path)


@pytest.mark.parametrize("header", ["nan", "NaN", "-nan", "soon", "Fri, 99 Foo 99999 00:00:00"])
def test_a_malformed_retry_after_waits_a_default_and_the_audit_goes_on(header, mapping):
    server = _server(header)
    try:
        url = f"http://127.0.0.1:{server.server_port}/predict"
        t0 = time.monotonic()
        with HttpPredictor(url, "key", mapping=mapping) as p:
            probs = p.predict_proba(np.zeros((3, 2), np.float32))
        np.testing.assert_allclose(probs, [PROBS] * 3)
        assert time.monotonic() - t0 < 10
    finally:
        server.shutdown()


def test_an_infinite_retry_after_is_a_spent_budget_not_a_crash(mapping):
    server = _server("inf")
    try:
        url = f"http://127.0.0.1:{server.server_port}/predict"
        p = HttpPredictor(url, "key", mapping=mapping)
        with p, pytest.raises(BudgetExhaustedError, match="retry in inf s"):
            p.predict_proba(np.zeros((1, 2), np.float32))
    finally:
        server.shutdown()


class _Answer:
    def __init__(self, value: str | None) -> None:
        self.headers = {} if value is None else {"retry-after": value}


def test_retry_after_parsing():
    assert _retry_after(_Answer(None)) is None
    assert _retry_after(_Answer(" 2 ")) == 2.0
    assert _retry_after(_Answer("-5")) == 0.0
    assert _retry_after(_Answer("nan")) is None
    assert _retry_after(_Answer("1e999")) == float("inf")
    assert _retry_after(_Answer("Fri, 99 Foo 99999 00:00:00")) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 20 < _retry_after(_Answer(later)) <= 30
