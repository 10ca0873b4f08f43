"""The query monitor's detectors on real attack streams against a real small target.

privguard's own attacks run against the digits MLP through an oracle that records every query
(``RecordingPredictor``); the recorded stream is then fed to a monitor in order, 32 queries per
batch, as the gateway would. Benign clients replay held-out records the monitor was not
calibrated on. The margins below come from measured runs on a 2-core machine (seed 0).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

import privguard
from privguard.attacks import Knowledge
from privguard.attacks.inversion.blackbox import BlackBoxInversion
from privguard.attacks.membership.label_only_augmentation import LabelOnlyAugmentation
from privguard.attacks.membership.label_only_boundary import LabelOnlyBoundary
from privguard.attacks.registry import ATTACKS, all_attacks
from privguard.errors import ConfigError, DataError, ModelError
from privguard.gateway.app import create_app
from privguard.gateway.config import GatewayConfig
from privguard.gateway.keys import create_key, get_key
from privguard.gateway.monitor import Finding, Monitor, OodDetector, PradaDetector
from privguard.gateway.monitor.base import count_threshold, extreme_bound
from privguard.gateway.monitor.rate import RateState, tail_pvalues
from privguard.testing.streams import (
    RecordingPredictor,
    answers,
    bursty,
    class_sorted,
    interleave,
    jacobian_queries,
    replay,
    uniform_queries,
    with_retries,
)


@pytest.fixture(scope="module")
def setup(digits_mlp):
    """The digits MLP, a monitor fitted on its members and calibrated on half of its held-out
    records, and the records kept for benign clients."""
    target = digits_mlp
    ds, s = target.load_data(), target.split
    held = np.random.default_rng(0).permutation(s.nonmembers)
    cal, ev = np.sort(held[: len(held) // 2]), np.sort(held[len(held) // 2 :])
    monitor = Monitor().fit(ds.x[s.members], ds.x[cal], target.predict_proba)
    # benign clients replay records never trained on nor calibrated on: the other half of the
    # held-out records and the auxiliary pool (809 records)
    return target, ds, monitor, np.sort(np.r_[ev, s.aux])


def _knowledge(target, ds, n=20, seed=0):
    s = target.split
    cand = np.r_[s.members[: n // 2], s.nonmembers[: n // 2]]
    return Knowledge(
        ds.x[s.aux],
        ds.y[s.aux],
        ds.x[cand],
        ds.y[cand],
        recipe=target.recipe,
        bounds=ds.bounds,
        seed=seed,
        kind=ds.kind,
    )


def _record(target, access, run) -> np.ndarray:
    rec = RecordingPredictor(target.predictor)
    run(privguard.Oracle(rec, access))
    return rec.stream()


def _replay(monitor, target, client, x):
    labels, probs = answers(target.predictor, x)
    return replay(monitor, client, x, labels, probs, max_batch=32)


def test_benign_clients_replaying_held_out_data_are_not_flagged(setup):
    target, ds, monitor, ev = setup
    rng = np.random.default_rng(1)
    orders = [ev] + [rng.permutation(ev) for _ in range(10)]
    flagged = [_replay(monitor, target, f"benign-{i}", ds.x[o]).first for i, o in enumerate(orders)]
    # measured: no benign client flagged by any detector (natural order and 10 shuffles of
    # 809 records)
    assert sum(bool(f) for f in flagged) <= 1


def test_calibrating_on_class_sorted_streams_spares_one_class_at_a_time_clients(setup):
    target, ds, monitor, ev = setup
    s = target.split
    cal = np.sort(np.random.default_rng(0).permutation(s.nonmembers)[: len(s.nonmembers) // 2])
    # the fixture's monitor is calibrated on class-sorted streams too (the default since issue
    # 19); this one on shuffled streams only
    shuffled_only = Monitor().fit(ds.x[s.members], ds.x[cal], target.predict_proba, sorted_orders=0)
    labels = target.predict_proba(ds.x[ev]).argmax(axis=1)
    plain, spared = [], []
    for rep in range(6):
        order = ev[np.lexsort((np.random.default_rng(rep).random(len(ev)), labels))]
        plain.append(_replay(shuffled_only, target, f"sorted-{rep}", ds.x[order]).first)
        spared.append(_replay(monitor, target, f"sorted-{rep}", ds.x[order]).first)
    # measured: PRADA flags most class-sorted benign replays when calibrated on shuffles
    # alone (6 of 10 in a wider run, at query ~102); none when calibrated on sorted ones too
    assert sum(bool(f) for f in plain) >= 2, plain
    assert sum(bool(f) for f in spared) == 0, spared
    # the price: PRADA no longer fires on a Jacobian extraction, which the copies detector
    # flags instead (measured: PRADA at query 109 of 1,500 shuffled-only with the old
    # worst-stream rule, at 429 with the extreme-value bound of issue 19; copies at 26)
    seeds = ds.x[s.aux][:20]
    x = _record(target, "label", lambda o: jacobian_queries(o, seeds, 1500, ds.bounds))
    assert _replay(shuffled_only, target, "jacobian", x).first["prada"] <= 0.4 * len(x)
    got = _replay(monitor, target, "jacobian", x)
    print("jacobian with sorted calibration:", got.first)
    assert got.first["copies"] <= 0.05 * len(x)


@pytest.fixture(scope="module")
def mnist():
    """The mnist-5k MLP (seed 0), a monitor fitted on its members and calibrated on half of its
    held-out records, and the 2,250 records never trained or calibrated on (as the benchmark)."""
    target = privguard.train("mnist-5k", privguard.TrainConfig(model="mlp", epochs=20, seed=0))
    ds, s = target.load_data(), target.split
    rng = np.random.default_rng(0)
    held = rng.permutation(s.nonmembers)
    cal, ev = np.sort(held[: len(held) // 2]), np.sort(held[len(held) // 2 :])
    monitor = Monitor().fit(ds.x[s.members], ds.x[cal], target.predict_proba, seed=0)
    return target, ds, monitor, np.sort(np.r_[ev, s.aux])


def test_class_sorted_benign_clients_on_mnist_are_not_flagged(mnist):
    """Issue 19 on mnist-5k: with two class-sorted calibration streams and "worst + 1" the
    similarity detector flagged 22 of 33 class-sorted benign clients in the benchmark (4 of these
    6 replays here); more sorted orders and an extreme-value bound over each kind's streams
    (``extreme_bound``) spare them."""
    target, ds, monitor, ev = mnist
    labels = target.predict_proba(ds.x[ev]).argmax(axis=1)
    flagged = []
    for rep in range(6):
        order = class_sorted(ev, labels, np.random.default_rng(100 + rep))
        flagged.append(_replay(monitor, target, f"sorted-{rep}", ds.x[order]).first)
    print("class-sorted mnist-5k:", flagged, monitor.describe()["detectors"]["similarity"])
    # measured: 0 of 6 (the old calibration: 4 of 6, all by similarity, min_count 28 then)
    assert sum(bool(f) for f in flagged) == 0, flagged


def test_copies_flags_inversion_hidden_three_to_one_on_mnist(mnist):
    """Issue 19: one radius for every query made class-sorted benign mnist-5k streams look like
    near-copy attacks (lowest calibration p-value 1e-89), the rate test's alpha fell to
    1.4e-165, and black-box inversion hidden among three natural queries per attack query was
    flagged only after 216-280 of its 500 attack queries (benchmark, 3 seeds). The radius per
    answered label and count of earlier queries of that label gives every benign order the same
    base rate, so alpha stays at its union bound and the near-copies count again."""
    target, ds, monitor, _ = mnist
    copies = monitor.describe()["detectors"]["copies"]["params"]
    know = _knowledge(target, ds)
    x = _record(target, "probs", lambda o: BlackBoxInversion(queries_per_class=200).run(o, know))
    x = x[:500]
    mixed, is_attack = interleave(x, ds.x[target.split.aux], 3, seed=0)
    got = _replay(monitor, target, "inverter-3-to-1", mixed)
    sent = {d: int(is_attack[:q].sum()) for d, q in got.first.items()}
    print("inversion 3:1 on mnist-5k:", sent, {k: copies[k] for k in ("base_rate", "alpha")})
    # measured: copies after 8 attack queries of 500 (279 before), alpha 1e-5 (6.8e-165 before)
    assert copies["alpha"] >= 1e-10
    assert sent["copies"] <= 0.2 * len(x)


def test_extreme_bound_extrapolates_past_each_kinds_worst_stream():
    rng = np.random.default_rng(0)
    # per-stream maxima of 200 Gaussian windows: Gumbel-like; the 99% bound fitted on 8 of
    # them holds for (nearly) all of 2,000 new streams, while their largest does not
    maxima = rng.normal(size=(2008, 200)).max(axis=1)
    fit, new = maxima[:8].tolist(), maxima[8:]
    bound = extreme_bound(fit, ["sorted"] * 8, 0.01)
    assert bound > max(fit)
    assert np.mean(new > bound) <= 0.03
    assert np.mean(new > max(fit)) >= 0.05
    # kinds are bounded apart (the most extreme wins); a kind seen once gives its value
    assert extreme_bound(fit + [9.0], ["sorted"] * 8 + ["natural"], 0.01) == 9.0
    low = extreme_bound([-v for v in fit], ["sorted"] * 8, 0.01, lower=True)
    assert low == pytest.approx(-bound)


def test_blackbox_inversion_is_flagged_by_similarity_within_a_few_percent(setup):
    target, ds, monitor, _ = setup
    know = _knowledge(target, ds)
    x = _record(target, "probs", lambda o: BlackBoxInversion(queries_per_class=300).run(o, know))
    got = _replay(monitor, target, "inverter", x)
    # NES sends 41 near-identical queries per class and step; measured: similarity at query
    # 15 of ~3,000 (0.5%), the OOD score at 5
    assert got.first["similarity"] <= 0.05 * len(x)
    assert got.detected_by() <= 0.02 * len(x)
    f = next(f for f in got.findings if f.detector == "similarity")
    assert f.client == "inverter" and f.action == "throttle"
    assert f.statistic >= f.threshold and f.evidence["value"] < f.evidence["radius"]
    assert len(f.evidence["fingerprints"]) >= 1


def test_label_only_boundary_search_is_flagged_by_the_boundary_detector(setup):
    target, ds, monitor, _ = setup
    know = _knowledge(target, ds)
    attack = LabelOnlyBoundary(calibration_records=20)
    x = _record(target, "label", lambda o: attack.run(o, know))
    got = _replay(monitor, target, "boundary-prober", x)
    # bisection sends pairs a tiny step apart with different labels; measured: the boundary
    # detector at query 85 of 3,342 (2.5%)
    assert got.first["boundary"] <= 0.1 * len(x)
    f = next(f for f in got.findings if f.detector == "boundary")
    assert f.action == "alert"


def test_label_only_augmentation_is_flagged(setup):
    target, ds, monitor, _ = setup
    know = _knowledge(target, ds, n=40)
    x = _record(
        target, "label", lambda o: LabelOnlyAugmentation(calibration_records=40).run(o, know)
    )
    got = _replay(monitor, target, "augmenter", x)
    # shifted copies of each candidate: off the training distribution (measured: OOD at 23 of 200)
    assert got.detected_by() is not None and got.detected_by() <= 0.2 * len(x)


def test_uniform_random_extraction_is_flagged_by_the_ood_score(setup):
    target, ds, monitor, _ = setup
    x = _record(target, "label", lambda o: uniform_queries(o, 1000, ds.bounds))
    got = _replay(monitor, target, "uniform", x)
    # every uniform query is far off the digits manifold: measured at query 5
    assert got.first["ood"] <= 0.02 * len(x)


def test_registered_extraction_attacks_are_flagged(setup):
    all_attacks()
    names = ["random-queries", "jacobian"]
    assert set(names) <= set(ATTACKS)
    target, ds, monitor, _ = setup
    know = _knowledge(target, ds)
    for name in names:
        attack = ATTACKS[name](queries=1000, epochs=1, final_epochs=1)
        x = _record(target, "probs", lambda o, a=attack: a.run(o, know))
        got = _replay(monitor, target, f"registered-{name}", x)
        # measured: random-queries by the OOD score at query 7; jacobian (150 natural seeds,
        # then augmented points) by the OOD score at 107 -- PRADA did not fire on it here
        assert got.detected_by() is not None and got.detected_by() <= 0.2 * len(x), name


@pytest.mark.parametrize("name", ["knockoff", "active-extraction"])
def test_natural_data_extraction_is_flagged_once_it_leaves_natural_data(setup, name):
    all_attacks()
    target, ds, monitor, _ = setup
    know = _knowledge(target, ds)
    attack = ATTACKS[name](queries=1000, epochs=1, final_epochs=1)
    x = _record(target, "probs", lambda o: attack.run(o, know))
    got = _replay(monitor, target, name, x)
    natural = len(target.split.aux)  # the pool is asked first, then augmented pool records
    # Natural queries look like a benign client by construction (the known evasion of every
    # detector here); augmented records do not. Measured: knockoff's first finding at query
    # 546, its 7th augmented one; active extraction's at 267 (OOD: the records the substitute
    # is least sure of are the natural pool's odd ones).
    assert got.detected_by() is not None
    assert got.detected_by() <= natural + 50


def test_a_burst_against_the_clients_own_history_is_flagged(setup):
    target, ds, monitor, ev = setup
    rng = np.random.default_rng(0)
    x = ds.x[ev]
    labels, probs = answers(target.predictor, x)
    now = [0.0]
    monitor.clock = lambda: now[0]
    try:
        for client, burst in (("steady", False), ("burster", True)):
            fired = []
            for i in range(900):
                # 20 minutes at ~20 queries a minute, then either the same or 32 a second
                now[0] += 1 / 32 if burst and i >= 400 else rng.exponential(3.0)
                j = i % len(x)
                for f in monitor.observe(client, x[j : j + 1], labels[j : j + 1], probs[j : j + 1]):
                    if f.detector == "volume":
                        fired.append((i, f))
            if burst:
                assert fired and 400 <= fired[0][0] <= 400 + 110  # measured: 101 queries in
                assert fired[0][1].statistic > fired[0][1].threshold >= 100
            else:
                assert not fired
    finally:
        monitor.clock = time.time


def test_count_threshold_bounds_the_benign_flag_rate():
    m = count_threshold(0.01, 50, 1000, 0.01)
    rng = np.random.default_rng(0)
    flags = rng.random((2000, 1000)) < 0.01
    windows = np.lib.stride_tricks.sliding_window_view(flags, 50, axis=1).sum(axis=2)
    # measured: m = 7; 0 of 2,000 simulated streams reach it, 0.1% reach 6, 1.45% reach 5
    assert (windows.max(axis=1) >= m).mean() <= 0.01
    assert (windows.max(axis=1) >= m - 2).mean() > 0.01  # the union bound costs one count


def test_save_and_load_round_trip_without_pickle(setup, tmp_path):
    target, ds, monitor, ev = setup
    monitor.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["monitor.json", "monitor.npz"]
    again = Monitor.load(tmp_path)
    assert again.describe()["detectors"] == monitor.describe()["detectors"]
    x = _record(target, "label", lambda o: uniform_queries(o, 300, ds.bounds, seed=3))
    a = _replay(monitor, target, "round-trip-a", x)
    b = _replay(again, target, "round-trip-b", x)
    assert a.first == b.first
    blob = bytearray((tmp_path / "monitor.npz").read_bytes())
    blob[-40] ^= 0xFF
    (tmp_path / "monitor.npz").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="altered"):
        Monitor.load(tmp_path)
    with pytest.raises(ModelError, match="no saved monitor"):
        Monitor.load(tmp_path / "missing")


def test_a_monitor_saved_before_the_per_label_copies_radius_is_refused(setup, tmp_path):
    _, _, monitor, _ = setup
    monitor.save(tmp_path)
    path = tmp_path / "monitor.json"
    manifest = json.loads(path.read_text())
    entry = next(e for e in manifest["detectors"] if e["name"] == "copies")
    for key in ("labels", "grid", "table", "confidence"):
        entry["params"].pop(key)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="predates its radius per label"):
        Monitor.load(tmp_path)


def test_state_is_bounded_per_client_and_in_clients(setup):
    target, ds, monitor, ev = setup
    m = Monitor(max_clients=3)
    x = ds.x[ev][:300]
    labels, probs = answers(target.predictor, x)
    m.fit(ds.x[target.split.members], x, target.predict_proba, shuffles=1)
    fresh = m.state_bytes()
    for c in range(5):
        m.observe(f"c{c}", x, labels, probs)
    assert m.clients() == ["c2", "c3", "c4"]
    for _ in range(5):
        m.observe("c4", x, labels, probs)
    assert m.state_bytes("c4") <= fresh + 10_000  # windows and rings: no growth with queries
    assert fresh < 1_000_000


def test_concurrent_clients_are_counted_exactly(setup):
    target, ds, monitor, ev = setup
    x = ds.x[ev][:64]
    labels, probs = answers(target.predictor, x)
    errors = []

    def work(name):
        try:
            for i in range(0, 64, 8):
                monitor.observe(name, x[i : i + 8], labels[i : i + 8], probs[i : i + 8])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"t{i % 2}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in ("t0", "t1"):
        assert monitor._clients[name].queries == 3 * 64


def test_actions_follow_the_tier(setup):
    target, ds, monitor, _ = setup
    m = Monitor(tier_actions={"free": {"ood": "block"}}, actions={"ood": "alert"})
    m.space_, m.input_shape_, m.detectors = monitor.space_, monitor.input_shape_, monitor.detectors
    x = np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    labels, _ = answers(target.predictor, x)
    paid = m.observe("paid", x, labels, tier="pro")
    free = m.observe("free", x, labels, tier="free")
    assert [f.action for f in paid if f.detector == "ood"] == ["alert"]
    assert [f.action for f in free if f.detector == "ood"] == ["block"]
    assert isinstance(free[0], Finding) and free[0].to_dict()["client"] == "free"
    with pytest.raises(ConfigError, match="unknown action"):
        Monitor(actions={"prada": "ban"})


def test_bad_inputs_raise_privguard_errors(setup):
    target, ds, monitor, ev = setup
    with pytest.raises(ConfigError, match="not fitted"):
        Monitor().observe("a", ds.x[:2], np.zeros(2))
    with pytest.raises(DataError, match="fitted on"):
        monitor.observe("a", np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(DataError, match="labels"):
        monitor.observe("a", ds.x[:2], np.zeros(3))
    with pytest.raises(DataError, match="NaN"):
        monitor.observe("a", np.full((1, 64), np.nan), np.zeros(1))
    with pytest.raises(DataError, match="at least 20"):
        Monitor().fit(ds.x[:50], ds.x[:5], target.predict_proba)
    with pytest.raises(ConfigError):
        PradaDetector(window=10, min_distances=100)
    with pytest.raises(ConfigError):
        OodDetector(query_rate=0)
    flat = monitor.observe("flat-ok", ds.x[:2].reshape(2, -1), np.zeros(2))
    assert flat == []


# -- issue 19: history-wide rate tests, benign kinds, the account view ------------------------


def test_benign_clients_of_every_kind_are_not_flagged(setup):
    target, ds, monitor, ev = setup
    rng = np.random.default_rng(7)
    labels = target.predict_proba(ds.x[ev]).argmax(axis=1)
    order, times = bursty(ev, labels, rng)
    assert sorted(order.tolist()) == ev.tolist() and np.all(np.diff(times) > 0)
    retries = with_retries(ds.x[rng.permutation(ev)], rng, ds.bounds)
    assert len(ev) < len(retries) < 1.3 * len(ev)
    streams = [
        ("shuffled", ds.x[rng.permutation(ev)], None),
        ("class-sorted", ds.x[class_sorted(ev, labels, rng)], None),
        ("bursty", ds.x[order], times),
        ("retries", retries, None),
    ]
    for kind, x, t in streams:
        lab, p = answers(target.predictor, x)
        got = replay(monitor, f"kind-{kind}", x, lab, p, times=t)
        # measured: no detector fires on any of them (volume is the timed scenario's business:
        # a burst after a quiet history is what it flags)
        assert not {d: q for d, q in got.first.items() if d != "volume"}, (kind, got.first)


def test_copies_flags_jacobian_steps_hidden_among_three_natural_queries_each(setup):
    target, ds, monitor, _ = setup
    aux = ds.x[target.split.aux]
    x = _record(target, "label", lambda o: jacobian_queries(o, aux[:20], 170, ds.bounds))
    mixed, is_attack = interleave(x, aux[20:], 3, seed=0)
    got = _replay(monitor, target, "jacobian-3-to-1", mixed)
    sent = {d: int(is_attack[:q].sum()) for d, q in got.first.items()}
    # the window detectors see a quarter of the steps per window; the rate test keeps every
    # near-copy on the client's account. Measured: copies after 32 attack queries of 170
    # (20 of them the natural seeds; 40 since the extreme-value calibration of issue 19, whose
    # lower alpha costs a few queries; 44 since copies' per-label radius, whose base rate is the
    # upper 99.9% bound from digits' 988 natural records: 4.5%), similarity later or never,
    # PRADA never. The bound was a quarter of the stream (42.5) until that change: the
    # integrator accepted 44 for what it bought on mnist-5k (black-box inversion hidden 3:1
    # flagged by copies at 8 attack queries of 500 instead of 279; interleaved runs before 20%
    # 29/60 -> 39/60, benign unchanged; docs/benchmarks.md, "Detection (issue 19)") and bounds
    # this stream at 30%: 51 queries, 31 of them synthetic
    print("jacobian 3:1:", sent)
    assert sent["copies"] <= 0.30 * len(x)
    assert "prada" not in sent and sent.get("similarity", len(x)) > sent["copies"]
    f = next(f for f in got.findings if f.detector == "copies")
    assert f.statistic < f.threshold and f.evidence["suspicious"] >= 4


def _sybil_batches(target, ds, ev, seed=0):
    """Twelve keys' batches, each 3 uniform random queries among 17 natural ones."""
    rng = np.random.default_rng(seed)
    nat = ds.x[ev]
    batches = []
    for _ in range(12):
        x = np.concatenate(
            [
                rng.uniform(*ds.bounds, (3, *nat.shape[1:])).astype(np.float32),
                nat[rng.choice(len(nat), 17, replace=False)],
            ]
        )[rng.permutation(20)]
        batches.append((x, *answers(target.predictor, x)))
    return batches


