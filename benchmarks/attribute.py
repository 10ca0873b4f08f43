"""privguard's attribute-inference attacks (and IBM ART's) on tabular targets, side by side.

Same target models, same member / non-member split, same hidden field, same metrics function
(``privguard.audit.attribute_eval.attribute_metrics``) and the same no-model baseline for every
attack: advantage = accuracy - the accuracy of privguard's no-model baseline (the best guess
from the attacker's auxiliary data alone) on the same records, on members and non-members
separately.

- privguard: every registered attack of the ``attribute`` family (today ``fredrikson-map``,
  ``fredrikson-map-aux``, ``confidence-inference``, ``label-only-inference``), in one
  ``privguard.audit(target, attacks=["attribute"], sensitive=field, seed=seed)`` per field. The
  first attack's seconds include the shared no-model baseline.
- ART 1.x (``--art-models``, default ``rf,nn``): ``AttributeInferenceBaseline`` (other features
  only), ``AttributeInferenceBaselineTrueLabel`` (other features + label) and
  ``AttributeInferenceBlackBox`` (other features + label + the target's predicted class), all
  trained on the attacker's auxiliary pool only (``target.split.aux``, where the attacker knows
  the field), never on members' truth. ``AttributeInferenceBlackBox`` needs the target's
  prediction for each attacked record: ART's documentation allows the true label as a proxy,
  which is exactly what privguard's attacker knows (row "label as pred"); a second row passes
  the target's predicted class for the *true* record (row marked †), information privguard's
  attacker does not have (it requires the hidden value).

Run ``python benchmarks/attribute.py --help``; see benchmarks/README.md.
ART is only imported here (the ``bench`` extra); privguard never depends on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
from privguard.attacks import AttributeGuesses, Knowledge, all_attacks
from privguard.attacks.inversion.attribute_baseline import aux_baseline
from privguard.audit.attribute_eval import attribute_metrics
from privguard.audit.sensitive import sensitive_attribute

REGULARIZED = {"dropout": 0.5, "weight_decay": 1e-3, "early_stopping": True}
# name, dataset, TrainConfig overrides, sensitive fields, in --quick
TARGETS: list[tuple[str, str, dict[str, Any], tuple[str, ...], bool]] = [
    ("adult-mlp", "adult", {"epochs": 20}, ("sex", "race", "marital-status"), False),
    ("heart-disease-mlp-overfit", "heart-disease", {"epochs": 300}, ("sex",), True),
    (
        "heart-disease-mlp-regularized",
        "heart-disease",
        {"epochs": 300, **REGULARIZED},
        ("sex",),
        True,
    ),
    ("diabetes-mlp-overfit", "diabetes", {"epochs": 500, "lr": 3e-3}, ("sex",), True),
    (
        "diabetes-mlp-regularized",
        "diabetes",
        {"epochs": 500, "lr": 3e-3, **REGULARIZED},
        ("sex",),
        True,
    ),
]
METRICS = (
    "accuracy",
    "baseline_accuracy",
    "advantage",
    "accuracy_members",
    "baseline_accuracy_members",
    "advantage_members",
    "accuracy_nonmembers",
    "baseline_accuracy_nonmembers",
    "advantage_nonmembers",
    "member_advantage_gap",
    "balanced_accuracy",
    "baseline_balanced_accuracy",
    "se_members",
    "se_nonmembers",
    "seconds",
)
ART_KINDS = ("baseline", "baseline-true-label", "blackbox", "blackbox-pred")
ART_KNOWS = {
    "baseline": "aux; other features",
    "baseline-true-label": "aux; other features + label",
    "blackbox": "aux + target's labels on aux; label as pred",
    "blackbox-pred": "as above + TARGET OUTPUT ON TRUE RECORD †",
}
SE_NOTE = re.compile(
    r"^advantage(_members|_nonmembers)?[^:]*: [+-][0-9.]+ \(standard error ([0-9.]+)"
)


def privguard_attribute_attacks() -> list[type]:
    return [c for c in all_attacks() if c.family == "attribute"]


def knows(cls) -> str:
    prior = {"fredrikson-map": " + aux marginal", "fredrikson-map-aux": " + aux feature model"}
    return f"{cls.needs.label} queries; label{prior.get(cls.name, '')}"


# -- ART ----------------------------------------------------------------------------------------


def seed_art(attack, model_type: str, seed: int) -> None:
    # ART draws its nn's initialisation and shuffling from the global RNGs, its forest from
    # scikit-learn's default (unseeded) state.
    torch.manual_seed(seed)
    np.random.seed(seed)
    if model_type == "rf":
        attack.attack_model.set_params(random_state=seed, n_jobs=1)


def run_art(
    target, attr, x: np.ndarray, y: np.ndarray, aux: np.ndarray, cand: np.ndarray, model_type, seed
) -> dict[str, tuple[np.ndarray, float, int]]:
    """ART's three attacks (four rows) on the candidates; returns name -> (value index per
    candidate, seconds, model queries)."""
    from art.attacks.inference.attribute_inference import (
        AttributeInferenceBaseline,
        AttributeInferenceBaselineTrueLabel,
        AttributeInferenceBlackBox,
    )

    cols = list(attr.columns)
    if cols != list(range(cols[0], cols[-1] + 1)):
        raise ValueError(f"{attr.name}: ART needs contiguous columns, got {cols}")
    feature = cols[0] if len(cols) == 1 else slice(cols[0], cols[-1] + 1)
    part = np.delete(x[cand], cols, axis=1)

    def decode(pred) -> np.ndarray:
        p = np.asarray(pred, dtype=np.float64).reshape(len(cand), -1)
        return ((p[:, None, :] - attr.codes[None]) ** 2).sum(axis=2).argmin(axis=1)

    out: dict[str, tuple[np.ndarray, float, int]] = {}
    t0 = time.perf_counter()
    a = AttributeInferenceBaseline(attack_model_type=model_type, attack_feature=feature)
    seed_art(a, model_type, seed)
    a.fit(x[aux])
    out["baseline"] = (decode(a.infer(part)), time.perf_counter() - t0, 0)

    t0 = time.perf_counter()
    a = AttributeInferenceBaselineTrueLabel(attack_model_type=model_type, attack_feature=feature)
    seed_art(a, model_type, seed)
    a.fit(x[aux], y[aux])
    out["baseline-true-label"] = (decode(a.infer(part, y=y[cand])), time.perf_counter() - t0, 0)

    t0 = time.perf_counter()
    clf = art_classifier(
        target.predictor.module, (x.shape[1],), target.n_classes, clip_values=None, count=True
    )
    a = AttributeInferenceBlackBox(clf, attack_model_type=model_type, attack_feature=feature)
    seed_art(a, model_type, seed)
    a.fit(x[aux], y[aux])  # queries the target on the auxiliary records
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    guess = a.infer(part, y=y[cand], pred=y[cand].reshape(-1, 1))  # the known label as pred
    out["blackbox"] = (decode(guess), fit_seconds + time.perf_counter() - t0, clf.queries)
    # ART's documented usage: the target's prediction for the attacked record itself, which
    # needs the record's hidden value (a query privguard's attacker cannot make).
    t0 = time.perf_counter()
    pred = target.predict_proba(x[cand]).argmax(axis=1).reshape(-1, 1)
    guess = a.infer(part, y=y[cand], pred=pred)
    out["blackbox-pred"] = (
        decode(guess),
        fit_seconds + time.perf_counter() - t0,
        clf.queries + len(cand),
    )
    return out


# -- one target, one seed -----------------------------------------------------------------------


def standard_errors(notes: list[str]) -> dict[str, float]:
    """The paired standard errors of the advantages, from attribute_metrics' notes."""
    out = {}
    for note in notes:
        m = SE_NOTE.match(note)
        if m:
            out["se" + (m.group(1) or "")] = float(m.group(2))
    return out


