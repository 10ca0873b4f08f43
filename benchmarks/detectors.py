"""Detection evaluation of the query monitor (issues 8 and 19): privguard's own attacks as clients.

For each target (model x training seed):

- the monitor is fitted on the target's training inputs and calibrated on one half of its
  held-out records (``Monitor.fit``, target 1% flagged benign clients per detector, shuffled
  *and* class-sorted calibration streams);
- every extraction and inversion attack privguard registers that queries a black box (and the
  two label-only membership attacks) runs against the target through an oracle that records
  each query it asks (``RecordingPredictor``); the recorded stream is then fed to the monitor in
  order, 32 queries per batch (one client per attack run); plus privguard's own synthetic
  uniform and Jacobian-augmentation streams;
- benign clients replay natural records the monitor never saw -- the *other* half of the
  held-out records and the auxiliary pool (never trained on) -- of four kinds: shuffled,
  class-sorted (one class at a time), bursty (runs of one class sent in timed bursts) and
  retrying (exact and re-encoded resends); plus benign *accounts* of four keys;
- interleaved clients mix natural queries (the attacker's auxiliary records, never repeated)
  with each extraction and inversion stream at 1:1 and 3:1 natural:attack;
- adaptive attackers who know the detectors: 9:1 interleaving, one attack split over four keys
  of one owner (with and without the account-level view), Jacobian steps three times larger,
  and Knockoff Nets on its natural pool alone;
- a timed scenario for the volume detector: clients with a steady history (Poisson, 20 queries a
  minute), then either more of the same or an attack at 32 queries a second.

Streams are recorded through the oracle directly, not through the HTTP gateway: the queries and
their order are the same, and the gateway adds nothing the detectors see. Reported per detector
and combined: detection rate, queries until detection as a fraction of the attack's budget (the
queries the attack made), and the false-positive rate on benign clients. Goals (issue 19): >= 95%
of extraction and inversion runs flagged before 20% of their budget, <= 0.5% of benign clients
flagged, >= 80% of interleaved runs (1:1 and 3:1) flagged before 20% of their attack queries.
Also the monitor's cost per query (CPU time, one BLAS thread). There is no competitor tool to
compare with: ART ships no stateful query detectors.

Run ``python benchmarks/detectors.py [--quick]``; results in benchmarks/results/detectors.json
(``--summarise PARTIAL`` summarises the partial results of a stopped run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import privguard
from _common import clean, finish_run, run_header, write_json_atomic
from privguard.attacks import Knowledge
from privguard.attacks.inversion.blackbox import BlackBoxInversion
from privguard.attacks.membership.label_only_augmentation import LabelOnlyAugmentation
from privguard.attacks.membership.label_only_boundary import LabelOnlyBoundary
from privguard.attacks.registry import ATTACKS, all_attacks
from privguard.gateway.monitor import DETECTORS, Monitor
from privguard.testing.streams import (
    RecordingPredictor,
    answers,
    bursty,
    class_sorted,
    interleave,
    jacobian_queries,
    replay,
    replay_keys,
    uniform_queries,
    with_retries,
)

OUT = Path(__file__).parent / "results" / "detectors.json"
GOAL_FRACTION = 0.2
MAX_BATCH = 32
EXTRACTION_QUERIES = 2000
CANDIDATES = 50  # label-only membership: candidates attacked per run (half members)
INTERLEAVE_RATIOS = (1, 3)  # the goal's ratios; 9 is one of the adaptive attackers
ADAPTIVE_RATIO = 9
BENIGN_KINDS = ("shuffled", "class-sorted", "bursty", "retries")
SYBIL_KEYS = 4
SYBIL_ATTACKS = ("synthetic-jacobian", "jacobian", "active-extraction", "blackbox-inversion")
GOAL_FAMILIES = ("extraction", "inversion")

# name, dataset, TrainConfig overrides
TARGETS: list[tuple[str, str, dict[str, Any]]] = [
    ("digits-mlp", "digits", {"model": "mlp", "epochs": 60}),
    ("mnist-5k-mlp", "mnist-5k", {"model": "mlp", "epochs": 20}),
    ("digits-logreg", "digits", {"model": "logreg", "epochs": 30, "lr": 1e-2}),
]
EXTRACTION_NAMES = (
    "random-queries",
    "knockoff",
    "jacobian",
    "active-extraction",
    "equation-solving",
)
# black-box inversion attacks (mi-face needs gradients, the attribute attacks tabular data)
INVERSION_NAMES = ("label-only-inversion", "prior-inversion-blackbox")


def registered(names: tuple[str, ...]) -> list[str]:
    """The attacks of ``names`` the registry holds."""
    all_attacks()
    return [n for n in names if n in ATTACKS]


def extraction_strategies() -> list[str]:
    """The extraction attacks the registry holds (one per query strategy)."""
    return registered(EXTRACTION_NAMES)


def record(target: privguard.Target, access: str, run) -> np.ndarray:
    """The queries ``run`` asks through an oracle of ``access``; an attack that stops with a
    privguard error (equation solving finds the model is not linear) keeps what it asked."""
    rec = RecordingPredictor(target.predictor)
    try:
        run(privguard.Oracle(rec, access))
    except privguard.PrivguardError as e:
        print(f"  (attack stopped: {e})", file=sys.stderr)
    return rec.stream()


def attack_streams(
    target: privguard.Target, ds, seed: int, quick: bool
) -> list[tuple[str, str, np.ndarray]]:
    """(attack, family, recorded queries) for every attack run against ``target``."""
    s = target.split
    rng = np.random.default_rng(seed)
    half = CANDIDATES // 2
    cand = np.r_[rng.choice(s.members, half, False), rng.choice(s.nonmembers, half, False)]
    know = Knowledge(
        ds.x[s.aux],
        ds.y[s.aux],
        ds.x[cand],
        ds.y[cand],
        recipe=target.recipe,
        bounds=ds.bounds,
        seed=seed,
        kind=ds.kind,
    )
    out = []
    qpc = 500 if quick else 2000
    out.append(
        (
            "blackbox-inversion",
            "inversion",
            record(
                target, "probs", lambda o: BlackBoxInversion(queries_per_class=qpc).run(o, know)
            ),
        )
    )
    for name in registered(INVERSION_NAMES):
        attack = ATTACKS[name](queries_per_class=500)
        access = "label" if name == "label-only-inversion" else "probs"
        out.append((name, "inversion", record(target, access, lambda o, a=attack: a.run(o, know))))
    # fewer shadow calibration records than the default: they cost the target no queries
    for attack in (LabelOnlyBoundary(calibration_records=50), LabelOnlyAugmentation()):
        out.append(
            (
                attack.name,
                "membership",
                record(target, "label", lambda o, a=attack: a.run(o, know)),
            )
        )
    for name in extraction_strategies():
        if name == "equation-solving":
            attack = ATTACKS[name]()
        else:
            attack = ATTACKS[name](queries=EXTRACTION_QUERIES, epochs=2, final_epochs=2)
        out.append(
            (name, "extraction", record(target, "probs", lambda o, a=attack: a.run(o, know)))
        )
    out.append(
        (
            "synthetic-uniform",
            "extraction",
            record(
                target, "label", lambda o: uniform_queries(o, EXTRACTION_QUERIES, ds.bounds, seed)
            ),
        )
    )
    seeds = ds.x[s.aux][rng.choice(len(s.aux), 20, False)]
    out.append(
        (
            "synthetic-jacobian",
            "extraction",
            record(
                target,
                "label",
                lambda o: jacobian_queries(o, seeds, EXTRACTION_QUERIES, ds.bounds, seed=seed),
            ),
        )
    )
    return out


def adaptive_streams(target: privguard.Target, ds, seed: int) -> list[tuple[str, np.ndarray]]:
    """Streams of attackers who know the detectors: Jacobian augmentation with steps three
    times larger (beyond the copies radius), and Knockoff Nets on its natural pool alone."""
    s = target.split
    rng = np.random.default_rng(seed + 1)
    seeds = ds.x[s.aux][rng.choice(len(s.aux), 20, False)]
    big = record(
        target,
        "label",
        lambda o: jacobian_queries(o, seeds, EXTRACTION_QUERIES, ds.bounds, lam=0.3, seed=seed),
    )
    know = Knowledge(
        ds.x[s.aux],
        ds.y[s.aux],
        None,
        None,
        recipe=target.recipe,
        bounds=ds.bounds,
        seed=seed,
        kind=ds.kind,
    )
    attack = ATTACKS["knockoff"](
        queries=EXTRACTION_QUERIES, augment=False, epochs=2, final_epochs=2
    )
    pool = record(target, "probs", lambda o: attack.run(o, know))
    return [("jacobian, 3x steps", big), ("knockoff, natural pool only", pool)]


def run_target(name: str, dataset: str, overrides: dict[str, Any], seed: int, args) -> dict:
    t0 = time.perf_counter()
    target = privguard.train(dataset, privguard.TrainConfig(seed=seed, **overrides))
    ds = target.load_data()
    s = target.split
    rng = np.random.default_rng(seed)
    held = rng.permutation(s.nonmembers)
    cal, ev = np.sort(held[: len(held) // 2]), np.sort(held[len(held) // 2 :])
    pred = target.predictor
    monitor = Monitor().fit(ds.x[s.members], ds.x[cal], target.predict_proba, seed=seed)
    # benign clients: natural records neither trained on nor calibrated on
    ev = np.sort(np.r_[ev, s.aux])
    train_s = time.perf_counter() - t0
    runs: list[dict[str, Any]] = []
    cost_cpu, cost_n = 0.0, 0

    def feed(client: str, x: np.ndarray, times: np.ndarray | None = None) -> dict[str, int]:
        nonlocal cost_cpu, cost_n
        labels, p = answers(pred, x)
        c0 = time.process_time()
        rep = replay(monitor, client, x, labels, p, max_batch=MAX_BATCH, times=times)
        cost_cpu += time.process_time() - c0
        cost_n += len(x)
        return rep.first

    def feed_keys(client: str, x: np.ndarray, account: bool) -> dict[str, int]:
        labels, p = answers(pred, x)
        keys = [f"{client}-key{k}" for k in range(SYBIL_KEYS)]
        owner = client if account else None
        return replay_keys(monitor, keys, x, labels, p, account=owner, max_batch=MAX_BATCH).first

    def mixed(x: np.ndarray, ratio: int, label: str, adaptive: bool = False) -> dict[str, Any]:
        # natural queries are never repeated: the attacker's auxiliary records limit how many
        # attack queries it can hide
        n_attack = min(len(x), len(s.aux) // ratio)
        mx, is_attack = interleave(x[:n_attack], ds.x[s.aux], ratio, seed)
        first = feed(f"{label}-{seed}", mx)
        # attack queries before 20% of the budget that are records of the natural pool itself
        # (seed sets, Knockoff's and active extraction's pool phases): no detector can tell them
        # from the natural queries mixed in
        early = x[: max(1, int(GOAL_FRACTION * n_attack))].reshape(-1, aux_flat.shape[1])
        natural = int(np.isin(_row_keys(early), aux_keys).sum())
        # as a fraction of the attack's own budget: attack queries sent before detection
        return {
            "natural_before_20pct": natural,
            "kind": "adaptive" if adaptive else "interleaved",
            "attack": label,
            "ratio": ratio,
            "budget": int(is_attack.sum()),
            "total": len(mx),
            "first": {d: int(is_attack[:q].sum()) for d, q in first.items()},
            "first_total": first,
        }

    aux_flat = ds.x[s.aux].reshape(len(s.aux), -1).astype(np.float32)
    aux_keys = _row_keys(aux_flat)
    streams = attack_streams(target, ds, seed, args.quick)
    for attack, family, x in streams:
        print(f"  {attack}: {len(x)} queries", file=sys.stderr, flush=True)
        runs.append(
            {
                "kind": "attack",
                "attack": attack,
                "family": family,
                "budget": len(x),
                "first": feed(f"{attack}-{seed}", x),
            }
        )
    for attack, family, x in streams:
        if family not in GOAL_FAMILIES:
            continue
        for ratio in INTERLEAVE_RATIOS:
            runs.append({**mixed(x, ratio, f"{attack} + {ratio} natural"), "family": family})
    # adaptive attackers
    jac = next(x for a, _, x in streams if a == "synthetic-jacobian")
    runs.append(
        {
            **mixed(jac, ADAPTIVE_RATIO, f"jacobian + {ADAPTIVE_RATIO} natural", True),
            "family": "extraction",
        }
    )
    for attack, x in adaptive_streams(target, ds, seed):
        runs.append(
            {
                "kind": "adaptive",
                "attack": attack,
                "family": "extraction",
                "budget": len(x),
                "first": feed(f"{attack}-{seed}", x),
            }
        )
    for attack, family, x in streams:
        if attack not in (
            "synthetic-jacobian",
            "jacobian",
            "active-extraction",
            "blackbox-inversion",
        ):
            continue
        for account in (False, True):
            view = "account view" if account else "keys only"
            runs.append(
                {
                    "kind": "adaptive",
                    "attack": f"{attack} over {SYBIL_KEYS} keys ({view})",
                    "family": family,
                    "budget": len(x),
                    "first": feed_keys(f"sybil-{attack}-{account}-{seed}", x, account),
                }
            )
    # benign clients of four kinds, and benign accounts of four keys
    labels_ev = target.predict_proba(ds.x[ev]).argmax(axis=1)
    per_kind = max(1, args.benign // len(BENIGN_KINDS))
    runs.append(benign_run("natural order", feed(f"benign-natural-{seed}", ds.x[ev])))
    for i in range(per_kind):
        tag = f"{i}-{seed}"
        runs.append(benign_run("shuffled", feed(f"shuffled-{tag}", ds.x[rng.permutation(ev)])))
        order = class_sorted(ev, labels_ev, rng)
        runs.append(benign_run("class-sorted", feed(f"sorted-{tag}", ds.x[order])))
        order, times = bursty(ev, labels_ev, rng)
        runs.append(benign_run("bursty", feed(f"bursty-{tag}", ds.x[order], times)))
        x = with_retries(ds.x[rng.permutation(ev)], rng, ds.bounds)
        runs.append(benign_run("retries", feed(f"retries-{tag}", x)))
    for i in range(args.accounts):
        x = ds.x[rng.permutation(ev)]
        runs.append(
            benign_run(f"account of {SYBIL_KEYS} keys", feed_keys(f"acct-{i}-{seed}", x, True))
        )
    volume = volume_scenario(monitor, pred, ds, s, ev, seed)
    return {
        "target": name,
        "seed": seed,
        "train_and_fit_seconds": round(train_s, 1),
        "test_accuracy": target.metrics.get("test_accuracy"),
        "aux_records": int(len(s.aux)),
        "benign_records": int(len(ev)),
        "monitor": monitor.describe(),
        "runs": runs,
        "volume": volume,
        "cost_us_per_query_batch32": 1e6 * cost_cpu / max(cost_n, 1),
        "cost_us_per_query_batch1": batch1_cost(monitor, pred, ds.x[ev]),
    }


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One hashable key per row (its float32 bytes), to find pool records in a stream."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.array([hash(r.tobytes()) for r in x])


def benign_run(kind: str, first: dict[str, int]) -> dict[str, Any]:
    return {"kind": "benign", "attack": kind, "family": "benign", "first": first}


def batch1_cost(monitor: Monitor, pred, x: np.ndarray) -> float:
    labels, p = answers(pred, x)
    c0 = time.process_time()
    for i in range(len(x)):
        monitor.observe("cost-batch1", x[i : i + 1], labels[i : i + 1], p[i : i + 1])
    return 1e6 * (time.process_time() - c0) / len(x)


def volume_scenario(monitor: Monitor, pred, ds, s, ev, seed: int) -> dict[str, Any]:
    """Clients with 30 minutes of steady history (Poisson, 20 queries a minute, batches of 1),
    then 10 more minutes of the same (benign) or an attack at 32 queries a second (attack).
    Each client is fed in time order with the monitor's clock set to the query times."""
    rng = np.random.default_rng(seed)
    detected, flagged, until = 0, 0, []
    n_clients = 20
    for c in range(n_clients):
        for kind in ("benign", "attack"):
            t = 0.0
            times = []
            while t < 40 * 60:
                if kind == "attack" and t >= 30 * 60:
                    t += 1 / 32
                else:
                    t += rng.exponential(60 / 20)
                times.append(t)
            times = np.asarray(times)
            x = ds.x[rng.choice(ev, len(times))]
            labels, p = answers(pred, x)
            client = f"volume-{kind}-{c}-{seed}"
            fired = None
            for i in range(len(x)):
                monitor.clock = lambda t=times[i]: t
                got = monitor.observe(client, x[i : i + 1], labels[i : i + 1], p[i : i + 1])
                if any(f.detector == "volume" for f in got) and fired is None:
                    fired = i
            monitor.clock = time.time
            if kind == "benign":
                flagged += fired is not None
            elif fired is not None and times[fired] >= 30 * 60:
                detected += 1
                until.append(int(fired - np.searchsorted(times, 30 * 60)) + 1)
    return {
        "clients": n_clients,
        "attack_detected": detected,
        "benign_flagged": flagged,
        "attack_queries_until_detection": until,
    }


