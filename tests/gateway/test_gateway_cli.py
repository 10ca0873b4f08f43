"""`privguard keys`, `purge` and `seal` from the command line (in process)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from privguard.cli import main
from privguard.gateway import keys
from privguard.gateway.store import Store, utcnow

EXAMPLE = "examples/gateway.toml"


def test_keys_create_list_revoke(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert (
        main(
            [
                "keys",
                "create",
                "--name",
                "alice",
                "--tier",
                "label",
                "--db",
                db,
                "--config",
                EXAMPLE,
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("pg_") and "shown this once" in out.err
    store = Store(db)
    key = keys.lookup(store, secret)
    assert key.name == "alice" and key.role == "client"
    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert key.id in listing and "active" in listing and secret not in listing
    assert main(["keys", "revoke", key.id, "--db", db]) == 0
    assert keys.lookup(store, secret).revoked
    store.close()
    assert main(["keys", "revoke", "key_none", "--db", db]) == 2
    assert (
        main(["keys", "create", "--name", "bob", "--tier", "gold", "--db", db, "--config", EXAMPLE])
        == 2
    )
    assert "no tier 'gold'" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "bob", "--db", db]) == 2  # client without tier


def test_purge_command(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    store = Store(db)
    store.migrate()
    qid = uuid.uuid4().hex
    store.write_queries(
        [
            {
                "id": qid,
                "time": utcnow(),
                "key_id": "k",
                "client": "c",
                "tier": "probs",
                "status": 200,
                "n_inputs": 1,
                "fingerprints": "[]",
                "outputs": "{}",
                "access": "probs",
                "policy": "none",
                "latency_ms": 1.0,
            }
        ],
        [{"query_id": qid, "data": "[[0.5]]", "expires_at": utcnow() - timedelta(seconds=1)}],
    )
    assert main(["purge", "--db", db]) == 0
    assert "purged 1 retained input row(s) and 0 log row(s)" in capsys.readouterr().out
    assert store.retained_inputs() == [] and store.count_queries() == 1
    store.close()


def test_bad_database_urls_are_one_line_errors(capsys):
    assert main(["keys", "list", "--db", "mysql://x"]) == 2
    assert "unsupported database" in capsys.readouterr().err
    assert main(["keys", "list", "--db", "::nonsense::"]) == 2


def test_monitor_fit_calibrates_on_the_models_data_and_flags_synthetic_queries(
    model_dir, tmp_path, capsys
):
    """`privguard monitor fit` saves a monitor the gateway loads; benign held-out traffic passes,
    uniform random queries (a data-free extraction stream) are flagged."""
    import numpy as np

    import privguard
    from privguard.gateway.monitor import Monitor

    out = tmp_path / "monitor"
    assert main(["monitor", "fit", "--model", str(model_dir), "--out", str(out)]) == 0
    assert "[monitor] path" in capsys.readouterr().out
    monitor = Monitor.load(out)
    target = privguard.load_target(model_dir)
    ds = target.load_data()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, *ds.input_shape)).astype(np.float32)
    p = target.predict_proba(x)
    findings = monitor.observe("mallory", x, p.argmax(axis=1), p)
    assert any(f.detector == "ood" for f in findings)
    benign = ds.x[target.split.nonmembers][:64]
    q = target.predict_proba(benign)
    assert monitor.observe("alice", benign, q.argmax(axis=1), q) == []
    assert main(["monitor", "fit", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
