"""Every privguard membership attack vs IBM ART's membership inference, side by side.

Same target models, same member / non-member candidates, same metric code
(``privguard.audit.metrics.membership_metrics``) for every attack.

- privguard: every registered attack of the ``membership`` family (threshold attacks, label-only,
  shadow-models, lira-online, lira-offline, rmia), all in one
  ``privguard.audit(target, attacks=[...], seed=s, n_jobs=2)`` with their default settings.
  Attacks of one audit share reference-model sets (same mode, K, seed): the seconds of the first
  attack that needs a set include training it; the later ones reuse it (``shared`` column).
  The attacker never sees ground truth.
- RMIA vs LiRA offline with 2 reference models each (the issue's RMIA target): the attack classes
  instantiated directly (``RMIA(n_reference=2)``, ``LiraOffline(n_reference=2)``) on the same
  Knowledge the audit builds, sharing one set of 2 offline reference models.
- ART 1.x, on a ``PyTorchClassifier`` around the target's module:
  ``MembershipInferenceBlackBox`` (attack models ``nn`` and ``rf``) trained
  (a) on one shadow model trained with the target's recipe on half the auxiliary pool (no ground
      truth);
  (b) on the outputs of ART's ``ShadowModels`` utility (3 shadow models, ART's default, each on a
      random half of the auxiliary pool, trained with the target's recipe through a small
      CLONABLE wrapper; no ground truth);
  (c) on a random 50% of the target's true members and non-members (ART's documented usage,
      GROUND TRUTH), evaluated with everything else on the other 50% only ("held-out half");
  and ``MembershipInferenceBlackBoxRuleBased`` (the gap attack).

Run ``python benchmarks/membership_vs_art.py --help``; see benchmarks/README.md.
ART is only imported here (the ``bench`` extra); privguard never depends on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privguard
from _common import (
    Clock,
    art_classifier,
    clean,
    machine_info,
    markdown_table,
    parse_only,
    quiet_art,
    run_seeds,
    selected,
    summarise,
    versions,
    write_json_atomic,
)
from privguard.attacks import Compute, resolve
from privguard.attacks.membership.lira import LiraOffline
from privguard.attacks.membership.rmia import RMIA
from privguard.audit.metrics import membership_metrics
from privguard.audit.runner import _Truth, cross_split_twins
from privguard.oracle import Access

N_JOBS = 2
ART_SHADOW_MODELS = 3  # ART's ShadowModels default

# name, dataset, TrainConfig overrides, in --quick, issue target (ratio to loss-threshold, floor)
TARGETS: list[tuple[str, str, dict[str, Any], bool, tuple[float, float]]] = [
    ("digits-mlp", "digits", {"epochs": 100}, True, (4.0, 0.05)),
    ("mnist-5k-mlp", "mnist-5k", {"epochs": 30}, True, (4.0, 0.05)),
    ("heart-disease-mlp-overfit", "heart-disease", {"epochs": 300}, True, (2.0, 0.03)),
    ("adult-mlp", "adult", {"epochs": 20}, False, (2.0, 0.03)),
]

ART_LABELS = {
    "art-bb-nn": "ART BlackBox nn, 1 shadow (recipe)",
    "art-bb-rf": "ART BlackBox rf, 1 shadow (recipe)",
    "art-sm-nn": f"ART ShadowModels({ART_SHADOW_MODELS}) + BlackBox nn",
    "art-sm-rf": f"ART ShadowModels({ART_SHADOW_MODELS}) + BlackBox rf",
    "art-rule-based": "ART RuleBased (gap attack)",
    "art-bb-nn-gt": "ART BlackBox nn, GROUND TRUTH 50% †",
    "art-bb-rf-gt": "ART BlackBox rf, GROUND TRUTH 50% †",
}


def membership_attacks() -> list[str]:
    """Every registered membership attack an attacker with ``probs`` access can run."""
    return [cls.name for cls in resolve(["membership"], Access.PROBS)]


# -- ART --------------------------------------------------------------------------------------


def art_blackbox(classifier, kind: str, seed: int):
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox

    # ART draws its attack model's initialisation, shuffling and forest from the global RNGs.
    torch.manual_seed(seed)
    np.random.seed(seed)
    attack = MembershipInferenceBlackBox(
        classifier, input_type="prediction", attack_model_type=kind
    )
    if kind == "rf":
        attack.attack_model.set_params(random_state=seed)
    return attack


def run_art_blackbox(
    classifier, kind: str, seed: int, fit_in, fit_out, infer_y, infer_p
) -> tuple[np.ndarray, float]:
    """Fit ART's black-box attack on (probabilities, labels) of members vs non-members, then
    score the candidates; returns (membership probability per candidate, seconds)."""
    (p_in, y_in), (p_out, y_out) = fit_in, fit_out
    t0 = time.perf_counter()
    attack = art_blackbox(classifier, kind, seed)
    attack.fit(pred=p_in, y=y_in, test_pred=p_out, test_y=y_out)
    # With ``pred`` given, ART reads the records' outputs from it and x is not needed.
    scores = attack.infer(None, infer_y, pred=infer_p, probabilities=True)
    return np.asarray(scores, dtype=np.float64).reshape(-1), round(time.perf_counter() - t0, 3)


def run_art_rule_based(classifier, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBoxRuleBased

    t0 = time.perf_counter()
    attack = MembershipInferenceBlackBoxRuleBased(classifier)
    # probabilities=True is broken for binary tasks in ART 1.20.1 (fancy-indexed column
    # assignment); the decisions are the attack's whole output anyway: 1 iff correct.
    decisions = attack.infer(x, y)
    return np.asarray(decisions, dtype=np.float64).reshape(-1), round(time.perf_counter() - t0, 3)


class RecipeModel:
    """ART ``ShadowModels`` needs a CLONABLE template (``clone_for_refitting``, ``fit``,
    ``predict``, ``input_shape``). This one trains with the target's own recipe, so ART's shadow
    models are trained exactly like privguard's; clone k is seeded ``seed + k``."""

    def __init__(self, recipe, input_shape, seed: int) -> None:
        self.recipe, self.input_shape, self.seed = recipe, input_shape, seed
        self._clones = 0
        self.model = None

    def clone_for_refitting(self) -> RecipeModel:
        self._clones += 1
        return RecipeModel(self.recipe, self.input_shape, self.seed + self._clones)

    def fit(self, x, y, **_: Any) -> None:
        self.model = self.recipe.fit(np.asarray(x), np.asarray(y), seed=self.seed)

    def predict(self, x, **_: Any) -> np.ndarray:
        return self.model.predict_proba(np.asarray(x))