# -- summary ---------------------------------------------------------------------------------


def _first(run: dict[str, Any], det: str) -> int | None:
    if det == "any":  # every detector but volume, whose benign clients are the timed scenario
        hits = [q for d, q in run["first"].items() if d != "volume"]
        return min(hits) if hits else None
    return run["first"].get(det)


def _early(run: dict[str, Any], det: str) -> bool:
    f = _first(run, det)
    return f is not None and f <= GOAL_FRACTION * run["budget"]


def _all_natural(run: dict[str, Any]) -> bool:
    return run.get("natural_before_20pct", 0) >= max(1, int(GOAL_FRACTION * run["budget"]))


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(DETECTORS) + ["any"]
    runs = [run for r in results for run in r["runs"]]
    goal = [r for r in runs if r["kind"] == "attack" and r["family"] in GOAL_FAMILIES]
    allatt = [r for r in runs if r["kind"] == "attack"]
    inter = [r for r in runs if r["kind"] == "interleaved"]
    ben = [r for r in runs if r["kind"] == "benign"]
    table: dict[str, Any] = {}
    for det in names:
        fr = [_first(r, det) / r["budget"] for r in goal if _first(r, det) is not None]
        table[det] = {
            "goal_attack_runs": len(goal),
            "goal_before_20pct": sum(_early(r, det) for r in goal),
            "all_attack_runs": len(allatt),
            "all_before_20pct": sum(_early(r, det) for r in allatt),
            "median_fraction": float(np.median(fr)) if fr else None,
            "interleaved_runs": len(inter),
            "interleaved_before_20pct": sum(_early(r, det) for r in inter),
            "benign_runs": len(ben),
            "benign_flagged": sum(_first(r, det) is not None for r in ben),
        }
    per_attack: dict[str, Any] = {}
    for run in runs:
        if run["kind"] == "benign":
            continue
        key = run["attack"]
        e = per_attack.setdefault(
            key, {"kind": run["kind"], "family": run["family"], "runs": 0, "budget": [], "by": {}}
        )
        e["runs"] += 1
        e["budget"].append(run["budget"])
        for det in names:
            f = _first(run, det)
            d = e["by"].setdefault(det, {"detected": 0, "before_20pct": 0, "fractions": []})
            if f is not None:
                d["detected"] += 1
                d["before_20pct"] += f <= GOAL_FRACTION * run["budget"]
                d["fractions"].append(round(f / run["budget"], 4))
    benign: dict[str, Any] = {}
    for run in ben:
        e = benign.setdefault(run["attack"], {"clients": 0, "flagged": 0, "by": {}})
        e["clients"] += 1
        e["flagged"] += _first(run, "any") is not None
        for d in run["first"]:
            e["by"][d] = e["by"].get(d, 0) + 1
    vol = [r["volume"] for r in results]
    n_ben = max(len(ben), 1)
    by_ratio = {ratio: [r for r in inter if r.get("ratio") == ratio] for ratio in INTERLEAVE_RATIOS}
    goals = {
        "attack_runs_before_20pct": [table["any"]["goal_before_20pct"], len(goal)],
        "attack_goal": 0.95,
        "benign_flagged": [table["any"]["benign_flagged"], len(ben)],
        "benign_goal": 0.005,
        "interleaved_before_20pct": {
            str(k): [sum(_early(r, "any") for r in v), len(v)] for k, v in by_ratio.items()
        },
        "interleaved_goal": 0.80,
        # runs whose first 20% of attack queries are not all natural pool records
        "interleaved_before_20pct_not_all_natural": {
            str(k): [
                sum(_early(r, "any") for r in v if not _all_natural(r)),
                sum(not _all_natural(r) for r in v),
            ]
            for k, v in by_ratio.items()
        },
    }
    goals["met"] = {
        "attack": table["any"]["goal_before_20pct"] >= 0.95 * max(len(goal), 1),
        "benign": table["any"]["benign_flagged"] <= 0.005 * n_ben,
        "interleaved": all(
            sum(_early(r, "any") for r in v) >= 0.8 * len(v) for v in by_ratio.values() if v
        ),
    }
    return {
        "goals": goals,
        "detectors": table,
        "per_attack": per_attack,
        "benign": benign,
        "volume": {
            "clients": sum(v["clients"] for v in vol),
            "attack_detected": sum(v["attack_detected"] for v in vol),
            "benign_flagged": sum(v["benign_flagged"] for v in vol),
            "median_attack_queries_until_detection": float(
                np.median([q for v in vol for q in v["attack_queries_until_detection"]] or [np.nan])
            ),
        },
        "cost_us_per_query": {
            "batch32_mean": float(np.mean([r["cost_us_per_query_batch32"] for r in results])),
            "batch1_mean": float(np.mean([r["cost_us_per_query_batch1"] for r in results])),
        },
    }


