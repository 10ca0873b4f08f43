"""Helpers shared by the model-inversion attacks.

Everything here works on numpy arrays in the oracle's input layout (``(n, *input_shape)``,
images ``(n, channels, height, width)``). The public functions are a stable interface for the
inversion attacks in this package:

- :func:`target_classes`, :func:`input_bounds`, :func:`is_image`, :func:`initial_guess`: what
  to reconstruct, the valid input box and where the search starts;
- :func:`plan_budget`, :class:`BudgetPlan`, :func:`budget_note`: sharing a query budget between
  classes up front and saying what a spent budget cut short;
- :func:`rms`, :func:`total_variation_grad`, :func:`smooth_images`: per-record step
  normalisation and the image priors (total variation, the Gaussian denoise "Process" step);
- :func:`log_margin`: the class score log p_y - max_{j != y} log p_j computed from probability
  vectors in float64, floored for rounded outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from privguard.attacks.base import Knowledge
from privguard.errors import ConfigError, DataError
from privguard.oracle import Oracle

INITS = ("aux-mean", "mid", "low")
TINY = 1e-300


def target_classes(oracle: Oracle, knowledge: Knowledge) -> np.ndarray:
    """The classes to reconstruct, ``(n,)`` int64: ``knowledge.target_classes`` or all of them."""
    k = oracle.n_classes
    wanted = knowledge.target_classes
    classes = np.arange(k) if wanted is None else np.asarray(list(wanted), dtype=np.int64)
    if classes.ndim != 1 or len(classes) == 0:
        raise ConfigError("target_classes must list at least one class index")
    bad = [int(c) for c in classes if not 0 <= c < k]
    if bad:
        raise ConfigError(
            f"target class(es) {bad} do not exist: the model has {k} classes (0..{k - 1})"
        )
    return classes.astype(np.int64)


def input_bounds(
    knowledge: Knowledge, input_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``knowledge.bounds`` broadcast to one record: ``(low, high)``, float32 arrays of shape
    ``input_shape`` (scalar bounds and per-feature bounds both work)."""
    try:
        low = np.broadcast_to(np.asarray(knowledge.bounds[0], dtype=np.float32), input_shape)
        high = np.broadcast_to(np.asarray(knowledge.bounds[1], dtype=np.float32), input_shape)
    except (ValueError, TypeError, IndexError):
        raise DataError(
            f"input bounds {knowledge.bounds!r} do not fit records of shape {input_shape}; give "
            "(low, high) as numbers or arrays of the record's shape"
        ) from None
    if np.any(high < low):
        raise DataError("input bounds must have low <= high for every feature")
    return low.astype(np.float32), high.astype(np.float32)


def is_image(knowledge: Knowledge, input_shape: tuple[int, ...]) -> bool:
    """Images get image priors and smoothing; records of other shapes never do."""
    return knowledge.kind == "image" and len(input_shape) == 3


def initial_guess(
    knowledge: Knowledge, input_shape: tuple[int, ...], n: int, init: str = "aux-mean"
) -> tuple[np.ndarray, str]:
    """Where the search starts for each of ``n`` classes, ``(n, *input_shape)`` float32, and a
    note saying so for the report.

    ``aux-mean``: the mean of the attacker's auxiliary records over all classes (the only use
    these attacks make of auxiliary data; falls back to ``mid`` without any); ``mid``: the middle
    of the input bounds; ``low``: the lower bound (a blank image).
    """
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; use one of: {', '.join(INITS)}")
    low, high = input_bounds(knowledge, input_shape)
    aux = knowledge.aux_x
    if init == "aux-mean" and aux is not None and len(aux):
        aux = np.asarray(aux, dtype=np.float32)
        if aux.shape[1:] != tuple(input_shape):
            raise DataError(
                f"auxiliary records have shape {aux.shape[1:]}, the model takes {input_shape}"
            )
        start = aux.mean(axis=0)
        note = (
            f"search started from the mean of the attacker's {len(aux)} auxiliary records over "
            "all classes (the only use made of auxiliary data)"
        )
    elif init == "low":
        start = low
        note = "search started from the lower input bound (a blank input)"
    else:
        start = (low + high) / 2
        note = "search started from the middle of the input bounds (no auxiliary data used)"
    start = np.clip(start, low, high).astype(np.float32)
    return np.repeat(start[None], n, axis=0), note


