"""Reference models: design, numerics, disk cache, Dask, bad input.

A small real target (a 32-unit MLP, 10 epochs on digits) keeps each reference model at ~0.1 s.
"""

import time

import numpy as np
import pytest

import privguard
from privguard.attacks import Knowledge
from privguard.attacks.base import Compute
from privguard.attacks.membership.lira import LiraOffline, LiraOnline
from privguard.attacks.membership.reference import (
    CACHE_SUBDIR,
    balanced_inclusion,
    log_p_rest,
    log_p_true,
    phi_from_logits,
    phi_from_probs,
    random_halves,
    shift_images,
)
from privguard.attacks.membership.reference_training import train_reference_models
from privguard.attacks.membership.rmia import RMIA, log_p_mixture
from privguard.errors import ConfigError


@pytest.fixture(scope="module")
def small(digits):
    return privguard.train(
        digits, privguard.TrainConfig(model="mlp", hidden=[32], epochs=10, seed=0)
    )


def _knowledge(target, *, recipe=True, aux=None, **compute):
    ds, s = target.load_data(), target.split
    cand = np.concatenate([s.members, s.nonmembers])
    aux_idx = s.aux if aux is None else s.aux[:aux]
    return Knowledge(
        ds.x[aux_idx],
        ds.y[aux_idx],
        ds.x[cand],
        ds.y[cand],
        recipe=target.recipe if recipe else None,
        bounds=ds.bounds,
        kind=ds.kind,
        seed=0,
        compute=Compute(**compute),
    )


# -- numerics (shared/PAPERS.md, "Loss precision") -------------------------------------------


