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
    return _distances(z, sq_norms(z), recent)


def _distances(z: np.ndarray, q_sq: np.ndarray, recent: RecentQueries) -> np.ndarray:
    n, b = len(z), recent.filled
    d = np.empty((n, b + n))
    pairwise(z, q_sq, recent.z[:b], recent.sq[:b], out=d[:, :b])
    if n > 1:
        pairwise(z, q_sq, z, q_sq, out=d[:, b:])
    np.sqrt(d[:, :b], out=d[:, :b])
    if n > 1:
        np.sqrt(d[:, b:], out=d[:, b:])
        d[:, b:][_later(n)] = np.inf  # self and later rows of the batch
    else:
        d[0, b] = np.inf  # the query itself
    return d


def with_neighbours(batch: Batch, recent: RecentQueries) -> Batch:
    """``batch`` with its distances to the client's earlier queries and their labels filled."""
    batch.d = _distances(batch.z, batch_sq_norms(batch), recent)
    batch.prev_labels = np.concatenate([recent.recent()[1], batch.labels])
    return batch


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

    def _values(self, batch: Batch) -> np.ndarray:
        d, prev = batch.d, batch.prev_labels
        if d is None or prev is None:
            raise ConfigError(f"{self.name} needs the batch's neighbours (Monitor.observe)")
        return self.per_query(d, prev, batch.labels)

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
