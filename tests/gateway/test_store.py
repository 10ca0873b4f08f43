"""The store on SQLite and on PostgreSQL: migrations, keys, group-commit log, retention."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from privguard.errors import ConfigError
from privguard.gateway import keys
from privguard.gateway.store import Base, LogWriter, Store, utcnow


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.migrate()
    yield s
    s.close()


def _row(client="c", t=None, status=200, fps=("a",)):
    return {
        "id": uuid.uuid4().hex,
        "time": t or utcnow(),
        "key_id": "key_1",
        "client": client,
        "tier": "label",
        "status": status,
        "n_inputs": len(fps),
        "fingerprints": json.dumps(list(fps)),
        "outputs": json.dumps({"labels": [1]}),
        "access": "label",
        "policy": "label",
        "latency_ms": 1.0,
    }


def test_migrations_build_exactly_the_models_and_rerun_cleanly(store):
    store.migrate()  # idempotent
    assert store.revision() == store.head() == "0004"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    store.check_schema()
    assert store.integrity_ok()


def test_check_schema_refuses_an_unmigrated_database(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError, match="schema revision None"):
        s.check_schema()
    s.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'w.db'}")
    s.migrate()
    with s.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    s.close()


def test_keys_are_stored_as_hashes_and_verified(store):
    info, secret = keys.create_key(store, "alice", "client", "label", expires_days=1)
    assert secret.startswith("pg_") and len(secret) >= 40
    assert info.secret_hash == keys.hash_secret(secret) and secret not in info.secret_hash
    found = keys.lookup(store, secret)
    assert found.id == info.id and found.tier == "label" and not found.expired()
    assert keys.lookup(store, secret + "x") is None
    assert keys.lookup(store, "pg_" + "A" * 43) is None
    assert keys.lookup(store, "no-prefix") is None
    assert found.expired(utcnow() + timedelta(days=1, seconds=1))
    assert keys.set_tier(store, info.id, "probs").tier == "probs"
    assert keys.revoke_key(store, info.id).revoked
    assert keys.lookup(store, secret).revoked
    assert keys.revoke_key(store, "key_none") is None
    with pytest.raises(ConfigError, match="tier"):
        keys.create_key(store, "bob", "client", None)
    with pytest.raises(ConfigError, match="role"):
        keys.create_key(store, "bob", "root", "label")
    # the secret is in no column of the table
    with store.engine.connect() as conn:
        from sqlalchemy import text

        dump = repr(conn.execute(text("select * from api_keys")).all())
    assert secret not in dump and secret[3:] not in dump


def test_log_writer_groups_concurrent_rows_into_few_commits(store):
    writer = LogWriter(store)
    writer.start()

    async def burst():
        await asyncio.gather(*(writer.write(_row(fps=(f"fp{i}",))) for i in range(200)))

    asyncio.run(burst())
    writer.stop()
    assert store.count_queries() == 200
    assert store.all_fingerprints() == {f"fp{i}" for i in range(200)}
    assert writer.stats.rows == 200 and writer.stats.failures == 0
    assert writer.stats.commits < 200  # batched: one transaction per batch


def test_log_writer_charges_budgets_in_the_logging_transaction(store):
    """30 concurrent answers of one record against a budget of 20, charged by the writer in
    the transactions that log them: 20 charged and logged 200, 10 logged as refused (429)."""
    from privguard.gateway.store import Charge

    writer = LogWriter(store)
    writer.start()
    refused = {"status": 429, "outputs": json.dumps({"error": "daily_budget_exhausted"})}

    async def burst():
        return await asyncio.gather(
            *(writer.write(_row(), charge=Charge("key_1", "d", 1, 20, refused)) for _ in range(30))
        )

    results = asyncio.run(burst())
    writer.stop()
    assert sum(ok for ok, _ in results) == 20 and store.used_today("key_1", "d") == 20
    assert writer.stats.commits < 30  # still grouped
    statuses = [r["status"] for r in store.queries(limit=100)]
    assert sorted(statuses) == [200] * 20 + [429] * 10


def test_log_writer_charges_each_keys_rows_of_a_batch_as_one_by_one(store):
    """The writer charges the rows of one key in one transaction with one update of their total
    when it fits (issue 19: one statement per key, not per request); every row's outcome and
    reported usage are those of charging the rows one at a time, in order -- also when the
    total does not fit and the last records go to the first rows."""
    from privguard.gateway.store import Charge

    refused = {"status": 429, "outputs": json.dumps({"error": "daily_budget_exhausted"})}
    store.charge_budget("k1", "d", 5, 20)  # 5 already used today
    asks = [("k1", 3, 20), ("k2", 6, 20), ("k3", 5, 100), ("k1", 4, 20), ("k2", 6, 20)]
    asks += [("k1", 2, 20), ("k2", 6, 20), ("k3", 5, 100), ("k1", 7, 20), ("k2", 6, 20)]
    used = {"k1": 5, "k2": 0, "k3": 0}
    expected = []
    for key, n, budget in asks:  # one conditional update per row
        ok = used[key] + n <= budget
        used[key] += n if ok else 0
        expected.append((ok, used[key]))
    writer = LogWriter(store)

    async def batch():
        tasks = [
            asyncio.ensure_future(writer.write(_row(), charge=Charge(k, "d", n, b, refused)))
            for k, n, b in asks
        ]
        await asyncio.sleep(0.05)  # every row staged and queued before the thread starts
        writer.start()
        return await asyncio.gather(*tasks)

    results = asyncio.run(batch())
    writer.stop()
    assert writer.stats.commits == 1  # one transaction for the ten rows
    assert [tuple(r) for r in results] == expected
    # k1: 8, 12, 14, then 7 more do not fit; k2: three of four; k3: both in one update
    assert [ok for ok, _ in expected] == [True] * 8 + [False, False]
    assert {k: store.used_today(k, "d") for k in used} == {"k1": 14, "k2": 18, "k3": 10}
    statuses = sorted(r["status"] for r in store.queries(limit=100))
    assert statuses == [200] * 8 + [429] * 2


def test_log_writer_reports_a_failed_commit_to_the_request(store):
    writer = LogWriter(store)
    writer.start()
    row = _row()

    async def twice():
        await writer.write(row)
        await writer.write(dict(row))  # same primary key: the commit fails

    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        asyncio.run(twice())
    writer.stop()
    assert writer.stats.failures == 1 and store.count_queries() == 1


def test_purge_deletes_inputs_past_retention_and_old_log_rows(store):
    now = utcnow()
    old, new = _row(t=now - timedelta(days=40)), _row(t=now)
    inputs = [
        {"query_id": old["id"], "data": "[[0.1]]", "expires_at": now - timedelta(days=33)},
        {"query_id": new["id"], "data": "[[0.2]]", "expires_at": now + timedelta(days=7)},
    ]
    store.write_queries([old, new], inputs)
    assert store.purge(now=now) == {"query_inputs": 1, "query_log": 0, "alerts": 0}
    assert [r["data"] for r in store.retained_inputs()] == ["[[0.2]]"]
    assert store.purge(now=now, log_retention_days=30) == {
        "query_inputs": 0,
        "query_log": 1,
        "alerts": 0,
    }
    assert [r["id"] for r in store.queries()] == [new["id"]]
    assert store.purge(now=now + timedelta(days=8))["query_inputs"] == 1


def test_alerts_round_trip(store):
    store.add_alerts(
        [
            {
                "time": utcnow(),
                "client": "eve",
                "detector": "prada",
                "action": "alert",
                "statistic": 0.8,
                "threshold": 0.9,
                "evidence": json.dumps({"queries": 40}),
            }
        ]
    )
    (a,) = store.alerts()
    assert a["client"] == "eve" and a["evidence"] == {"queries": 40} and a["time"].endswith("Z")