def print_tables(res: dict[str, Any]) -> None:
    s = res["summary"]
    g = s["goals"]
    print(
        f"\ngoals: extraction+inversion runs flagged before 20%: "
        f"{g['attack_runs_before_20pct'][0]}/{g['attack_runs_before_20pct'][1]}; benign flagged "
        f"{g['benign_flagged'][0]}/{g['benign_flagged'][1]}; interleaved before 20%: "
        + ", ".join(f"{k}:1 {v[0]}/{v[1]}" for k, v in g["interleaved_before_20pct"].items())
        + f"; met: {g['met']}"
    )
    print(
        f"\n{'detector':<12}{'goal <=20%':>12}{'all <=20%':>12}{'interleaved':>13}"
        f"{'median frac':>13}{'benign FP':>11}"
    )
    for det, row in s["detectors"].items():
        med = "-" if row["median_fraction"] is None else f"{row['median_fraction']:.3f}"
        print(
            f"{det:<12}{row['goal_before_20pct']:>7}/{row['goal_attack_runs']:<4}"
            f"{row['all_before_20pct']:>7}/{row['all_attack_runs']:<4}"
            f"{row['interleaved_before_20pct']:>8}/{row['interleaved_runs']:<4}"
            f"{med:>13}{row['benign_flagged']:>6}/{row['benign_runs']}"
        )
    print(f"\n{'attack':<52}{'runs':>5}  (<=20% of budget / flagged) by detector")
    for name, e in s["per_attack"].items():
        by = ", ".join(
            f"{d} {v['before_20pct']}/{v['detected']}" for d, v in e["by"].items() if v["detected"]
        )
        print(f"{name:<52}{e['runs']:>5}  {by or 'never flagged'}")
    print("\nbenign clients flagged (any detector but volume):")
    for kind, e in s["benign"].items():
        print(f"  {kind:<24}{e['flagged']:>4}/{e['clients']:<4} by detector {e['by']}")
    v = s["volume"]
    print(
        f"\nvolume scenario: {v['attack_detected']}/{v['clients']} bursts flagged "
        f"(median {v['median_attack_queries_until_detection']} attack queries), "
        f"{v['benign_flagged']}/{v['clients']} steady clients flagged"
    )
    c = s["cost_us_per_query"]
    print(
        f"monitor cost: {c['batch1_mean']:.0f} us/query at batch 1, "
        f"{c['batch32_mean']:.0f} us/query at batch 32"
    )


