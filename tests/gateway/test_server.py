"""The gateway as a client meets it: a real `privguard serve` on loopback, a real HTTP client.

Every test runs twice: SQLite with one worker over HTTPS (a self-signed certificate), and
PostgreSQL + Redis with two workers (skipped, saying why, when those services do not answer).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import privguard
from privguard.defenses.output import parse_policy
from privguard.gateway.inputs import fingerprints
from privguard.gateway.keyfiles import decode_key
from privguard.gateway.store import InputCipher, Store


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 64)).astype(np.float32)


def _body(x: np.ndarray) -> dict:
    return {"inputs": x.tolist()}


def test_health_needs_no_key_and_metrics_need_an_admin_key(server):
    client_key = server.new_key("probs")["secret"]
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/metrics")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
    with server.client(client_key) as c:
        # per-detector counts would tell a client which of its own queries fired
        r = c.get("/metrics")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    with server.client(server.admin) as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and "privguard_requests_total" in r.text


def test_auth_matrix(server):
    client_key = server.new_key("label")["secret"]
    x = _body(_x(1, 0))
    with server.client() as c:
        r = c.post("/v1/predict", json=x)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/v1/predict", json=x, headers={"Authorization": "Bearer pg_wrong"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key")
        r = c.post("/v1/predict", json=x, headers={"X-API-Key": "not-even-a-key"})
        assert r.status_code == 401
        # the same key works through either header
        assert c.post("/v1/predict", json=x, headers={"X-API-Key": client_key}).status_code == 200
    with server.client(client_key) as c:
        assert c.post("/v1/predict", json=x).status_code == 200
        for method, path in [
            ("GET", "/v1/admin/keys"),
            ("GET", "/v1/admin/queries"),
            ("GET", "/v1/admin/alerts"),
            ("DELETE", "/v1/admin/keys/key_x"),
        ]:
            r = c.request(method, path)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), path
    # revoked: refused at once (key_cache_seconds = 0 here, on every worker)
    victim = server.new_key("label")
    with server.client(server.admin) as admin:
        r = admin.delete(f"/v1/admin/keys/{victim['id']}")
        assert r.status_code == 200 and r.json()["revoked"] is True
        assert admin.delete("/v1/admin/keys/key_nope").status_code == 404
    with server.client(victim["secret"]) as c:
        r = c.post("/v1/predict", json=x)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "revoked_api_key")
    # expired: a key that lives 0.5 s
    short = server.new_key("label", expires_days=0.5 / 86400)
    time.sleep(0.6)
    with server.client(short["secret"]) as c:
        r = c.post("/v1/predict", json=x)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "expired_api_key")
    # an admin key without a tier cannot predict
    with server.client(server.new_key(None, role="admin")["secret"]) as c:
        r = c.post("/v1/predict", json=x)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "no_tier")
        listed = {k["id"]: k for k in c.get("/v1/admin/keys").json()}
        assert listed[victim["id"]]["revoked"] is True
        assert all("secret" not in k and "secret_hash" not in k for k in listed.values())


def test_tiers_reveal_what_their_policy_allows(server, model_dir):
    target = privguard.load_target(model_dir)
    x = _x(6, 1)
    p = target.predict_proba(x.reshape(-1, 1, 8, 8))
    answers = {}
    for tier in ["label", "topk", "probs", "logits", "capped"]:
        with server.client(server.new_key(tier)["secret"]) as c:
            r = c.post("/v1/predict", json=_body(x))
            assert r.status_code == 200, r.text
            answers[tier] = r.json()
            info = c.get("/v1/model").json()
            assert info["access"] == answers[tier]["access"]
            assert info["input_shape"] == [1, 8, 8] and info["n_classes"] == 10
            assert info["bounds"] == [0.0, 1.0]
    for a in answers.values():
        assert a["labels"] == p.argmax(axis=1).tolist()
    assert set(answers["label"]) == {"model", "access", "policy", "labels"}
    assert answers["label"]["access"] == "label" and answers["label"]["policy"] == "label"
    top = answers["topk"]
    assert top["access"] == "topk" and "probs" not in top and "logits" not in top
    q = parse_policy("topk:3,round:2").apply(p, np.random.default_rng(0))  # deterministic
    assert top["classes"] == np.argsort(-q, axis=1, kind="stable")[:, :3].tolist()
    np.testing.assert_allclose(top["scores"], np.round(np.sort(p, axis=1)[:, ::-1][:, :3], 2))
    probs = answers["probs"]
    assert probs["access"] == "probs" and "logits" not in probs and "classes" not in probs
    np.testing.assert_allclose(probs["probs"], np.round(p, 3))
    logits = answers["logits"]
    assert logits["access"] == "logits" and logits["policy"] == "none"
    np.testing.assert_allclose(logits["probs"], p, rtol=1e-6)
    lg = np.asarray(logits["logits"])
    np.testing.assert_allclose(np.exp(lg) / np.exp(lg).sum(1, keepdims=True), p, rtol=1e-5)
    # access "probs" under policy "label": the policy caps what leaves the gateway
    assert answers["capped"]["access"] == "label" and "probs" not in answers["capped"]
    # nested records (input_shape 1x8x8) are the same records
    with server.client(server.new_key("label")["secret"]) as c:
        nested = c.post("/v1/predict", json={"inputs": x.reshape(-1, 1, 8, 8).tolist()})
        assert nested.json()["labels"] == answers["label"]["labels"]


MALFORMED = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b'{"inputs": NaN}', 400, "invalid_json"),
    (b"[]", 422, "invalid_body"),
    (b'"inputs"', 422, "invalid_body"),
    (b"{}", 422, "missing_inputs"),
    (b'{"inputs": [], "x": 1}', 422, "unknown_field"),
    (b'{"inputs": []}', 422, "invalid_inputs"),
    (b'{"inputs": 5}', 422, "invalid_inputs"),
    (b'{"inputs": [[0.5, 0.5]]}', 422, "wrong_shape"),
    (b'{"inputs": [0.5]}', 422, "wrong_shape"),
    (b'{"inputs": [[' + b"0.5," * 63 + b'"a"]]}', 422, "invalid_record"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"true]]}", 422, "invalid_record"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"null]]}", 422, "invalid_record"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"[1]]]}", 422, "invalid_record"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"{}]]}", 422, "invalid_record"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"1e999]]}", 422, "non_finite"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"1.5]]}", 422, "out_of_bounds"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"-0.01]]}", 422, "out_of_bounds"),
    (b'{"inputs": [[' + b"0.5," * 63 + b"99999999999999999999999]]}", 422, "out_of_bounds"),
    (
        b'{"inputs": [' + b",".join([b"[" + b"0.5," * 63 + b"0.5]"] * 33) + b"]}",
        413,
        "batch_too_large",
    ),
    (b"[" * 100_000, 413, "payload_too_large"),
    (b'{"inputs": [[' + b"[" * 40 + b"]" * 40 + b"]]}", 422, "wrong_shape"),
    (b'{"inputs": [[' + b"[" * 5000 + b"]" * 5000 + b"]]}", 400, "invalid_json"),
]


@pytest.mark.parametrize(
    "body,status,code", MALFORMED, ids=[f"{i}-{m[2]}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_predictions_get_4xx_with_a_code(server, body, status, code):
    key = server.new_key("label")["secret"]
    with server.client(key) as c:
        r = c.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert r.json()["error"]["message"]


JSON = {"Content-Type": "application/json"}


def test_malformed_requests_elsewhere_get_4xx(server):
    with server.client(server.admin) as c:
        cases = [
            (c.get("/nope"), 404, "not_found"),
            (c.put("/v1/predict"), 405, "method_not_allowed"),
            (c.post("/v1/admin/keys", content=b"{x", headers=JSON), 400, "invalid_json"),
            (c.post("/v1/admin/keys", json={"name": ""}), 422, "invalid_request"),
            (c.post("/v1/admin/keys", json={"name": "a", "evil": 1}), 422, "invalid_request"),
            (c.post("/v1/admin/keys", json={"name": "a", "tier": "gold"}), 422, "unknown_tier"),
            (c.post("/v1/admin/keys", json={"name": "a", "role": "root"}), 422, "invalid_request"),
            (
                c.post("/v1/admin/keys", json={"name": "a", "expires_days": -1}),
                422,
                "invalid_request",
            ),
            (c.post("/v1/admin/keys", json={"name": "a"}), 422, "invalid_key"),  # no tier
            (c.patch("/v1/admin/keys/key_nope", json={"tier": "label"}), 404, "no_such_key"),
            (c.get("/v1/admin/queries", params={"limit": "many"}), 422, "invalid_request"),
            (c.get("/v1/admin/queries", params={"limit": 0}), 422, "invalid_request"),
        ]
    for r, status, code in cases:
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


def test_patching_a_tier_changes_what_the_key_gets(server):
    key = server.new_key("label")
    with server.client(server.admin) as admin:
        r = admin.patch(f"/v1/admin/keys/{key['id']}", json={"tier": "probs"})
        assert r.status_code == 200 and r.json()["tier"] == "probs"
    with server.client(key["secret"]) as c:
        assert "probs" in c.post("/v1/predict", json=_body(_x(1, 2))).json()


def test_the_admin_api_sets_a_keys_owner(server):
    """A key created through the API with an owner keeps it (the monitor's account view);
    an owner over 200 characters is refused with a 422, not stored cut."""
    key = server.new_key("label", owner="acme-bank")
    assert key["owner"] == "acme-bank"
    with server.client(server.admin) as admin:
        listed = {k["id"]: k for k in admin.get("/v1/admin/keys").json()}
        assert listed[key["id"]]["owner"] == "acme-bank"
        r = admin.post("/v1/admin/keys", json={"name": "x", "owner": "o" * 201})
        assert r.status_code == 422, r.text
    assert server.new_key("label")["owner"] is None


def test_rate_limit_holds_under_concurrent_clients(server):
    """Tier 'tight' allows 10 requests a minute per key: 30 concurrent requests from 30
    connections get exactly 10 answers and 20 refusals with Retry-After. On the Redis server
    the two workers share the count (separate counts would let up to 20 through)."""
    key = server.new_key("tight")["secret"]
    body = _body(_x(1, 3))

    def one(_):
        with server.client(key) as c:
            return c.post("/v1/predict", json=body)

    with cf.ThreadPoolExecutor(15) as pool:
        answers = list(pool.map(one, range(30)))
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 10 and codes.count(429) == 20, codes
    for r in answers:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 60
    # another key has its own count
    with server.client(server.new_key("tight")["secret"]) as c:
        assert c.post("/v1/predict", json=body).status_code == 200


def test_daily_budget_counts_records_until_utc_midnight(server):
    key = server.new_key("budget")["secret"]
    with server.client(key) as c:
        assert c.post("/v1/predict", json=_body(_x(8, 4))).status_code == 200
        r = c.post("/v1/predict", json=_body(_x(8, 5)))
        assert (r.status_code, r.json()["error"]["code"]) == (429, "daily_budget_exhausted")
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        assert abs(int(r.headers["retry-after"]) - (midnight - now).total_seconds()) < 30
        assert c.post("/v1/predict", json=_body(_x(2, 6))).status_code == 200  # 10 of 10
        assert c.post("/v1/predict", json=_body(_x(1, 7))).status_code == 429


def test_query_log_keeps_fingerprints_not_inputs(server):
    key = server.new_key("probs")
    x = _x(3, 8)
    with server.client(key["secret"]) as c:
        answer = c.post("/v1/predict", json=_body(x)).json()
        c.post("/v1/predict", json={"inputs": [[2.0] * 64]})  # refused, still logged
    # a refused request's row is queued without waiting (docs/gateway.md): it may be committed
    # a moment after the refusal went out, so the listing is read until it shows up
    deadline = time.monotonic() + 10
    with server.client(server.admin) as admin:
        while True:
            rows = admin.get("/v1/admin/queries", params={"client": key["name"]}).json()
            if len(rows) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [r["status"] for r in rows] == [422, 200]
    ok = rows[1]
    fp_key = server.fpkey.read_text().strip()
    import base64

    assert ok["fingerprints"] == fingerprints(base64.urlsafe_b64decode(fp_key), x)
    assert ok["n_inputs"] == 3 and ok["tier"] == "probs" and ok["policy"] == "round:3"
    assert ok["outputs"]["labels"] == answer["labels"]
    assert ok["latency_ms"] > 0
    # the probs tier opted in to keep raw inputs 7 days; they sit apart, with their expiry
    store = Store(server.db)
    # encrypted at rest under the inputs key, a file apart from the database
    raw = [r for r in store.retained_inputs() if r["query_id"] == ok["id"]]
    inputs_key = Path(f"{server.fpkey}.inputs").read_text()
    cipher = InputCipher(decode_key(inputs_key, "inputs key"))
    kept = [r for r in store.retained_inputs(cipher) if r["query_id"] == ok["id"]]
    store.close()
    assert len(kept) == 1 and raw[0]["data"].startswith("pgenc1:")
    np.testing.assert_allclose(np.asarray(json.loads(kept[0]["data"])).reshape(3, 64), x)
    assert kept[0]["expires_at"] - datetime.now(UTC).replace(tzinfo=None) > timedelta(days=6.9)


def test_log_rows_of_concurrent_requests_share_commits(sqlite_server):
    """Group commit: 40 concurrent requests, every one logged, in fewer transactions."""
    s = sqlite_server
    key = s.new_key("label")["secret"]

    def scrape():
        with s.client(s.admin) as c:
            text = c.get("/metrics").text
        vals = {}
        for line in text.splitlines():
            for name in ("privguard_log_commits_total", "privguard_log_rows_total"):
                if line.startswith(name + " "):
                    vals[name] = float(line.split()[1])
        return vals

    before = scrape()

    def one(i):
        with s.client(key) as c:
            return c.post("/v1/predict", json=_body(_x(1, 100 + i))).status_code

    with cf.ThreadPoolExecutor(20) as pool:
        assert set(pool.map(one, range(40))) == {200}
    after = scrape()
    rows = after["privguard_log_rows_total"] - before["privguard_log_rows_total"]
    commits = after["privguard_log_commits_total"] - before["privguard_log_commits_total"]
    assert rows >= 40
    assert commits < rows, (commits, rows)


def test_openapi_documents_the_contract(server):
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    paths = doc["paths"]
    for p in [
        "/v1/predict",
        "/v1/model",
        "/healthz",
        "/metrics",
        "/v1/admin/keys",
        "/v1/admin/keys/{key_id}",
        "/v1/admin/queries",
        "/v1/admin/alerts",
    ]:
        assert p in paths, p
    body = paths["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and body["properties"]["inputs"]["maxItems"] == 32
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])


def test_in_memory_moving_windows_decide_as_the_limits_library():
    """Without Redis the gateway counts moving windows itself (issue 19: the library's
    in-memory storage schedules an expiry task with a thread hop on every hit). On one fixed
    sequence of hits of two keys against "3/second" and "5/10 seconds", every decision and every
    Retry-After equals the library's moving-window limiter on its in-memory storage."""
    import asyncio as aio

    import limits.aio.storage as lstorage
    import limits.aio.strategies as lstrategies
    from limits import parse_many

    from privguard.gateway.limits import MovingWindows

    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(0.15, 400))
    keys = rng.choice(["a", "b"], 400, p=[0.7, 0.3])
    clock = [0.0]

    async def library() -> list[tuple[bool, float | None]]:
        import limits.aio.storage.memory as memory

        memory.time = type("T", (), {"time": staticmethod(lambda: clock[0])})
        try:
            lib = lstrategies.MovingWindowRateLimiter(lstorage.MemoryStorage())
            out = []
            for t, k in zip(times, keys, strict=True):
                clock[0] = float(t)
                ok = True
                for item in parse_many("3/second;5/10 seconds"):
                    if not await lib.hit(item, "rate", str(k)):
                        stats = await lib.get_window_stats(item, "rate", str(k))
                        out.append((False, round(stats.reset_time - clock[0], 9)))
                        ok = False
                        break
                if ok:
                    out.append((True, None))
            return out
        finally:
            import time as real_time

            memory.time = real_time

    expected = aio.run(library())
    windows = MovingWindows(clock=lambda: clock[0])
    got = []
    for t, k in zip(times, keys, strict=True):
        clock[0] = float(t)
        res = None
        for item in parse_many("3/second;5/10 seconds"):
            res = windows.hit(item, str(k))
            if res is not None:
                break
        got.append((True, None) if res is None else (False, round(res, 9)))
    assert got == expected
    refused = sum(not ok for ok, _ in got)
    assert 50 < refused < 350  # both windows refuse some hits on this sequence
