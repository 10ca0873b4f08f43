"""Near-copies of the client's own earlier queries, counted over its whole history.

Most extraction and inversion strategies spend their budget *around* points they already asked
about: Jacobian-based augmentation (Papernot et al., AsiaCCS 2017) pushes every earlier point by
a small step; Knockoff Nets (Orekondy et al., CVPR 2019), once its natural pool is spent, sends
shifted, blended and noised copies of pool records; active extraction and black-box inversion
refine earlier queries. Each such query lies much closer to one earlier query of the same client
than natural inputs lie to each other. The similarity detector (``similarity.py``, Chen et al.
2020) looks for *clusters* (the mean distance to the ``k`` nearest earlier queries), which a
one-step-per-point strategy does not form early on; this detector looks at the single nearest
earlier query.

A query is suspicious when its distance ``d`` to the nearest of the client's recent queries (the
monitor's shared buffer, in its feature space) satisfies ``floor <= d < radius``: ``radius`` is
the ``query_rate`` quantile of that distance on benign streams (their second halves, where the
buffer is fullest), ``floor = floor_fraction * radius``. Queries closer than ``floor`` are
repeats -- a client retrying a request, a re-encoded copy -- and teach an attacker (almost)
nothing new; the tiny steps of finite-difference and boundary searches come in clusters the
similarity and boundary detectors flag. The alarm is the sequential rate test of ``rate.py``
over the client's history, not a window: interleaving natural queries does not reset it.

This combination (nearest-copy distance with a repeat floor, under a sequential binomial test) is
privguard's own detector. Threat model: one client (or one account, see
``Monitor.observe(account=...)``) stealing or inverting the model by exploring around its own
earlier queries. Known evasions: steps larger than the radius (a Jacobian step that large leaves
the data manifold and raises the ``lowdensity`` detector), queries that are each a fresh natural
record (Knockoff Nets' pool phase, which looks like any benign client by construction), about
``1 / base_rate`` natural queries per attack query, and splitting the attack over keys of
different owners.

Issue 19, second calibration: *how near* counts as a near-copy depends on the label the model
answers and on how many earlier queries of that label the client's buffer holds. Natural inputs
of some classes lie much closer together than others (mnist's ones), and the nearest of ``n``
earlier inputs of a class comes closer as ``n`` grows (nearest-neighbour distances shrink like
``n ** (-1 / d)`` on a ``d``-dimensional manifold; Biau & Devroye, *Lectures on the Nearest
Neighbor Method*, 2015, ch. 2). A client asking one class at a time fills its buffer with that
class: with one radius for every query, class-sorted benign mnist-5k streams reached p-values
of 1e-89, the test's ``alpha`` had to fall to 1.4e-165, and interleaved attacks went through.
So the statistic is the distance to the nearest earlier query *answered the same label*, and
the radius is ``radius(label, n) = m_label(n) * k(n)``: ``m_c(n)`` the median distance from a
natural record of class ``c`` to the nearest of ``n`` other random records of the class
(cumulative minima along random orders), ``k(n)`` the ``query_rate`` quantile of those
distances divided by their class's median, pooled over the classes (a scale family: a 2%
quantile of one class's few hundred records rests on a handful of close pairs). For a client
whose queries are exchangeable draws of natural records, a query is then suspicious with about
the same probability *whatever the order* -- shuffled, one class at a time, in bursts -- so one
base rate serves every kind of benign stream. The rate is measured out of sample (two-fold
sample splitting: curves fitted on one half of the natural records, the rule replayed on the
other half in its given, shuffled and class-sorted orders, and the other way round; the first
half's curves are kept), and the test uses its upper ``confidence`` bound (Clopper & Pearson,
Biometrika 1934), each record counted once: on mnist-5k seed 0 the rule hit 2.1% of in-sample
and 2.5% of out-of-sample queries, and the per-class rates out of sample ranged 0.6-5%.
Queries closer than ``floor`` (a tenth of the single any-label radius, as before) are repeats.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from privguard.errors import ConfigError, ModelError
from privguard.gateway.monitor.base import Batch, Stream
from privguard.gateway.monitor.knn import (
    RecentQueries,
    pairwise,
    root,
    same_label_nearest,
    sq_norms,
    with_neighbours,
)
from privguard.gateway.monitor.rate import CALIBRATION_BATCH, RateDetector, upper_rate

GRID_POINTS = 48  # counts n at which radius(label, n) is kept (geometric, 1 .. buffer)
CURVE_ORDERS = 8  # random orders per record for the nearest-of-n curves
CURVE_QUERIES = 500  # records per class whose curves are traced (at most)
HALF_ORDERS = 8  # shuffled and class-sorted orders of the held-back half


def nearest_of_n(z: np.ndarray, nmax: int, rng: np.random.Generator) -> np.ndarray:
    """``out[j, n - 1]``: the distance from a record of ``z`` to the nearest of ``n`` other
    random records of ``z``, for ``n = 1 .. min(len(z) - 1, nmax)``: cumulative minima of its
    distances along a random order of the others (``CURVE_ORDERS`` orders per record, at most
    ``CURVE_QUERIES`` records)."""
    m = len(z)
    sq = sq_norms(z)
    qi = rng.choice(m, min(m, CURVE_QUERIES), replace=False)
    d = np.sqrt(pairwise(z[qi], sq[qi], z, sq))
    length = min(m - 1, nmax)
    out = np.empty((CURVE_ORDERS * len(qi), length))
    for rep in range(CURVE_ORDERS):
        for a, i in enumerate(qi):
            others = rng.permutation(m)
            others = others[others != i][:length]
            out[rep * len(qi) + a] = np.minimum.accumulate(d[a, others])
    return out


def extend(curve: np.ndarray, nmax: int) -> np.ndarray:
    """``curve`` (indexed by ``n - 1``) continued up to ``n = nmax`` by the power law
    ``r = a n ** b`` fitted (least squares in log-log) to its upper half, never increasing:
    a client's buffer may hold more queries of a class than the calibration has records."""
    length = len(curve)
    if length >= nmax:
        return curve[:nmax]
    n = np.arange(1, length + 1)
    lo = length // 2
    ok = curve[lo:] > 0
    b, a = 0.0, float(np.log(max(curve[-1], 1e-12)))
    if ok.sum() >= 2:
        b, a = np.polyfit(np.log(n[lo:][ok]), np.log(curve[lo:][ok]), 1)
        b = min(float(b), 0.0)
    ext = np.minimum(np.exp(a + b * np.log(np.arange(length + 1, nmax + 1))), curve[-1])
    return np.r_[curve, ext]


