"""The report's view model: what ``report.html`` and ``model-card.md`` show, formatted.

:func:`build_view` turns the JSON-safe report (:mod:`privguard.audit.report.serialize`) into
rows, labels and plots, so the templates hold layout only. The labels, the plain-language help
for each metric and the key metrics that sum an attack up live here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from privguard.audit.families import key_metrics as family_key_metrics
from privguard.audit.report import RISK_LEVELS, Report
from privguard.audit.report.figures import (
    attack_plots,
    extraction_overlay,
    is_table,
    membership_overlay,
)
from privguard.audit.report.serialize import report_dict

METRIC_LABELS = {
    "auc": "AUC",
    "tpr_at_fpr_0.01": "TPR@1%FPR",
    "tpr_at_fpr_0.001": "TPR@0.1%FPR",
    "mse_to_class_mean": "MSE to class mean",
    "epsilon_lower_bound": "ε lower bound",
    "advantage_members": "members' advantage",
    "member_advantage_gap": "member gap",
    "attack_accuracy_consensus": "consensus accuracy",
}

# Plain-language meaning of the metrics whose definition is fixed; others link to the docs.
METRIC_HELP: dict[str, str] = {
    "auc": "Area under the ROC curve; 0.5 is chance, 1.0 a perfect attack.",
    "advantage": "Largest TPR − FPR over all thresholds; 0 is chance.",
    "tpr_at_fpr_0.01": "Share of members found while wrongly flagging 1% of non-members.",
    "tpr_at_fpr_0.001": "Share of members found while wrongly flagging 0.1% of non-members.",
    "n_members": "Training records (members) the attack was scored on.",
    "n_nonmembers": "Held-out records (non-members) the attack was scored on.",
    "fpr_0.01_false_positives_allowed": "Non-members that may be wrongly flagged at 1% FPR.",
    "fpr_0.001_false_positives_allowed": "Non-members that may be wrongly flagged at 0.1% FPR.",
    "attacker_threshold_tpr": "TPR at the threshold the attacker chose without ground truth.",
    "attacker_threshold_fpr": "FPR at the threshold the attacker chose without ground truth.",
    "attacker_accuracy": "Accuracy at the threshold the attacker chose without ground truth.",
    "attacker_tpr": "TPR of the attacker's own decisions, made without ground truth.",
    "attacker_fpr": "FPR of the attacker's own decisions, made without ground truth.",
    "attacker_advantage": "TPR − FPR of the attacker's own decisions.",
    "attacker_balanced_accuracy": "Mean of TPR and 1 − FPR of the attacker's own decisions.",
    "attack_accuracy": "Share of reconstructions an independent RBF SVM labels as their class.",
    "attack_accuracy_top5": "Share whose class is among the SVM's five highest scores.",
    "attack_accuracy_knn": "Share an independent pixel 5-NN labels as their class.",
    "attack_accuracy_consensus": "Share both independent evaluators label as their class.",
    "mse_to_class_mean": "Mean squared error to the mean of the class's training members.",
    "ssim_to_class_mean": "Structural similarity to that class mean; 1 = identical.",
    "nearest_member_distance": "Mean L2 distance to the nearest training member of the class.",
    "nearest_nonmember_distance": "Mean L2 distance to the nearest non-member of the class.",
    "member_closeness": (
        "Chance the nearest member is nearer than the nearest non-member (equal-size sets); "
        "0.5 = no member-specific signal."
    ),
    "member_closeness_pvalue": "Binomial test of member closeness against 0.5 (one-sided).",
    "n_reconstructions": "Reconstructions scored.",
    "queries_per_class": "Mean oracle queries spent per reconstructed class.",
    "accuracy": "Share of hidden values guessed right with the model's help.",
    "baseline_accuracy": "Share guessed right from the attacker's auxiliary data alone.",
    "advantage_members": "Accuracy beyond the no-model baseline, on training members.",
    "advantage_nonmembers": "Accuracy beyond the no-model baseline, on non-members.",
    "member_advantage_gap": "Members' advantage minus non-members': leakage specific to members.",
    "n_missing_excluded": "Records whose sensitive value is missing, left out of the scores.",
    "balanced_accuracy": "Mean recall over the field's values.",
    "fidelity": "Share of held-out records on which the stolen model agrees with the target.",
    "fidelity_uniform": "Share of uniform random inputs on which the copy agrees with the target.",
    "fidelity_baseline": "Agreement of a constant guess (the target's most frequent answer).",
    "target_accuracy": "Accuracy of the target itself on the same held-out records.",
    "queries_to_95_fidelity": "Queries after which the copy first agreed on 95% of records.",
    "max_parameter_error": "Largest error of the recovered parameters (logit differences).",
    "n_eval": "Held-out records the copy was scored on.",
    "epsilon_lower_bound": "Differential-privacy ε that the measured attack rules out below.",
    "exposure_bits_max": "log2 |R|: the exposure of a canary ranked first among all candidates.",
    "exposure_bits_top_repeats": "Mean exposure (bits) of the canaries inserted most often.",
    "exposure_bits_reference_mean": "Mean exposure of random non-inserted candidates (≈ 1/ln 2).",
    "precision_at_100": "Share of the 100 submitted samples that are verbatim training text.",
    "canaries_extracted": "Inserted canaries that appeared verbatim in the model's samples.",
}

FIELD_LABELS = {
    "n": "Records",
    "n_classes": "Number of classes",
    "n_parameters": "Parameters",
    "sha256": "SHA-256",
    "lr": "Learning rate",
    "input_shape": "Input shape",
    "licence": "Licence",
    "nonmembers": "Non-members",
    "aux": "Attacker auxiliary pool",
}

TARGET_ORDER = ("path", "kind", "n_parameters", "train_accuracy", "test_accuracy", "sha256")
DATA_ORDER = ("name", "kind", "n", "input_shape", "n_classes", "classes", "source", "licence")

# --- formatting ------------------------------------------------------------------------------


def fmt_number(v: Any) -> str:
    """A number at a precision an auditor can read: 0.712, 4.20e-04, 12.35, 83,466."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return fmt_value(v)
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return "—"
    a = abs(v)
    if 0 < a < 1e-3:
        return f"{v:.2e}"
    if a <= 1:
        return f"{v:.3f}"
    if a < 1000:
        return f"{v:.4g}"
    return f"{v:,.0f}"


