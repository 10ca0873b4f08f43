"""What each output policy removes: membership, inversion and extraction through the policy.

One target (an overfit digits MLP, the demo's), the same attacks and seed for every policy, run
through ``privguard.audit(..., policy=...)``: the attacks get only what the policy lets through and
adapt as the literature does (label-only attacks under ``label``; confidence-based ones are not
applicable there, which is the policy's effect).

Columns: best membership TPR at 1% FPR and AUC (over loss-threshold, confidence-threshold and
label-only-augmentation), black-box inversion attack accuracy by the evaluators' consensus and its
queries per class (blackbox-inversion; label-only-inversion when only labels are served), and
extraction fidelity and the queries knockoff needed for 95% fidelity ("—": not reached within its
budget). Ratios are to the unprotected row.

Run ``python benchmarks/policies.py [--quick] [--markdown]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import privguard
from _common import finish_run, run_header
from privguard.sweep.grid import allowed_attacks

POLICIES = [
    None,
    "round:2",
    "round:1",
    "topk:3",
    "topk:1",
    "noise:gaussian:0.05",
    "reverse-sigmoid:0.7:0.2",
    "threshold:0.9",
    "label",
]
QUICK = [None, "round:1", "topk:1", "label"]
ATTACKS = (
    "loss-threshold,confidence-threshold,label-only-augmentation,"
    "blackbox-inversion,label-only-inversion,knockoff"
)
# The digits MLP leaks little membership (its leak is inversion and extraction); the overfit
# diabetes MLP leaks membership strongly, so it shows what the policies do to that.
TARGETS = [
    ("digits-mlp", "digits", {"model": "mlp", "epochs": 100}, ATTACKS),
    (
        "diabetes-mlp-overfit",
        "diabetes",
        {"model": "mlp", "epochs": 500, "lr": 3e-3},
        "loss-threshold,confidence-threshold,lira-offline,label-only-augmentation",
    ),
]


def measure(target: Any, attacks: str, policy: str | None, seed: int) -> dict[str, Any]:
    attacks = allowed_attacks(attacks, policy)
    names = attacks.split(",")
    if "blackbox-inversion" in names and "label-only-inversion" in names:
        names.remove("label-only-inversion")  # the probs attack where probabilities are served
    report = privguard.audit(target, attacks=",".join(names), policy=policy, seed=seed)
    by = {a.name: a for a in report.attacks}
    mem = [a.metrics for a in report.attacks if a.family == "membership"]
    inv = [a for a in report.attacks if a.family == "inversion"]
    ext = by.get("knockoff")
    row: dict[str, Any] = {
        "policy": policy or "none",
        "access": report.plan["access"],
        "membership_tpr_at_fpr_0.01": max(m["tpr_at_fpr_0.01"] for m in mem),
        "membership_auc": max(m["auc"] for m in mem),
        "membership_attacks": [a.name for a in report.attacks if a.family == "membership"],
    }
    if inv:
        a = inv[0]
        row["inversion_attack"] = a.name
        row["inversion_accuracy_consensus"] = a.metrics.get("attack_accuracy_consensus")
        row["inversion_queries_per_class"] = a.queries / target.predictor.n_classes
    if ext is not None:
        row["extraction_fidelity"] = ext.metrics.get("fidelity")
        row["extraction_queries"] = ext.queries
        row["extraction_queries_to_95"] = ext.metrics.get("queries_to_95_fidelity")
    row["seconds"] = round(sum(a.seconds for a in report.attacks), 1)
    return row


def print_tables(results: dict[str, Any]) -> None:
    rows = results["rows"]
    cols = [
        ("target", "target", str),
        ("policy", "policy", str),
        ("access", "access", str),
        ("TPR@1%", "membership_tpr_at_fpr_0.01", "{:.3f}".format),
        ("AUC", "membership_auc", "{:.3f}".format),
        ("inversion", "inversion_attack", str),
        ("inv. acc.", "inversion_accuracy_consensus", "{:.2f}".format),
        ("inv. q/class", "inversion_queries_per_class", "{:.0f}".format),
        ("extr. fidelity", "extraction_fidelity", "{:.3f}".format),
        ("q to 95%", "extraction_queries_to_95", "{:.0f}".format),
        ("s", "seconds", "{:.0f}".format),
    ]
    print(" | ".join(c[0] for c in cols))
    for r in rows:
        cells = []
        for _, key, fmt in cols:
            v = r.get(key)
            cells.append("—" if v is None else fmt(v))
        print(" | ".join(cells))


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| target | policy | access | membership TPR@1%FPR | AUC | inversion (attack) | "
        "inv. acc. | queries/class | extraction fidelity | queries to 95% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for r in results["rows"]:
        lines.append(
            f"| {r['target']} | `{r['policy']}` | {r['access']} | "
            f"{f(r['membership_tpr_at_fpr_0.01'], '.3f')} | "
            f"{f(r['membership_auc'], '.3f')} | {r.get('inversion_attack', '—')} | "
            f"{f(r.get('inversion_accuracy_consensus'), '.2f')} | "
            f"{f(r.get('inversion_queries_per_class'), '.0f')} | "
            f"{f(r.get('extraction_fidelity'), '.3f')} | "
            f"{f(r.get('extraction_queries_to_95'), '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four policies instead of nine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/policies.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    results = run_header("policies", argv)
    results["targets"] = {}
    rows = []
    for name, data, config, attacks in TARGETS:
        target = privguard.train(data, privguard.TrainConfig(seed=0, **config))
        results["targets"][name] = {
            "data": data,
            "config": config,
            "attacks": attacks,
            "train_accuracy": target.metrics["train_accuracy"],
            "test_accuracy": target.metrics["test_accuracy"],
        }
        for policy in QUICK if args.quick else POLICIES:
            rows.append({"target": name, **measure(target, attacks, policy, args.seed)})
            print(f"  {name} {policy or 'none'}: done", file=sys.stderr)
    results["rows"] = rows
    finish_run(
        results,
        args.out,
        start,
        print_tables=print_tables,
        markdown=markdown if args.markdown else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