class CopiesDetector(RateDetector):
    """Nearest earlier query of the same label within ``[floor, radius(label, n))``, under a
    sequential rate test.

    Example:
        >>> det = CopiesDetector(query_rate=0.02)   # inside a Monitor; calibrated by Monitor.fit
    """

    name = "copies"
    statistic_name = "distance to the nearest earlier query answered the same label"
    uses_recent: ClassVar[bool] = True

    def __init__(
        self,
        *,
        buffer: int = 1000,
        query_rate: float = 0.02,
        floor_fraction: float = 0.1,
        confidence: float = 0.999,
        radius: float | None = None,
        labels: list[int] | None = None,
        grid: list[int] | None = None,
        table: list[list[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if buffer < 2 or not 0 < query_rate < 1 or not 0 <= floor_fraction < 1:
            raise ConfigError(
                "copies: buffer must be >= 2, query_rate in (0, 1), floor_fraction in [0, 1)"
            )
        if not 0 < confidence < 1:
            raise ConfigError("copies: confidence must be in (0, 1)")
        self.buffer = int(buffer)
        self.query_rate = float(query_rate)
        self.floor_fraction = float(floor_fraction)
        self.confidence = float(confidence)
        self.radius_ = radius
        self.labels_ = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.grid_ = None if grid is None else np.asarray(grid, dtype=np.int64)
        self.table_ = None if table is None else np.asarray(table, dtype=np.float64)
        if self.table_ is not None and (
            self.labels_ is None
            or self.grid_ is None
            or self.table_.shape != (len(self.labels_) + 1, len(self.grid_))
        ):
            raise ConfigError("copies: table must have one row per label plus one, one per grid")

    @staticmethod
    def same_label(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the distance to the nearest earlier query answered the same label, and
        how many such earlier queries the buffer holds."""
        if batch.d2 is None or batch.prev_labels is None:
            raise ConfigError("copies needs the batch's neighbours (Monitor.observe)")
        # the least squared distance to the same label (masks shared with boundary): the
        # square root is monotone, so the nearest distance is the root of the least square
        nearest, count = same_label_nearest(batch)
        return np.sqrt(np.maximum(nearest, 0.0)), count

    def radii(self, labels: np.ndarray, count: np.ndarray) -> np.ndarray:
        """``radius(label, n)`` (a label the calibration never answered: the row of all labels)."""
        if self.table_ is None or self.labels_ is None or self.grid_ is None:
            raise ConfigError("copies is not calibrated; call Monitor.fit first")
        row = np.searchsorted(self.labels_, labels)
        row = np.minimum(row, len(self.labels_) - 1)
        row = np.where(self.labels_[row] == labels, row, len(self.labels_))
        col = np.maximum(np.searchsorted(self.grid_, count, side="right") - 1, 0)
        return self.table_[row, col]

    def _hits(self, nearest: np.ndarray, labels: np.ndarray, count: np.ndarray) -> np.ndarray:
        floor = self.floor_fraction * float(self.radius_)
        return (count >= 1) & (nearest < self.radii(labels, count)) & (nearest >= floor)

    def hits(self, batch: Batch) -> np.ndarray:
        if self.radius_ is None:
            raise ConfigError("copies is not calibrated; call Monitor.fit first")
        nearest, count = self.same_label(batch)
        return self._hits(nearest, batch.labels, count)

    def _replay(self, s: Stream, rule: bool) -> np.ndarray:
        """Per query of ``s``: hits under the calibrated rule, or (``rule`` False) the distance
        to the nearest earlier query of any label (the floor's scale)."""
        recent = RecentQueries(self.buffer, s.z.shape[1])
        out = []
        for batch in s.batches(CALIBRATION_BATCH):
            b = with_neighbours(batch, recent)
            if rule:
                nearest, count = self.same_label(b)
                out.append(self._hits(nearest, b.labels, count))
            else:
                assert b.d2 is not None
                out.append(root(b.d2.min(axis=1, initial=np.inf)))
            recent.add(batch.z, batch.labels, batch.z_sq)
        return np.concatenate(out)

    def calibrate_hits(self, streams: list[Stream]) -> list[np.ndarray]:
        return [self._replay(s, True) for s in streams]

    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        # the floor's scale: the query_rate quantile of the nearest earlier query (any label)
        # over the second halves of the streams, where the buffer is fullest (as before)
        late = np.concatenate([v[len(v) // 2 :] for v in (self._replay(s, False) for s in streams)])
        late = late[np.isfinite(late)]
        if len(late) == 0:
            raise ConfigError("copies: the benign calibration streams are too short")
        self.radius_ = float(np.quantile(late, self.query_rate))
        # the natural records: the longest stream (the training and held-out records together)
        pool = max(streams, key=lambda s: len(s.z))
        if len(pool.z) < 4:
            raise ConfigError("copies: give at least 4 natural records to calibrate on")
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(pool.z))
        halves = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])
        self.grid_ = np.unique(np.geomspace(1, self.buffer, GRID_POINTS).round().astype(np.int64))
        # two-fold cross-fitting: curves from one half, the rule measured on the other, both
        # ways; the detector keeps the first half's curves
        per_stream, kinds, tables = [], [], []
        for fit, held in (halves, halves[::-1]):
            tables.append(self._fit_table(pool.z[fit], pool.labels[fit], rng))
            self.labels_, self.table_ = tables[-1]
            for kind, idx in self._orders(held, pool.labels, rng):
                s = Stream(pool.x[idx], pool.z[idx], pool.labels[idx], None, kind)
                per_stream.append(self._replay(s, True))
                kinds.append(kind)
        self.labels_, self.table_ = tables[0]
        # every order holds the same records: the upper bound counts each record once
        rate = float(np.mean([h.mean() for h in per_stream]))
        hits = int(round(rate * len(pool.z)))
        self.base_rate_ = float(max(upper_rate(hits, len(pool.z), self.confidence), 1e-4))
        self._fit_alpha(per_stream, kinds, target_fpr)

    def _fit_table(
        self, z: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The labels and ``radius(label, n)`` at the grid's counts (last row: all labels).

        A low quantile of a few hundred records' distances per class is noisy (a 2% quantile
        rests on a handful of close pairs), so each class gives only its *scale*, the median
        nearest-of-``n`` distance ``m_c(n)``, and the shape comes from all classes together:
        ``radius(c, n) = m_c(n) * k(n)``, with ``k(n)`` the ``query_rate`` quantile of the
        distances divided by their class's median, pooled over the classes (a scale family)."""
        assert self.grid_ is not None
        grid = self.grid_
        out_all = nearest_of_n(z, self.buffer, rng)
        pooled = extend(np.quantile(out_all, self.query_rate, axis=0), self.buffer)[grid - 1]
        present = np.unique(labels)
        medians, ratios = {}, {}
        for c in present:
            zc = z[labels == c]
            if len(zc) > 2:
                out = nearest_of_n(zc, self.buffer, rng)
                med = np.median(out, axis=0)
                medians[c] = extend(med, self.buffer)[grid - 1]
                ratios[c] = out / np.maximum(med, 1e-12)
        k = np.full(len(grid), np.nan)
        for j, n in enumerate(grid):
            cols = [r[:, n - 1] for r in ratios.values() if r.shape[1] >= n]
            if cols:
                k[j] = np.quantile(np.concatenate(cols), self.query_rate)
        # counts beyond every class's records: the last ratio quantile measured
        seen = np.flatnonzero(np.isfinite(k))
        if len(seen) == 0:
            return present, np.tile(pooled, (len(present) + 1, 1))
        k[seen[-1] + 1 :] = k[seen[-1]]
        k[: seen[0]] = k[seen[0]]
        rows = [medians[c] * k if c in medians else pooled for c in present]
        return present, np.array(rows + [pooled])

    @staticmethod
    def _orders(
        held: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> list[tuple[str, np.ndarray]]:
        """``held`` in the orders benign clients use: as given, shuffled, one class at a time."""
        lab = labels[held]
        out = [("natural", held)]
        out += [("shuffled", held[rng.permutation(len(held))]) for _ in range(HALF_ORDERS)]
        n_labels = int(lab.max()) + 2
        for i in range(HALF_ORDERS):
            rank = np.arange(n_labels) if i % 2 == 0 else rng.permutation(n_labels)
            out.append(("class-sorted", held[np.lexsort((rng.random(len(held)), rank[lab + 1]))]))
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RateDetector:
        """The detector back from :meth:`params`; a calibrated one saved before the radius per
        label (no ``table``) is refused: its ``alpha`` belongs to the old rule."""
        if params.get("alpha") is not None and params.get("table") is None:
            raise ModelError(
                "the saved copies detector predates its radius per label; re-fit the monitor "
                "(privguard monitor fit)"
            )
        return super().from_params(params)

    def describe_hit(self) -> str:
        return "near-copies of its own earlier queries of the same label"

    def params(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer,
            "query_rate": self.query_rate,
            "floor_fraction": self.floor_fraction,
            "confidence": self.confidence,
            "radius": self.radius_,
            "labels": None if self.labels_ is None else self.labels_.tolist(),
            "grid": None if self.grid_ is None else self.grid_.tolist(),
            "table": None if self.table_ is None else self.table_.tolist(),
            **self.rate_params(),
        }