def test_phi_keeps_its_resolution_past_float64_saturation():
    # margins of 40 and 50: logsumexp(z) - z_y is exactly 0 for both in float64
    z = np.array([[40.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    y = np.array([0, 0])
    assert (np.log(np.exp(z).sum(axis=1)) - z[:, 0] == 0).all()
    phi = phi_from_logits(z, y)
    np.testing.assert_allclose(phi, [40 - np.log(2), 50 - np.log(2)])
    # p_y rounds to 1.0, yet the other classes' mass still orders the records
    p = np.array([[1.0, 1e-20, 0.0], [1.0, 1e-18, 0.0]])
    phi_p = phi_from_probs(p, y)
    assert np.isfinite(phi_p).all() and phi_p[0] > phi_p[1]
    # log p_y and log(1 - p_y) from phi stay exact at both ends
    np.testing.assert_allclose(log_p_true(np.array([0.0])), [np.log(0.5)])
    assert log_p_true(np.array([50.0]))[0] == pytest.approx(-np.exp(-50.0), rel=1e-12)
    assert log_p_rest(np.array([50.0]))[0] == pytest.approx(-50.0, rel=1e-12)


def test_phi_agrees_with_its_definition_on_moderate_outputs():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4))
    y = rng.integers(0, 4, 50)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    py = p[np.arange(50), y]
    np.testing.assert_allclose(phi_from_logits(z, y), np.log(py) - np.log(1 - py), rtol=1e-10)
    np.testing.assert_allclose(phi_from_probs(p, y), np.log(py) - np.log(1 - py), rtol=1e-10)


def test_rmia_population_average_is_exact_near_one():
    phi = np.array([[40.0, 0.0], [42.0, 1.0]])  # (models, records)
    mask = np.ones_like(phi, dtype=bool)
    p = 1 / (1 + np.exp(-phi))
    for c in (1.0, 0.65):
        got = log_p_mixture(log_p_true(phi), log_p_rest(phi), mask, c)
        naive = np.log((1 - c) + c * p.mean(axis=0))
        np.testing.assert_allclose(got[1], naive[1], rtol=1e-12)
        # record 0: 1 - p ~ 4e-18 is below float64's resolution at 1; the log form keeps it
        q = (np.exp(-40.0) + np.exp(-42.0)) / 2
        assert got[0] == pytest.approx(-c * q, rel=1e-9)
    assert np.isnan(log_p_mixture(phi, phi, np.zeros_like(mask), 1.0)).all()


# -- design ------------------------------------------------------------------------------------


def test_balanced_inclusion_puts_each_record_in_its_share_of_models():
    inc = balanced_inclusion(16, 500, seed=3)
    assert (inc.sum(axis=0) == 8).all()
    assert abs(inc.sum(axis=1).mean() - 250) < 1
    np.testing.assert_array_equal(inc, balanced_inclusion(16, 500, seed=3))
    assert not np.array_equal(inc, balanced_inclusion(16, 500, seed=4))
    inc = balanced_inclusion(10, 1000, seed=0, fraction=0.4)
    assert (inc.sum(axis=0) == 4).all()
    inc = balanced_inclusion(5, 1000, seed=0, fraction=0.5)  # 2.5 per record: 2 or 3
    assert set(np.unique(inc.sum(axis=0))) == {2, 3}


def test_random_halves_are_independent_halves():
    inc = random_halves(2, 1000, seed=0)
    assert (inc.sum(axis=1) == 500).all()
    # unlike complementary halves, a record OUT of model 1 can be IN or OUT of model 0
    out1 = ~inc[1]
    assert 0.4 < inc[0, out1].mean() < 0.6


def test_shift_images_translates_and_fills():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    right = shift_images(x, (0, 1), 0.0)
    np.testing.assert_array_equal(right[0, 0, :, 1:], x[0, 0, :, :3])
    assert (right[0, 0, :, 0] == 0).all()
    up = shift_images(x, (-1, 0), -1.0)
    np.testing.assert_array_equal(up[0, 0, :3], x[0, 0, 1:])
    assert (up[0, 0, 3] == -1).all()
    assert shift_images(x, (0, 0), 0.0) is x


# -- cache -----------------------------------------------------------------------------------


def test_a_second_run_reuses_every_cached_model_and_scores_the_same(small, tmp_path):
    runs = []
    for _ in range(2):
        know = _knowledge(small, cache_dir=str(tmp_path))
        runs.append(LiraOnline(n_reference=4).run(small.oracle("probs"), know))
    first, second = runs
    assert (first.trained_models, first.reused_models) == (4, 0)
    assert (second.trained_models, second.reused_models) == (0, 4)
    np.testing.assert_array_equal(first.scores, second.scores)
    assert "4 reused from the cache" in second.notes[0]
    files = sorted((tmp_path / CACHE_SUBDIR).iterdir())
    assert len([f for f in files if f.suffix == ".safetensors"]) == 4
    assert len([f for f in files if f.suffix == ".json"]) == 4


def test_a_corrupted_cache_entry_is_retrained_not_used(small, tmp_path):
    know = _knowledge(small, cache_dir=str(tmp_path))
    clean = LiraOnline(n_reference=4).run(small.oracle("probs"), know)
    root = tmp_path / CACHE_SUBDIR
    weights = sorted(root.glob("*.safetensors"))
    blob = bytearray(weights[0].read_bytes())
    blob[-5] ^= 0xFF  # one flipped bit pattern in the weights: the hash no longer matches
    weights[0].write_bytes(bytes(blob))
    sorted(root.glob("*.json"))[1].write_text("{not json")
    again = LiraOnline(n_reference=4).run(
        small.oracle("probs"), _knowledge(small, cache_dir=str(tmp_path))
    )
    assert (again.trained_models, again.reused_models) == (2, 2)
    np.testing.assert_array_equal(clean.scores, again.scores)
    # the retrained entries were written back intact
    third = LiraOnline(n_reference=4).run(
        small.oracle("probs"), _knowledge(small, cache_dir=str(tmp_path))
    )
    assert third.reused_models == 4


def test_attacks_of_one_audit_share_their_reference_models(small):
    know = _knowledge(small)
    a = LiraOffline(n_reference=2).run(small.oracle("probs"), know)
    b = RMIA(n_reference=2).run(small.oracle("probs"), know)
    assert (a.trained_models, a.shared_models) == (2, 0)
    assert (b.trained_models, b.shared_models) == (0, 2)
    assert "shared with an earlier attack" in b.notes[0]


def test_offline_sets_of_different_sizes_are_nested_and_shared(small):
    # K offline models are the first K of any larger set with the same seed (rows and seeds
    # depend on (seed, k) only): the first attack's set is extended or cut, never retrained
    assert np.array_equal(random_halves(6, 500, 3)[:4], random_halves(4, 500, 3))
    know = _knowledge(small)
    few = RMIA(n_reference=2).run(small.oracle("probs"), know)
    more = LiraOffline(n_reference=4).run(small.oracle("probs"), know)
    again = RMIA(n_reference=3).run(small.oracle("probs"), know)
    assert (few.trained_models, few.shared_models) == (2, 0)
    assert more.trained_models == 2 and "models 1-2 were trained for an earlier" in more.notes[1]
    assert (again.trained_models, again.shared_models) == (0, 3)
    # the extended set is what training all four at once gives
    alone = _knowledge(small)
    LiraOffline(n_reference=4).run(small.oracle("probs"), alone)
    grown = know.cached("reference:offline:4:0:0.5", lambda: None)
    fresh = alone.cached("reference:offline:4:0:0.5", lambda: None)
    np.testing.assert_allclose(grown.logits, fresh.logits, atol=1e-4)
    assert np.array_equal(grown.inclusion, fresh.inclusion)


# -- where the training runs ---------------------------------------------------------------


def test_dask_cluster_gives_the_scores_of_the_local_run(small):
    from distributed import LocalCluster

    local = LiraOnline(n_reference=4).run(small.oracle("probs"), _knowledge(small))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        know = _knowledge(small, scheduler=cluster.scheduler_address)
        remote = LiraOnline(n_reference=4).run(small.oracle("probs"), know)
    assert remote.trained_models == 4
    np.testing.assert_array_equal(local.scores, remote.scores)
    np.testing.assert_array_equal(local.decisions, remote.decisions)


def test_local_processes_give_the_scores_of_an_in_process_run(small):
    one = LiraOnline(n_reference=4).run(small.oracle("probs"), _knowledge(small, n_jobs=1))
    two = LiraOnline(n_reference=4).run(small.oracle("probs"), _knowledge(small, n_jobs=2))
    np.testing.assert_array_equal(one.scores, two.scores)


# -- bad input -----------------------------------------------------------------------------


def test_without_a_recipe_reference_attacks_refuse(small):
    know = _knowledge(small, recipe=False)
    for attack in (LiraOnline(), LiraOffline(), RMIA()):
        with pytest.raises(ConfigError, match="training recipe"):
            attack.run(small.oracle("probs"), know)
    with pytest.raises(ConfigError, match="training recipe"):
        train_reference_models(
            know, know.aux_x, know.aux_y, np.ones((1, len(know.aux_y)), bool), seed=0
        )


def test_too_few_auxiliary_records_is_a_clear_error(small):
    know = _knowledge(small, aux=30)
    with pytest.raises(
        ConfigError, match=r"30 auxiliary records cannot support 8 reference.*0 are"
    ):
        RMIA(n_reference=8).run(small.oracle("probs"), know)


def test_too_few_reference_models_for_the_statistic_is_an_error(small):
    know = _knowledge(small)
    with pytest.raises(ConfigError, match="at least 4 reference models"):
        LiraOnline(n_reference=2).run(small.oracle("probs"), know)
    with pytest.raises(ConfigError, match="at least 2 reference models"):
        LiraOffline(n_reference=1).run(small.oracle("probs"), know)


def test_an_unreachable_scheduler_fails_fast(small):
    know = _knowledge(small, scheduler="tcp://127.0.0.1:1")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        LiraOnline(n_reference=4).run(small.oracle("probs"), know)
    assert time.perf_counter() - t0 < 15
    with pytest.raises(ConfigError, match="scheduler address"):
        LiraOnline(n_reference=4).run(small.oracle("probs"), _knowledge(small, scheduler=42))