def art_shadow_models_data(target, ds, seed: int):
    """ART's ShadowModels on the auxiliary pool: ((p_in, y_in), (p_out, y_out), seconds)."""
    from art.attacks.inference.membership_inference import ShadowModels

    t0 = time.perf_counter()
    template = RecipeModel(target.recipe, target.input_shape, 1_000 + seed)
    sm = ShadowModels(template, num_shadow_models=ART_SHADOW_MODELS, random_state=seed)
    (_, y_in, p_in), (_, y_out, p_out) = sm.generate_shadow_dataset(
        ds.x[target.split.aux], ds.y[target.split.aux]
    )
    return (p_in, y_in), (p_out, y_out), time.perf_counter() - t0


def shadow_like_privguard(target, ds, seed: int):
    """One shadow model with the target's recipe on a seeded half of the aux pool."""
    aux_x, aux_y = ds.x[target.split.aux], ds.y[target.split.aux]
    order = np.random.default_rng(seed).permutation(len(aux_y))
    k = int(round(len(aux_y) * 0.5))
    ins, outs = order[:k], order[k:]
    t0 = time.perf_counter()
    shadow = target.recipe.fit(aux_x[ins], aux_y[ins], seed=seed + 1)
    p_in, p_out = shadow.predict_proba(aux_x[ins]), shadow.predict_proba(aux_x[outs])
    return (p_in, aux_y[ins]), (p_out, aux_y[outs]), time.perf_counter() - t0


# -- one target, one seed ---------------------------------------------------------------------

KEEP = (
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "tpr_at_fpr_0.01",
    "tpr_at_fpr_0.001",
    "advantage",
    "n_members",
    "n_nonmembers",
    "fpr_0.01_false_positives_allowed",
)


def metrics_of(scores, is_member, decisions=None) -> dict[str, Any]:
    scores = np.asarray(scores, dtype=np.float64)
    if decisions is None:
        decisions = scores >= 0.5
    m, _, _ = membership_metrics(scores, decisions, is_member)
    return {k: m[k] for k in KEEP if k in m}


