"""The query monitor's detectors in a child process (gateway/monitor_process.py): the same
findings as in a thread, a dead child replaced, and the fall-backs and errors of its setting."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import numpy as np
import pytest

from privguard.errors import ConfigError
from privguard.gateway.app import create_app
from privguard.gateway.config import GatewayConfig
from privguard.gateway.keys import create_key
from privguard.gateway.monitor import Monitor
from privguard.gateway.monitor_process import MonitorProcess, MonitorProcessError
from privguard.models.threads import single_thread


@pytest.fixture(scope="module")
def monitor(digits_logreg) -> Monitor:
    """Every detector on, the out-of-distribution one throttling."""
    ds, split = digits_logreg.load_data(), digits_logreg.split
    with single_thread():
        return (
            Monitor(actions={"ood": "throttle"})
            .fit(
                ds.x[split.members], ds.x[split.nonmembers], digits_logreg.predict_proba, shuffles=2
            )
            .use_fingerprint_key(b"k" * 32)
        )


def _stream(target, n_batches: int = 12) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of 8: natural records, then uniform noise (which the detectors flag)."""
    ds, split = target.load_data(), target.split
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_batches):
        if i < n_batches // 2:
            x = ds.x[split.nonmembers[i * 8 : (i + 1) * 8]].astype(np.float32)
        else:
            x = rng.uniform(*ds.bounds, size=(8, 64)).astype(np.float32)
        p = np.asarray(target.predict_proba(x))
        out.append((x, p.argmax(axis=1), p))
    return out


def _comparable(findings) -> list[dict]:
    # the evidence names the wall-clock time of some alarms (the volume detector's burst)
    return [{**f.to_dict(), "evidence": {**f.evidence, "time": None}} for f in findings]


def test_the_child_raises_the_findings_a_thread_raises(digits_logreg, monitor):
    # the same fitted monitor, no client yet
    alone = Monitor.from_bytes(monitor.to_bytes()).use_fingerprint_key(monitor.fingerprint_key)
    stream = _stream(digits_logreg)
    runner = MonitorProcess(monitor)

    async def run():
        pid = await runner.started()
        try:
            found = []
            for b in stream:
                found += await runner.observe("mallory", "label", None, [b])
            return pid, found
        finally:
            await runner.aclose()

    pid, in_child = asyncio.run(run())
    in_thread = [f for b in stream for f in alone.observe("mallory", *b, tier="label")]
    assert pid != os.getpid()
    assert in_thread, "the noise batches raise findings"
    assert {f.detector for f in in_thread} >= {"ood"}
    # fingerprints included: the gateway's fingerprint key went across with the monitor
    assert _comparable(in_child) == _comparable(in_thread)


def test_a_dead_child_is_replaced_before_the_next_round(digits_logreg, monitor, tmp_path):
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"label": {"access": "label", "max_batch": 32}},
            "monitor": {"throttle_seconds": 600, "runner": "process"},
        }
    )
    app = create_app(digits_logreg, config, db=f"sqlite:///{tmp_path / 'log.db'}", monitor=monitor)
    gw = app.state.gateway
    assert gw.monitor_process is not None
    key, _ = create_key(gw.store, "mallory", "client", "label")
    noise = _stream(digits_logreg)[-3:]  # 24 noise records: the ood detector throttles

    async def scenario():
        pid = await gw.monitor_process.started()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while gw.monitor_process._proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the event loop reaps it
        await gw._observe_now([(key, *b) for b in noise])  # a new child watches the round
        try:
            await gw.check_held(key)
        finally:
            new = gw.monitor_process.pid
            await gw.monitor_process.aclose()
        return pid, new

    with pytest.raises(Exception) as refused:
        asyncio.run(scenario())
    assert getattr(refused.value, "status", None) == 429, refused.value  # held by the new child
    assert gw.observations.failed == 0  # nothing was lost: the death was seen before the round
    assert gw.monitor_process.restarts == 1
    assert any(a["detector"] == "ood" for a in gw.store.alerts())


def test_a_child_killed_mid_round_fails_that_round_only(digits_logreg, monitor, monkeypatch):
    from privguard.gateway import monitor_process as mp

    runner = MonitorProcess(monitor)
    b = _stream(digits_logreg)[0]
    real = mp._pack_group

    def kill_first(*args):  # the child dies after the round is packed, before it is read
        mp._pack_group = real
        os.kill(runner.pid, signal.SIGKILL)
        return real(*args)

    async def scenario():
        old = await runner.started()
        try:
            monkeypatch.setattr(mp, "_pack_group", kill_first)
            with pytest.raises(MonitorProcessError, match="died"):
                await runner.observe("c", None, None, [b])
            found = await runner.observe("c", None, None, [b])
            return old, runner.pid, found
        finally:
            await runner.aclose()

    old, new, found = asyncio.run(scenario())
    assert found == []  # one natural batch: nothing to report
    assert runner.restarts >= 1 and new != old