def fmt_value(v: Any, max_items: int = 12) -> str:
    """Any field value as short text: numbers via :func:`fmt_number`, lists cut after a dozen."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return fmt_number(v)
    if isinstance(v, list | tuple):
        items = [fmt_value(x) for x in v[:max_items]]
        more = f", … ({len(v)} in all)" if len(v) > max_items else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items())
    return str(v)


def fmt_seconds(v: Any) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:,.1f}"


def field_label(key: str) -> str:
    return FIELD_LABELS.get(key) or key.replace("_", " ").capitalize()


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


# --- the view both templates render ----------------------------------------------------------

Rows = list[tuple[str, str]]


def _flat_rows(d: Mapping[str, Any], prefix: str = "") -> Rows:
    rows: Rows = []
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            rows += _flat_rows(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}" if prefix else field_label(k), fmt_value(v)))
    return rows


def _split_fields(
    d: Mapping[str, Any], order: Sequence[str]
) -> tuple[Rows, list[tuple[str, Rows]]]:
    """Scalar fields as rows (``order`` first, then the rest), nested objects as sub-tables."""
    keys = [k for k in order if k in d] + [k for k in d if k not in order]
    rows: Rows = []
    tables: list[tuple[str, Rows]] = []
    for k in keys:
        v = d[k]
        if isinstance(v, Mapping):
            if v:
                tables.append((field_label(k), _flat_rows(v)))
        else:
            rows.append((field_label(k), fmt_value(v)))
    return rows, tables


def _target_view(target: Mapping[str, Any]) -> dict[str, Any]:
    rows, tables = _split_fields(target, TARGET_ORDER)
    gap = generalisation_gap(target)
    if gap is not None and "generalization_gap" not in target:
        at = next(i for i, (label, _) in enumerate(rows) if label == "Test accuracy") + 1
        rows.insert(at, ("Generalisation gap (train − test)", fmt_number(gap)))
    return {"rows": rows, "tables": tables}


def _data_view(data: Mapping[str, Any]) -> dict[str, Any]:
    rows, tables = _split_fields(data, DATA_ORDER)
    return {"rows": rows, "tables": tables}


def generalisation_gap(target: Mapping[str, Any]) -> float | None:
    """Train minus test accuracy: by Yeom et al. (CSF 2018), the advantage of the gap attack."""
    tr, te = target.get("train_accuracy"), target.get("test_accuracy")
    if isinstance(tr, int | float) and isinstance(te, int | float):
        return float(tr) - float(te)
    return None


def unresolved(metrics: Mapping[str, Any], name: str) -> bool:
    """Whether ``tpr_at_fpr_X`` rests on zero allowed false positives (too few non-members)."""
    if not name.startswith("tpr_at_fpr_"):
        return False
    return metrics.get(f"fpr_{name.removeprefix('tpr_at_fpr_')}_false_positives_allowed") == 0


def _metric_value(metrics: Mapping[str, Any], name: str) -> str:
    value = fmt_number(metrics[name])
    return f"{value} (unresolved)" if unresolved(metrics, name) else value


# Where one metric name means something else in another family.
FAMILY_METRIC_HELP: dict[tuple[str, str], str] = {
    ("attribute", "advantage"): "Accuracy beyond the no-model baseline, on all records.",
    ("extraction", "accuracy"): "Accuracy of the stolen model on held-out records.",
    ("extraction", "queries"): "Oracle queries the attack spent to make its copy.",
}


def _metric_help(metrics: Mapping[str, Any], name: str, family: str = "") -> str:
    text = FAMILY_METRIC_HELP.get((family, name)) or METRIC_HELP.get(name, "")
    if unresolved(metrics, name):
        text += " Not resolved: too few non-members for a single false positive at this FPR."
    return text.strip()


def key_metrics(attack: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Up to two (label, value) pairs that sum an attack up: the first two of its family's key
    metrics present (:attr:`privguard.audit.families.Family.key_metrics`); else its first
    metric."""
    metrics = attack.get("metrics") or {}
    keys = family_key_metrics(str(attack.get("family", "")))
    names = [m for m, _ in keys if m in metrics][:2]
    if not names and metrics:
        names = [next(iter(metrics))]
    return [(metric_label(m), _metric_value(metrics, m)) for m in names]


