"""Windowed k-NN detectors over a bounded buffer of a client's recent queries.

Both the stateful similarity detector (``similarity.py``) and the boundary-probing detector
(``boundary.py``) compare each new query with the client's last ``buffer`` queries in the
monitor's feature space, turn that comparison into one number per query, call the query
suspicious when the number falls below a radius calibrated on benign streams, and raise an alarm
when ``m`` of the last ``window`` queries were suspicious. This module holds that machinery; the
subclasses say what the per-query number is.

The search is exact, with NumPy on the small bounded buffer (at most ``buffer`` x ``k`` floats):
for buffers of a few thousand rows a brute-force distance matrix beats building an index per
query, and it is exact.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import (
    Batch,
    Detector,
    Finding,
    Stream,
    WindowState,
    count_threshold,
    extreme_bound,
)

CALIBRATION_BATCH = 32


class RecentQueries:
    """A client's last ``size`` queries in the feature space, with their labels and squared
    norms (a ring). One per client, shared by every buffer detector; the monitor appends each
    batch after the detectors have seen it."""

    def __init__(self, size: int, k: int) -> None:
        self.z = np.zeros((size, k), dtype=np.float32)
        self.sq = np.zeros(size, dtype=np.float64)
        self.labels = np.zeros(size, dtype=np.int64)
        self.filled = 0
        self.pos = 0

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        return self.z[: self.filled], self.labels[: self.filled]

    def add(self, z: np.ndarray, labels: np.ndarray, sq: np.ndarray | None = None) -> None:
        """Append a batch (``sq``: its squared norms, when already computed)."""
        cap = len(self.z)
        if sq is None:
            sq = sq_norms(z)
        if len(z) >= cap:
            z, labels, sq = z[-cap:], labels[-cap:], sq[-cap:]
        idx = (self.pos + np.arange(len(z))) % cap
        self.z[idx] = z
        self.sq[idx] = sq
        self.labels[idx] = labels
        self.pos = int((self.pos + len(z)) % cap)
        self.filled = min(cap, self.filled + len(z))

    @property
    def nbytes(self) -> int:
        return self.z.nbytes + self.sq.nbytes + self.labels.nbytes


def sq_norms(z: np.ndarray) -> np.ndarray:
    z64 = z.astype(np.float64)
    return np.einsum("ij,ij->i", z64, z64)


def batch_sq_norms(batch: Batch) -> np.ndarray:
    """``sq_norms(batch.z)``, computed once per batch (``Batch.z_sq``)."""
    if batch.z_sq is None:
        batch.z_sq = sq_norms(batch.z)
    return batch.z_sq


_LATER: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _later(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the self-and-later pairs of an ``n``-query batch (upper triangle), cached."""
    t = _LATER.get(n)
    if t is None:
        t = np.triu_indices(n)
        if len(_LATER) < 1024:
            _LATER[n] = t
    return t


