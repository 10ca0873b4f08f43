"""privguard's threshold membership attacks vs IBM ART's membership inference, side by side.

Same target models, same member / non-member split, same metrics function
(``privguard.audit.metrics.membership_metrics``) for every attack.

- privguard: ``loss-threshold``, ``confidence-threshold``, ``entropy-threshold``,
  ``modified-entropy-threshold``, each run alone through ``privguard.audit`` (so its seconds
  include the shadow model it trains on the attacker's auxiliary pool), and all four in one
  audit (one shared shadow model) for the total. The attacker never sees ground truth.
- ART 1.x: ``MembershipInferenceBlackBox`` (attack model ``nn`` and ``rf``, ART's defaults
  otherwise) and ``MembershipInferenceBlackBoxRuleBased`` (the gap attack), on a
  ``PyTorchClassifier`` around the target's module. The black-box attack is trained two ways:

  (a) *shadow-trained*: on the outputs of a shadow model trained with the target's recipe on
      half of the auxiliary pool (members) vs the other half (non-members) -- exactly the
      shadow model privguard's attacks use (same halves, same seed), so the two differ only in
      the attack model. No ground truth.
  (b) *ground-truth-trained* (ART's documented usage): fitted on a random 50% of the target's
      true members and non-members and evaluated, with everything else, on the other 50% only.
      This uses knowledge the privguard attacker never has.

Both sides get the same information per record: the target's class-probability vector (what
privguard's ``probs`` oracle returns) and the true label.

Run ``python benchmarks/membership_vs_art.py --help``; see benchmarks/README.md.
ART is only imported here (the ``bench`` extra); privguard never depends on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privguard
from privguard.audit.metrics import membership_metrics
from privguard.audit.runner import cross_split_twins
from privguard.data import Split

PRIVGUARD_ATTACKS = (
    "loss-threshold",
    "confidence-threshold",
    "entropy-threshold",
    "modified-entropy-threshold",
)
ART_SHADOW = ("art-bb-nn", "art-bb-rf")
ART_GT = ("art-bb-nn-gt", "art-bb-rf-gt")
ART_RULE = "art-rule-based"

LABELS = {
    "loss-threshold": "privguard loss-threshold",
    "confidence-threshold": "privguard confidence-threshold",
    "entropy-threshold": "privguard entropy-threshold",
    "modified-entropy-threshold": "privguard modified-entropy-threshold",
    "art-bb-nn": "ART BlackBox nn, shadow-trained",
    "art-bb-rf": "ART BlackBox rf, shadow-trained",
    "art-rule-based": "ART RuleBased (gap attack)",
    "art-bb-nn-gt": "ART BlackBox nn, ground-truth-trained †",
    "art-bb-rf-gt": "ART BlackBox rf, ground-truth-trained †",
}
KNOWLEDGE = {
    **{a: "shadow model on aux" for a in PRIVGUARD_ATTACKS},
    "art-bb-nn": "shadow model on aux",
    "art-bb-rf": "shadow model on aux",
    "art-rule-based": "none",
    "art-bb-nn-gt": "GROUND TRUTH (50%)",
    "art-bb-rf-gt": "GROUND TRUTH (50%)",
}

# name, dataset, TrainConfig overrides, in --quick
TARGETS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("diabetes-mlp-overfit", "diabetes", {"epochs": 500, "lr": 3e-3}, True),
    ("heart-disease-mlp-overfit", "heart-disease", {"epochs": 300}, True),
    ("digits-mlp", "digits", {"epochs": 100}, True),
    ("adult-mlp", "adult", {"epochs": 30}, False),
]

METRICS = ("auc", "tpr_at_fpr_0.01", "advantage", "attacker_advantage", "seconds")


# -- ART --------------------------------------------------------------------------------------


def quiet_art() -> None:
    """ART logs at INFO and warns on import and per call; keep the benchmark's output readable."""
    for name in ("art", "art.estimators", "art.attacks"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"art(\..*)?")


def art_classifier(target: privguard.Target):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=target.predictor.module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=target.input_shape,
        nb_classes=target.n_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


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


# -- one target, one seed ---------------------------------------------------------------------


def metrics_of(scores, decisions, is_member) -> dict[str, float]:
    m, _, _ = membership_metrics(scores, decisions, is_member)
    return m