def cost_only(args) -> dict[str, Any]:
    """The monitor's cost per query (CPU time, one BLAS thread) at batch 1 and batch 32, for a
    64-feature (digits) and a 784-feature (mnist-5k) input, on benign and on uniform streams."""
    out: dict[str, Any] = {}
    for dataset in ("digits", "mnist-5k"):
        target = privguard.train(
            dataset, privguard.TrainConfig(model="logreg", epochs=10, lr=1e-2, seed=0)
        )
        ds, s = target.load_data(), target.split
        monitor = Monitor().fit(ds.x[s.members], ds.x[s.nonmembers], target.predict_proba)
        rng = np.random.default_rng(0)
        benign = ds.x[rng.choice(np.r_[s.aux, s.nonmembers], 2000)]
        uniform = rng.uniform(0, 1, benign.shape).astype(np.float32)
        row: dict[str, Any] = {"state_bytes_per_client": monitor.state_bytes()}
        for kind, x in (("benign", benign), ("uniform", uniform)):
            labels, p = answers(target.predictor, x)
            for batch in (1, 32):
                c0, w0 = time.process_time(), time.perf_counter()
                for i in range(0, len(x), batch):
                    monitor.observe(
                        f"{kind}-{batch}", x[i : i + batch], labels[i : i + batch], p[i : i + batch]
                    )
                row[f"{kind}_batch{batch}_cpu_us"] = 1e6 * (time.process_time() - c0) / len(x)
                row[f"{kind}_batch{batch}_wall_us"] = 1e6 * (time.perf_counter() - w0) / len(x)
        out[dataset] = row
    return out


