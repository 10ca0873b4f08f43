"""The report's plots as PNG data URIs: each attack's curves and the cross-attack overlays.

An attack's ``curves`` hold plot data (an ROC, an x/y line, images, or a table); this module
draws what it can with :mod:`privguard.audit.plots` and says which curves it could not draw.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from privguard.audit import plots


def _n_nonmembers(attack: Mapping[str, Any]) -> int | None:
    n = (attack.get("metrics") or {}).get("n_nonmembers")
    return int(n) if isinstance(n, int | float) and not isinstance(n, bool) and n > 0 else None


def _is_roc(curve: Any) -> bool:
    return isinstance(curve, Mapping) and "fpr" in curve and "tpr" in curve


def _plot(title: str, png: bytes, alt: str) -> dict[str, str]:
    return {"title": title, "alt": alt, "uri": "data:image/png;base64," + b64(png)}


def b64(png: bytes) -> str:
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


def attack_plots(attack: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Plots of every curve the writers can draw, and a line for each one they could not."""
    drawn: list[dict[str, str]] = []
    skipped: list[str] = []
    for kind, curve in (attack.get("curves") or {}).items():
        if is_table(curve):  # shown as a table by the view
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


def is_table(curve: Any) -> bool:
    return isinstance(curve, Mapping) and "columns" in curve and "rows" in curve


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