def entry(metrics: dict[str, Any], notes: list[str], seconds: float, queries: int):
    e = {k: metrics[k] for k in METRICS if k in metrics}
    e.update(standard_errors(notes))
    e["seconds"] = round(float(seconds), 4)
    e["queries"] = int(queries)
    return e


def bench_field(target, ds, field: str, seed: int, art_models, log) -> dict[str, Any]:
    log(f"  {field}: privguard, one audit")
    t0 = time.perf_counter()
    report = privguard.audit(target, attacks=["attribute"], sensitive=field, seed=seed)
    audit_seconds = time.perf_counter() - t0
    pg: dict[str, Any] = {}
    for res in report.attacks:
        pg[res.name] = entry(res.metrics, res.notes, res.seconds, res.queries)
        pg[res.name]["risk"] = res.risk
        pg[res.name]["notes"] = res.notes
    first = next(iter(pg.values()))
    baseline = {
        k.replace("baseline_", ""): first[k]
        for k in (
            "baseline_accuracy",
            "baseline_accuracy_members",
            "baseline_accuracy_nonmembers",
            "baseline_balanced_accuracy",
        )
    }

    # The same records, truth and baseline guesses for ART's attacks.
    attr = sensitive_attribute(ds, field)
    split = target.split
    x = ds.x.reshape(len(ds), -1).astype(np.float32)
    cand = np.concatenate([split.members, split.nonmembers])
    is_member = np.r_[np.ones(len(split.members), bool), np.zeros(len(split.nonmembers), bool)]
    truth = attr.decode(x[cand])
    partial = x[cand].copy()
    partial[:, attr.columns] = np.nan
    know = Knowledge(
        aux_x=ds.x[split.aux],
        aux_y=ds.y[split.aux],
        seed=seed,
        kind="tabular",
        sensitive=attr,
        partial_x=partial,
        partial_y=ds.y[cand],
    )
    base = aux_baseline(know).guesses
    art: dict[str, Any] = {}
    for model_type in art_models:
        log(f"  {field}: ART ({model_type} attack models)")
        for kind, (guess, secs, queries) in run_art(
            target, attr, x, ds.y, split.aux, cand, model_type, seed
        ).items():
            m, _, notes = attribute_metrics(
                AttributeGuesses(values=guess, baseline=base), truth, is_member, attr.values
            )
            art[f"art-{kind}-{model_type}"] = entry(m, notes, secs, queries)
    # Check: privguard's baseline recomputed here scores what the audit's did.
    check = art[next(iter(art))]["baseline_accuracy"] if art else baseline["accuracy"]
    if abs(check - baseline["accuracy"]) > 1e-9:
        log(f"  WARNING: baseline accuracy differs ({check} vs {baseline['accuracy']})")
    counts = np.bincount(truth, minlength=len(attr.values))
    return {
        "field": field,
        "values": list(attr.values),
        "majority_share": round(float(counts.max() / counts.sum()), 6),
        "audit_seconds": round(audit_seconds, 3),
        "baseline": baseline,
        "privguard": pg,
        "art": art,
    }