def test_the_account_view_sees_an_attack_split_over_sybil_keys(setup):
    target, ds, monitor, ev = setup
    batches = _sybil_batches(target, ds, ev)

    def send(account):
        found = []
        for k, (x, lab, p) in enumerate(batches):
            found += monitor.observe(f"sybil-{account}-{k}", x, lab, p, account=account)
        return found

    alone = send(None)
    pooled = send("acme")
    # measured: no key alone is flagged by the density detectors (3 low-density queries of
    # 20 is within a benign client's luck); the account's 36 of 240 are not
    assert not [f for f in alone if f.detector in ("ood", "lowdensity")], alone
    acct = [f for f in pooled if f.evidence.get("account") == "acme"]
    assert any(f.detector == "lowdensity" for f in acct), pooled
    assert all(f.client.startswith("sybil-acme-") for f in acct)
    assert "account:acme" in monitor.clients()


def test_the_gateway_watches_the_keys_of_one_owner_together(setup, tmp_path):
    target, ds, monitor, ev = setup
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"label": {"access": "label", "max_batch": 32}},
        }
    )
    app = create_app(target, config, db=f"sqlite:///{tmp_path / 'log.db'}", monitor=monitor)
    gw = app.state.gateway
    keys = [
        create_key(gw.store, f"globex-{k}", "client", "label", owner="globex")[0] for k in range(12)
    ]
    assert get_key(gw.store, keys[0].id).owner == "globex"
    assert create_key(gw.store, "loner", "client", "label")[0].owner is None

    async def send():
        for key, (x, lab, _) in zip(keys, _sybil_batches(target, ds, ev, seed=1), strict=True):
            await gw._observe_now([(key, x, lab, None)])

    asyncio.run(send())
    alerts = gw.store.alerts()
    acct = [a for a in alerts if a["evidence"].get("account") == "globex"]
    assert any(a["detector"] == "lowdensity" for a in acct), alerts
    assert all(a["client"].startswith("globex-") for a in acct)


