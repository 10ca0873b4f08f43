"""Alert delivery: the gateway (in this process, uvicorn on loopback) with the real query monitor
POSTs every alert to a real HTTP receiver on loopback, signed, with retries; failures are
logged and counted on /metrics, never raised; and /metrics counts findings by detector and
action.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from privguard.endpoint.transport import HttpPredictor
from privguard.errors import ConfigError
from privguard.gateway.app import create_app
from privguard.gateway.config import GatewayConfig
from privguard.gateway.keys import create_key
from privguard.gateway.monitor import Monitor
from privguard.gateway.redact import redact_url
from privguard.gateway.store import Store
from privguard.gateway.webhook import SIGNATURE_HEADER, AlertWebhook
from privguard.models.threads import single_thread
from privguard.testing.servers import free_port, serve_in_thread
from privguard.testing.streams import uniform_queries

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def monitor(digits_logreg):
    target = digits_logreg
    ds, split = target.load_data(), target.split
    with single_thread():
        return Monitor().fit(
            ds.x[split.members], ds.x[split.nonmembers], target.predict_proba, shuffles=2
        )


class Receiver:
    """A loopback HTTP server that keeps every POST; the first ``fail_first`` get 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((dict(self.headers.items()), body))
                status = 503 if len(outer.got) <= outer.fail_first else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def gateway(target, monitor, tmp_path, monitor_table: dict):
    """The gateway app served by uvicorn in a thread; yields (url, client secret, admin)."""
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"probs": {"access": "probs", "max_batch": 32}},
            "monitor": monitor_table,
        }
    )
    db = f"sqlite:///{tmp_path / 'log.db'}"
    monitor.reset()
    app = create_app(target, config, db=db, monitor=monitor, name="digits-logreg")
    store = Store(db)
    _, client = create_key(store, "mallory", "client", "probs")
    _, admin = create_key(store, "ops", "admin", "probs")
    store.close()
    with serve_in_thread(app) as url:
        yield url, client, admin


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_alerts_reach_the_webhook_signed_with_retries_and_are_counted(
    digits_logreg, monitor, tmp_path
):
    import httpx

    table = {"webhook_secret": SECRET, "webhook_retries": 2}
    with Receiver(fail_first=1) as rx:
        table["webhook"] = rx.url
        with gateway(digits_logreg, monitor, tmp_path, table) as (url, client, admin):
            # an extraction client: uniformly random inputs (Tramer et al.'s random queries)
            with HttpPredictor(url, client) as p:
                t0 = time.perf_counter()
                uniform_queries(p.oracle(), 96, p.bounds, batch=32)
                took = time.perf_counter() - t0
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as c:
                stored = c.get("/v1/admin/alerts").json()
                assert stored, "the monitor raised no alert on uniform random queries"
                # one 503 first, then every alert once (the 503'd one retried)
                _wait(lambda: len(rx.got) >= len(stored) + 1)
                metrics = c.get("/metrics").text
    assert took < 30  # delivery is off the request path (a slow receiver would not show here)
    bodies = [json.loads(body) for _, body in rx.got]
    assert bodies[0]["id"] == bodies[1]["id"]  # the retried delivery is the same alert
    delivered = bodies[1:]
    for (headers, body), alert in zip(rx.got, bodies, strict=True):
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == f"sha256={digest}"
        assert headers["Content-Type"] == "application/json"
        assert set(alert) >= {"client", "detector", "action", "evidence", "time", "id"}
        assert alert["client"] == "mallory" and alert["gateway"] == "digits-logreg"
    key = lambda a: (a["detector"], a["action"], a["time"], a["statistic"])  # noqa: E731
    assert sorted(map(key, delivered)) == sorted(map(key, stored))
    assert [a["evidence"] for a in sorted(delivered, key=key)] == [
        a["evidence"] for a in sorted(stored, key=key)
    ]
    # measured: the OOD score flags uniform noise in the first batch (action: record)
    assert any(a["detector"] == "ood" for a in stored)
    for detector, action in {(a["detector"], a["action"]) for a in stored}:
        n = sum(a["detector"] == detector and a["action"] == action for a in stored)
        found = _metric(
            metrics, "privguard_monitor_findings_total", action=action, detector=detector
        )
        assert found == n, (detector, action)
    assert _metric(metrics, "privguard_webhook_deliveries_total", outcome="sent") == len(stored)
    assert _metric(metrics, "privguard_webhook_deliveries_total", outcome="failed") == 0
    # evidence names queries by the log's keyed HMAC fingerprints (issue 16 item 4), never by
    # a plain hash that anyone could recompute from a guessed input
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    logged = store.all_fingerprints(status=None)
    store.close()
    named = {fp for a in delivered for fp in a["evidence"].get("fingerprints", [])}
    assert named and named <= logged


def test_an_unreachable_webhook_is_logged_and_counted_never_raised(
    digits_logreg, monitor, tmp_path, caplog
):
    import httpx

    dead = f"http://127.0.0.1:{free_port()}/alerts"  # nothing listens there
    table = {"webhook": dead, "webhook_retries": 1, "webhook_timeout": 2}
    caplog.set_level(logging.WARNING, logger="privguard.gateway")
    with gateway(digits_logreg, monitor, tmp_path, table) as (url, client, admin):
        x = np.random.default_rng(0).uniform(0, 1, size=(32, 64)).astype(np.float32)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {client}"}) as c:
            statuses = [c.post("/v1/predict", json={"inputs": x.tolist()}).status_code]
            statuses += [c.post("/v1/predict", json={"inputs": (x / 2).tolist()}).status_code]
        assert statuses == [200, 200]  # 'record' findings refuse nothing; delivery is apart
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as c:
            n = len(c.get("/v1/admin/alerts").json())
            assert n >= 1

            def failed() -> float:
                text = c.get("/metrics").text
                return _metric(text, "privguard_webhook_deliveries_total", outcome="failed")

            _wait(lambda: failed() == n)
    # the URL is logged without its path (a webhook's path is often its token)
    assert "not delivered" in caplog.text and redact_url(dead, path=False) in caplog.text
    assert "/alerts" not in caplog.text


def test_webhook_settings_are_checked_and_a_full_queue_drops():
    with pytest.raises(ConfigError, match="http"):
        AlertWebhook.from_config({"webhook": "ftp://example.org/x"})
    with pytest.raises(ConfigError, match="webhook_retries"):
        AlertWebhook.from_config({"webhook": "http://127.0.0.1:9/x", "webhook_retries": -1})
    assert AlertWebhook.from_config({"path": "monitor"}) is None
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    hook = AlertWebhook("http://127.0.0.1:9/x", max_queue=1, registry=registry)
    assert hook.submit({"client": "a"}) and not hook.submit({"client": "b"})
    assert registry.get_sample_value("privguard_webhook_deliveries_total", {"outcome": "dropped"})
    # non-finite numbers (JSON has none) arrive as null; the sender thread stops when asked
    with Receiver() as rx:
        hook = AlertWebhook(rx.url)
        hook.start()
        hook.submit({"client": "a", "statistic": float("nan"), "evidence": {"w": [float("inf")]}})
        hook.stop()
        alert = json.loads(rx.got[0][1])
    assert alert["statistic"] is None and alert["evidence"] == {"w": [None]}