def bench_target(
    dataset: str, overrides: dict[str, Any], fields, seed: int, art_models, log
) -> dict[str, Any]:
    t0 = time.perf_counter()
    target = privguard.train(dataset, privguard.TrainConfig(seed=seed, **overrides))
    train_seconds = time.perf_counter() - t0
    ds = target.load_data()
    m = target.metrics
    return {
        "dataset": dataset,
        "seed": seed,
        "training": dataclasses.asdict(target.config),
        "train_accuracy": m["train_accuracy"],
        "test_accuracy": m["test_accuracy"],
        "generalization_gap": m["generalization_gap"],
        "train_seconds": round(train_seconds, 3),
        "n_members": int(len(target.split.members)),
        "n_nonmembers": int(len(target.split.nonmembers)),
        "n_aux": int(len(target.split.aux)),
        "fields": {f: bench_field(target, ds, f, seed, art_models, log) for f in fields},
    }


# -- aggregation --------------------------------------------------------------------------------


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"fields": {}}
    for field in runs[0]["fields"]:
        fr = [r["fields"][field] for r in runs]
        f: dict[str, Any] = {
            "values": fr[0]["values"],
            "majority_share": summarise([x["majority_share"] for x in fr]),
            "baseline": {k: summarise([x["baseline"][k] for x in fr]) for k in fr[0]["baseline"]},
            "audit_seconds": summarise([x["audit_seconds"] for x in fr]),
        }
        for block in ("privguard", "art"):
            f[block] = {}
            for name in fr[0][block]:
                keys = [k for k in METRICS if all(k in x[block][name] for x in fr)]
                f[block][name] = {k: summarise([x[block][name][k] for x in fr]) for k in keys}
        out["fields"][field] = f
    for k in ("train_accuracy", "test_accuracy", "generalization_gap", "train_seconds"):
        out[k] = summarise([r[k] for r in runs])
    return out


