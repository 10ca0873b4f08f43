"""Detection evaluation of the query monitor (issue 8): privguard's own attacks as clients.

For each target (model x training seed):

- the monitor is fitted on the target's training inputs and calibrated on one half of its
  held-out records (``Monitor.fit``, target 1% flagged benign clients per detector);
- every attack runs against the target through an oracle that records each query it asks
  (``RecordingPredictor``); the recorded stream is then fed to the monitor in order, 32 queries
  per batch (one client per attack run): black-box inversion (NES), label-only membership
  (boundary search and augmentation), extraction with each query strategy the extraction
  package registers (plus privguard's own synthetic uniform and Jacobian-augmentation streams);
- benign clients replay natural records the monitor never saw -- the *other* half of the
  held-out records and the auxiliary pool (never trained on) -- in natural order and in
  ``--shuffles`` random orders;
- an evasive extraction client interleaves natural queries (the attacker's auxiliary records)
  with Jacobian-augmentation queries to evade PRADA, at several ratios;
- a timed scenario for the volume detector: clients with a steady history (Poisson, 20 queries a
  minute), then either more of the same or an attack at 32 queries a second.

Streams are recorded through the oracle directly, not through the HTTP gateway: the queries and
their order are the same, and the gateway adds nothing the detectors see. Reported per detector:
detection rate, queries until detection as a fraction of the attack's budget (the queries the
attack made), and the false-positive rate on benign clients; the goal is >= 90% of attack runs
flagged before 20% of their budget with <= 1% benign clients flagged. Also the monitor's cost per
query (CPU time, one BLAS thread). There is no competitor tool to compare with: ART ships no
stateful query detectors.

Run ``python benchmarks/detectors.py [--quick]``; results in benchmarks/results/detectors.json.
"""

from __future__ import annotations

import argparse
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
    interleave,
    jacobian_queries,
    replay,
    uniform_queries,
)

OUT = Path(__file__).parent / "results" / "detectors.json"
GOAL_FRACTION = 0.2
MAX_BATCH = 32
EXTRACTION_QUERIES = 2000
CANDIDATES = 50  # label-only membership: candidates attacked per run (half members)
EVASION_RATIOS = (1, 3, 9)

# name, dataset, TrainConfig overrides
TARGETS: list[tuple[str, str, dict[str, Any]]] = [
    ("digits-mlp", "digits", {"model": "mlp", "epochs": 60}),
    ("digits-logreg", "digits", {"model": "logreg", "epochs": 30, "lr": 1e-2}),
    ("mnist-5k-mlp", "mnist-5k", {"model": "mlp", "epochs": 20}),
]
EXTRACTION_NAMES = ("random-queries", "knockoff", "jacobian", "active-extraction")


def extraction_strategies() -> list[str]:
    """The learning-based extraction attacks the registry holds (one per query strategy)."""
    all_attacks()
    return [n for n in EXTRACTION_NAMES if n in ATTACKS]


