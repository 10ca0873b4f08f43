"""Stateful detection of query-based attack streams: many near-duplicate queries.

After Chen, Carlini and Wagner, "Stateful Detection of Black-Box Adversarial Attacks", ACM ASIA
CCS Workshop on Security and Privacy on AI (SPAI) 2020 (arXiv:1907.05587). The paper keeps a
buffer of each client's recent queries encoded by a similarity encoder, computes for every new
query the mean distance to its ``k`` nearest neighbours in the buffer, and flags the query when
that mean falls below a threshold chosen on benign data for a target false-positive rate; after a
detection the buffer is cleared.

Here the encoder is the monitor's :class:`~privguard.gateway.monitor.base.FeatureSpace`: a PCA
of the training inputs (a rotation for inputs of at most ``n_components`` features), not a
learned contrastive encoder, so the detector sees pixel-level closeness rather than perceptual
closeness. A single flagged query raises no alarm: one per ``query_rate`` benign queries is below
the radius by construction, so the alarm needs ``min_count`` flagged queries among the last
``window``, with ``min_count`` set by a binomial tail so that a benign client of ``stream_len``
queries is flagged with probability at most the target rate (and above the count a benign
calibration stream of each kind is expected to reach with that probability: an extreme-value
bound over the streams' worst windows, ``base.extreme_bound``).

Threat model: a client who explores the model around a few points -- black-box inversion by
finite differences or NES, decision-based searches (HopSkipJump, boundary attacks), label-only
membership by augmentation (noisy or shifted copies of each candidate) -- sends clusters of
queries far closer together than natural inputs are. Known evasions: spreading the queries over
many accounts (state is per client), slowing down so that fewer than ``min_count`` near
duplicates fall in the last ``window`` queries (interleaving natural queries), and perturbations
larger than the radius (which cost the attack gradient accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch
from privguard.gateway.monitor.knn import KnnDetector, root

# below these sizes one partition of the whole matrix is as cheap as the cut-off's passes
FAST_MIN_ROWS = 8
FAST_MIN_COLUMNS_PER_K = 8


def k_smallest_mean(d: np.ndarray, k: int, *, squared: bool = False) -> np.ndarray:
    """Per row of ``d``: the mean of its ``k`` smallest values, summed in ascending order
    (``inf`` for every row when ``d`` has fewer than ``k`` columns). ``squared``: ``d`` holds
    squared distances not yet clamped at zero, and the mean is that of the distances,
    ``sqrt(max(d, 0))`` (monotone: the ``k`` smallest distances are the roots of the ``k``
    smallest squares, so only those are square-rooted).

    The values are those of ``np.sort(d, axis=1)[:, :k].mean(axis=1)``, and of
    ``np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)`` wherever the partition leaves its
    ``k`` smallest in ascending order (on x86 NumPy's AVX-512/AVX2 quickselect does for every
    row where it never took a pivot among the ``k`` smallest: its last step sorts the slice that
    holds them; in a different order the sum can differ in its last bit). A partition of the
    whole matrix costs about 8 ns per value; instead a cut-off is found per row that the row's
    ``k``-th smallest value cannot exceed -- the ``k``-th smallest of the minima of ``2k`` to
    ``4k`` disjoint column groups (``k`` groups each hold a value at most that large) -- and
    only the few values at or below it (about ``k`` to ``2k`` per row) are gathered and
    sorted. Rows whose candidates are many (ties, e.g. a client repeating one query) or too
    few (NaN), and small matrices, are partitioned whole, as before. Exact: nothing is
    approximated, only values that cannot be among the ``k`` smallest are skipped.
    """
    n, m = d.shape
    if m < k:
        return np.full(n, np.inf)
    if n < FAST_MIN_ROWS or m < FAST_MIN_COLUMNS_PER_K * k:
        return _partition_mean(root(d) if squared else d, k)
    d = np.ascontiguousarray(d)
    cut = np.partition(_group_minima(d, 2 * k), k - 1, axis=1)[:, k - 1]
    idx = np.flatnonzero(d <= cut[:, None])  # candidates, row by row
    rows = idx // m
    counts = np.bincount(rows, minlength=n)
    fast = (counts >= k) & (counts <= 4 * k)
    out = np.empty(n)
    if not fast.all():
        slow = ~fast
        out[slow] = _partition_mean(root(d[slow]) if squared else d[slow], k)
        keep = fast[rows]
        idx, rows = idx[keep], rows[keep]
        counts = np.where(fast, counts, 0)
    starts = np.cumsum(counts) - counts
    width = int(counts.max(initial=k))
    padded = np.full((n, width), np.inf)
    padded[rows, np.arange(len(idx)) - starts[rows]] = d.ravel()[idx]
    padded.sort(axis=1)
    nearest = root(padded[:, :k]) if squared else padded[:, :k]
    means = nearest.mean(axis=1)  # the reduction np.partition's result goes through
    out[fast] = means[fast]
    return out


def _partition_mean(d: np.ndarray, k: int) -> np.ndarray:
    return np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)


def _group_minima(d: np.ndarray, groups: int) -> np.ndarray:
    """Row minima of ``groups`` to ``2 * groups`` disjoint groups of ``d``'s columns (halving
    folds of contiguous column blocks: one pass over ``d``); ``NaN`` propagates."""
    w = d.shape[1]
    if w <= 2 * groups:
        return d
    h = (w + 1) // 2
    x = d[:, :h].copy()
    np.minimum(x[:, : w - h], d[:, h:w], out=x[:, : w - h])
    w = h
    while w > 2 * groups:
        h = (w + 1) // 2
        np.minimum(x[:, : w - h], x[:, h:w], out=x[:, : w - h])
        w = h
    return x[:, :w]


class SimilarityDetector(KnnDetector):
    """Mean distance to the ``k`` nearest earlier queries below a benign-calibrated radius.

    Example:
        >>> det = SimilarityDetector(k=10)      # inside a Monitor; calibrated by Monitor.fit
    """

    name = "similarity"
    statistic_name = "mean distance to the k nearest earlier queries"

    def __init__(self, *, k: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 1 <= k < self.buffer:
            raise ConfigError("similarity: k must be at least 1 and smaller than the buffer")
        self.k = int(k)

    def per_query(self, d: np.ndarray, columns: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return k_smallest_mean(d, self.k)  # inf when fewer than k earlier queries exist

    def values(self, batch: Batch) -> np.ndarray:
        assert batch.d2 is not None
        return k_smallest_mean(batch.d2, self.k, squared=True)

    def evidence(self, value: float) -> dict[str, Any]:
        return {"k": self.k}

    def params(self) -> dict[str, Any]:
        return {"k": self.k, **super().params()}
