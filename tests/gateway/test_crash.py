"""Durability of the audit log: kill -9 the server under load, restart it, and find a log row
for every request that was answered 200 (each request has a unique input, recognised by its
HMAC fingerprint), in a database that opens clean."""

from __future__ import annotations

import base64
import textwrap
import threading
import time

import httpx
import numpy as np
import pytest

from privguard.gateway.inputs import fingerprints
from privguard.gateway.keys import create_key
from privguard.gateway.store import Store
from privguard.testing.servers import GatewayProcess

CLIENTS = 6
LOAD_SECONDS = 4.0


@pytest.mark.slow
def test_every_answered_request_survives_kill_9(model_dir, tmp_path):
    db = f"sqlite:///{tmp_path / 'log.db'}"
    config = tmp_path / "gateway.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            fingerprint_key_file = "{tmp_path / "fp.key"}"
            [tiers.label]
            access = "label"
            max_batch = 4
            """
        )
    )
    store = Store(db)
    store.migrate()
    _, secret = create_key(store, "loader", "client", "label")
    store.close()
    args = ["--model", str(model_dir), "--config", str(config), "--db", db]
    server = GatewayProcess(args, log_file=tmp_path / "serve.log").start().wait_ready(180)

    answered: list[np.ndarray] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=5
        ) as c:
            while not stop.is_set():
                x = rng.uniform(0, 1, size=(int(rng.integers(1, 5)), 64)).astype(np.float32)
                try:
                    r = c.post("/v1/predict", json={"inputs": x.tolist()})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        answered.append(x)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once the load is well under way
        time.sleep(0.2)
        with lock:
            if len(answered) >= 100 and time.monotonic() > deadline - 60 + LOAD_SECONDS:
                break
    server.kill()  # SIGKILL, mid-load
    stop.set()
    for t in threads:
        t.join(10)
    assert len(answered) >= 100, f"only {len(answered)} answers before the kill"

    # restart on the same database: it opens clean and serves
    server = GatewayProcess(args, log_file=tmp_path / "serve.log").start().wait_ready(180)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post(
                "/v1/predict",
                json={"inputs": [[0.5] * 64]},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert r.status_code == 200
    finally:
        server.stop()

    store = Store(db)
    assert store.integrity_ok()
    logged = store.all_fingerprints(status=200)
    store.close()
    key = base64.urlsafe_b64decode((tmp_path / "fp.key").read_text().strip())
    expected = {fp for x in answered for fp in fingerprints(key, x)}
    missing = expected - logged
    assert not missing, f"{len(missing)} of {len(expected)} answered inputs have no log row"