@dataclass
class BudgetPlan:
    """How a query budget is shared: each of the first ``n_run`` classes may spend
    ``per_class`` queries; the others are left at their initialisation. ``note`` says what the
    budget cut short (``None`` when it cut nothing)."""

    per_class: int
    n_run: int
    note: str | None = None


def plan_budget(
    oracle: Oracle,
    n_classes: int,
    wanted_per_class: int,
    min_per_class: int,
    labels: Sequence[int] | None = None,
) -> BudgetPlan:
    """Share ``oracle.remaining`` between ``n_classes`` classes up front.

    Every class gets ``wanted_per_class`` queries when the budget allows; otherwise an equal
    share; when even ``min_per_class`` each does not fit, only as many classes as can have
    ``min_per_class`` are attacked (in order) and the rest keep their initialisation.
    ``labels`` (the class of each position) only make the note name the classes.
    """
    remaining = oracle.remaining
    if remaining is None or remaining >= n_classes * wanted_per_class:
        return BudgetPlan(wanted_per_class, n_classes)
    left = f" ({remaining} left)" if remaining != oracle.budget else ""
    share = remaining // n_classes
    if share >= min_per_class:
        return BudgetPlan(
            share,
            n_classes,
            f"query budget of {oracle.budget}{left} allows {share} queries per "
            f"class instead of {wanted_per_class}",
        )
    n_run = int(remaining // min_per_class) if min_per_class > 0 else 0
    names = list(range(n_classes)) if labels is None else [int(c) for c in labels]
    if n_run:
        cut = (
            f"only class(es) {names[:n_run]} are attacked ({min_per_class} queries each); the "
            f"budget runs out after class {names[n_run - 1]}"
        )
    else:
        cut = "no class can be attacked"
    return BudgetPlan(
        min_per_class,
        n_run,
        f"query budget of {oracle.budget}{left} is too small for {n_classes} "
        f"classes at {min_per_class} queries each: {cut}; classes {names[n_run:]} keep their "
        "initialisation",
    )


def budget_note(oracle: Oracle, last_class: int | None, unfinished: list[int]) -> str:
    """The report's note when the budget ran out mid-attack."""
    where = "before any class was finished" if last_class is None else (f"after class {last_class}")
    rest = (
        f"; classes {unfinished} keep their best reconstruction so far (or the initialisation)"
        if unfinished
        else ""
    )
    return f"query budget of {oracle.budget} ran out {where}{rest}"


def rms(x: np.ndarray) -> np.ndarray:
    """Root mean square of each record, shaped to broadcast against ``x``."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    r = np.sqrt((flat**2).mean(axis=1))
    return r.reshape((-1,) + (1,) * (np.ndim(x) - 1))


def total_variation_grad(x: np.ndarray, eps: float = 1e-2) -> np.ndarray:
    """Gradient of the (Charbonnier-smoothed, anisotropic) total variation
    ``sum sqrt(dx^2 + eps) + sqrt(dy^2 + eps)`` over the last two axes of an image batch."""
    g = np.zeros_like(x, dtype=np.float32)
    dh = np.diff(x, axis=-1)
    dv = np.diff(x, axis=-2)
    dh = dh / np.sqrt(dh * dh + eps)
    dv = dv / np.sqrt(dv * dv + eps)
    g[..., :, :-1] -= dh
    g[..., :, 1:] += dh
    g[..., :-1, :] -= dv
    g[..., 1:, :] += dv
    return g


def smooth_images(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an image batch ``(n, c, h, w)`` over height and width only."""
    if sigma <= 0:
        return x
    return gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (sigma, sigma), mode="nearest")


def log_margin(p: np.ndarray, y: np.ndarray, floor: float = TINY) -> np.ndarray:
    """log p_y - log max_{j != y} p_j per row (the logit margin when ``p`` is a softmax), with
    probabilities floored at ``floor`` (half the output resolution for rounded outputs)."""
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(y))
    py = p[rows, y]
    others = p.copy()
    others[rows, y] = -np.inf
    return np.log(np.maximum(py, floor)) - np.log(np.maximum(others.max(axis=1), floor))