def markdown(res: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md."""
    s = res["summary"]
    lines = [
        "| detector | extraction + inversion runs flagged before 20% of budget | all attack "
        "runs (with membership) | interleaved 1:1 and 3:1 before 20% | median fraction at "
        "detection | benign clients flagged |",
        "|---|---|---|---|---|---|",
    ]
    for det, row in s["detectors"].items():
        med = "–" if row["median_fraction"] is None else f"{row['median_fraction']:.3f}"
        lines.append(
            f"| {det} | {row['goal_before_20pct']}/{row['goal_attack_runs']} | "
            f"{row['all_before_20pct']}/{row['all_attack_runs']} | "
            f"{row['interleaved_before_20pct']}/{row['interleaved_runs']} | {med} | "
            f"{row['benign_flagged']}/{row['benign_runs']} |"
        )
    lines += [
        "",
        "| client | kind | runs | median budget | flagged (any) | before 20% | median "
        "fraction at detection | detectors that fired (before 20% / at all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in s["per_attack"].items():
        anyd = e["by"]["any"]
        med = f"{np.median(anyd['fractions']):.3f}" if anyd["fractions"] else "–"
        by = ", ".join(
            f"{d} {v['before_20pct']}/{v['detected']}"
            for d, v in e["by"].items()
            if v["detected"] and d != "any"
        )
        lines.append(
            f"| {name} | {e['kind']} | {e['runs']} | {int(np.median(e['budget']))} | "
            f"{anyd['detected']}/{e['runs']} | {anyd['before_20pct']}/{e['runs']} | {med} | "
            f"{by or 'none'} |"
        )
    lines += [
        "",
        "| benign kind | clients | flagged (any but volume) | by detector |",
        "|---|---|---|---|",
    ]
    for kind, e in s["benign"].items():
        by = ", ".join(f"{d} {n}" for d, n in e["by"].items()) or "none"
        lines.append(f"| {kind} | {e['clients']} | {e['flagged']} | {by} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits MLP, one seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--benign", type=int, default=72, help="benign clients per target (of the four kinds)"
    )
    ap.add_argument("--accounts", type=int, default=4, help="benign 4-key accounts per target")
    ap.add_argument(
        "--seed",
        type=int,
        action="append",
        help="run this seed only (repeatable; for runs "
        "split over processes, merged by --summarise)",
    )
    ap.add_argument(
        "--summarise", type=Path, nargs="+", help="summarise these (partial) results files"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--only", nargs="*", help="target names to run (default: digits-mlp, mnist-5k-mlp)"
    )
    ap.add_argument("--cost", action="store_true", help="only the cost per query")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    header = run_header("detectors", argv)
    if args.cost:
        with threadpool_limits(1):
            res = {**header, "cost": cost_only(args)}

        def show(r: dict[str, Any]) -> None:
            for ds, row in r["cost"].items():
                print(ds, {k: round(v, 1) for k, v in row.items()})

        return finish_run(res, args.out, start, print_tables=show, markdown=None)
    if args.summarise:
        parts = [json.loads(p.read_text()) for p in args.summarise]
        res = {**parts[0], "results": [r for p in parts for r in p["results"]]}
        res["command"] = " ; ".join(p["command"] for p in parts) + " (summarised together)"
        res["machine"]["load_average_at_start"] = [
            p["machine"]["load_average_at_start"] for p in parts
        ]
        res["summary"] = summarise(res["results"])
        return finish_run(res, args.out, start, print_tables=print_tables, markdown=markdown)
    targets = TARGETS[:1] if args.quick else TARGETS[:2]
    seeds = args.seed or range(1 if args.quick else args.seeds)
    if args.only:
        targets = [t for t in TARGETS if t[0] in args.only]
    results = []
    partial = args.out.with_suffix(".partial.json")
    with threadpool_limits(1):
        for seed in seeds:
            for name, dataset, overrides in targets:
                print(f"{name} seed {seed} ...", file=sys.stderr, flush=True)
                results.append(run_target(name, dataset, overrides, seed, args))
                write_json_atomic(partial, clean({**header, "results": results}))
    out = {
        **header,
        "settings": {
            "quick": args.quick,
            "max_batch": MAX_BATCH,
            "extraction_queries": EXTRACTION_QUERIES,
            "candidates": CANDIDATES,
            "benign_per_target": args.benign,
            "benign_accounts_per_target": args.accounts,
            "extraction_attacks": extraction_strategies(),
            "inversion_attacks": ["blackbox-inversion", *registered(INVERSION_NAMES)],
        },
        "results": results,
    }
    out["summary"] = summarise(results)
    return finish_run(out, args.out, start, print_tables=print_tables, markdown=markdown)


if __name__ == "__main__":
    main()
