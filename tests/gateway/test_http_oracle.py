"""The HTTP oracle against a real gateway on loopback (uvicorn in a thread, the gateway's own
app factory, a real SQLite audit log) and against a differently shaped JSON API described by a
mapping file. Nothing is mocked: answers are compared with the served model's own outputs."""

from __future__ import annotations

import math
import socket
import textwrap
import threading
import time

import numpy as np
import pytest

from privguard.endpoint.mapping import EndpointError, EndpointMap, extract
from privguard.endpoint.transport import HttpPredictor
from privguard.errors import AccessError, BudgetExhaustedError, ConfigError, DataError
from privguard.oracle import ABSTAIN, Access

TIERS = """
[server]
key_cache_seconds = 0
fingerprint_key_file = "{fpkey}"

[tiers.probs]
access = "probs"
max_batch = 50

[tiers.logits]
access = "logits"
max_batch = 256

[tiers.topk]
access = "topk"
policy = "topk:3,round:2"
max_batch = 256

[tiers.label]
access = "label"
policy = "label"
max_batch = 256

[tiers.abstain]
access = "probs"
policy = "threshold:0.95"
max_batch = 256

[tiers.tight]
access = "label"
rate_limits = "2/second"
max_batch = 10

[tiers.budget]
access = "probs"
daily_budget = 30
max_batch = 16
"""


class ThreadServer:
    """uvicorn serving ``app`` on a free loopback port from a background thread."""

    def __init__(self, app, tls: tuple | None = None) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cert, key = tls or (None, None)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ssl_certfile=cert,
            ssl_keyfile=key,
        )
        self.scheme = "https" if tls else "http"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def gateway(digits_logreg, tmp_path_factory):
    """The real gateway app for a digits softmax regression, with one key per tier."""
    from privguard.gateway import GatewayConfig, create_app
    from privguard.gateway.keys import create_key, revoke_key
    from privguard.gateway.store import Store

    tmp = tmp_path_factory.mktemp("http-oracle")
    config_file = tmp / "gateway.toml"
    config_file.write_text(textwrap.dedent(TIERS.format(fpkey=tmp / "fp.key")))
    db = f"sqlite:///{tmp / 'log.db'}"
    store = Store(db)
    store.migrate()
    tiers = ("probs", "logits", "topk", "label", "abstain", "tight", "budget")
    keys = {t: create_key(store, f"client-{t}", "client", t)[1] for t in tiers}
    revoked, keys["revoked"] = create_key(store, "gone", "client", "probs")
    revoke_key(store, revoked.id)
    _, keys["expiring"] = create_key(store, "brief", "client", "probs", expires_days=1e-6)
    store.close()
    app = create_app(digits_logreg, GatewayConfig.from_toml(config_file), db=db)
    with ThreadServer(app) as server:
        server.keys = keys
        yield server


@pytest.fixture(scope="module")
def records(digits):
    return digits.x[:120]


def test_probs_tier_answers_are_the_models_probabilities(gateway, digits_logreg, digits, records):
    with HttpPredictor(gateway.url, gateway.keys["probs"]) as p:
        assert p.access == Access.PROBS
        assert p.input_shape == digits.input_shape and p.n_classes == 10
        assert p.classes == [str(c) for c in digits.classes]
        assert p.bounds == tuple(digits.bounds)
        assert p.max_batch == 50
        got = p.predict_proba(records)
        # JSON carries float64 exactly: the answer is the model's own output
        np.testing.assert_allclose(got, digits_logreg.predict_proba(records), rtol=0, atol=1e-12)
        assert p.queries == len(records)
        assert p.requests == 1 + math.ceil(len(records) / 50)  # metadata + batches of 50
        oracle = p.oracle()
        assert oracle.access == Access.PROBS
        oracle.proba(records[:7])
        assert oracle.queries == 7
        with pytest.raises(AccessError, match="only 'probs' access"):
            p.oracle("logits")
        with pytest.raises(AccessError, match="never serves"):
            p.oracle("whitebox")


