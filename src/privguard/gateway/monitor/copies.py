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
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch, Stream
from privguard.gateway.monitor.knn import RecentQueries, with_neighbours
from privguard.gateway.monitor.rate import CALIBRATION_BATCH, RateDetector


class CopiesDetector(RateDetector):
    """Nearest earlier query within ``[floor, radius)``, under a sequential rate test.

    Example:
        >>> det = CopiesDetector(query_rate=0.02)   # inside a Monitor; calibrated by Monitor.fit
    """

    name = "copies"
    statistic_name = "distance to the nearest earlier query"
    uses_recent: ClassVar[bool] = True

    def __init__(
        self,
        *,
        buffer: int = 1000,
        query_rate: float = 0.02,
        floor_fraction: float = 0.1,
        radius: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if buffer < 2 or not 0 < query_rate < 1 or not 0 <= floor_fraction < 1:
            raise ConfigError(
                "copies: buffer must be >= 2, query_rate in (0, 1), floor_fraction in [0, 1)"
            )
        self.buffer = int(buffer)
        self.query_rate = float(query_rate)
        self.floor_fraction = float(floor_fraction)
        self.radius_ = radius

    @staticmethod
    def nearest(batch: Batch) -> np.ndarray:
        if batch.d is None:
            raise ConfigError("copies needs the batch's neighbours (Monitor.observe)")
        return batch.d.min(axis=1, initial=np.inf)

    def _hits(self, nearest: np.ndarray) -> np.ndarray:
        r = float(self.radius_)
        return (nearest < r) & (nearest >= self.floor_fraction * r)

    def hits(self, batch: Batch) -> np.ndarray:
        if self.radius_ is None:
            raise ConfigError("copies is not calibrated; call Monitor.fit first")
        return self._hits(self.nearest(batch))

    def calibrate_hits(self, streams: list[Stream]) -> list[np.ndarray]:
        values = []
        for s in streams:
            recent = RecentQueries(self.buffer, s.z.shape[1])
            out = []
            for batch in s.batches(CALIBRATION_BATCH):
                out.append(self.nearest(with_neighbours(batch, recent)))
                recent.add(batch.z, batch.labels, batch.z_sq)
            values.append(np.concatenate(out))
        late = np.concatenate([v[len(v) // 2 :] for v in values])
        late = late[np.isfinite(late)]
        if len(late) == 0:
            raise ConfigError("copies: the benign calibration streams are too short")
        self.radius_ = float(np.quantile(late, self.query_rate))
        return [self._hits(v) for v in values]

    def benign_rate(self, per_stream: list[np.ndarray]) -> float:
        # the rate where the buffer is fullest (the second halves) is the highest a benign
        # client reaches: the test uses it for the whole stream
        return float(np.concatenate([h[len(h) // 2 :] for h in per_stream]).mean())

    def describe_hit(self) -> str:
        return "near-copies of its own earlier queries"

    def params(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer,
            "query_rate": self.query_rate,
            "floor_fraction": self.floor_fraction,
            "radius": self.radius_,
            **self.rate_params(),
        }
