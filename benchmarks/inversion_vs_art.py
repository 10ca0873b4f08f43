"""privguard's model-inversion attacks vs IBM ART's MIFace, side by side.

Same target models, same member / non-member split, same evaluator
(``privguard.audit.inversion_eval.InversionEvaluator``: an RBF SVM and a pixel 5-NN trained by
the auditor on all of the data, their consensus, and member closeness) for every attack.

- privguard: every registered attack of the ``inversion`` family (today ``prior-inversion``,
  ``prior-inversion-blackbox``, ``label-only-inversion``; ``mi-face`` and
  ``blackbox-inversion`` join automatically once registered), each run alone through
  ``privguard.audit(target, attacks=[name], access="whitebox", seed=seed)``, so its seconds
  include the generative prior it trains on the attacker's auxiliary pool. Every attack that
  needs less than white-box access is run again against the same model behind an output policy
  that rounds the confidences to 2 decimals (a ``privguard.Target`` whose predictor returns
  ``np.round(p, 2)``; privguard has no output-policy module yet).
- ART 1.x: ``MIFace`` on a ``PyTorchClassifier`` around the target's module (clip values
  (0, 1)), over a small grid of its settings (classifier output: logits or softmax; start:
  zeros, ART's default, or the mean of the attacker's auxiliary images; ``learning_rate``,
  ``max_iter``, ``threshold``, ``window_length``), within ``--art-seconds`` per target. All
  classes are inverted in one batch (``batch_size`` = number of classes). The best setting is
  the one with the highest consensus accuracy, then SVM accuracy, then the fewest seconds.

Run ``python benchmarks/inversion_vs_art.py --help``; see benchmarks/README.md.
ART is only imported here (the ``bench`` extra); privguard never depends on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privguard
from _common import (
    Clock,
    art_classifier,
    finish_run,
    markdown_table,
    quiet_art,
    run_header,
    run_seeds,
    summarise,
)
from privguard.attacks import InversionGuesses, all_attacks
from privguard.audit.inversion_eval import InversionEvaluator
from privguard.oracle import Access

DECIMALS = 2  # the rounding output policy
# name, dataset, TrainConfig overrides, in --quick
TARGETS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("mnist-5k-mlp", "mnist-5k", {"model": "mlp", "epochs": 30}, False),
    ("mnist-5k-cnn", "mnist-5k", {"model": "cnn", "epochs": 10}, False),
    ("digits-mlp", "digits", {"model": "mlp", "epochs": 100}, True),
]
METRICS = (
    "attack_accuracy",
    "attack_accuracy_knn",
    "attack_accuracy_consensus",
    "attack_accuracy_top5",
    "member_closeness",
    "member_closeness_pvalue",
    "mse_to_class_mean",
    "ssim_to_class_mean",
    "queries_per_class",
    "seconds",
    "prior_seconds",
)
# Issue targets (issue 3, "Targets").
WHITEBOX_ACCURACY = 1.0
SPEEDUP = 10.0
BLACKBOX_ACCURACY = 0.9
BLACKBOX_QUERIES = 2000
ROUNDED_ACCURACY = 0.8


def inversion_attacks() -> list[type]:
    return [c for c in all_attacks() if c.family == "inversion" and "image" in c.kinds]


# -- the rounding output policy ---------------------------------------------------------------


class RoundedPredictor:
    """The target's predictor behind an output policy: confidences rounded to ``decimals``.

    No ``loss_gradient``: what sits behind the policy is a black box."""

    def __init__(self, inner, decimals: int = DECIMALS) -> None:
        self.inner = inner
        self.decimals = decimals
        self.n_classes = inner.n_classes
        self.input_shape = tuple(inner.input_shape)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(self.inner.predict_proba(x), dtype=np.float64), self.decimals)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(x), 1e-12, None))


def rounded_target(target: privguard.Target) -> privguard.Target:
    return privguard.Target(
        RoundedPredictor(target.predictor),
        kind=target.kind,
        architecture=target.architecture,
        dataset=target.dataset,
        split=target.split,
        config=target.config,
        metrics=target.metrics,
        estimator=target.estimator,
        path=target.path,
    )


# -- ART ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArtSetting:
    output: str = "logits"  # what the classifier returns: logits or probs (softmax)
    init: str = "zeros"  # zeros (ART's default) or aux-mean (the attacker's auxiliary mean)
    learning_rate: float = 0.1
    max_iter: int = 1000
    threshold: float = 0.99
    window_length: int = 100

    def label(self) -> str:
        return (
            f"{self.output}, init {self.init}, lr {self.learning_rate:g}, "
            f"max_iter {self.max_iter}, threshold {self.threshold:g}, window {self.window_length}"
        )


def run_art(target, setting: ArtSetting, x_aux_mean: np.ndarray, evaluator) -> dict[str, Any]:
    from art.attacks.inference.model_inversion import MIFace

    k = target.n_classes
    y = np.arange(k)
    module = target.predictor.module
    if setting.output == "probs":  # a softmax appended, as in ART's MIFace examples
        module = torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()
    # counts the records asked about: gradient and prediction queries
    clf = art_classifier(
        module, target.input_shape, target.n_classes, count=True, count_gradients=True
    )
    if setting.init == "zeros":
        x0 = np.zeros((k, *target.input_shape), dtype=np.float32)
    else:
        x0 = np.repeat(x_aux_mean[None], k, axis=0).astype(np.float32)
    attack = MIFace(
        clf,
        max_iter=setting.max_iter,
        window_length=setting.window_length,
        threshold=float(setting.threshold),
        learning_rate=float(setting.learning_rate),
        batch_size=k,
        verbose=False,
    )
    t0 = time.perf_counter()
    rec = attack.infer(x0, y)
    seconds = time.perf_counter() - t0
    guesses = InversionGuesses(
        reconstructions=np.asarray(rec, dtype=np.float32),
        labels=y,
        queries_per_class=[clf.queries // k] * k,
    )
    metrics, _, _ = evaluator.evaluate(guesses)
    conf = target.predict_proba(rec)[np.arange(k), y]
    return {
        "setting": dataclasses.asdict(setting),
        "label": setting.label(),
        **metrics,
        "median_target_confidence": round(float(np.median(conf)), 6),
        "seconds": round(seconds, 3),
    }


def art_key(r: dict[str, Any]) -> tuple:
    """Best = most reconstructions both evaluators recognise, then the SVM's figure, then the
    fewest seconds."""
    return (r["attack_accuracy_consensus"], r["attack_accuracy"], -r["seconds"])


def promising_key(r: dict[str, Any]) -> tuple:
    """Which setting to take further: like :func:`art_key`, but ties (common after 100
    iterations) go to the higher target confidence rather than the faster run."""
    return (r["attack_accuracy_consensus"], r["attack_accuracy"], r["median_target_confidence"])


def art_sweep(target, ds, evaluator, cap: float, quick: bool, log) -> dict[str, Any]:
    """Successive grid over MIFace's settings within ``cap`` seconds (estimated from the
    measured seconds per iteration before each run; settings that would overrun are skipped
    and listed)."""
    aux_mean = ds.x[target.split.aux].mean(axis=0)
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    per_iter: dict[str, float] = {}
    spent = 0.0
    done: set[ArtSetting] = set()

    def attempt(s: ArtSetting) -> dict[str, Any] | None:
        nonlocal spent
        if s in done:
            return next(r for r in runs if r["setting"] == dataclasses.asdict(s))
        rate = per_iter.get(s.output, max(per_iter.values(), default=0.0))
        estimate = rate * s.max_iter
        if spent + estimate > cap:
            skipped.append(
                {
                    "setting": dataclasses.asdict(s),
                    "label": s.label(),
                    "estimated_seconds": round(estimate, 1),
                    "reason": f"over the time cap ({spent:.0f} of {cap:.0f} s spent)",
                }
            )
            log(f"    ART skip {s.label()} (est. {estimate:.0f} s)")
            return None
        r = run_art(target, s, aux_mean, evaluator)
        spent += r["seconds"]
        per_iter[s.output] = max(per_iter.get(s.output, 0.0), r["seconds"] / s.max_iter)
        runs.append(r)
        done.add(s)
        log(
            f"    ART {s.label()}: SVM {r['attack_accuracy']:.1f} kNN "
            f"{r['attack_accuracy_knn']:.1f} consensus {r['attack_accuracy_consensus']:.1f} "
            f"{r['seconds']:.1f} s"
        )
        return r

    def best_of(rs, key=promising_key):
        rs = [r for r in rs if r is not None]
        return max(rs, key=key) if rs else None

    # Stage 1: screen outputs x starts x learning rates at 100 iterations.
    stage1 = {}
    for output in ("logits", "probs"):
        for init in ("zeros", "aux-mean"):
            for lr in (0.01, 0.1, 1.0):
                stage1[(output, init, lr)] = attempt(ArtSetting(output, init, lr, 100))
    # Stage 2: each output x start at its best learning rate, 1,000 iterations, the most
    # promising first (so that the cap, if it bites, cuts the least promising).
    heads = []
    for output in ("logits", "probs"):
        for init in ("zeros", "aux-mean"):
            cands = [r for (o, i, _), r in stage1.items() if o == output and i == init and r]
            b = best_of(cands)
            if b is not None:
                heads.append(b)
    stage2 = []
    for b in sorted(heads, key=promising_key, reverse=True):
        s = ArtSetting(**b["setting"])
        stage2.append(attempt(dataclasses.replace(s, max_iter=1000)))
    if not quick:
        # Stage 3: the stopping rule's knobs on the best so far (threshold 1.0 as in ART's
        # MIFace notebook; a short window), then 10x the iterations if the cap allows.
        b = best_of(stage2) or best_of(list(stage1.values()))
        if b is not None:
            s = ArtSetting(**b["setting"])
            attempt(dataclasses.replace(s, threshold=1.0))
            attempt(dataclasses.replace(s, window_length=10))
            b = best_of(runs)
            s = ArtSetting(**b["setting"])
            attempt(dataclasses.replace(s, max_iter=10 * s.max_iter))
    # Last: ART's time at its best accuracy, not at a needless iteration count. Cut the best
    # setting's iterations (10000 -> 3000 -> 1000 -> 300 -> 100 -> 30 -> 10) while the accuracy
    # holds (cheap, so the cap rarely bites).
    b = best_of(runs, key=art_key)
    while b is not None and b["setting"]["max_iter"] > 10:
        s = ArtSetting(**b["setting"])
        fewer = s.max_iter * 3 // 10 if str(s.max_iter).startswith("1") else s.max_iter // 3
        r = attempt(dataclasses.replace(s, max_iter=max(10, fewer)))
        if r is None or art_key(r)[:2] < art_key(b)[:2]:
            break
        b = r
    best = best_of(runs, key=art_key)
    best_svm = max(runs, key=lambda r: (r["attack_accuracy"], -r["seconds"])) if runs else None
    return {
        "cap_seconds": cap,
        "grid_seconds": round(spent, 3),
        "n_runs": len(runs),
        "best": best,
        "best_by_svm": best_svm,
        "runs": runs,
        "skipped": skipped,
    }


# -- one target, one seed -----------------------------------------------------------------------


def pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in METRICS if k in metrics}


PRIOR_NOTE = re.compile(r"generative prior: .* in ([0-9.]+) s")


def result_entry(res) -> dict[str, Any]:
    """One audited attack: its metrics, seconds, queries, risk and notes; ``prior_seconds`` is
    the part of the seconds spent training the generative prior (read from the attack's note,
    when it has one)."""
    entry = {
        **pick(res.metrics),
        "seconds": res.seconds,
        "queries": res.queries,
        "risk": res.risk,
        "notes": res.notes,
    }
    for note in res.notes:
        m = PRIOR_NOTE.search(note)
        if m:
            entry["prior_seconds"] = float(m.group(1))
    return entry


def bench_target(
    dataset: str, overrides: dict[str, Any], seed: int, cap: float, quick: bool, log
) -> dict[str, Any]:
    t0 = time.perf_counter()
    target = privguard.train(dataset, privguard.TrainConfig(seed=seed, **overrides))
    train_seconds = time.perf_counter() - t0
    ds = target.load_data()
    rounded = rounded_target(target)

    privguard_runs: dict[str, dict[str, Any]] = {}
    rounded_runs: dict[str, dict[str, Any]] = {}
    access: dict[str, str] = {}
    for cls in inversion_attacks():
        access[cls.name] = cls.needs.label
        log(f"  privguard {cls.name}")
        report = privguard.audit(target, attacks=[cls.name], access="whitebox", seed=seed)
        (res,) = report.attacks
        privguard_runs[cls.name] = result_entry(res)
        if cls.needs < Access.WHITEBOX:
            log(f"  privguard {cls.name}, confidences rounded to {DECIMALS} decimals")
            report = privguard.audit(rounded, attacks=[cls.name], access="probs", seed=seed)
            (res,) = report.attacks
            rounded_runs[cls.name] = result_entry(res)
    # What a user runs: every inversion attack in one audit, one shared generative prior.
    log("  privguard, every inversion attack in one audit")
    t0 = time.perf_counter()
    report = privguard.audit(target, attacks=["inversion"], access="whitebox", seed=seed)
    one_audit = {
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "attack_seconds": round(sum(r.seconds for r in report.attacks), 3),
        "attacks": [r.name for r in report.attacks],
    }

    log("  ART MIFace grid")
    evaluator = InversionEvaluator(ds, target.split, seed)  # what the audit builds
    art = art_sweep(target, ds, evaluator, cap, quick, log)

    m = target.metrics
    return {
        "dataset": dataset,
        "seed": seed,
        "training": dataclasses.asdict(target.config),
        "train_accuracy": m["train_accuracy"],
        "test_accuracy": m["test_accuracy"],
        "train_seconds": round(train_seconds, 3),
        "n_members": int(len(target.split.members)),
        "n_nonmembers": int(len(target.split.nonmembers)),
        "n_aux": int(len(target.split.aux)),
        "access": access,
        "privguard": privguard_runs,
        "privguard_rounded": rounded_runs,
        "privguard_one_audit": one_audit,
        "art": art,
    }


# -- aggregation --------------------------------------------------------------------------------


def aggregate_block(entries: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in METRICS if all(k in e for e in entries)]
    return {k: summarise([e[k] for e in entries]) for k in keys}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"privguard": {}, "privguard_rounded": {}}
    for block in ("privguard", "privguard_rounded"):
        for name in runs[0][block]:
            out[block][name] = aggregate_block([r[block][name] for r in runs])
    out["art_best"] = aggregate_block([r["art"]["best"] for r in runs if r["art"]["best"]])
    out["art_best_by_svm"] = aggregate_block(
        [r["art"]["best_by_svm"] for r in runs if r["art"]["best_by_svm"]]
    )
    out["art_best_settings"] = [r["art"]["best"]["label"] for r in runs if r["art"]["best"]]
    out["art_best_by_svm_settings"] = [
        r["art"]["best_by_svm"]["label"] for r in runs if r["art"]["best_by_svm"]
    ]
    out["art_grid_seconds"] = summarise([r["art"]["grid_seconds"] for r in runs])
    for k in ("train_accuracy", "test_accuracy", "train_seconds"):
        out[k] = summarise([r[k] for r in runs])
    # Speed: ART's best setting's seconds over each privguard white-box attack's seconds,
    # per seed, then averaged.
    out["speedup_vs_art_best"] = {}
    out["art_at_privguard_accuracy"] = {}
    for name, acc in runs[0]["access"].items():
        if acc == "whitebox" and all(r["art"]["best"] for r in runs):
            out["speedup_vs_art_best"][name] = summarise(
                [
                    r["art"]["best"]["seconds"] / max(r["privguard"][name]["seconds"], 1e-9)
                    for r in runs
                ]
            )
            out["art_at_privguard_accuracy"][name] = [
                art_reaching(r["art"]["runs"], r["privguard"][name]) for r in runs
            ]
    out["one_audit_seconds"] = summarise([r["privguard_one_audit"]["attack_seconds"] for r in runs])
    return out


def art_reaching(art_runs: list[dict[str, Any]], pg: dict[str, Any]) -> dict[str, Any] | None:
    """ART's fastest grid setting whose SVM and consensus accuracies both reach the privguard
    attack's (``None``: no setting of the grid did)."""
    ok = [
        r
        for r in art_runs
        if r["attack_accuracy"] >= pg["attack_accuracy"]
        and r["attack_accuracy_consensus"] >= pg["attack_accuracy_consensus"]
    ]
    if not ok:
        return None
    r = min(ok, key=lambda r: r["seconds"])
    return {
        "label": r["label"],
        "seconds": r["seconds"],
        "speedup": round(r["seconds"] / max(pg["seconds"], 1e-9), 4),
    }


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, pass / miss per target and attack, from the seed means. Accuracy
    targets are checked on the SVM figure (the issue's evaluator) and on the consensus of the
    SVM and the pixel 5-NN; both must meet the target for a pass."""
    out: list[dict[str, Any]] = []
    for tname, t in results["targets"].items():
        agg, acc = t["aggregate"], t["runs"][0]["access"]
        art_best = agg["art_best"]
        for name, e in agg["privguard"].items():
            svm, cons = e["attack_accuracy"]["mean"], e["attack_accuracy_consensus"]["mean"]
            if acc[name] == "whitebox":
                speed = agg["speedup_vs_art_best"].get(name, {}).get("mean")
                ok = svm >= WHITEBOX_ACCURACY and cons >= WHITEBOX_ACCURACY
                out.append(
                    {
                        "target": tname,
                        "attack": name,
                        "goal": "white-box attack accuracy 1.0",
                        "measured": f"SVM {svm:.2f}, consensus {cons:.2f}",
                        "pass": ok,
                    }
                )
                art_acc = art_best.get("attack_accuracy_consensus", {}).get("mean")
                reach = agg["art_at_privguard_accuracy"].get(name, [])
                if reach and all(x is not None for x in reach):
                    r_s = np.mean([x["seconds"] for x in reach])
                    reached = f"; ART's fastest setting at this accuracy: {r_s:.2f} s"
                else:
                    reached = f"; no ART setting reached SVM {svm:.2f} and consensus {cons:.2f}"
                out.append(
                    {
                        "target": tname,
                        "attack": name,
                        "goal": f">= {SPEEDUP:g}x faster than ART MIFace at its best setting, "
                        "at accuracy 1.0",
                        "measured": (
                            f"{speed_text(speed)} (ART best {art_best['seconds']['mean']:.2f} s at "
                            f"consensus {art_acc:.2f}; privguard {e['seconds']['mean']:.2f} s at "
                            f"consensus {cons:.2f}{reached})"
                            if speed is not None
                            else "no ART run"
                        ),
                        "pass": bool(speed is not None and speed >= SPEEDUP and ok),
                    }
                )
            elif acc[name] in ("probs", "logits"):
                q = e.get("queries_per_class", {}).get("mean", float("inf"))
                out.append(
                    {
                        "target": tname,
                        "attack": name,
                        "goal": f"black-box from {acc[name]}: >= {BLACKBOX_ACCURACY} with <= "
                        f"{BLACKBOX_QUERIES:,} queries/class",
                        "measured": f"SVM {svm:.2f}, consensus {cons:.2f}, {q:.0f} queries/class",
                        "pass": svm >= BLACKBOX_ACCURACY
                        and cons >= BLACKBOX_ACCURACY
                        and q <= BLACKBOX_QUERIES,
                    }
                )
                r = agg["privguard_rounded"].get(name)
                if r is not None:
                    rs, rc = r["attack_accuracy"]["mean"], r["attack_accuracy_consensus"]["mean"]
                    rq = r.get("queries_per_class", {}).get("mean", float("nan"))
                    out.append(
                        {
                            "target": tname,
                            "attack": name,
                            "goal": f"confidences rounded to {DECIMALS} decimals: >= "
                            f"{ROUNDED_ACCURACY}",
                            "measured": f"SVM {rs:.2f}, consensus {rc:.2f}, {rq:.0f} queries/class",
                            "pass": rs >= ROUNDED_ACCURACY and rc >= ROUNDED_ACCURACY,
                        }
                    )
    return out


# -- output -------------------------------------------------------------------------------------


def speed_text(x: float) -> str:
    return f"{x:.1f}x" if x >= 1 else f"{x:.2g}x"


def fmt(entry: dict[str, Any], metric: str, nseeds: int, digits: int = 2) -> str:
    if metric not in entry:
        return "–"
    m, s = entry[metric]["mean"], entry[metric]["std"]
    if metric == "queries_per_class":
        return f"{m:,.0f}" + (f" ± {s:,.0f}" if nseeds > 1 else "")
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if nseeds > 1 else "")


HEADER = [
    "attack",
    "access",
    "acc. SVM",
    "acc. kNN",
    "acc. both",
    "member closeness (p)",
    "queries/class",
    "seconds",
    "speed vs ART",
]


def table_rows(t: dict[str, Any], nseeds: int) -> list[list[str]]:
    agg, acc = t["aggregate"], t["runs"][0]["access"]
    rows = []

    def row(label: str, access: str, e: dict[str, Any], speed: str) -> list[str]:
        return [
            label,
            access,
            fmt(e, "attack_accuracy", nseeds),
            fmt(e, "attack_accuracy_knn", nseeds),
            fmt(e, "attack_accuracy_consensus", nseeds),
            f"{fmt(e, 'member_closeness', nseeds)} ({fmt(e, 'member_closeness_pvalue', 1)})",
            fmt(e, "queries_per_class", nseeds),
            fmt(e, "seconds", nseeds)
            + (f" (prior {e['prior_seconds']['mean']:.2f})" if "prior_seconds" in e else ""),
            speed,
        ]

    for name, e in agg["privguard"].items():
        sp = agg["speedup_vs_art_best"].get(name)
        speed = speed_text(sp["mean"]) + (f" ± {sp['std']:.2g}" if nseeds > 1 else "") if sp else ""
        rows.append(row(f"privguard {name}", acc[name], e, speed))
    for name, e in agg["privguard_rounded"].items():
        rows.append(
            row(f"privguard {name}, rounded to {DECIMALS} dp", f"{acc[name]} (rounded)", e, "")
        )
    if agg["art_best"]:
        rows.append(row("ART MIFace, best setting ‡", "whitebox", agg["art_best"], "1.0x"))
    if agg["art_best_by_svm_settings"] != agg["art_best_settings"] and agg["art_best_by_svm"]:
        rows.append(row("ART MIFace, best by SVM alone ‡", "whitebox", agg["art_best_by_svm"], ""))
    return rows


def target_title(name: str, t: dict[str, Any], nseeds: int) -> str:
    agg = t["aggregate"]
    tr, te = agg["train_accuracy"]["mean"], agg["test_accuracy"]["mean"]
    r0 = t["runs"][0]
    return (
        f"{name}: train acc {tr:.3f}, test acc {te:.3f}, {r0['n_members']} members / "
        f"{r0['n_nonmembers']} non-members / {r0['n_aux']} aux, {nseeds} seed(s)"
    )


def art_note(t: dict[str, Any]) -> str:
    agg = t["aggregate"]
    runs = t["runs"]
    best = "; ".join(dict.fromkeys(agg["art_best_settings"]))
    svm = "; ".join(dict.fromkeys(agg["art_best_by_svm_settings"]))
    n = ", ".join(str(r["art"]["n_runs"]) for r in runs)
    sk = ", ".join(str(len(r["art"]["skipped"])) for r in runs)
    s = (
        f"All privguard inversion attacks in one audit (one shared prior): "
        f"{agg['one_audit_seconds']['mean']:.2f} s. "
        f"‡ ART best setting: {best}. Grid: {n} settings run in "
        f"{agg['art_grid_seconds']['mean']:.0f} s (cap {runs[0]['art']['cap_seconds']:.0f} s), "
        f"{sk} skipped for the cap."
    )
    if svm != best:
        s += f" Best by SVM alone: {svm}."
    return s


GRID_HEADER = ["ART MIFace setting", "acc. SVM", "acc. kNN", "consensus", "queries/class", "s"]


def grid_rows(run: dict[str, Any]) -> list[list[str]]:
    rows = [
        [
            r["label"],
            f"{r['attack_accuracy']:.1f}",
            f"{r['attack_accuracy_knn']:.1f}",
            f"{r['attack_accuracy_consensus']:.1f}",
            f"{r['queries_per_class']:,.0f}",
            f"{r['seconds']:.1f}",
        ]
        for r in run["art"]["runs"]
    ]
    rows += [
        [f"{r['label']} (skipped: est. {r['estimated_seconds']:.0f} s)", "", "", "", "", ""]
        for r in run["art"]["skipped"]
    ]
    return rows


def check_lines(results: dict[str, Any]) -> list[str]:
    return [
        f"{'PASS' if c['pass'] else 'MISS'}  {c['target']} / {c['attack']}: {c['goal']} — "
        f"{c['measured']}"
        for c in results["checks"]
    ]


def print_tables(results: dict[str, Any]) -> None:
    nseeds = len(results["seeds"])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a privguard dependency
        Console = None
    for name, t in results["targets"].items():
        title = target_title(name, t, nseeds)
        rows = table_rows(t, nseeds)
        if Console is not None:
            table = Table(
                title=title, title_justify="left", caption=art_note(t), caption_justify="left"
            )
            for i, h in enumerate(HEADER):
                table.add_column(h, justify="left" if i < 2 else "right", no_wrap=i < 2)
            for r in rows:
                table.add_row(*r)
            Console(width=180).print(table)
        else:
            print(title)
            print(markdown_table(HEADER, rows))
            print(art_note(t))
            print()
    print("\n".join(check_lines(results)))


def markdown(results: dict[str, Any]) -> str:
    nseeds = len(results["seeds"])
    parts = []
    for name, t in results["targets"].items():
        parts.append(f"#### {target_title(name, t, nseeds)}\n")
        parts.append(markdown_table(HEADER, table_rows(t, nseeds)) + "\n")
        parts.append(art_note(t) + "\n")
        parts.append(
            f"<details><summary>ART MIFace grid, seed {t['runs'][0]['seed']}</summary>\n\n"
            + markdown_table(GRID_HEADER, grid_rows(t["runs"][0]))
            + "\n\n</details>\n"
        )
    parts.append("#### Issue targets\n")
    parts.append("\n".join(f"- {line}" for line in check_lines(results)) + "\n")
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="digits only, and a short ART grid (stages 1-2)"
    )
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; mean ± std (default 1)")
    ap.add_argument(
        "--art-seconds",
        type=float,
        default=None,
        help="time cap for ART's MIFace grid per target and seed (default 200; 30 with --quick)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results path (default benchmarks/results/inversion_vs_art.json, "
        "inversion_vs_art_quick.json with --quick)",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    cap = args.art_seconds if args.art_seconds is not None else (30.0 if args.quick else 200.0)
    if cap <= 0:
        ap.error("--art-seconds must be positive")
    out = args.out or here / "results" / (
        "inversion_vs_art_quick.json" if args.quick else "inversion_vs_art.json"
    )

    torch.set_num_threads(1)  # shared/PAPERS.md "Threads": 2 threads are ~60x slower here
    quiet_art()

    clock = Clock()
    log = clock.log
    seeds = list(range(args.seeds))
    results: dict[str, Any] = {
        **run_header("inversion_vs_art", argv),
        "seeds": seeds,
        "quick": args.quick,
        "art_seconds_cap": cap,
        "privguard_attacks": {c.name: c.needs.label for c in inversion_attacks()},
        "notes": [
            "Every reconstruction is scored by privguard.audit.inversion_eval.InversionEvaluator "
            "(built with the target's split and the run's seed, as privguard.audit does): "
            "attack_accuracy = RBF SVM, attack_accuracy_knn = pixel 5-NN, "
            "attack_accuracy_consensus = both; member_closeness with a one-sided binomial "
            "p-value (0.5 = no member-specific signal).",
            "privguard attacks: each alone through privguard.audit(access='whitebox'); seconds "
            "are the attack's own (generative prior training included, evaluator excluded).",
            f"privguard_rounded: attacks needing less than white-box access, against a Target "
            f"whose predictor rounds confidences to {DECIMALS} decimals (audit access 'probs').",
            "ART MIFace: PyTorchClassifier(target module [+ softmax], clip_values=(0, 1)), "
            "batch_size = n_classes; seconds = MIFace.infer only; queries_per_class counts the "
            "records passed to class_gradient and predict. Best = highest consensus, then SVM, "
            "then fewest seconds (stage-to-stage promotion breaks ties by median target "
            "confidence instead of seconds).",
            "speedup_vs_art_best: ART best setting's seconds / the privguard attack's seconds, "
            "per seed, averaged.",
        ],
        "targets": {},
    }
    for name, dataset, overrides, in_quick in TARGETS:
        if args.quick and not in_quick:
            continue
        runs = run_seeds(
            name,
            seeds,
            lambda seed, d=dataset, o=overrides: bench_target(d, o, seed, cap, args.quick, log),
            log,
        )
        results["targets"][name] = {
            "dataset": dataset,
            "training": runs[0]["training"] | {"seed": seeds},
            "aggregate": aggregate(runs),
            "runs": runs,
        }
    results["checks"] = checks(results)
    finish_run(
        results,
        out,
        clock.start,
        print_tables=print_tables,
        markdown=markdown if args.markdown else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