def record(target: privguard.Target, access: str, run) -> np.ndarray:
    rec = RecordingPredictor(target.predictor)
    run(privguard.Oracle(rec, access))
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

    def feed(client: str, x: np.ndarray) -> dict[str, int]:
        nonlocal cost_cpu, cost_n
        labels, p = answers(pred, x)
        c0 = time.process_time()
        rep = replay(monitor, client, x, labels, p, max_batch=MAX_BATCH)
        cost_cpu += time.process_time() - c0
        cost_n += len(x)
        return rep.first

    streams = attack_streams(target, ds, seed, args.quick)
    for attack, family, x in streams:
        runs.append(
            {
                "kind": "attack",
                "attack": attack,
                "family": family,
                "budget": len(x),
                "first": feed(f"{attack}-{seed}", x),
            }
        )
    # evasion: Jacobian queries interleaved with natural (auxiliary) ones
    jac = next(x for a, _, x in streams if a == "synthetic-jacobian")
    for ratio in EVASION_RATIOS:
        # natural queries are never repeated (a repeat is a zero distance PRADA notices): the
        # attacker's auxiliary records limit how many synthetic queries it can hide
        n_attack = min(len(jac), len(s.aux) // ratio)
        mixed, is_attack = interleave(jac[:n_attack], ds.x[s.aux], ratio, seed)
        first = feed(f"evasive-{ratio}-{seed}", mixed)
        # as a fraction of the attack's own budget: attack queries sent before detection
        attack_before = {d: int(is_attack[:q].sum()) for d, q in first.items()}
        runs.append(
            {
                "kind": "evasive",
                "attack": f"jacobian + {ratio} natural per query",
                "family": "extraction",
                "budget": int(is_attack.sum()),
                "total": len(mixed),
                "first": attack_before,
                "first_total": first,
            }
        )
    orders = [("natural", ev)] + [
        (f"shuffle-{i}", rng.permutation(ev)) for i in range(args.shuffles)
    ]
    for label, idx in orders:
        runs.append(
            {
                "kind": "benign",
                "attack": label,
                "family": "benign",
                "budget": len(idx),
                "first": feed(f"benign-{label}-{seed}", ds.x[idx]),
            }
        )
    volume = volume_scenario(monitor, pred, ds, s, ev, seed)
    return {
        "target": name,
        "seed": seed,
        "train_and_fit_seconds": round(train_s, 1),
        "test_accuracy": target.metrics.get("test_accuracy"),
        "monitor": monitor.describe(),
        "runs": runs,
        "volume": volume,
        "cost_us_per_query_batch32": 1e6 * cost_cpu / max(cost_n, 1),
        "cost_us_per_query_batch1": batch1_cost(monitor, pred, ds.x[ev]),
    }


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


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(DETECTORS) + ["any"]
    table: dict[str, Any] = {}
    attacks = [(r["target"], r["seed"], run) for r in results for run in r["runs"]]

    def first(run, det):
        if det == "any":
            hits = [q for d, q in run["first"].items() if d != "volume"]
            return min(hits) if hits else None
        return run["first"].get(det)

    for det in names:
        row: dict[str, Any] = {}
        att = [run for _, _, run in attacks if run["kind"] == "attack"]
        ben = [run for _, _, run in attacks if run["kind"] == "benign"]
        fr = [first(run, det) / run["budget"] for run in att if first(run, det) is not None]
        row["attack_runs"] = len(att)
        row["detected"] = len(fr)
        row["detected_before_20pct"] = sum(f <= GOAL_FRACTION for f in fr)
        row["median_fraction"] = float(np.median(fr)) if fr else None
        row["benign_runs"] = len(ben)
        row["benign_flagged"] = sum(first(run, det) is not None for run in ben)
        table[det] = row
    per_attack: dict[str, Any] = {}
    for _, _, run in attacks:
        if run["kind"] == "benign":
            continue
        key = run["attack"]
        e = per_attack.setdefault(key, {"family": run["family"], "runs": 0, "budget": [], "by": {}})
        e["runs"] += 1
        e["budget"].append(run["budget"])
        for det in names:
            f = first(run, det)
            d = e["by"].setdefault(det, {"detected": 0, "before_20pct": 0, "fractions": []})
            if f is not None:
                d["detected"] += 1
                d["before_20pct"] += f / run["budget"] <= GOAL_FRACTION
                d["fractions"].append(round(f / run["budget"], 4))
    vol = [r["volume"] for r in results]
    return {
        "detectors": table,
        "per_attack": per_attack,
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
    print(f"\n{'detector':<12}{'flagged':>10}{'<=20%':>8}{'median frac':>13}{'benign FP':>12}")
    for det, row in s["detectors"].items():
        med = "-" if row["median_fraction"] is None else f"{row['median_fraction']:.3f}"
        print(
            f"{det:<12}{row['detected']:>5}/{row['attack_runs']:<4}{row['detected_before_20pct']:>8}"
            f"{med:>13}{row['benign_flagged']:>7}/{row['benign_runs']}"
        )
    print(f"\n{'attack':<38}{'runs':>5}  first detector (<=20% of budget / flagged)")
    for name, e in s["per_attack"].items():
        by = ", ".join(
            f"{d} {v['before_20pct']}/{v['detected']}" for d, v in e["by"].items() if v["detected"]
        )
        print(f"{name:<38}{e['runs']:>5}  {by or 'never flagged'}")
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
        "| detector | attack runs flagged | flagged before 20% of budget | median fraction "
        "of budget at detection | benign clients flagged |",
        "|---|---|---|---|---|",
    ]
    for det, row in s["detectors"].items():
        med = "–" if row["median_fraction"] is None else f"{row['median_fraction']:.3f}"
        lines.append(
            f"| {det} | {row['detected']}/{row['attack_runs']} | "
            f"{row['detected_before_20pct']}/{row['attack_runs']} | {med} | "
            f"{row['benign_flagged']}/{row['benign_runs']} |"
        )
    lines += [
        "",
        "| attack | family | runs | median budget | flagged (any) | before 20% | median "
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
            f"| {name} | {e['family']} | {e['runs']} | {int(np.median(e['budget']))} | "
            f"{anyd['detected']}/{e['runs']} | {anyd['before_20pct']}/{e['runs']} | {med} | "
            f"{by or 'none'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits MLP, one seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shuffles", type=int, default=30, help="benign shuffled replays per target")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", nargs="*", help="target names to run (default: all)")
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
    targets = TARGETS[:1] if args.quick else TARGETS
    seeds = range(1 if args.quick else args.seeds)
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
            "shuffles": args.shuffles,
            "extraction_attacks": extraction_strategies(),
        },
        "results": results,
    }
    out["summary"] = summarise(results)
    return finish_run(out, args.out, start, print_tables=print_tables, markdown=markdown)


if __name__ == "__main__":
    main()
