"""The sweep's report: ``sweep.json`` and a self-contained ``sweep.html``.

The main figure puts attack success against test accuracy, one point per variant, with the
Pareto frontier (no variant both more accurate and less attackable) drawn through its points:
membership TPR at 1% FPR first, then inversion attack accuracy and the queries extraction needed
for 95% fidelity when those attacks ran.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from privguard._io import dumps_json, publish_files, to_jsonable
from privguard._version import __version__
from privguard.audit.plots import RISK_COLOURS, new_figure, to_png
from privguard.audit.report.figures import b64
from privguard.audit.report.html import environment
from privguard.sweep.run import SweepResult, SweepRow

PANELS = (
    ("membership_tpr_at_fpr_0_01", "membership TPR at 1% FPR (lower is safer)", False),
    ("inversion_attack_accuracy", "inversion attack accuracy (lower is safer)", False),
    ("extraction_queries_95", "queries for 95% extraction fidelity (higher is safer)", True),
)


def panel_level(key: str, value: float) -> str | None:
    """The risk level a panel's own measure gives (the colour of its points), so colour and
    height never disagree: membership TPR at 1% FPR by the membership rule's TPR thresholds,
    inversion by its consensus threshold; extraction cost has no level (grey)."""
    from privguard.audit.risk import MEMBERSHIP_TPR_1PCT

    if not math.isfinite(value):
        return None
    if key == "membership_tpr_at_fpr_0_01":
        high, medium = MEMBERSHIP_TPR_1PCT
        return "high" if value >= high else "medium" if value >= medium else "low"
    if key == "inversion_attack_accuracy":
        return "medium" if value >= 0.5 else "low"
    return None


def plot_tradeoff(rows: list[SweepRow]) -> bytes:
    """Attack success against test accuracy, frontier marked; one panel per measured attack."""
    panels = [p for p in PANELS if any(getattr(r, p[0]) is not None for r in rows)]
    fig = new_figure(5.2 * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title, logy) in zip(axes, panels, strict=True):
        pts = [(r, getattr(r, key)) for r in rows if getattr(r, key) is not None]
        reached = [(r, v) for r, v in pts if math.isfinite(v)]
        top = max((v for _, v in reached), default=1.0)
        for r, v in pts:
            shown = v if math.isfinite(v) else top * 1.6  # "not reached": drawn above the rest
            ax.scatter(
                r.test_accuracy,
                shown,
                s=70 if r.pareto else 40,
                color=RISK_COLOURS.get(panel_level(key, v) or "", "#59636e"),
                edgecolors="black" if r.pareto else "none",
                marker="o" if math.isfinite(v) else "^",
                zorder=3,
            )
            ax.annotate(
                r.name,
                (r.test_accuracy, shown),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=7.5,
            )
        if key == "membership_tpr_at_fpr_0_01":
            front = sorted((r for r, _ in pts if r.pareto), key=lambda r: r.test_accuracy)
            ax.plot(
                [r.test_accuracy for r in front],
                [r.membership_tpr_at_fpr_0_01 for r in front],
                color="black",
                linewidth=1,
                linestyle="--",
                zorder=2,
                label="Pareto frontier",
            )
            ax.axhline(0.01, color="#59636e", linewidth=0.8, linestyle=":", label="chance (= FPR)")
            ax.annotate(
                "chance: TPR = FPR = 1%",
                (0, 0.01),
                xycoords=("axes fraction", "data"),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=7,
                color="#59636e",
            )
            ax.legend(fontsize=8, loc="best", framealpha=0.6)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    return to_png(fig, dpi=110)


def sweep_dict(result: SweepResult) -> dict[str, Any]:
    d = result.as_dict()
    d["privguard_version"] = __version__
    return to_jsonable(d, "sweep")


def render_sweep_html(result: SweepResult) -> str:
    view = sweep_dict(result)
    view["plot"] = "data:image/png;base64," + b64(plot_tradeoff(result.rows))
    return environment().get_template("sweep.html.j2").render(s=view)


def write_sweep(result: SweepResult, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``sweep.json`` and ``sweep.html`` into ``out``: rendered in memory first, then
    published with :func:`privguard._io.publish_files`, so a failure never leaves a
    half-written file."""
    texts: dict[str, str | bytes] = {
        "sweep.json": dumps_json(sweep_dict(result), where="sweep"),
        "sweep.html": render_sweep_html(result),
    }
    return publish_files(out, texts, what="the sweep report")