def pairwise(
    q: np.ndarray,
    q_sq: np.ndarray,
    b: np.ndarray,
    b_sq: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Squared L2 distances ``(len(q), len(b))`` from cached squared norms and a float32 product.

    The product's rounding (about 1e-7 of ``|q| |b|``) bounds the error of a distance near zero
    to a few thousandths of the data's scale: far below every radius the detectors use.
    ``out``: a float64 array to write into (no temporaries; the same values as without)."""
    if out is None:
        out = np.empty((len(q), len(b)))
    np.add(q_sq[:, None], b_sq[None, :], out=out)
    prod = q @ b.T  # float32, as the detectors' thresholds were calibrated
    prod *= 2.0  # exact in float32 (a power of two)
    np.subtract(out, prod, out=out)
    return np.maximum(out, 0.0, out=out)


def distances(z: np.ndarray, recent: RecentQueries) -> np.ndarray:
    """L2 distances from each query of a batch to every earlier query: the buffer's rows, then
    the batch's own rows (``inf`` for the query itself and later ones), ``(n, filled + n)``."""
    return root(_squared(z, sq_norms(z), recent))


def root(d2: np.ndarray) -> np.ndarray:
    """``sqrt(max(d2, 0))``: distances from the squared distances of :func:`_squared`."""
    return np.sqrt(np.maximum(d2, 0.0))


def _squared(z: np.ndarray, q_sq: np.ndarray, recent: RecentQueries) -> np.ndarray:
    """:func:`pairwise` to the buffer and within the batch, written into one matrix, not yet
    clamped at zero (``inf`` for the query itself and later ones). The clamp and the square root
    are monotone, so the detectors apply them to the minima and ``k`` smallest they take: the
    same bits as clamping and square-rooting the whole matrix, for a few values per row."""
    n, b = len(z), recent.filled
    d2 = np.empty((n, b + n))
    np.add(q_sq[:, None], np.concatenate([recent.sq[:b], q_sq])[None, :], out=d2)
    prod = z @ recent.z[:b].T  # float32, as the detectors' thresholds were calibrated
    prod *= 2.0  # exact in float32 (a power of two)
    np.subtract(d2[:, :b], prod, out=d2[:, :b])
    if n > 1:
        prod = z @ z.T  # as pairwise(z, q_sq, z, q_sq) computes it
        prod *= 2.0
        np.subtract(d2[:, b:], prod, out=d2[:, b:])
        d2[:, b:][_later(n)] = np.inf  # self and later rows of the batch
    else:
        d2[0, b] = np.inf  # the query itself
    return d2


def with_neighbours(batch: Batch, recent: RecentQueries) -> Batch:
    """``batch`` with its squared distances to the client's earlier queries and their labels."""
    batch.d2 = _squared(batch.z, batch_sq_norms(batch), recent)
    batch.d = batch.by_label = None
    batch.prev_labels = np.concatenate([recent.recent()[1], batch.labels])
    return batch


def batch_distances(batch: Batch) -> np.ndarray:
    """The batch's distances to earlier queries (``Batch.d``), square-rooted once, on demand."""
    if batch.d is None:
        if batch.d2 is None:
            raise ConfigError("the buffer detectors need the batch's neighbours (Monitor.observe)")
        batch.d = root(batch.d2)
    return batch.d


SHARED_MASKS_FROM = 16  # smaller batches mask the matrix directly (fewer steps)


def _penalties(batch: Batch) -> tuple[np.ndarray, ...]:
    """Per query, the row of its label among the earlier queries' labels (the last row for a
    label none of them has), the labels' column masks ``(labels + 1, columns)``, and per label
    ``0`` on its columns and ``inf`` elsewhere, and the reverse; once per batch
    (``Batch.by_label``, shared by ``copies`` and ``boundary``)."""
    if batch.by_label is None:
        if batch.d2 is None or batch.prev_labels is None:
            raise ConfigError("the buffer detectors need the batch's neighbours (Monitor.observe)")
        prev = batch.prev_labels
        labels = np.unique(prev)
        col = np.minimum(np.searchsorted(labels, batch.labels), len(labels) - 1)
        row = np.where(labels[col] == batch.labels, col, len(labels))
        onehot = np.zeros((len(labels) + 1, len(prev)), dtype=bool)
        np.equal(prev[None, :], labels[:, None], out=onehot[:-1])
        batch.by_label = (row, onehot, np.where(onehot, 0.0, np.inf), np.where(onehot, np.inf, 0.0))
    return batch.by_label


def _masked_min(d2: np.ndarray, penalty: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row minima of ``d2`` over the columns ``keep`` (``inf`` where none): ``d2 + penalty``
    (``penalty`` 0 on them, ``inf`` elsewhere) adds nothing to a kept value and makes the others
    ``inf``, as ``np.where(keep, d2, inf)`` does; rows holding a NaN are masked as that does."""
    out = np.add(d2, penalty).min(axis=1, initial=np.inf)
    nan = np.flatnonzero(np.isnan(out))
    if len(nan):
        out[nan] = np.where(keep[nan], d2[nan], np.inf).min(axis=1, initial=np.inf)
    return out


def same_label_nearest(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the least squared distance to an earlier query answered the same label
    (``inf`` if none), and how many such queries are at a finite distance."""
    d2 = batch.d2
    assert d2 is not None and batch.prev_labels is not None
    n, m = d2.shape
    if n < SHARED_MASKS_FROM:
        same = batch.prev_labels[None, :] == batch.labels[:, None]
        nearest = np.where(same, d2, np.inf).min(axis=1, initial=np.inf)
        return nearest, (same & np.isfinite(d2)).sum(axis=1)
    row, onehot, same_penalty, _ = _penalties(batch)
    same = onehot[row]
    nearest = _masked_min(d2, same_penalty[row], same)
    b = m - n  # the buffer's columns; then the batch's own
    if np.isfinite(d2[:, :b]).all():  # then only the batch's own columns need counting
        count = onehot[:, :b].sum(axis=1)[row]
        count += (same[:, b:] & np.isfinite(d2[:, b:])).sum(axis=1)
    else:
        count = (same & np.isfinite(d2)).sum(axis=1)
    return nearest, count


def other_label_nearest(batch: Batch) -> np.ndarray:
    """Per query: the least squared distance to an earlier query answered another label."""
    d2 = batch.d2
    assert d2 is not None and batch.prev_labels is not None
    if len(d2) < SHARED_MASKS_FROM:
        other = batch.prev_labels[None, :] != batch.labels[:, None]
        return np.where(other, d2, np.inf).min(axis=1, initial=np.inf)
    row, onehot, _, other_penalty = _penalties(batch)
    return _masked_min(d2, other_penalty[row], ~onehot[row])


class KnnDetector(Detector):
    """Base of the buffer detectors: subclasses define :meth:`per_query` (lower = suspicious).

    The client's recent queries live in one :class:`RecentQueries` per client that the monitor
    keeps and shares between these detectors (its size is the largest ``buffer`` any of them
    asks for; give them the same one): the distances are computed once per batch (``Batch.d``).
    """

    uses_recent: ClassVar[bool] = True

    def __init__(
        self,
        *,
        buffer: int = 1000,
        window: int = 50,
        query_rate: float = 0.01,
        stream_len: int = 1000,
        radius: float | None = None,
        min_count: int | None = None,
        dim: int | None = None,
    ) -> None:
        """Args:
        buffer: recent queries compared with each new one, per client.
        window: queries over which suspicious ones are counted.
        query_rate: share of benign queries allowed below the radius (its calibration quantile).
        stream_len: length of the benign client stream the false-positive target refers to.
        radius, min_count, dim: calibrated values (``None`` until :meth:`calibrate`).
        """
        if buffer < 2 or window < 1 or not 0 < query_rate < 1 or stream_len < 1:
            raise ConfigError(
                f"{self.name}: buffer must be >= 2, window >= 1, query_rate in (0, 1) and "
                "stream_len >= 1"
            )
        self.buffer = int(buffer)
        self.window = int(window)
        self.query_rate = float(query_rate)
        self.stream_len = int(stream_len)
        self.radius_ = radius
        self.min_count_ = min_count
        self.dim_ = dim

    @abstractmethod
    def per_query(self, d: np.ndarray, columns: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """One number per query of the batch from its distances to earlier queries ``d`` (see
        :func:`distances`), the labels of ``d``'s columns and the batch's labels; ``inf`` when
        undefined."""

    def evidence(self, value: float) -> dict[str, Any]:
        return {}

    def values(self, batch: Batch) -> np.ndarray:
        """:meth:`per_query` for a batch with its neighbours (subclasses may compute it from
        the squared distances, ``Batch.d2``, without the whole matrix)."""
        assert batch.prev_labels is not None
        return self.per_query(batch_distances(batch), batch.prev_labels, batch.labels)

    def _values(self, batch: Batch) -> np.ndarray:
        if batch.d2 is None or batch.prev_labels is None:
            raise ConfigError(f"{self.name} needs the batch's neighbours (Monitor.observe)")
        return self.values(batch)

    # -- calibration ---------------------------------------------------------------------
    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        self.dim_ = int(streams[0].z.shape[1])
        values = [self._replay(s) for s in streams]
        # the distances shrink as a client's buffer fills: take the quantile over the second
        # half of each stream, where the buffer is fullest, not over all positions
        pooled = np.concatenate([v[len(v) // 2 :] for v in values])
        finite = pooled[np.isfinite(pooled)]
        if len(finite) == 0:
            raise ConfigError(
                f"{self.name}: the benign calibration streams are too short for a statistic; "
                "give more benign records"
            )
        # hits are strict (value < radius): with exact duplicates in benign data the quantile
        # can be 0, and then only queries the benign data never produce would count
        radius = float(np.quantile(finite, self.query_rate))
        self.radius_ = radius
        rate = float(np.mean(finite < radius))
        m = count_threshold(max(rate, self.query_rate), self.window, self.stream_len, target_fpr)
        # above the worst window of any benign kind, extrapolated past the few calibration
        # streams of each kind (extreme_bound; issue 19)
        worst = [float(WindowState(self.window).max_count(v < radius)) for v in values]
        bound = extreme_bound(worst, [s.kind for s in streams], target_fpr)
        self.min_count_ = int(min(self.window, max(m, int(np.floor(bound)) + 1)))

    def _replay(self, stream: Stream) -> np.ndarray:
        recent = RecentQueries(self.buffer, stream.z.shape[1])
        out = []
        for batch in stream.batches(CALIBRATION_BATCH):
            out.append(self._values(with_neighbours(batch, recent)))
            recent.add(batch.z, batch.labels, batch.z_sq)
        return np.concatenate(out)

    # -- serving -------------------------------------------------------------------------
    def new_state(self) -> WindowState:
        return WindowState(self.window)

    def observe(self, state: WindowState, batch: Batch) -> Finding | None:
        if self.radius_ is None or self.min_count_ is None:
            raise ConfigError(f"{self.name} is not calibrated; call Monitor.fit first")
        values = self._values(batch)
        first = state.push(values < self.radius_, self.min_count_)
        if first is None:
            return None
        finding = Finding(
            detector=self.name,
            statistic=float(state.count),
            threshold=float(self.min_count_),
            evidence={
                "direction": "above",
                "statistic": f"queries with {self.statistic_name} below the radius among the "
                f"last {self.window}",
                "radius": self.radius_,
                "value": float(values[first]),
                "window": self.window,
                "query_index": batch.start + first,
                "fingerprints": batch.fingerprints(first),
                **self.evidence(float(values[first])),
            },
        )
        # a new alarm needs a new window's worth of suspicious queries (the paper clears its
        # buffer; here the buffer is shared with the other buffer detector and stays)
        state.reset()
        return finding

    def state_bytes(self, state: WindowState) -> int:
        return state.flags.nbytes

    def params(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer,
            "window": self.window,
            "query_rate": self.query_rate,
            "stream_len": self.stream_len,
            "radius": self.radius_,
            "min_count": self.min_count_,
            "dim": self.dim_,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> KnnDetector:
        return cls(**params)
