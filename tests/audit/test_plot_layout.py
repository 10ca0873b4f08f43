"""The report plots' fixed margins keep every title, label and tick label inside the image.

The plots set their margins by hand (one draw per figure instead of a constrained layout's two);
a margin too small would cut off text at the image's edge, which leaves ink in its outermost
pixels. Each figure here is drawn with the longest labels the report gives it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from privguard.audit import plots

BORDER = 2  # pixels at each edge that must stay background


def _edges_are_blank(png: bytes) -> bool:
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    edges = np.concatenate(
        [
            img[:BORDER].ravel(),
            img[-BORDER:].ravel(),
            img[:, :BORDER].ravel(),
            img[:, -BORDER:].ravel(),
        ]
    )
    return bool(edges.min() >= 250)  # white, bar anti-aliasing


def test_roc_plot_text_stays_inside_the_image() -> None:
    curves = {
        f"modified-entropy-threshold-{i}": ([0.0, 0.01, 1.0], [0.0, 0.2, 1.0]) for i in range(12)
    }
    png = plots.roc_plot(
        curves,
        "Membership inference: all attacks",
        aucs=dict.fromkeys(curves, 0.587),
        min_fpr=1e-5,
        resolution=1 / 50_000,
    )
    assert _edges_are_blank(png)


@pytest.mark.parametrize("logx", [False, True])
def test_line_plot_text_stays_inside_the_image(logx: bool) -> None:
    x = [250.0, 1000.0, 20000.0, 120000.0]
    png = plots.line_plot(
        {"fidelity_vs_queries": (x, [0.001234, 0.5, 0.95, 0.99])},
        "knockoff: fidelity_vs_queries",
        xlabel="queries",
        ylabel="fidelity on held-out records",
        logx=logx,
    )
    assert _edges_are_blank(png)


def test_image_grid_titles_stay_inside_the_image() -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.random((8, 8)) for _ in range(10)]
    png = plots.image_grid(
        imgs, "prior-inversion: reconstructions", labels=[str(i) for i in range(10)]
    )
    assert _edges_are_blank(png)


def test_a_clipped_label_is_caught() -> None:
    """The check itself: text drawn across the image's edge fails it."""
    fig = plots.new_figure(3, 2, layout=None)
    fig.text(-0.01, 0.5, "cut off", fontsize=20)
    assert not _edges_are_blank(plots.to_png(fig, 100))
