"""End to end: `privguard serve` in a child process on loopback, audited through the HTTP oracle.

The served model is an MLP on 368 patients of the UCI heart-disease study (bundled). Its tiers
differ only in what an answer carries; the audit shows what each deployed configuration leaks.
"""

from __future__ import annotations

import json
import textwrap

import pytest

import privguard
from privguard.cli import main
from privguard.endpoint.audit import audit_endpoint

CONFIG = """
[server]
fingerprint_key_file = "{fpkey}"

[tiers.probs]
access = "probs"
max_batch = 512

[tiers.label]
access = "label"
policy = "label"
max_batch = 512

[tiers.tight]
access = "probs"
rate_limits = "4/second"
max_batch = 128
"""


@pytest.fixture(scope="module")
def heart_mlp():
    """One hidden layer of 128, 100 epochs: 92% train vs 82% test accuracy."""
    return privguard.train(
        "heart-disease", privguard.TrainConfig(model="mlp", hidden=[128], epochs=100, seed=0)
    )


@pytest.fixture(scope="module")
def served(heart_mlp, tmp_path_factory):
    """`privguard serve` (a real process) with a key per tier, and the model directory."""
    from privguard.gateway.keys import create_key
    from privguard.gateway.store import Store
    from privguard.testing.servers import GatewayProcess

    tmp = tmp_path_factory.mktemp("endpoint-audit")
    model_dir = heart_mlp.save(tmp / "model")
    config = tmp / "gateway.toml"
    config.write_text(textwrap.dedent(CONFIG.format(fpkey=tmp / "fp.key")))
    db = f"sqlite:///{tmp / 'log.db'}"
    store = Store(db)
    store.migrate()
    keys = {
        t: create_key(store, f"auditor-{t}", "client", t)[1] for t in ("probs", "label", "tight")
    }
    store.close()
    proc = GatewayProcess(
        ["--model", str(model_dir), "--config", str(config), "--db", db],
        log_file=tmp / "serve.log",
    ).start()
    try:
        proc.wait_ready(180)
        key_files = {}
        for tier, secret in keys.items():
            key_files[tier] = tmp / f"{tier}.key"
            key_files[tier].write_text(secret + "\n")
        yield {"url": proc.url, "keys": keys, "key_files": key_files, "model": model_dir}
    finally:
        proc.stop()


def best(report, metric: str) -> float:
    return max(a.metrics[metric] for a in report.attacks)


def test_label_tier_leaks_less_membership_than_probs_tier(served):
    common = dict(model=served["model"], seed=0)
    probs = audit_endpoint(
        served["url"], api_key=served["keys"]["probs"], attacks="rmia,loss-threshold", **common
    )
    label = audit_endpoint(
        served["url"], api_key=served["keys"]["label"], attacks="membership", **common
    )
    # The access level is what the server grants each key, and each selects its attacks.
    assert probs.plan["access"] == "probs" and label.plan["access"] == "label"
    assert {a.name for a in label.attacks} == {"label-only-augmentation", "label-only-boundary"}
    # Every query went over HTTP and was counted: the attacks' counts add up to what the
    # server answered.
    for report in (probs, label):
        e = report.target["endpoint"]
        assert e["records_answered"] == sum(a.queries for a in report.attacks) > 0
        assert e["rate_limited_429"] == 0
    # Measured (seeds 0-2, in-process): RMIA AUC 0.61-0.62 and TPR@1%FPR 0.04-0.07 through
    # probabilities; label-only 0.55-0.56 and 0.0.
    assert best(probs, "auc") >= best(label, "auc") + 0.03
    assert best(probs, "tpr_at_fpr_0.01") >= 0.02
    assert best(probs, "tpr_at_fpr_0.01") >= best(label, "tpr_at_fpr_0.01") + 0.02


def test_cli_audits_a_rate_limited_endpoint_and_matches_the_local_audit(
    served, heart_mlp, tmp_path
):
    out = tmp_path / "report"
    argv = [
        "audit",
        "--endpoint",
        served["url"],
        "--api-key-file",
        str(served["key_files"]["tight"]),
    ]
    argv += ["--model", str(served["model"]), "--attacks", "loss-threshold", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    e = report["target"]["endpoint"]
    assert e["access"] == "probs" and e["rate_limited_429"] >= 1
    assert e["seconds_waiting_on_429"] > 0
    # 1288 candidates in batches of 128 at 4 requests per second: it waited, and lost nothing
    local = privguard.audit(heart_mlp, attacks="loss-threshold", seed=0)
    (remote,) = report["attacks"]
    assert remote["queries"] == local.attacks[0].queries == e["records_answered"]
    assert remote["metrics"]["auc"] == pytest.approx(local.attacks[0].metrics["auc"], abs=1e-12)


def test_cli_refuses_what_an_endpoint_audit_cannot_do(served, tmp_path, capsys):
    base = ["audit", "--endpoint", served["url"], "--out", str(tmp_path / "r")]
    probs_key = ["--api-key-file", str(served["key_files"]["probs"])]
    assert main([*base, *probs_key, "--model", str(served["model"]), "--attacks", "mi-face"]) == 2
    assert "HTTP endpoint never serves" in capsys.readouterr().err
    assert main([*base, *probs_key, "--data", "heart-disease", "--attacks", "membership"]) == 2
    assert "pass --model DIR" in capsys.readouterr().err
    label_key = ["--api-key-file", str(served["key_files"]["label"])]
    argv = [*base, *label_key, "--model", str(served["model"]), "--access", "probs"]
    assert main(argv) == 2
    assert "only 'label' access" in capsys.readouterr().err
    wrong = tmp_path / "wrong.key"
    wrong.write_text("pg_not-a-key\n")
    assert main([*base, "--api-key-file", str(wrong), "--model", str(served["model"])]) == 2
    assert "the API key was refused" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