def with_split(target: privguard.Target, members: np.ndarray, nonmembers: np.ndarray):
    """A shallow copy of ``target`` whose recorded split evaluates only these candidates
    (same model, same auxiliary pool, so privguard's shadow model is unchanged)."""
    s = target.split
    t = object.__new__(type(target))
    t.__dict__.update(target.__dict__)
    t.split = Split(np.sort(members), np.sort(nonmembers), s.aux, s.validation, s.seed)
    return t


def shadow_like_privguard(target, ds, seed: int):
    """The shadow model privguard's threshold attacks train (attacks/membership/threshold.py):
    the aux pool permuted with ``default_rng(seed)``, the first half trained on with the
    target's recipe and seed + 1."""
    aux_x, aux_y = ds.x[target.split.aux], ds.y[target.split.aux]
    order = np.random.default_rng(seed).permutation(len(aux_y))
    k = int(round(len(aux_y) * 0.5))
    ins, outs = order[:k], order[k:]
    t0 = time.perf_counter()
    shadow = target.recipe.fit(aux_x[ins], aux_y[ins], seed=seed + 1)
    p_in, p_out = shadow.predict_proba(aux_x[ins]), shadow.predict_proba(aux_x[outs])
    return (p_in, aux_y[ins]), (p_out, aux_y[outs]), time.perf_counter() - t0