def bench_target(dataset: str, overrides: dict[str, Any], seed: int, log) -> dict[str, Any]:
    t0 = time.perf_counter()
    target = privguard.train(dataset, privguard.TrainConfig(seed=seed, **overrides))
    train_seconds = time.perf_counter() - t0
    log(f"  target trained in {train_seconds:.1f} s")
    ds = target.load_data()
    split = target.split
    truth = _Truth.build(ds, split, seed)  # the audit's candidate order for this seed
    cand, is_member = truth.candidates, truth.is_member
    cx, cy = ds.x[cand], ds.y[cand]
    cp = target.predict_proba(cx)  # what privguard's probs oracle returns

    # Ground-truth half for ART (c): 50% of members and 50% of non-members, seeded.
    rng = np.random.default_rng(10_000 + seed)
    fit_mask = np.zeros(len(cand), bool)
    for side in (is_member, ~is_member):
        idx = np.flatnonzero(side)
        fit_mask[idx[rng.permutation(len(idx))[: len(idx) // 2]]] = True
    ev = ~fit_mask

    full: dict[str, dict[str, Any]] = {}
    half: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    extra: dict[str, dict[str, Any]] = {}

    names = membership_attacks()
    log(f"  privguard.audit({', '.join(names)}, n_jobs={N_JOBS})")
    t0 = time.perf_counter()
    report = privguard.audit(target, attacks=names, seed=seed, n_jobs=N_JOBS)
    audit_seconds = time.perf_counter() - t0
    table = report.artifacts["membership-scores.npz"]
    assert np.array_equal(table["index"], cand)
    for res in report.attacks:
        m = res.metrics
        full[res.name] = {k: m[k] for k in KEEP if k in m}
        seconds[res.name] = res.seconds
        extra[res.name] = {
            "queries": res.queries,
            **{k: m[k] for k in ("reference_models", "trained_models", "shared_models") if k in m},
        }
        half[res.name] = metrics_of(table[f"score_{res.name}"][ev], is_member[ev])
    skipped = report.summary.get("skipped", [])

    # RMIA(2) vs LiRA offline(2): the classes directly, on the audit's Knowledge.
    know = truth.knowledge(target, ds, None, needs_sensitive=False)
    know.compute = Compute(n_jobs=N_JOBS, scheduler=None, cache_dir=None)
    two: dict[str, dict[str, Any]] = {}
    for cls in (LiraOffline, RMIA):
        log(f"  {cls.name}(n_reference=2)")
        attack = cls(n_reference=2)
        t0 = time.perf_counter()
        g = attack.run(target.oracle("probs"), know)
        secs = round(time.perf_counter() - t0, 3)
        two[cls.name] = {**metrics_of(g.scores, is_member, g.decisions), "seconds": secs}

    classifier = art_classifier(target.predictor.module, target.input_shape, target.n_classes)
    log("  ART: one shadow model")
    s_in, s_out, s_secs = shadow_like_privguard(target, ds, seed)
    log(f"  ART: ShadowModels({ART_SHADOW_MODELS})")
    m_in, m_out, m_secs = art_shadow_models_data(target, ds, seed)
    for prefix, (d_in, d_out, d_secs) in (
        ("art-bb", (s_in, s_out, s_secs)),
        ("art-sm", (m_in, m_out, m_secs)),
    ):
        for kind in ("nn", "rf"):
            name = f"{prefix}-{kind}"
            scores, secs = run_art_blackbox(classifier, kind, seed, d_in, d_out, cy, cp)
            seconds[name] = round(secs + d_secs, 3)
            full[name] = metrics_of(scores, is_member)
            half[name] = metrics_of(scores[ev], is_member[ev])
    scores, secs = run_art_rule_based(classifier, cx, cy)
    seconds["art-rule-based"] = secs
    full["art-rule-based"] = metrics_of(scores, is_member)
    half["art-rule-based"] = metrics_of(scores[ev], is_member[ev])
    f_in, f_out = fit_mask & is_member, fit_mask & ~is_member
    for kind in ("nn", "rf"):
        name = f"art-bb-{kind}-gt"
        scores, secs = run_art_blackbox(
            classifier, kind, seed, (cp[f_in], cy[f_in]), (cp[f_out], cy[f_out]), cy[ev], cp[ev]
        )
        seconds[name] = secs
        half[name] = metrics_of(scores, is_member[ev])

    m = target.metrics
    return {
        "dataset": dataset,
        "seed": seed,
        "training": dataclasses.asdict(target.config),
        "train_accuracy": m["train_accuracy"],
        "test_accuracy": m["test_accuracy"],
        "generalization_gap": m["generalization_gap"],
        "train_seconds": round(train_seconds, 3),
        "audit_seconds": round(audit_seconds, 3),
        "n_members": int(len(split.members)),
        "n_nonmembers": int(len(split.nonmembers)),
        "n_aux": int(len(split.aux)),
        "cross_split_twins": cross_split_twins(ds.x, split.members, split.nonmembers),
        "privguard_attacks": names,
        "skipped": skipped,
        "seconds": seconds,
        "attack_info": extra,
        "all_candidates": full,
        "held_out_half": half,
        "two_references": two,
    }


# -- aggregation, checks, tables --------------------------------------------------------------


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in ("all_candidates", "held_out_half", "two_references"):
        out[block] = {}
        for name, first in runs[0][block].items():
            e = {
                k: summarise([r[block][name].get(k) for r in runs])
                for k in ("auc", "tpr_at_fpr_0.01", "advantage")
            }
            secs = [
                r["seconds"][name] if block != "two_references" else r[block][name]["seconds"]
                for r in runs
            ]
            e["seconds"] = summarise(secs)
            e["n_nonmembers"] = first["n_nonmembers"]
            e["fpr_0.01_false_positives_allowed"] = first.get("fpr_0.01_false_positives_allowed")
            out[block][name] = e
    for k in (
        "train_accuracy",
        "test_accuracy",
        "generalization_gap",
        "train_seconds",
        "audit_seconds",
    ):
        out[k] = summarise([r[k] for r in runs])
    return out


def checks(name: str, agg: dict[str, Any], want: tuple[float, float]) -> list[dict[str, Any]]:
    ratio, floor = want
    a = agg["all_candidates"]
    out = []
    if "lira-online" in a and "loss-threshold" in a:
        lira = a["lira-online"]["tpr_at_fpr_0.01"]["mean"]
        loss = a["loss-threshold"]["tpr_at_fpr_0.01"]["mean"]
        ok = lira >= ratio * loss and lira >= floor
        times = lira / loss if loss > 0 else float("inf")
        out.append(
            {
                "target": name,
                "check": f"LiRA online TPR@1%FPR >= {ratio:g}x loss-threshold and >= {floor:g}",
                "value": f"{lira:.3f} vs {loss:.3f} ({times:.1f}x)",
                "pass": bool(ok),
            }
        )
    t = agg["two_references"]
    if "rmia" in t and "lira-offline" in t:
        r, lo = t["rmia"]["auc"]["mean"], t["lira-offline"]["auc"]["mean"]
        out.append(
            {
                "target": name,
                "check": "RMIA(2 refs) AUC >= LiRA offline(2 refs) AUC",
                "value": f"{r:.3f} vs {lo:.3f}",
                "pass": bool(r >= lo),
            }
        )
    return out


def label(name: str) -> str:
    return ART_LABELS.get(name, f"privguard {name}")


def fmt(e: dict[str, Any], key: str, nseeds: int, digits: int = 3) -> str:
    m = e[key]["mean"]
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    s = f"{m:.{digits}f}"
    return s + (f" ± {e[key]['std']:.{digits}f}" if nseeds > 1 else "")


def rows(block: dict[str, Any], nseeds: int, info: dict[str, Any] | None = None) -> list[list[str]]:
    out = [["attack", "AUC", "TPR@1%FPR", "non-members (FP allowed at 1%)", "seconds"]]
    order = sorted(block, key=lambda n: (n.startswith("art"), -block[n]["tpr_at_fpr_0.01"]["mean"]))
    for n in order:
        e = block[n]
        secs = fmt(e, "seconds", nseeds, 1)
        if info and n in info and info[n].get("shared_models"):
            secs += " (shared refs)"
        out.append(
            [
                label(n),
                fmt(e, "auc", nseeds),
                fmt(e, "tpr_at_fpr_0.01", nseeds),
                f"{e['n_nonmembers']} ({e['fpr_0.01_false_positives_allowed']})",
                secs,
            ]
        )
    return out


def _split(table: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    return table[0], table[1:]


def markdown(results: dict[str, Any]) -> str:
    parts = []
    n = len(results["seeds"])
    for name, t in results["targets"].items():
        agg = t["aggregate"]
        info = t["runs"][0]["attack_info"]
        parts.append(
            f"#### {name}: train acc {agg['train_accuracy']['mean']:.3f}, test acc "
            f"{agg['test_accuracy']['mean']:.3f}, {t['runs'][0]['n_members']} members / "
            f"{t['runs'][0]['n_nonmembers']} non-members / {t['runs'][0]['n_aux']} aux, "
            f"privguard audit {agg['audit_seconds']['mean']:.0f} s, {n} seed(s)\n"
        )
        parts.append("All candidates (no ground truth used by any attack):\n")
        parts.append(markdown_table(*_split(rows(agg["all_candidates"], n, info))) + "\n")
        parts.append("Held-out half (where ART's ground-truth-trained attacks can be scored):\n")
        parts.append(markdown_table(*_split(rows(agg["held_out_half"], n, info))) + "\n")
        parts.append("Two reference models each (classes instantiated directly):\n")
        parts.append(markdown_table(*_split(rows(agg["two_references"], n))) + "\n")
    parts.append("#### Issue targets\n")
    parts.append(
        markdown_table(
            ["target", "check", "measured", ""],
            [
                [c["target"], c["check"], c["value"], "PASS" if c["pass"] else "MISS"]
                for c in results["checks"]
            ],
        )
    )
    return "\n".join(parts)


def plain(results: dict[str, Any]) -> str:
    """The Markdown tables with padded columns, for the terminal."""
    out, block = [], []

    def flush() -> None:
        if block:
            cells = [
                [c.strip() for c in line.strip("|").split("|")]
                for line in block
                if not line.startswith("|---")
            ]
            w = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
            out.extend("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in cells)
            block.clear()

    for line in markdown(results).splitlines():
        if line.startswith("|"):
            block.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 48k-row adult target")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; mean ± std (default 1)")
    ap.add_argument("--only", default="", help="comma-separated target names to run (default all)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results path (default benchmarks/results/membership_vs_art.json, "
        "membership_vs_art_quick.json with --quick)",
    )
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    out_path = args.out or here / "results" / (
        "membership_vs_art_quick.json" if args.quick else "membership_vs_art.json"
    )
    only = parse_only(args.only)

    torch.set_num_threads(1)  # shared/PAPERS.md "Threads"
    quiet_art()
    clock = Clock()
    log = clock.log
    seeds = list(range(args.seeds))
    results: dict[str, Any] = {
        "benchmark": "membership_vs_art",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "machine": machine_info(),
        "versions": versions(),
        "seeds": seeds,
        "quick": args.quick,
        "n_jobs": N_JOBS,
        "notes": [
            "Every attack is scored by privguard.audit.metrics.membership_metrics.",
            "all_candidates: every member and non-member of the target's split; no attack there "
            "uses ground truth.",
            "held_out_half: the half of members and non-members ART's ground-truth-trained "
            "attacks ('-gt') were not fitted on; privguard's figures there are its all-candidate "
            "scores restricted to that half.",
            "privguard seconds: per attack inside one privguard.audit call with n_jobs=2; attacks "
            "that reuse a reference set trained by an earlier attack of the audit are marked "
            "shared. ART seconds include training its shadow model(s).",
            "two_references: LiraOffline(n_reference=2) and RMIA(n_reference=2) on the audit's "
            "Knowledge; RMIA reuses LiRA's 2 offline reference models.",
        ],
        "targets": {},
        "checks": [],
    }
    for name, dataset, overrides, in_quick, want in TARGETS:
        if not selected(name, in_quick, args.quick, only):
            continue
        runs = run_seeds(
            name,
            seeds,
            lambda seed, d=dataset, o=overrides: bench_target(d, o, seed, log),
            log,
            show_load=True,
            record_load=True,
        )
        agg = aggregate(runs)
        results["targets"][name] = {
            "dataset": dataset,
            "training": runs[0]["training"] | {"seed": seeds},
            "aggregate": agg,
            "runs": runs,
        }
        results["checks"] += checks(name, agg, want)
        results["wall_seconds"] = round(clock.elapsed(), 1)
        results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        write_json_atomic(out_path, clean(results))  # after every target: a partial run survives

    print(markdown(results) if args.markdown else plain(results))
    print()
    for c in results["checks"]:
        print(f"{'PASS' if c['pass'] else 'MISS'}  {c['target']}: {c['check']}: {c['value']}")
    load = results["machine"]["load_average_at_end"]
    print(
        f"\nwall time {results['wall_seconds']} s (load average {load} on "
        f"{results['machine']['usable_cpus']} CPUs); results in {out_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
