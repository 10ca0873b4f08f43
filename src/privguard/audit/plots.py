"""Figures for audit reports, returned as PNG bytes.

Drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot: no GUI backend
is chosen, no global figure registry fills up, and nothing leaks between calls. PNG metadata
carries no software version, so the same input gives the same bytes.

ROC curves are drawn on log-log axes, as Carlini et al. (S&P 2022, "Membership inference attacks
from first principles") recommend: what matters for privacy is the true-positive rate at low
false-positive rates, which a linear plot squeezes into its corner.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEFAULT_MIN_FPR = 1e-3
"""Left edge of ROC plots when the number of non-members is not known."""

RISK_COLOURS = {"low": "#1a7f37", "medium": "#bf8700", "high": "#cf222e"}

_LINESTYLES = ("-", "--", "-.", ":")


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A blank figure (inches) on the Agg canvas: no display, no global pyplot state.

    ``layout=None`` keeps the figure's fixed subplot margins: the plots below set them by hand,
    because a constrained layout measures every tick label and then draws the figure twice
    (once to lay it out, once to render), which took about two thirds of the report's drawing
    time (docs/benchmarks.md).
    """
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _fixed_margins(fig: Figure, *, top_in: float, bottom_in: float, left_in: float) -> None:
    """Fixed subplot margins, in inches from each edge (a one-axes plot with a title, axis
    labels and tick labels needs about 0.35, 0.5 and 0.65 in at the default font size)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=left_in / w, right=1 - 0.2 / w, bottom=bottom_in / h, top=1 - top_in / h
    )


def to_png(fig: Figure, dpi: int) -> bytes:
    """``fig`` as PNG bytes, without the Software tag, so the same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _style(i: int) -> dict[str, Any]:
    """Colour from tab10, then a new line style every ten curves, so 11+ curves stay apart."""
    return {"color": f"C{i % 10}", "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)]}


def fpr_floor(n_nonmembers: int | None) -> float:
    """Left edge for a ROC over ``n_nonmembers``: the decade at or below ``1/n``, at most 1e-3.

    Below ``1/n`` the curve cannot resolve anything, so the axis need not go further.
    """
    if not n_nonmembers or n_nonmembers <= 0:
        return DEFAULT_MIN_FPR
    return min(DEFAULT_MIN_FPR, 10.0 ** math.floor(math.log10(1.0 / n_nonmembers)))


def _roc_points(
    fpr: Sequence[float], tpr: Sequence[float], floor: float
) -> tuple[list[float], list[float]]:
    """Finite (fpr, tpr) pairs sorted by fpr, clipped to [floor, 1] for log axes.

    Clipping a zero FPR to the floor draws the TPR reached at FPR 0 at the left edge; since a
    ROC is monotone this never shows more than the attack achieves at the floor. Points below
    the floor on both axes (the origin) are dropped: clipped, they would draw a segment from
    the corner that the attack never measured.
    """
    pairs = sorted(
        (min(max(float(f), floor), 1.0), min(max(float(t), floor), 1.0))
        for f, t in zip(fpr, tpr, strict=False)
        if f is not None
        and t is not None
        and math.isfinite(f)
        and math.isfinite(t)
        and (f >= floor or t >= floor)
    )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def roc_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "ROC curve",
    *,
    aucs: Mapping[str, float | None] | None = None,
    min_fpr: float | None = None,
    resolution: float | None = None,
    size: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> bytes:
    """ROC curves of one or more attacks overlaid on log-log axes, as PNG bytes.

    Args:
        curves: attack name -> (fpr, tpr), fpr ascending from 0 to 1.
        title: figure title.
        aucs: attack name -> AUC, shown in the legend when given and finite.
        min_fpr: left (and bottom) edge of the axes; 1e-3 when not given (see :func:`fpr_floor`).
        resolution: FPR of a single false positive (``1 / n_nonmembers``); drawn as a dotted
            vertical line, left of which the curve says nothing.

    Example:
        >>> png = roc_plot({"lira": ([0, 0.01, 1], [0, 0.2, 1])}, aucs={"lira": 0.7})
        >>> png[:4] == b"\\x89PNG"
        True
    """
    floor = min_fpr if min_fpr and 0 < min_fpr < 1 else DEFAULT_MIN_FPR
    fig = new_figure(*size, layout=None)
    _fixed_margins(fig, top_in=0.4, bottom_in=0.55, left_in=0.75)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.plot([floor, 1.0], [floor, 1.0], color="0.55", linestyle="--", linewidth=1, label="chance")
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        xs, ys = _roc_points(fpr, tpr, floor)
        if not xs:
            continue
        auc = (aucs or {}).get(name)
        label = f"{name} (AUC {auc:.3f})" if _finite(auc) else name
        ax.plot(xs, ys, linewidth=1.6, label=label, **_style(i))
    if resolution and floor < resolution < 1:
        ax.axvline(resolution, color="0.35", linestyle=":", linewidth=1, label="one false positive")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return to_png(fig, dpi)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    *,
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
    size: tuple[float, float] = (6.4, 4.0),
    dpi: int = 100,
) -> bytes:
    """Generic x/y curves (e.g. a metric against queries or epochs), as PNG bytes.

    Non-finite points are dropped; so are non-positive ones on a log axis.
    """
    fig = new_figure(*size, layout=None)
    _fixed_margins(fig, top_in=0.4, bottom_in=0.55, left_in=0.8)
    ax = fig.add_subplot()
    for i, (name, (x, y)) in enumerate(series.items()):
        pts = [
            (float(a), float(b))
            for a, b in zip(x, y, strict=False)
            if _finite(a) and _finite(b) and (not logx or a > 0) and (not logy or b > 0)
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **_style(i))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    return to_png(fig, dpi)


def _as_image(a: Any) -> np.ndarray:
    """An image as HxW (grey) or HxWx3 in [0, 1]; accepts HxW, CxHxW and HxWxC, C in {1, 3}."""
    img = np.asarray(a, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"cannot draw an array of shape {np.shape(a)} as an image")
    img = np.nan_to_num(img)
    lo, hi = float(img.min()), float(img.max())
    if lo < 0 or hi > 1:
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def image_grid(
    images: Sequence[Any],
    title: str,
    *,
    labels: Sequence[str] | None = None,
    columns: int = 8,
    max_images: int = 40,
    dpi: int = 100,
) -> bytes:
    """A grid of images (e.g. reconstructions by a model-inversion attack), as PNG bytes.

    Each image is HxW, CxHxW or HxWxC with C in {1, 3}; values outside [0, 1] are min-max
    scaled per image. At most ``max_images`` are drawn.
    """
    imgs = [_as_image(a) for a in list(images)[:max_images]]
    if not imgs:
        raise ValueError("no images to draw")
    cols = max(1, min(columns, len(imgs)))
    rows = math.ceil(len(imgs) / cols)
    width, height = 1.3 * cols, 1.3 * rows + 0.5
    fig = new_figure(width, height, layout=None)
    # fixed margins: 0.5 in above the grid for the title, room above each image for its label
    fig.subplots_adjust(
        left=0.05 / width,
        right=1 - 0.05 / width,
        bottom=0.05 / height,
        top=1 - 0.5 / height,
        wspace=0.1,
        hspace=0.3 if labels is not None else 0.1,
    )
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None and i < len(labels):
            ax.set_title(str(labels[i]), fontsize="small")
    fig.suptitle(title)
    return to_png(fig, dpi)


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