def risk_class(risk: Any) -> str:
    return risk if risk in RISK_LEVELS else "unknown"


def _attack_tables(attack: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Curves that are tables (``{"title", "columns", "rows"}``, e.g. exposure per canary)."""
    return [
        {
            "title": str(c.get("title") or kind),
            "columns": [str(h) for h in c["columns"]],
            "rows": [[fmt_value(v) for v in row] for row in c["rows"]],
        }
        for kind, c in (attack.get("curves") or {}).items()
        if is_table(c)
    ]


def _attack_view(i: int, a: Mapping[str, Any], with_plots: bool) -> dict[str, Any]:
    metrics = a.get("metrics") or {}
    drawn, skipped = attack_plots(a) if with_plots else ([], [])
    return {
        "anchor": f"attack-{i + 1}",
        "name": a.get("name", f"attack {i + 1}"),
        "family": a.get("family", "—"),
        "access": a.get("access", "—"),
        "queries": fmt_number(a.get("queries")),
        "seconds": fmt_seconds(a.get("seconds")),
        "risk": risk_class(a.get("risk")),
        "risk_reason": str(a.get("risk_reason") or ""),
        "paper": a.get("paper") or "",
        "description": a.get("description") or "",
        "key_metrics": key_metrics(a),
        "metrics": [
            (m, _metric_value(metrics, m), _metric_help(metrics, m, a.get("family", "")))
            for m in metrics
        ],
        "notes": [str(n) for n in a.get("notes") or []],
        "plots": drawn,
        "skipped": skipped,
        "tables": _attack_tables(a),
    }


def build_view(report: Report, *, with_plots: bool = True) -> dict[str, Any]:
    """Everything the templates show, formatted: the templates hold layout only."""
    d = report_dict(report)
    summary = d.get("summary") or {}
    attacks = [_attack_view(i, a, with_plots) for i, a in enumerate(d["attacks"])]
    worst = summary.get("worst_attack")
    by_risk = summary.get("by_risk") or {}
    plan = d.get("plan") or {}
    glossary = _glossary(d["attacks"])
    return {
        "headline": str(summary.get("headline") or ""),
        "actions": [_code_spans(str(x)) for x in summary.get("actions") or []],
        "actions_text": [str(x) for x in summary.get("actions") or []],
        "utility_warning": str(summary.get("utility_warning") or ""),
        "glossary": glossary,
        "glossary_map": dict(glossary),
        "version": d.get("privguard_version", ""),
        "target": d.get("target") or {},
        "data": d.get("data") or {},
        "plan": plan,
        "target_view": _target_view(d.get("target") or {}),
        "data_view": _data_view(d.get("data") or {}),
        "plan_rows": _flat_rows({k: v for k, v in plan.items() if k != "command"}),
        "command": str(plan.get("command") or ""),
        "overall_risk": risk_class(summary.get("overall_risk", "low")),
        "by_risk": [(r, by_risk.get(r, 0)) for r in RISK_LEVELS],
        "worst": next((a for a in attacks if a["name"] == worst), None),
        "total_queries": fmt_number(summary.get("total_queries")),
        "total_seconds": fmt_seconds(summary.get("total_seconds")),
        "attacks": attacks,
        "overlay": membership_overlay(d["attacks"]) if with_plots else None,
        "extraction_overlay": extraction_overlay(d["attacks"]) if with_plots else None,
        "exposed": _exposed_view(summary.get("most_exposed")),
        "skipped": summary.get("skipped") or [],
        "gap": generalisation_gap(d.get("target") or {}),
    }


def _code_spans(text: str) -> list[tuple[str, bool]]:
    """``"run `privguard sweep` now"`` -> ``[("run ", False), ("privguard sweep", True), ...]``:
    backticked spans become code in the HTML (still escaped)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: plain text
        return [(text, False)]
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


def _glossary(attacks: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, meaning) of every key metric the summary table shows, in order of appearance."""
    out: dict[str, str] = {}
    for a in attacks:
        metrics = a.get("metrics") or {}
        fam = str(a.get("family", ""))
        keys = family_key_metrics(fam)
        for m in [m for m, _ in keys if m in metrics][:2]:
            label = metric_label(m)
            text = FAMILY_METRIC_HELP.get((fam, m)) or METRIC_HELP.get(m, "")
            if text and label not in out:
                out[label] = text
    return list(out.items())


def _exposed_view(exposed: Any) -> dict[str, Any] | None:
    if not isinstance(exposed, Mapping) or not exposed.get("records"):
        return None
    records = [
        {
            **rec,
            "score": fmt_number(rec.get("score")),
            "exposed_at_fpr": fmt_number(rec.get("exposed_at_fpr")),
            "fields_text": ", ".join(
                f"{k}={fmt_value(v)}" for k, v in (rec.get("fields") or {}).items()
            ),
        }
        for rec in exposed["records"]
    ]
    fields = any(rec.get("fields") for rec in exposed["records"])
    return {"attack": exposed.get("attack", ""), "records": records, "fields": fields}


_MD_SPECIAL = set("\\`*_[]<>|#")


def md_escape(text: Any) -> str:
    """Text safe inside Markdown (and a table cell): punctuation escaped, newlines flattened."""
    s = " ".join(str(text).split())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in s)
