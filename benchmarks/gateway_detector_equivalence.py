"""Do two privguard trees' detectors decide the same? A digest of every finding and every final
client state on fixed streams, to compare a faster implementation with the one it replaces
(issue 19: the monitor's cost is cut without changing any decision).

The digits MLP of ``tests/gateway/test_detectors.py`` (2x256, 60 epochs, seed 0) and its monitor
(fitted on the members, calibrated on half of the held-out records, seed 0: the calibrated
parameters are part of the digest) watch fixed streams -- benign replays (shuffled,
class-sorted, bursty, with retries), uniform random and Jacobian-augmentation extraction, the
Jacobian steps interleaved 3:1 with natural records, near-duplicate probes, and a benign account
of four keys -- each replayed at batch sizes 1, 5, 32 and 64 on a fixed clock. The SHA-256 of
every run's findings (detector, statistic, threshold, evidence with fingerprints under a fixed
key: ``--full`` keeps them whole) and of every client's final state (``Monitor.dump_state``:
every detector's arrays and counters, bit for bit) go into the JSON.
Run it once per tree and compare:

    PYTHONPATH=../main/src python benchmarks/gateway_detector_equivalence.py --out /tmp/main.json
    PYTHONPATH=src python benchmarks/gateway_detector_equivalence.py --out /tmp/branch.json
    python benchmarks/gateway_detector_equivalence.py --compare /tmp/main.json /tmp/branch.json

About 2 minutes per tree on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 5, 32, 64)


def streams(target: Any, ds: Any, ev: np.ndarray) -> dict[str, tuple[np.ndarray, Any]]:
    """name -> (inputs, times or None)."""
    import privguard
    from privguard.testing.streams import (
        RecordingPredictor,
        bursty,
        class_sorted,
        interleave,
        jacobian_queries,
        uniform_queries,
        with_retries,
    )

    def record(access: str, run: Any) -> np.ndarray:
        rec = RecordingPredictor(target.predictor)
        run(privguard.Oracle(rec, access))
        return rec.stream()

    rng = np.random.default_rng(0)
    labels = target.predict_proba(ds.x[ev]).argmax(axis=1)
    aux = ds.x[target.split.aux]
    out: dict[str, tuple[np.ndarray, Any]] = {}
    out["benign-shuffled"] = (ds.x[rng.permutation(ev)], None)
    out["benign-sorted"] = (ds.x[ev][class_sorted(np.arange(len(ev)), labels, rng)], None)
    order, times = bursty(np.arange(len(ev)), labels, rng)
    out["benign-bursty"] = (ds.x[ev][order], np.asarray(times))
    out["benign-retries"] = (with_retries(ds.x[ev], rng, ds.bounds), None)
    out["uniform"] = (record("label", lambda o: uniform_queries(o, 300, ds.bounds, seed=3)), None)
    jac = record("label", lambda o: jacobian_queries(o, aux[:20], 600, ds.bounds))
    out["jacobian"] = (jac, None)
    out["jacobian-3-to-1"] = (interleave(jac[:170], aux[20:], 3, seed=0)[0], None)
    base = ds.x[ev[:40]]
    noise = rng.normal(0, 0.05, (10, *base.shape[1:])).astype(np.float32)
    probes = np.clip(base[:, None] + noise[None], *ds.bounds).reshape(-1, *base.shape[1:])
    out["near-duplicates"] = (probes.astype(np.float32), None)
    return out


def digest(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import privguard
    from privguard.gateway.monitor import Monitor
    from privguard.testing.streams import answers

    torch.set_num_threads(1)
    target = privguard.train("digits", privguard.TrainConfig(model="mlp", epochs=60, seed=0))
    ds, s = target.load_data(), target.split
    held = np.random.default_rng(0).permutation(s.nonmembers)
    cal, ev = np.sort(held[: len(held) // 2]), np.sort(held[len(held) // 2 :])
    c0 = time.process_time()
    monitor = Monitor().fit(ds.x[s.members], ds.x[cal], target.predict_proba)
    monitor.use_fingerprint_key(b"equivalence" * 3)  # evidence fingerprints comparable
    fit_cpu = time.process_time() - c0
    ev = np.sort(np.r_[ev, s.aux])
    out: dict[str, Any] = {
        "privguard": str(Path(privguard.__file__).parent),
        "params": {d.name: d.params() for d in monitor.detectors},
        "fit_cpu_s": round(fit_cpu, 2),
        "runs": {},
    }
    observe_cpu = 0.0
    for name, (x, times) in streams(target, ds, ev).items():
        labels, probs = answers(target.predictor, x)
        for batch in BATCHES:
            clock = [0.0]
            monitor.clock = lambda clock=clock: clock[0]
            monitor.reset()
            findings = []
            c0 = time.process_time()
            for i in range(0, len(x), batch):
                clock[0] = float(times[i]) if times is not None else i * 0.05
                sl = slice(i, i + batch)
                # the benign-account run: four keys of one owner in turn
                client, account = name, None
                if name == "benign-shuffled":
                    client, account = f"{name}-key{(i // batch) % 4}", "owner"
                findings += monitor.observe(
                    client, x[sl], labels[sl], probs[sl], tier="t", account=account
                )
            observe_cpu += time.process_time() - c0
            states = {
                c: hashlib.sha256(monitor.dump_state(monitor._client(c))).hexdigest()[:16]
                for c in monitor.clients()
            }
            found = [f.to_dict() for f in findings]
            blob = json.dumps(found, sort_keys=True, default=float).encode()
            out["runs"][f"{name}@{batch}"] = {
                "queries": len(x),
                "findings": len(found),
                "by_detector": {
                    d: sum(f["detector"] == d for f in found)
                    for d in sorted({f["detector"] for f in found})
                },
                "findings_sha256": hashlib.sha256(blob).hexdigest(),
                "states": states,
                **({"all_findings": found} if args.full else {}),
            }
    out["observe_cpu_s"] = round(observe_cpu, 2)
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
    bad = 0
    if a["params"] != b["params"]:
        print("calibrated parameters differ:")
        for k in a["params"]:
            if a["params"][k] != b["params"].get(k):
                print(f"  {k}: {a['params'][k]} != {b['params'].get(k)}")
        bad += 1
    for run, ra in a["runs"].items():
        rb = b["runs"].get(run)
        if rb is None:
            print(f"{run}: missing")
            bad += 1
            continue
        if ra["findings_sha256"] != rb["findings_sha256"]:
            bad += 1
            print(f"{run}: findings differ ({ra['findings']} vs {rb['findings']})")
        if ra["states"] != rb["states"]:
            bad += 1
            print(f"{run}: final states differ")
    n_find = sum(r["findings"] for r in a["runs"].values())
    print(
        f"{len(a['runs'])} runs, {n_find} findings, "
        f"{sum(len(r['states']) for r in a['runs'].values())} final states: "
        + ("identical" if bad == 0 else f"{bad} differences")
    )
    print(
        f"observe CPU: {a['observe_cpu_s']} s vs {b['observe_cpu_s']} s; fit CPU "
        f"{a['fit_cpu_s']} s vs {b['fit_cpu_s']} s"
    )
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the digest here")
    ap.add_argument("--full", action="store_true", help="keep every finding, not a digest")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="compare digests")
    args = ap.parse_args(argv)
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        sys.exit(compare(a, b))
    res = digest(args)
    text = json.dumps(res, indent=1, default=float)
    if args.out:
        args.out.write_text(text)
    n = sum(r["findings"] for r in res["runs"].values())
    print(
        f"{res['privguard']}: {len(res['runs'])} runs, {n} findings, "
        f"observe CPU {res['observe_cpu_s']} s, fit CPU {res['fit_cpu_s']} s"
    )


if __name__ == "__main__":
    main()
