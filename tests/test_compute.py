"""The one fan-out (privguard.compute): in-process, loky processes and a Dask cluster agree."""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import numpy as np
import pytest

from privguard.compute import SCATTER_BYTES, dask_client, fan_out
from privguard.errors import ConfigError

# Workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _fit(seed: int, n: int) -> tuple[int, np.ndarray]:
    """A small real job: fit a logistic regression on seeded data, return its pid and weights."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return os.getpid(), LogisticRegression().fit(x, y).coef_.ravel()


JOBS = [(seed, 60 + 10 * seed) for seed in range(4)]


def _weights(results: list[tuple[int, np.ndarray]]) -> np.ndarray:
    return np.stack([w for _, w in results])


def test_in_process_run_keeps_job_order_and_runs_here():
    out = list(fan_out(_fit, JOBS))
    assert {pid for pid, _ in out} == {os.getpid()}
    assert len(out) == len(JOBS)
    # job order, not completion order: each result is its own job's
    for (seed, n), (_, w) in zip(JOBS, out, strict=True):
        np.testing.assert_array_equal(w, _fit(seed, n)[1])


def test_two_loky_processes_give_the_in_process_results():
    here = list(fan_out(_fit, JOBS))
    there = list(fan_out(_fit, JOBS, n_jobs=2))
    assert os.getpid() not in {pid for pid, _ in there}
    np.testing.assert_array_equal(_weights(here), _weights(there))


def test_a_dask_local_cluster_gives_the_in_process_results():
    from distributed import Client, LocalCluster

    here = list(fan_out(_fit, JOBS))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        by_address = list(fan_out(_fit, JOBS, scheduler=cluster.scheduler_address))
        with Client(cluster) as client:
            by_client = list(fan_out(_fit, JOBS, scheduler=client))
            assert client.status == "running"  # a client we were given stays open
    np.testing.assert_array_equal(_weights(here), _weights(by_address))
    np.testing.assert_array_equal(_weights(here), _weights(by_client))
    assert os.getpid() not in {pid for pid, _ in by_address}


def _pool_is_shared(x: np.ndarray, i: int) -> tuple[int, bool, int]:
    """On a Dask worker: is ``x`` the worker's stored copy (scattered once) rather than one
    unpickled from this job's own message? And how many torch threads, is torch imported?"""
    from distributed import get_worker

    shared = any(v is x for v in get_worker().data.values())
    torch = sys.modules.get("torch")
    return i, shared, torch.get_num_threads() if torch is not None else -1


def test_dask_ships_a_large_array_once_and_finds_workers_warm():
    from distributed import LocalCluster

    big = np.arange(SCATTER_BYTES // 8 + 1, dtype=np.float64)  # just over the threshold
    small = np.arange(10, dtype=np.float64)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        client, _ = dask_client(cluster.scheduler_address)
        assert dask_client(cluster.scheduler_address)[0] is client  # one client per address
        # the workers were warmed when the client connected, before any job
        warm = client.run(lambda: ("privguard.models.stacked" in sys.modules, _threads()))
        assert set(warm.values()) == {(True, 1)}
        for _ in range(3):  # back to back, the same array: each call ships and releases it
            out = list(fan_out(_pool_is_shared, [(big, i) for i in range(6)], scheduler=client))
        inline = list(fan_out(_pool_is_shared, [(small, i) for i in range(2)], scheduler=client))
    assert [i for i, _, _ in out] == list(range(6))  # job order
    assert all(shared for _, shared, _ in out)
    assert {threads for _, _, threads in out} == {1}
    assert not any(shared for _, shared, _ in inline)  # small arrays travel with their job


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def test_no_jobs_gives_nothing_and_starts_nothing():
    assert list(fan_out(_fit, [], scheduler="tcp://127.0.0.1:1")) == []


def test_an_unreachable_scheduler_fails_fast_with_a_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        list(fan_out(_fit, JOBS, scheduler="tcp://127.0.0.1:1"))
    assert time.perf_counter() - t0 < 15


@pytest.mark.parametrize("bad", [42, "", "   "])
def test_a_malformed_scheduler_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="scheduler address such as tcp://HOST:8786"):
        dask_client(bad)