def test_logits_tier_serves_the_models_logits(gateway, digits_logreg, records):
    with HttpPredictor(gateway.url + "/v1/predict", gateway.keys["logits"]) as p:
        assert p.access == Access.LOGITS
        oracle = p.oracle()
        want = digits_logreg.predictor.predict_logits(records[:20])
        np.testing.assert_allclose(oracle.logits(records[:20]), want, rtol=0, atol=1e-9)


def test_topk_tier_gives_top_k_rows_and_refuses_probabilities(gateway, digits_logreg, records):
    with HttpPredictor(gateway.url, gateway.keys["topk"]) as p:
        assert p.access == Access.TOPK and p.top_k == 3
        rows = p.predict_proba(records)
        assert ((rows > 0).sum(axis=1) <= 3).all()
        truth = digits_logreg.predict_proba(records)  # policy: top 3 first, then rounding
        top = np.argsort(-truth, axis=1, kind="stable")[:, :3]
        np.testing.assert_allclose(
            np.take_along_axis(rows, top, axis=1), np.round(np.take_along_axis(truth, top, 1), 2)
        )
        oracle = p.oracle()
        classes, scores = oracle.topk(records[:5])
        assert classes.shape == scores.shape == (5, 3)
        with pytest.raises(AccessError, match="needs 'probs' access"):
            oracle.proba(records[:5])


def test_label_tier_gives_one_hot_rows(gateway, digits_logreg, records):
    with HttpPredictor(gateway.url, gateway.keys["label"]) as p:
        assert p.access == Access.LABEL
        rows = p.predict_proba(records)
        assert set(np.unique(rows)) <= {0.0, 1.0} and (rows.sum(axis=1) == 1).all()
        want = digits_logreg.predict_proba(records).argmax(axis=1)
        np.testing.assert_array_equal(p.oracle().labels(records), want)
        with pytest.raises(AccessError):
            p.oracle().topk(records[:3])


def test_abstained_records_read_back_as_abstain(gateway, digits_logreg, records):
    with HttpPredictor(gateway.url, gateway.keys["abstain"]) as p:
        labels = p.oracle().labels(records)
        confident = digits_logreg.predict_proba(records).max(axis=1) >= 0.95
        assert 0 < confident.sum() < len(records)  # both kinds present
        assert (labels[~confident] == ABSTAIN).all()
        assert (labels[confident] >= 0).all()


def test_rate_limited_key_waits_for_retry_after_and_gets_every_answer(
    gateway, digits_logreg, records
):
    with HttpPredictor(gateway.url, gateway.keys["tight"]) as p:
        t0 = time.perf_counter()
        labels = p.oracle().labels(records[:60])  # 6 requests at 2 per second
        elapsed = time.perf_counter() - t0
        np.testing.assert_array_equal(labels, digits_logreg.predict_proba(records[:60]).argmax(1))
        assert p.rate_limited >= 1
        assert p.waited_seconds >= 1.0 and elapsed >= 1.0
        assert p.queries == 60
        d = p.describe()
        assert d["rate_limited_429"] == p.rate_limited and d["records_answered"] == 60


def test_a_rate_limit_longer_than_allowed_is_an_error(gateway, records):
    p = HttpPredictor(gateway.url, gateway.keys["tight"], max_retry_after=0.0)
    with p, pytest.raises(BudgetExhaustedError, match="retry in"):
        p.predict_proba(records[:60])


def test_spent_daily_budget_raises_budget_exhausted(gateway, records):
    with HttpPredictor(gateway.url, gateway.keys["budget"]) as p:
        p.predict_proba(records[:16])
        with pytest.raises(BudgetExhaustedError, match="daily_budget_exhausted"):
            p.predict_proba(records[:32])
        assert p.queries == 16  # what was answered before the budget ran out


@pytest.mark.parametrize("which", ["wrong", "revoked", "expiring", "none"])
def test_refused_keys_are_access_errors(gateway, which):
    fixed = {"wrong": "pg_" + "x" * 43, "none": None}
    secret = fixed[which] if which in fixed else gateway.keys[which]
    if which == "expiring":
        time.sleep(0.2)  # 1e-6 days = 86 ms
    with pytest.raises(AccessError, match="the API key was refused"):
        HttpPredictor(gateway.url, secret)