def gap_se(e: dict[str, Any], nseeds: int) -> float | None:
    """Standard error of the mean member-advantage gap: per seed sqrt(se_m^2 + se_n^2) (paired
    per-record errors, members and non-members independent), averaged, over sqrt(seeds)."""
    if "se_members" not in e or "se_nonmembers" not in e:
        return None
    se = math.hypot(e["se_members"]["mean"], e["se_nonmembers"]["mean"])
    return se / math.sqrt(nseeds)


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's attribute targets: an advantage over the no-model baseline reported on every
    target (INFO); on an overfit target, member advantage above non-member advantage (PASS when
    the gap is at least two standard errors above zero, per attack)."""
    nseeds = len(results["seeds"])
    out = []
    for tname, t in results["targets"].items():
        for field, f in t["aggregate"]["fields"].items():
            pg = f["privguard"]
            best = max(pg, key=lambda n: pg[n]["advantage"]["mean"])
            best_m = max(pg, key=lambda n: pg[n]["advantage_members"]["mean"])
            adv, adv_m = pg[best]["advantage"]["mean"], pg[best_m]["advantage_members"]["mean"]
            out.append(
                {
                    "target": tname,
                    "field": field,
                    "goal": "advantage over the no-model baseline (reported)",
                    "measured": f"best {best} {adv:+.3f} on all records; best on members "
                    f"{best_m} {adv_m:+.3f}",
                    "status": "INFO",
                }
            )
            if "overfit" in tname:
                for name in pg:
                    e = pg[name]
                    gap = e["member_advantage_gap"]["mean"]
                    se = gap_se(e, nseeds)
                    sig = se is not None and gap > 2 * se
                    out.append(
                        {
                            "target": tname,
                            "field": field,
                            "goal": f"{name}: member advantage > non-member advantage",
                            "measured": (
                                f"members {e['advantage_members']['mean']:+.3f}, non-members "
                                f"{e['advantage_nonmembers']['mean']:+.3f}, gap {gap:+.3f}"
                                + (f" (SE {se:.3f})" if se is not None else "")
                            ),
                            "status": "PASS" if gap > 0 and sig else "MISS",
                        }
                    )
    return out


# -- output -------------------------------------------------------------------------------------


def fmt(e: dict[str, Any], metric: str, nseeds: int, signed: bool = False) -> str:
    if metric not in e:
        return "–"
    m, s = e[metric]["mean"], e[metric]["std"]
    if metric == "seconds":
        return f"{m:.2f}" + (f" ± {s:.2f}" if nseeds > 1 else "")
    sign = "+" if signed else ""
    return f"{m:{sign}.3f}" + (f" ± {s:.3f}" if nseeds > 1 else "")


HEADER = [
    "attack",
    "attacker knows",
    "acc. members",
    "adv. members",
    "acc. non-members",
    "adv. non-members",
    "member gap",
    "balanced acc.",
    "seconds",
]


def table_rows(f: dict[str, Any], nseeds: int, names: dict[str, str]) -> list[list[str]]:
    b = f["baseline"]
    rows = [
        [
            "no-model baseline (privguard)",
            "aux; other features + label",
            fmt(b, "accuracy_members", nseeds),
            "",
            fmt(b, "accuracy_nonmembers", nseeds),
            "",
            "",
            fmt(b, "balanced_accuracy", nseeds),
            "",
        ]
    ]
    for block, label in (("privguard", "privguard "), ("art", "ART ")):
        for name, e in f[block].items():
            rows.append(
                [
                    label + name.removeprefix("art-"),
                    names.get(name, ""),
                    fmt(e, "accuracy_members", nseeds),
                    fmt(e, "advantage_members", nseeds, True),
                    fmt(e, "accuracy_nonmembers", nseeds),
                    fmt(e, "advantage_nonmembers", nseeds, True),
                    fmt(e, "member_advantage_gap", nseeds, True),
                    fmt(e, "balanced_accuracy", nseeds),
                    fmt(e, "seconds", nseeds),
                ]
            )
    return rows


def knowledge_names() -> dict[str, str]:
    names = {c.name: knows(c) for c in privguard_attribute_attacks()}
    for kind, text in ART_KNOWS.items():
        for model in ("rf", "nn"):
            names[f"art-{kind}-{model}"] = text
    return names


def title(tname: str, t: dict[str, Any], field: str, nseeds: int) -> str:
    agg = t["aggregate"]
    f = agg["fields"][field]
    r0 = t["runs"][0]
    return (
        f"{tname}, hidden field {field} ({len(f['values'])} values, majority "
        f"{f['majority_share']['mean']:.0%}): train acc {agg['train_accuracy']['mean']:.3f}, "
        f"test acc {agg['test_accuracy']['mean']:.3f}, {r0['n_members']} members / "
        f"{r0['n_nonmembers']} non-members / {r0['n_aux']} aux, {nseeds} seed(s)"
    )


def check_lines(results: dict[str, Any]) -> list[str]:
    return [
        f"{c['status']:<4}  {c['target']} / {c['field']}: {c['goal']} — {c['measured']}"
        for c in results["checks"]
    ]


def print_tables(results: dict[str, Any]) -> None:
    nseeds = len(results["seeds"])
    names = knowledge_names()
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a privguard dependency
        Console = None
    for tname, t in results["targets"].items():
        for field, f in t["aggregate"]["fields"].items():
            head = title(tname, t, field, nseeds)
            rows = table_rows(f, nseeds, names)
            if Console is not None:
                table = Table(title=head, title_justify="left")
                for i, h in enumerate(HEADER):
                    table.add_column(h, justify="left" if i < 2 else "right", no_wrap=i == 0)
                for r in rows:
                    table.add_row(*r)
                Console(width=180).print(table)
            else:
                print(head)
                print(markdown_table(HEADER, rows))
                print()
    print("\n".join(check_lines(results)))


def markdown(results: dict[str, Any]) -> str:
    nseeds = len(results["seeds"])
    names = knowledge_names()
    parts = []
    for tname, t in results["targets"].items():
        for field, f in t["aggregate"]["fields"].items():
            parts.append(f"#### {title(tname, t, field, nseeds)}\n")
            parts.append(markdown_table(HEADER, table_rows(f, nseeds, names)) + "\n")
    parts.append("#### Issue targets\n")
    parts.append("\n".join(f"- {line}" for line in check_lines(results)) + "\n")
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 48k-row adult target")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; mean ± std (default 1)")
    ap.add_argument(
        "--art-models",
        default="rf,nn",
        help="ART attack-model types to run, comma-separated (rf, nn, ...; '' for none; "
        "default rf,nn; nn is ART's default and costs ~70 s per field on adult)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results path (default benchmarks/results/attribute.json, attribute_quick.json "
        "with --quick)",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    art_models = [m.strip() for m in args.art_models.split(",") if m.strip()]
    bad = [m for m in art_models if m not in ("nn", "rf", "gb", "lr", "dt", "knn", "svm")]
    if bad:
        ap.error(f"unknown ART attack-model type(s): {', '.join(bad)}")
    out = args.out or here / "results" / (
        "attribute_quick.json" if args.quick else "attribute.json"
    )

    torch.set_num_threads(1)  # shared/PAPERS.md "Threads": 2 threads are ~60x slower here
    quiet_art()

    clock = Clock()
    log = clock.log
    seeds = list(range(args.seeds))
    results: dict[str, Any] = {
        **run_header("attribute", argv),
        "seeds": seeds,
        "quick": args.quick,
        "art_models": art_models,
        "privguard_attacks": {c.name: c.needs.label for c in privguard_attribute_attacks()},
        "notes": [
            "Every attack is scored by privguard.audit.attribute_eval.attribute_metrics on the "
            "target's members and non-members (the audit's candidates), against privguard's "
            "no-model baseline guesses (aux_baseline: logistic regression on the auxiliary "
            "records, or the auxiliary mode) for the same records.",
            "privguard: one privguard.audit(attacks=['attribute'], sensitive=field) per field; "
            "seconds are each attack's own, the first attack's including the shared baseline.",
            "ART: trained on the auxiliary pool (target.split.aux) only. blackbox: pred = the "
            "known label (ART's documented proxy); blackbox-pred: pred = the target's predicted "
            "class for the true record (needs the hidden value; privguard's attacker lacks it). "
            "Seconds include fitting; blackbox-pred's repeat blackbox's fit time.",
            "se_members / se_nonmembers: paired standard errors of the advantages (from "
            "attribute_metrics' notes).",
        ],
        "targets": {},
    }
    for name, dataset, overrides, fields, in_quick in TARGETS:
        if args.quick and not in_quick:
            continue
        runs = run_seeds(
            name,
            seeds,
            lambda seed, d=dataset, o=overrides, f=fields: bench_target(
                d, o, f, seed, art_models, log
            ),
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