def test_an_account_finding_holds_every_key_of_the_owner(setup, tmp_path):
    """With ``lowdensity`` set to throttle, the split attack over twelve keys of one owner
    holds the *account*: every key of ``globex`` is refused from its next request (a key that
    never sent a query included), a key of another owner and a key without one are not; the
    hold is in the database under the account's id, which the admin listing resolves."""
    from privguard.gateway.errors import GatewayError
    from privguard.gateway.watch import account_hold_id

    target, ds, monitor, ev = setup
    config = GatewayConfig.from_dict(
        {
            "server": {"fingerprint_key_file": str(tmp_path / "fp.key")},
            "tiers": {"label": {"access": "label", "max_batch": 32}},
            # in this process: the test changes the monitor's actions after start-up
            "monitor": {"throttle_seconds": 600, "runner": "thread"},
        }
    )
    app = create_app(target, config, db=f"sqlite:///{tmp_path / 'log.db'}", monitor=monitor)
    gw = app.state.gateway
    keys = [
        create_key(gw.store, f"globex-{k}", "client", "label", owner="globex")[0] for k in range(12)
    ]
    idle = create_key(gw.store, "globex-idle", "client", "label", owner="globex")[0]
    other = create_key(gw.store, "initech-0", "client", "label", owner="initech")[0]
    loner = create_key(gw.store, "loner", "client", "label")[0]
    saved = dict(monitor.actions)
    monitor.actions["lowdensity"] = "throttle"

    async def send():
        for key, (x, lab, _) in zip(keys, _sybil_batches(target, ds, ev, seed=1), strict=True):
            await gw._observe_now([(key, x, lab, None)])

    async def refusal(key):
        try:
            await gw.check_held(key)
        except GatewayError as e:
            return e.status
        return None

    try:
        asyncio.run(send())
    finally:
        monitor.actions.clear()
        monitor.actions.update(saved)
    statuses = {k.name: asyncio.run(refusal(k)) for k in [*keys, idle, other, loner]}
    assert statuses["globex-idle"] == 429, statuses
    assert all(statuses[k.name] == 429 for k in keys), statuses
    assert statuses["initech-0"] is None and statuses["loner"] is None, statuses
    holds = {h["key_id"]: h for h in gw.store.holds()}
    assert account_hold_id("globex") in holds, holds
    assert holds[account_hold_id("globex")]["detector"] == "lowdensity"
    assert len(account_hold_id("o" * 200)) <= 32