def bench_target(dataset: str, overrides: dict[str, Any], seed: int, log) -> dict[str, Any]:
    t0 = time.perf_counter()
    target = privguard.train(dataset, privguard.TrainConfig(seed=seed, **overrides))
    train_seconds = time.perf_counter() - t0
    ds = target.load_data()
    split = target.split
    members, nonmembers = split.members, split.nonmembers
    cand = np.concatenate([members, nonmembers])
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    cx, cy = ds.x[cand], ds.y[cand]
    cp = target.predict_proba(cx)  # what privguard's probs oracle returns for the candidates

    # Ground-truth half for ART (b): 50% of members and 50% of non-members, seeded.
    rng = np.random.default_rng(10_000 + seed)
    fit_m = np.zeros(len(members), bool)
    fit_m[rng.permutation(len(members))[: len(members) // 2]] = True
    fit_n = np.zeros(len(nonmembers), bool)
    fit_n[rng.permutation(len(nonmembers))[: len(nonmembers) // 2]] = True
    fit_mask = np.r_[fit_m, fit_n]
    ev = ~fit_mask

    full: dict[str, dict[str, float]] = {}
    half: dict[str, dict[str, float]] = {}

    # privguard: each attack alone through the public API (its seconds include its shadow),
    # then all four in one audit (one shared shadow model): what a user runs.
    for name in PRIVGUARD_ATTACKS:
        log(f"  privguard {name}")
        report = privguard.audit(target, attacks=[name], seed=seed)
        (res,) = report.attacks
        full[name] = {**res.metrics, "seconds": res.seconds}
    log("  privguard, all four in one audit")
    t0 = time.perf_counter()
    report = privguard.audit(target, attacks=list(PRIVGUARD_ATTACKS), seed=seed)
    privguard_one_audit = time.perf_counter() - t0
    for res in report.attacks:  # same seed, same shadow: the same numbers as alone
        if res.metrics["auc"] != full[res.name]["auc"]:
            log(f"  WARNING: {res.name} AUC differs between a joint and a lone audit")
    log("  privguard (held-out half)")
    half_target = with_split(target, members[~fit_m], nonmembers[~fit_n])
    report = privguard.audit(half_target, attacks=list(PRIVGUARD_ATTACKS), seed=seed)
    for res in report.attacks:
        half[res.name] = {**res.metrics, "seconds": full[res.name]["seconds"]}

    classifier = art_classifier(target)
    art_attack_seconds: dict[str, float] = {}

    # ART (a): shadow-trained, on privguard's own shadow model.
    log("  ART shadow model")
    shadow_in, shadow_out, shadow_seconds = shadow_like_privguard(target, ds, seed)
    for name, kind in zip(ART_SHADOW, ("nn", "rf"), strict=True):
        log(f"  {LABELS[name]}")
        scores, secs = run_art_blackbox(classifier, kind, seed, shadow_in, shadow_out, cy, cp)
        art_attack_seconds[name] = secs
        secs = round(secs + shadow_seconds, 3)
        full[name] = {**metrics_of(scores, scores >= 0.5, is_member), "seconds": secs}
        half[name] = {**metrics_of(scores[ev], scores[ev] >= 0.5, is_member[ev]), "seconds": secs}

    # ART rule-based: no training.
    log(f"  {LABELS[ART_RULE]}")
    scores, secs = run_art_rule_based(classifier, cx, cy)
    art_attack_seconds[ART_RULE] = secs
    full[ART_RULE] = {**metrics_of(scores, scores >= 0.5, is_member), "seconds": secs}
    half[ART_RULE] = {
        **metrics_of(scores[ev], scores[ev] >= 0.5, is_member[ev]),
        "seconds": secs,
    }

    # ART (b): ground-truth-trained, evaluated on the other half.
    f_in = fit_mask & is_member
    f_out = fit_mask & ~is_member
    for name, kind in zip(ART_GT, ("nn", "rf"), strict=True):
        log(f"  {LABELS[name]}")
        scores, secs = run_art_blackbox(
            classifier,
            kind,
            seed,
            (cp[f_in], cy[f_in]),
            (cp[f_out], cy[f_out]),
            cy[ev],
            cp[ev],
        )
        art_attack_seconds[name] = secs
        half[name] = {**metrics_of(scores, scores >= 0.5, is_member[ev]), "seconds": secs}

    m = target.metrics
    return {
        "dataset": dataset,
        "seed": seed,
        "training": dataclasses.asdict(target.config),
        "train_accuracy": m["train_accuracy"],
        "test_accuracy": m["test_accuracy"],
        "generalization_gap": m["generalization_gap"],
        "train_seconds": round(train_seconds, 3),
        "shadow_seconds": round(shadow_seconds, 3),
        "totals": {
            "privguard_one_audit": round(privguard_one_audit, 3),
            "art_no_ground_truth": round(
                shadow_seconds + sum(art_attack_seconds[n] for n in ART_SHADOW + (ART_RULE,)), 3
            ),
            "art_ground_truth": round(sum(art_attack_seconds[n] for n in ART_GT + (ART_RULE,)), 3),
        },
        "n_members": int(len(members)),
        "n_nonmembers": int(len(nonmembers)),
        "n_aux": int(len(split.aux)),
        "cross_split_twins": cross_split_twins(ds.x, members, nonmembers),
        "all_candidates": full,
        "held_out_half": half,
    }


# -- aggregation ------------------------------------------------------------------------------


def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 6),
        "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 6),
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in ("all_candidates", "held_out_half"):
        out[block] = {}
        for name in runs[0][block]:
            entry = {k: summarise([r[block][name][k] for r in runs]) for k in METRICS}
            entry["n_nonmembers"] = runs[0][block][name]["n_nonmembers"]
            entry["n_members"] = runs[0][block][name]["n_members"]
            entry["fpr_0.01_false_positives_allowed"] = runs[0][block][name][
                "fpr_0.01_false_positives_allowed"
            ]
            out[block][name] = entry
    for k in ("train_accuracy", "test_accuracy", "generalization_gap", "train_seconds"):
        out[k] = summarise([r[k] for r in runs])
    out["totals"] = {k: summarise([r["totals"][k] for r in runs]) for k in runs[0]["totals"]}
    out["cross_split_twins"] = [r["cross_split_twins"] for r in runs]
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None


def best(entries: dict[str, Any], names, metric: str) -> tuple[str, float]:
    name = max(names, key=lambda n: entries[n][metric]["mean"])
    return name, entries[name][metric]["mean"]


def ratios(agg: dict[str, Any]) -> dict[str, Any]:
    """privguard's best / ART's best, per block. ART's field on all candidates holds only the
    attacks without ground truth; on the held-out half it also holds the ground-truth ones."""
    out: dict[str, Any] = {}
    fields = {
        "all_candidates": (ART_SHADOW + (ART_RULE,), "privguard vs ART without ground truth"),
        "held_out_half": (
            ART_SHADOW + (ART_RULE,) + ART_GT,
            "privguard vs ART including the ground-truth-trained attacks",
        ),
    }
    art_total_key = {"all_candidates": "art_no_ground_truth", "held_out_half": "art_ground_truth"}
    for block, (art_names, what) in fields.items():
        e = agg[block]
        r: dict[str, Any] = {"compares": what}
        for metric in ("auc", "tpr_at_fpr_0.01"):
            pg_name, pg = best(e, PRIVGUARD_ATTACKS, metric)
            art_name, art = best(e, art_names, metric)
            r[metric] = {
                "privguard_best": pg_name,
                "privguard": pg,
                "art_best": art_name,
                "art": art,
                "ratio": _ratio(pg, art),
            }
        pg_name, art_name = r["auc"]["privguard_best"], r["auc"]["art_best"]
        pg_s, art_s = e[pg_name]["seconds"]["mean"], e[art_name]["seconds"]["mean"]
        totals = agg["totals"]
        pg_total = totals["privguard_one_audit"]["mean"]
        art_total = totals[art_total_key[block]]["mean"]
        r["seconds"] = {
            "best_auc_attack": {
                "privguard": round(pg_s, 3),
                "art": round(art_s, 3),
                "ratio": _ratio(pg_s, art_s),
            },
            "all_attacks": {
                "privguard": round(pg_total, 3),
                "art": round(art_total, 3),
                "ratio": _ratio(pg_total, art_total),
            },
        }
        out[block] = r
    return out


# -- output -----------------------------------------------------------------------------------


def fmt(entry: dict[str, Any], metric: str, nseeds: int, digits: int = 3) -> str:
    m, s = entry[metric]["mean"], entry[metric]["std"]
    if metric == "seconds":
        return f"{m:.2f}" + (f" ± {s:.2f}" if nseeds > 1 else "")
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if nseeds > 1 else "")


def table_rows(agg: dict[str, Any], block: str, nseeds: int) -> list[list[str]]:
    rows = []
    for name, e in agg[block].items():
        fp = e["fpr_0.01_false_positives_allowed"]
        rows.append(
            [
                LABELS[name],
                KNOWLEDGE[name],
                fmt(e, "auc", nseeds),
                f"{fmt(e, 'tpr_at_fpr_0.01', nseeds)} ({fp}/{e['n_nonmembers']})",
                fmt(e, "advantage", nseeds),
                fmt(e, "attacker_advantage", nseeds),
                fmt(e, "seconds", nseeds),
            ]
        )
    return rows


HEADER = [
    "attack",
    "attacker knows",
    "AUC",
    "TPR@1%FPR (FP/non-mem)",
    "advantage",
    "own-threshold adv.",
    "seconds",
]


def block_title(agg, block: str) -> str:
    any_entry = next(iter(agg[block].values()))
    n_in, n_out = any_entry["n_members"], any_entry["n_nonmembers"]
    if block == "all_candidates":
        return f"all candidates: {n_in} members + {n_out} non-members"
    return (
        f"held-out half: {n_in} members + {n_out} non-members "
        "(† = fitted on the other half's ground truth)"
    )


def target_title(name: str, agg: dict[str, Any], nseeds: int) -> str:
    tr, te = agg["train_accuracy"]["mean"], agg["test_accuracy"]["mean"]
    twins = max(agg["cross_split_twins"])
    return (
        f"{name}: train acc {tr:.3f}, test acc {te:.3f}, gap {tr - te:.3f}, "
        f"{nseeds} seed(s), cross-split twins {twins}"
    )


def print_tables(results: dict[str, Any]) -> None:
    nseeds = len(results["seeds"])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a privguard dependency
        Console = None
    for name, t in results["targets"].items():
        agg = t["aggregate"]
        for block in ("all_candidates", "held_out_half"):
            title = f"{target_title(name, agg, nseeds)}\n{block_title(agg, block)}"
            rows = table_rows(agg, block, nseeds)
            if Console is not None:
                table = Table(title=title, title_justify="left")
                for i, h in enumerate(HEADER):
                    table.add_column(h, justify="left" if i < 2 else "right")
                for r in rows:
                    table.add_row(*r)
                Console(width=150).print(table)
            else:
                print(title)
                print(markdown_table(rows))
                print()


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    nseeds = len(results["seeds"])
    parts = []
    for name, t in results["targets"].items():
        agg = t["aggregate"]
        parts.append(f"### {target_title(name, agg, nseeds)}\n")
        for block in ("all_candidates", "held_out_half"):
            parts.append(f"*{block_title(agg, block)}*\n")
            parts.append(markdown_table(table_rows(agg, block, nseeds)) + "\n")
    return "\n".join(parts)


def _r(entry: dict[str, Any]) -> str:
    if entry["ratio"] is not None:
        return f"{entry['ratio']:.2f}"
    return f"n/a (ART {entry['art']:.3f})"


def ratio_lines(results: dict[str, Any]) -> str:
    """One line per target: privguard's best over ART's best (AUC, TPR@1%FPR, seconds)."""
    lines = [
        "privguard best / ART best (all candidates, no ground truth | held-out half, ART "
        "incl. ground-truth-trained):"
    ]
    for name, t in results["targets"].items():
        a, h = t["ratios"]["all_candidates"], t["ratios"]["held_out_half"]
        lines.append(
            f"  {name}: AUC {_r(a['auc'])} | {_r(h['auc'])}; "
            f"TPR@1%FPR {_r(a['tpr_at_fpr_0.01'])} | {_r(h['tpr_at_fpr_0.01'])}; "
            f"seconds (best-AUC attack) {_r(a['seconds']['best_auc_attack'])}, "
            f"(all attacks) {_r(a['seconds']['all_attacks'])} | "
            f"{_r(h['seconds']['all_attacks'])}"
        )
        tot = t["aggregate"]["totals"]
        lines.append(
            f"    seconds: privguard, four attacks in one audit "
            f"{tot['privguard_one_audit']['mean']:.2f}; ART shadow + nn + rf + rule-based "
            f"{tot['art_no_ground_truth']['mean']:.2f}; ART ground-truth nn + rf + rule-based "
            f"{tot['art_ground_truth']['mean']:.2f}"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    import art
    import sklearn

    return {
        "privguard": privguard.__version__,
        "adversarial-robustness-toolbox": art.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN / inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 48k-row adult target")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; mean ± std (default 1)")
    ap.add_argument(
        "--out",
        type=Path,
        default=here / "results" / "membership_vs_art.json",
        help="JSON results path (default benchmarks/results/membership_vs_art.json)",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")

    torch.set_num_threads(1)  # shared/PAPERS.md "Threads": 2 threads are ~60x slower here
    quiet_art()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    seeds = list(range(args.seeds))
    results: dict[str, Any] = {
        "benchmark": "membership_vs_art",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "machine": machine_info(),
        "versions": versions(),
        "seeds": seeds,
        "quick": args.quick,
        "notes": [
            "Every attack is scored by privguard.audit.metrics.membership_metrics on the same "
            "candidates.",
            "all_candidates: every member and non-member of the target's recorded split; "
            "attacks there use no ground truth.",
            "held_out_half: the half of the members and of the non-members that ART's "
            "ground-truth-trained attacks were not fitted on; '-gt' attacks use ground truth "
            "the privguard attacker never has.",
            "seconds (per attack): privguard attacks each run alone through privguard.audit "
            "(shadow model training included); ART shadow-trained attacks include training the "
            "same shadow model; ART ground-truth-trained attacks are fit + infer only; the "
            "held-out-half block repeats the all-candidates seconds for attacks run on all "
            "candidates.",
            "advantage: max over thresholds of TPR - FPR (the threshold is picked with ground "
            "truth, as in Yeom et al.); attacker_advantage: TPR - FPR of the attacker's own "
            "member calls (privguard: thresholds from its shadow model; ART BlackBox: attack "
            "model probability >= 0.5; ART RuleBased: correctly classified).",
            "totals: privguard_one_audit = the four attacks in one privguard.audit call (one "
            "shared shadow model); art_no_ground_truth = shadow model + BlackBox nn + rf + "
            "RuleBased; art_ground_truth = ground-truth-trained nn + rf + RuleBased. Ratios "
            "'all_attacks' divide privguard_one_audit by art_no_ground_truth (all_candidates) "
            "or art_ground_truth (held_out_half); 'best_auc_attack' divides the per-attack "
            "seconds of the two best-AUC attacks.",
            "Both sides see the target's float64 class probabilities and the true label; ART "
            "casts its features to float32.",
        ],
        "targets": {},
    }
    for name, dataset, overrides, in_quick in TARGETS:
        if args.quick and not in_quick:
            continue
        runs = []
        for seed in seeds:
            log(f"{name} seed {seed}")
            t0 = time.perf_counter()
            run = bench_target(dataset, overrides, seed, log)
            run["wall_seconds"] = round(time.perf_counter() - t0, 2)
            runs.append(run)
        agg = aggregate(runs)
        results["targets"][name] = {
            "dataset": dataset,
            "training": runs[0]["training"] | {"seed": seeds},
            "aggregate": agg,
            "ratios": ratios(agg),
            "runs": runs,
        }
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    # Other work on the machine slows every attack; the load says how much to trust seconds.
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results = clean(results)
    write_json_atomic(args.out, results)

    print_tables(results)
    print(ratio_lines(results))
    if args.markdown:
        print()
        print(markdown(results))
    load = results["machine"]["load_average_at_end"][1]
    print(
        f"\nwall time {results['wall_seconds']} s (5-min load average {load} on "
        f"{results['machine']['usable_cpus']} CPUs); results in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