def test_the_child_does_not_run_the_parents_main_script(digits_logreg, monitor, tmp_path):
    """A user's serving script without a ``__main__`` guard: the child must not re-run it
    (multiprocessing's spawn would, and start a second server)."""
    import subprocess
    import sys

    saved = monitor.save(tmp_path / "monitor")
    marker = tmp_path / "ran"
    script = tmp_path / "serve_mine.py"
    script.write_text(
        "import asyncio, pathlib\n"
        "from privguard.gateway.monitor import Monitor\n"
        "from privguard.gateway.monitor_process import MonitorProcess\n"
        f"pathlib.Path({str(marker)!r}).open('a').write('x')\n"
        f"runner = MonitorProcess(Monitor.load({str(saved)!r}))\n"
        "async def main():\n"
        "    await runner.started()\n"
        "    await runner.aclose()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert marker.read_text() == "x"  # the script ran once: in its own process only


def test_a_monitor_the_child_cannot_rebuild_runs_in_a_thread(digits_logreg, tmp_path, caplog):
    ds, split = digits_logreg.load_data(), digits_logreg.split
    with single_thread():
        mon = Monitor(clock=lambda: 1000.0).fit(  # a test's clock: the child's is time.time
            ds.x[split.members], ds.x[split.nonmembers], digits_logreg.predict_proba, shuffles=2
        )
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"label": {"access": "label"}},
            "monitor": {"runner": "process"},
        }
    )
    with caplog.at_level(logging.WARNING, logger="privguard.gateway"):
        app = create_app(digits_logreg, config, db=f"sqlite:///{tmp_path / 'l.db'}", monitor=mon)
    assert app.state.gateway.monitor_process is None
    assert "runs in a thread" in caplog.text and "its own clock" in caplog.text


def test_an_unknown_runner_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match='runner must be "thread".*"process".*"auto".*fork'):
        GatewayConfig.from_dict(
            {
                "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
                "tiers": {"label": {"access": "label"}},
                "monitor": {"runner": "fork"},
            }
        )


def test_a_hung_child_fails_its_group_and_is_replaced(digits_logreg, monitor, monkeypatch):
    from privguard.gateway import monitor_process as mp

    monkeypatch.setattr(mp, "GROUP_TIMEOUT", 2.0)
    runner = MonitorProcess(monitor)
    b = _stream(digits_logreg)[0]

    async def scenario():
        pid = await runner.started()
        try:
            assert os.getsid(pid) != os.getsid(0)  # its own session: no Ctrl-C from ours
            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(MonitorProcessError, match="hung"):
                await runner.observe("c", None, None, [b])
            with pytest.raises(ProcessLookupError):  # the hung child was killed
                for _ in range(100):
                    os.kill(pid, 0)
                    await asyncio.sleep(0.05)
            return await runner.observe("c", None, None, [b]), runner.pid
        finally:
            await runner.aclose()

    found, new = asyncio.run(scenario())
    assert found == [] and new is not None and runner.restarts == 1


@pytest.mark.parametrize("runner", ["auto", "process"])
def test_a_child_that_does_not_start(digits_logreg, monitor, tmp_path, monkeypatch, runner):
    """Under "auto" the detectors fall back to a thread; an explicit "process" is fatal."""
    from privguard.gateway import app as app_module
    from privguard.gateway import monitor_process as mp

    monkeypatch.setattr(mp, "usable_cpus", lambda: 4)
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"label": {"access": "label"}},
            "monitor": {"runner": runner},
        }
    )
    app = create_app(digits_logreg, config, db=f"sqlite:///{tmp_path / 'l.db'}", monitor=monitor)
    gw = app.state.gateway
    gw.monitor_process._hello = b"\x00" * 8  # a message the child cannot read: it exits

    async def start():
        try:
            await app_module.start_monitor_process(gw)
        finally:
            if gw.monitor_process is not None:
                await gw.monitor_process.aclose()

    if runner == "auto":
        asyncio.run(start())
        assert gw.monitor_process is None and gw.observations.linger == 0.0
    else:
        with pytest.raises(MonitorProcessError, match="did not start"):
            asyncio.run(start())


def test_a_round_goes_in_parts_with_the_same_findings(digits_logreg, monitor, monkeypatch):
    from privguard.gateway import monitor_process as mp

    stream = _stream(digits_logreg)

    async def run():
        runner = MonitorProcess(monitor)
        try:
            return await runner.observe("m", "label", None, stream)
        finally:
            await runner.aclose()

    whole = asyncio.run(run())
    monkeypatch.setattr(mp, "CHUNK_BYTES", 4096)  # about one batch of 8 records per part
    assert len(mp._chunks(stream)) >= 6
    parts = asyncio.run(run())
    assert whole and _comparable(parts) == _comparable(whole)


def test_the_thread_is_the_default_and_auto_needs_more_cores_than_workers(monkeypatch):
    from privguard.gateway import monitor_process as mp

    monkeypatch.setattr(mp, "usable_cpus", lambda: 2)
    assert mp.runner_of({}, workers=1) == "thread"
    assert mp.runner_of(None, workers=1) == "thread"
    assert mp.runner_of({"runner": "auto"}, workers=1) == "process"
    assert mp.runner_of({"runner": "auto"}, workers=2) == "thread"
    assert mp.runner_of({"runner": "process"}, workers=2) == "process"
    monkeypatch.setattr(mp, "usable_cpus", lambda: 16)
    assert mp.runner_of({"runner": "auto"}, workers=4) == "process"


def test_messages_carry_arrays_exactly_and_refuse_object_arrays():
    from privguard.gateway import monitor_process as mp

    rng = np.random.default_rng(0)
    batches = [
        (rng.random((3, 1, 8, 8), dtype=np.float32), np.array([1, 2, 3]), rng.random((3, 10))),
        (rng.random((1, 64), dtype=np.float32), np.array([7]), None),
    ]
    client, tier, account, back = mp._unpack_group(mp._pack_group("c", None, "acme", batches))
    assert (client, tier, account) == ("c", None, "acme")
    for (x, lab, p), (x2, lab2, p2) in zip(batches, back, strict=True):
        assert x2.dtype == x.dtype and x2.tobytes() == x.tobytes() and x2.shape == x.shape
        assert lab2.tolist() == lab.tolist()
        assert (p is None and p2 is None) or p2.tobytes() == p.tobytes()
    forged = mp._pack({"x": 1}, [np.zeros(2)]).replace(b'"<f8"', b'"|O8"', 1)
    with pytest.raises(ValueError, match="object array"):
        mp._unpack(forged)