def test_rate_test_pvalues_and_plain_state():
    from scipy.stats import binom

    n, c = np.array([10.0, 50.0, 200.0]), np.array([1.0, 5.0, 9.0])
    np.testing.assert_allclose(tail_pvalues(n, c, 0.02), binom.sf(c - 1, n, 0.02), rtol=1e-9)
    assert tail_pvalues(np.array([5.0]), np.array([0.0]), 0.02)[0] == 1.0
    state = RateState(3.5, 1.25)  # plain floats: shareable without pickle
    assert RateState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_prada_normality_is_scipys_shapiro_wilk_bit_for_bit():
    """PRADA's W calls scipy's Shapiro-Wilk routine with cached coefficients (issue 19: 112 ->
    5 us per test); it must be scipy.stats.shapiro's W exactly, for every window length."""
    import warnings

    from scipy.stats import shapiro

    from privguard.gateway.monitor.prada import normality

    rng = np.random.default_rng(0)
    for t in range(600):
        n = int(rng.integers(100, 301))
        d = [
            rng.random(n),
            rng.exponential(size=n),
            np.round(rng.normal(size=n), 1),  # ties
            np.r_[np.zeros(n - 3), rng.random(3)],  # nearly constant
        ][t % 4]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = float(shapiro(d).statistic)
        assert normality(d) == expected
    assert normality(np.full(150, 2.5)) == 0.0  # no spread: maximally non-normal
