"""Report writers: ``report.json``, a self-contained ``report.html`` and ``model-card.md``.

The three files of the DESIGN.md contract. All three are rendered from one JSON-safe copy of
the report (non-finite numbers become null, numpy values plain Python), so they always agree.
:func:`write_report` renders everything in memory first and then moves complete files into
place, so a failure never leaves a half-written report behind.

The model card follows the sections of Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019), filled with what privguard measured; what only the model's owner knows is marked
``**[TO FILL: ...]**`` and listed again in a closing checklist.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path, PurePath
from typing import Any

import jinja2

from privguard.audit import plots
from privguard.audit.report import RISK_LEVELS, Report
from privguard.errors import ConfigError

FILES = {"json": "report.json", "html": "report.html", "model_card": "model-card.md"}
"""Key returned by :func:`write_report` -> file name in the output directory."""

TEMPLATE_DIR = Path(__file__).with_name("templates")

# The metrics shown in the summary for each family, first two present win.
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "membership": ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage"),
    "inversion": ("attack_accuracy_consensus", "member_closeness", "attack_accuracy"),
    "attribute": ("advantage_members", "member_advantage_gap", "accuracy", "baseline_accuracy"),
    "extraction": ("fidelity", "accuracy"),
    "memorization": (
        "exposure_bits_top_repeats",
        "exposure_bits_max",
        "precision_at_100",
        "canaries_extracted",
        "exposure",
        "epsilon_lower_bound",
    ),
}

METRIC_LABELS = {
    "auc": "AUC",
    "tpr_at_fpr_0.01": "TPR@1%FPR",
    "tpr_at_fpr_0.001": "TPR@0.1%FPR",
    "mse_to_class_mean": "MSE to class mean",
    "epsilon_lower_bound": "ε lower bound",
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

# What only the model's owner can say: key -> (model card section, what to fill in).
TODOS: dict[str, tuple[str, str]] = {
    "owner": ("Model details", "model name, version, owner and contact"),
    "model_licence": ("Model details", "licence under which the model is released"),
    "intended_use": ("Intended use", "primary intended uses and users"),
    "out_of_scope": ("Intended use", "uses the model must not be put to"),
    "collection": ("Data collection", "who collected the data, when, and with what consent"),
    "personal_data": (
        "Data collection",
        "which personal or sensitive attributes the data holds, and the legal basis for using them",
    ),
    "retention": ("Data collection", "how long the training data is kept and who can access it"),
    "preprocessing": ("Training", "preprocessing, cleaning and labelling applied before training"),
    "deployment": (
        "Deployment",
        "where and how the model is served and what outputs callers receive (labels, top-k, "
        "scores)",
    ),
    "access_control": ("Deployment", "who may query the model, rate limits and query budgets"),
    "monitoring": (
        "Monitoring",
        "who watches the query logs, the alert thresholds and the response plan",
    ),
    "reaudit": ("Monitoring", "when the model is audited again (e.g. after every retraining)"),
    "limitations": ("Caveats", "known limitations, biases and failure modes beyond privacy"),
}


# --- JSON ------------------------------------------------------------------------------------


def to_jsonable(obj: Any, where: str = "report") -> Any:
    """A copy of ``obj`` made of JSON types only: non-finite floats become ``None``.

    numpy scalars and arrays become Python numbers and lists, paths become strings. Anything
    else raises ``TypeError`` naming where it sits, e.g. ``report.attacks[0].metrics.auc``.
    """
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {_json_key(k, where): to_jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "dtype") and callable(getattr(obj, "tolist", None)):  # numpy, torch
        return to_jsonable(obj.tolist(), where)
    raise TypeError(f"{where} holds a {type(obj).__name__}, which a JSON report cannot hold")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(key)
    raise TypeError(f"{where} has a key of type {type(key).__name__}; report keys must be text")


def report_dict(report: Report) -> dict[str, Any]:
    """``report.to_dict()`` made JSON-safe (see :func:`to_jsonable`)."""
    return to_jsonable(report.to_dict())


def render_json(report: Report) -> str:
    """``report.json``: the report as JSON, indented by 2, with ``null`` for NaN and infinity.

    Example:
        >>> Report.from_dict(json.loads(render_json(report)))  # doctest: +SKIP
    """
    return json.dumps(report_dict(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


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
    """Up to two (label, value) pairs that sum an attack up, by family; else its first metric."""
    metrics = attack.get("metrics") or {}
    names = [m for m in KEY_METRICS.get(attack.get("family", ""), ()) if m in metrics][:2]
    if not names and metrics:
        names = [next(iter(metrics))]
    return [(metric_label(m), _metric_value(metrics, m)) for m in names]


def risk_class(risk: Any) -> str:
    return risk if risk in RISK_LEVELS else "unknown"


def _n_nonmembers(attack: Mapping[str, Any]) -> int | None:
    n = (attack.get("metrics") or {}).get("n_nonmembers")
    return int(n) if isinstance(n, int | float) and not isinstance(n, bool) and n > 0 else None


def _is_roc(curve: Any) -> bool:
    return isinstance(curve, Mapping) and "fpr" in curve and "tpr" in curve


def _plot(title: str, png: bytes, alt: str) -> dict[str, str]:
    return {"title": title, "alt": alt, "uri": "data:image/png;base64," + _b64(png)}


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _draw_curve(attack: Mapping[str, Any], kind: str, curve: Any) -> dict[str, str] | None:
    """One curve of an attack as a plot; ``None`` for a kind the writers do not know."""
    name = attack["name"]
    title = f"{name}: {kind}"
    if _is_roc(curve):
        n = _n_nonmembers(attack)
        auc = (attack.get("metrics") or {}).get("auc") if kind == "roc" else None
        png = plots.roc_plot(
            {name: (curve["fpr"], curve["tpr"])},
            title,
            aucs={name: auc},
            min_fpr=plots.fpr_floor(n),
            resolution=1 / n if n else None,
        )
        return _plot(title, png, f"ROC curve of {name} on log-log axes")
    if isinstance(curve, Mapping) and "x" in curve and "y" in curve:
        png = plots.line_plot(
            {kind: (curve["x"], curve["y"])},
            title,
            xlabel=str(curve.get("xlabel", "")),
            ylabel=str(curve.get("ylabel", "")),
            logx=bool(curve.get("logx", False)),
            logy=bool(curve.get("logy", False)),
        )
        return _plot(title, png, f"{kind} of {name}")
    if isinstance(curve, Mapping) and "images" in curve:
        png = plots.image_grid(curve["images"], title, labels=curve.get("labels"))
        return _plot(title, png, f"{kind} images of {name}")
    return None


def _attack_plots(attack: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Plots of every curve the writers can draw, and a line for each one they could not."""
    drawn: list[dict[str, str]] = []
    skipped: list[str] = []
    for kind, curve in (attack.get("curves") or {}).items():
        if _is_table(curve):  # shown as a table by _attack_tables
            continue
        try:
            plot = _draw_curve(attack, kind, curve)
        except (ValueError, TypeError) as e:
            skipped.append(f"{kind}: could not be drawn ({e})")
            continue
        if plot is None:
            skipped.append(f"{kind}: no drawing for this kind of curve (data kept in report.json)")
        else:
            drawn.append(plot)
    return drawn, skipped