def test_inputs_the_gateway_rejects_are_data_errors(gateway, records):
    with HttpPredictor(gateway.url, gateway.keys["probs"]) as p:
        with pytest.raises(DataError, match="HTTP 422"):
            p.predict_proba(records[:2] + 5.0)  # outside the declared bounds [0, 1]
        with pytest.raises(DataError, match="shape"):
            p.predict_proba(np.zeros((2, 64), np.float32))


def test_an_unreachable_endpoint_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="cannot reach the endpoint .* after 2 attempts"):
        HttpPredictor(f"http://127.0.0.1:{port}", "pg_x", retries=1)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ConfigError, match="http"):
        HttpPredictor("ftp://example.org", "pg_x")


def test_https_endpoint_with_a_self_signed_certificate(digits_logreg, records, tls_files):
    """The same gateway app over HTTPS: verified against its certificate, refused without."""
    app, names = other_api(digits_logreg, "s3cret")
    mapping = EndpointMap.from_dict(
        {
            "request": {"inputs": "data.instances", "layout": "nested", "extra": {"version": "2"}},
            "response": {"probs": "result.predictions[].probabilities"},
            "auth": {"header": "X-Api-Key"},
            "model": {"input_shape": [1, 8, 8], "classes": names},
        }
    )
    cert, _ = tls_files
    with ThreadServer(app, tls=tls_files) as server:
        url = server.url + "/predict"
        with HttpPredictor(url, "s3cret", mapping=mapping, verify=str(cert)) as p:
            np.testing.assert_allclose(
                p.predict_proba(records[:5]), digits_logreg.predict_proba(records[:5]), atol=1e-12
            )
        p = HttpPredictor(url, "s3cret", mapping=mapping, retries=0)
        with p, pytest.raises(EndpointError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            p.predict_proba(records[:1])


# -- a JSON API that is not a privguard gateway ---------------------------------------------


def other_api(target, secret: str):
    """A prediction API with its own JSON shapes: nested records under ``instances``, the key in
    ``X-Api-Key``, per-record objects with a class name and probabilities."""
    from fastapi import FastAPI, Header, HTTPException

    app = FastAPI()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    @app.post("/predict")
    def predict(body: dict, x_api_key: str | None = Header(None)) -> dict:
        if x_api_key != secret:
            raise HTTPException(401, "bad key")
        x = np.asarray(body["data"]["instances"], dtype=np.float32)
        if x.shape[1:] != (1, 8, 8) or body.get("version") != "2":
            raise HTTPException(422, f"bad request {x.shape}")
        p = target.predict_proba(x)
        rows = [{"label": names[int(r.argmax())], "probabilities": r.tolist()} for r in p]
        return {"result": {"predictions": rows}}

    return app, names


MAPPING = """
[request]
inputs = "data.instances"
layout = "nested"
max_batch = 25
extra = {{ version = "2" }}

[response]
{response}

[auth]
header = "X-Api-Key"

[model]
input_shape = [1, 8, 8]
classes = {classes}
bounds = [0.0, 1.0]
"""


def test_a_mapped_json_api_is_audited_like_the_gateway(digits_logreg, records, tmp_path):
    app, names = other_api(digits_logreg, "s3cret")
    probs_map = tmp_path / "probs.toml"
    probs_map.write_text(
        MAPPING.format(response='probs = "result.predictions[].probabilities"', classes=repr(names))
    )
    label_map = tmp_path / "label.json"
    label_map.write_text(
        '{"request": {"inputs": "data.instances", "layout": "nested", "extra": {"version": "2"}},'
        ' "response": {"labels": "result.predictions[].label"}, "auth": {"header": "X-Api-Key"},'
        f' "model": {{"input_shape": [1, 8, 8], "classes": {list(names)!r}}}}}'.replace("'", '"')
    )
    truth = digits_logreg.predict_proba(records)
    with ThreadServer(app) as server:
        url = server.url + "/predict"
        with HttpPredictor(url, "s3cret", mapping=EndpointMap.load(probs_map)) as p:
            assert p.access == Access.PROBS and p.max_batch == 25
            np.testing.assert_allclose(p.predict_proba(records), truth, rtol=0, atol=1e-12)
            assert p.requests == math.ceil(len(records) / 25)  # no metadata endpoint
        with HttpPredictor(url, "s3cret", mapping=EndpointMap.load(label_map)) as p:
            assert p.access == Access.LABEL
            np.testing.assert_array_equal(p.oracle().labels(records), truth.argmax(axis=1))
        p = HttpPredictor(url, "wrong", mapping=EndpointMap.load(probs_map))
        with p, pytest.raises(AccessError, match="refused: bad key"):
            p.predict_proba(records[:1])


def test_mapping_files_are_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[request]\ninputs = "x"\nbatch = 3\n')
    with pytest.raises(ConfigError, match="unknown key"):
        EndpointMap.load(bad)
    bad.write_text('[response]\nprobs = "p"\n')
    with pytest.raises(ConfigError, match="input_shape"):
        EndpointMap.load(bad)
    bad.write_text('[response]\nclasses = "c"\n[model]\ninput_shape = [2]\nn_classes = 2\n')
    with pytest.raises(ConfigError, match="both response.classes and response.scores"):
        EndpointMap.load(bad)
    with pytest.raises(ConfigError, match="no endpoint mapping file"):
        EndpointMap.load(tmp_path / "missing.toml")
    ok = EndpointMap.from_dict(
        {
            "response": {"classes": "top[].c", "scores": "top[].s"},
            "model": {"input_shape": [3], "n_classes": 4, "metadata": "/info"},
        }
    )
    assert ok.mapped_access == Access.TOPK and ok.auth_scheme == "Bearer "


def test_extract_follows_dotted_paths():
    doc = {"a": {"b": [{"c": 1, "d": [5, 6]}, {"c": 2, "d": [7, 8]}]}}
    assert extract(doc, "a.b[].c") == [1, 2]
    assert extract(doc, "a.b.1.d.0") == 7
    assert extract(doc, "a.b[].d") == [[5, 6], [7, 8]]
    assert extract([{"p": 1}], "[].p") == [1]
    with pytest.raises(KeyError, match="no field 'z'"):
        extract(doc, "a.z")


def test_without_the_model_directory_only_inversion_is_scored(gateway):
    from privguard.audit.engine import select
    from privguard.endpoint.audit import audit_endpoint

    # "all" without --model: the inversion family, nothing that needs the member list
    chosen = select(["all"], Access.PROBS, members_known=False)
    assert chosen and {c.family for c in chosen} == {"inversion"}
    for names in (
        ["membership"],
        ["rmia"],
        ["attribute"],
        ["label-only-inference"],
        ["extraction"],
    ):
        with pytest.raises(ConfigError, match="pass --model DIR"):
            select(names, Access.PROBS, members_known=False)
    report = audit_endpoint(
        gateway.url,
        api_key=gateway.keys["probs"],
        data="digits",
        attacks="blackbox-inversion",
        seed=0,
        budget=4000,
    )
    (a,) = report.attacks
    assert report.target["endpoint"]["records_answered"] == a.queries <= 4000
    # recognition by the auditor's own classifiers needs no member list ...
    assert a.metrics["attack_accuracy_consensus"] >= 0.6, a.metrics
    # ... closeness to training members does, and is not claimed
    assert "member_closeness" not in a.metrics and a.risk in ("low", "medium")
    assert "members unknown" in report.data["split"]["note"]


def test_equation_solving_copies_the_served_model_through_its_probabilities(gateway, digits_logreg):
    from privguard.endpoint.audit import audit_endpoint

    report = audit_endpoint(
        gateway.url, api_key=gateway.keys["probs"], model=digits_logreg, attacks="equation-solving"
    )
    (a,) = report.attacks
    # a softmax regression is solved from a few more probability vectors than its 64 features
    assert a.metrics["fidelity"] >= 0.99 and a.queries <= 200, a.metrics
    # the evaluator compares with the served model's own directory, not through HTTP
    assert report.target["endpoint"]["records_answered"] == a.queries
    with pytest.raises(AccessError, match="needs 'probs' access"):
        audit_endpoint(
            gateway.url,
            api_key=gateway.keys["label"],
            model=digits_logreg,
            attacks="equation-solving",
        )