def _is_table(curve: Any) -> bool:
    return isinstance(curve, Mapping) and "columns" in curve and "rows" in curve


def _attack_tables(attack: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Curves that are tables (``{"title", "columns", "rows"}``, e.g. exposure per canary)."""
    return [
        {
            "title": str(c.get("title") or kind),
            "columns": [str(h) for h in c["columns"]],
            "rows": [[fmt_value(v) for v in row] for row in c["rows"]],
        }
        for kind, c in (attack.get("curves") or {}).items()
        if _is_table(c)
    ]


def membership_overlay(attacks: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The ROC curves of all membership attacks on one log-log plot; ``None`` if there are none."""
    curves: dict[str, tuple[Any, Any]] = {}
    aucs: dict[str, Any] = {}
    ns: list[int] = []
    for a in attacks:
        roc = (a.get("curves") or {}).get("roc")
        if a.get("family") != "membership" or not _is_roc(roc):
            continue
        label = a["name"]
        if label in curves:  # the same attack run twice, e.g. at two access levels
            label = f"{label} ({a.get('access', '?')}, #{len(curves) + 1})"
        curves[label] = (roc["fpr"], roc["tpr"])
        aucs[label] = (a.get("metrics") or {}).get("auc")
        if (n := _n_nonmembers(a)) is not None:
            ns.append(n)
    if not curves:
        return None
    title = "Membership inference: all attacks"
    png = plots.roc_plot(
        curves,
        title,
        aucs=aucs,
        min_fpr=plots.fpr_floor(max(ns) if ns else None),
        resolution=1 / max(ns) if ns else None,
    )
    return _plot(title, png, "ROC curves of all membership attacks on log-log axes")


def extraction_overlay(attacks: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """Fidelity against queries of every extraction attack on one plot; ``None`` if fewer than
    two attacks drew a curve (a single curve is already in its attack's section)."""
    series: dict[str, tuple[Any, Any]] = {}
    for a in attacks:
        c = (a.get("curves") or {}).get("fidelity_vs_queries")
        if a.get("family") == "extraction" and isinstance(c, Mapping) and "x" in c and "y" in c:
            series[str(a.get("name"))] = (c["x"], c["y"])
    if len(series) < 2:
        return None
    title = "Model extraction: fidelity against queries"
    png = plots.line_plot(
        series, title, xlabel="queries", ylabel="fidelity on held-out records", logx=True
    )
    return _plot(title, png, "Fidelity of every extraction attack's copy against queries spent")


def _attack_view(i: int, a: Mapping[str, Any], with_plots: bool) -> dict[str, Any]:
    metrics = a.get("metrics") or {}
    drawn, skipped = _attack_plots(a) if with_plots else ([], [])
    return {
        "anchor": f"attack-{i + 1}",
        "name": a.get("name", f"attack {i + 1}"),
        "family": a.get("family", "—"),
        "access": a.get("access", "—"),
        "queries": fmt_number(a.get("queries")),
        "seconds": fmt_seconds(a.get("seconds")),
        "risk": risk_class(a.get("risk")),
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
    return {
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


def _exposed_view(exposed: Any) -> dict[str, Any] | None:
    if not isinstance(exposed, Mapping) or not exposed.get("records"):
        return None
    records = [
        {
            **rec,
            "score": fmt_number(rec.get("score")),
            "exposed_at_fpr": fmt_number(rec.get("exposed_at_fpr")),
        }
        for rec in exposed["records"]
    ]
    return {"attack": exposed.get("attack", ""), "records": records}


# --- templates -------------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_number
    env.filters["val"] = fmt_value
    env.filters["md"] = md_escape
    env.filters["label"] = field_label
    env.filters["metric_label"] = metric_label
    return env


_MD_SPECIAL = set("\\`*_[]<>|#")


def md_escape(text: Any) -> str:
    """Text safe inside Markdown (and a table cell): punctuation escaped, newlines flattened."""
    s = " ".join(str(text).split())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in s)


def _fill(key: str) -> str:
    return f"**[TO FILL: {TODOS[key][1]}]**"


def render_html(report: Report) -> str:
    """``report.html``: one self-contained page (inline CSS, PNG plots as data URIs, no scripts).

    Summary first (overall risk, attacks table, membership ROC overlay), then target, data,
    one section per attack, and the plan that reproduces the audit.
    """
    return _environment().get_template("report.html.j2").render(r=build_view(report))


def render_model_card(report: Report) -> str:
    """``model-card.md``: a Markdown model card filled from the audit, gaps marked TO FILL."""
    view = build_view(report, with_plots=False)
    text = _environment().get_template("model_card.md.j2").render(r=view, fill=_fill, todos=TODOS)
    return re.sub(r"\n{3,}", "\n\n", text)  # templates leave runs of blank lines


# --- writing ---------------------------------------------------------------------------------


ARTIFACTS = "artifacts"


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``model-card.md`` into ``out_dir``.

    All three are rendered in memory first, so a rendering error writes nothing. The files are
    then written and fsynced in a temporary directory beside ``out_dir`` (same filesystem) and
    moved into place with ``os.replace``: each file is either its previous complete version or
    the new one, never truncated, and no temporary files stay behind. ``out_dir`` is created
    when absent.

    Returns:
        ``{"json": path, "html": path, "model_card": path}``.

    Raises:
        ConfigError: ``out_dir`` is a file, cannot be created, or is not writable.
    """
    out = Path(out_dir)
    _check_out_dir(out)
    texts: dict[str, str | bytes] = {
        FILES["json"]: render_json(report),
        FILES["html"]: render_html(report),
        FILES["model_card"]: render_model_card(report),
    }
    for name, arrays in report.artifacts.items():
        # bytes are a file as is (e.g. a stolen model's model.json); arrays become an .npz
        blob = arrays if isinstance(arrays, bytes) else _npz_bytes(arrays)
        texts[f"{ARTIFACTS}/{name}"] = blob
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the report directory {out} ({e.strerror or e}): "
            "choose another output directory"
        ) from e
    _replace_all(out, texts)
    paths = {key: out / name for key, name in FILES.items()}
    paths.update({name: out / ARTIFACTS / name for name in report.artifacts})
    return paths


def _npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """Arrays as a compressed .npz that ``np.load(..., allow_pickle=False)`` reads."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"the report directory {out} is a file: pass a directory path (it is created when "
            "absent) or move the file away"
        )
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot create {out}: {existing} is a file; choose another directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the report into {out}: {existing} is not writable; choose another "
            "output directory or fix its permissions"
        )
    for name in FILES.values():
        if (out / name).is_dir():
            raise ConfigError(f"{out / name} is a directory: remove it or choose another directory")


def _replace_all(out: Path, texts: Mapping[str, str | bytes]) -> None:
    tmp = _temp_dir_beside(out)
    try:
        for name, text in texts.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp / name, text)
        _fsync_dir(tmp)
        for name in texts:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, out / name)
        _fsync_dir(out)
    except OSError as e:
        raise ConfigError(
            f"could not write the report into {out} ({e.strerror or e}): free some space, "
            "fix the permissions or choose another output directory"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temp_dir_beside(out: Path) -> Path:
    """A fresh directory on ``out``'s filesystem: beside it if possible, else inside it."""
    real = out.resolve()
    parent = real.parent
    try:
        if parent != real and os.stat(parent).st_dev == os.stat(real).st_dev:
            return Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".tmp", dir=parent))
    except OSError:
        pass  # parent not writable (or gone): fall back to inside out_dir
    try:
        return Path(tempfile.mkdtemp(prefix=".privguard-", suffix=".tmp", dir=real))
    except OSError as e:
        raise ConfigError(
            f"cannot write the report into {out} ({e.strerror or e}): choose another output "
            "directory or fix its permissions"
        ) from e


def _write_synced(path: Path, text: str | bytes) -> None:
    with open(path, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
