"""A budget on low-density queries over the client's whole history.

The score is the ``ood`` detector's: the squared Mahalanobis distance of a query to the training
inputs under their probabilistic-PCA covariance (Tipping & Bishop, JRSS-B 1999). A query is
*low-density* when its score exceeds the ``1 - query_rate`` quantile of the scores of benign
held-out records. The ``ood`` detector counts low-density queries among the client's last
``window``, so an attacker who mixes three natural queries into every synthetic one (or slows
down between bursts) stays below its count. This detector counts them over the client's whole
history with the sequential rate test of ``rate.py``: every low-density query stays on the
client's account (forgotten over ``horizon`` queries), natural queries only add to the
denominator, and the alarm fires when the count is improbably high for a benign client's rate.

Calibration: the held-out records only (training records score lower than new ones), replayed
in their given order, in a class-sorted order and in random orders, so that a benign client who
asks about one class at a time (some classes have more low-density records than others) sets
the threshold too.

This detector (the budget rule on the Mahalanobis score) is privguard's own. Threat model:
extraction and inversion with synthetic inputs -- random queries, Jacobian steps that leave the
data manifold, noised or blended augmentations, optimised images -- hidden among natural
queries. Known evasions: synthetic queries that stay on the data manifold (natural auxiliary
data, generator-based inversion), about ``1 / base_rate`` natural queries per synthetic one, and
keys of different owners.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch, FeatureSpace, Stream, batch_scores
from privguard.gateway.monitor.rate import RateDetector, upper_rate

CALIBRATION_ORDERS = 8


class LowDensityDetector(RateDetector):
    """Low-density (high Mahalanobis score) queries, under a sequential rate test.

    Example:
        >>> det = LowDensityDetector(query_rate=0.02)  # inside a Monitor, calibrated by fit
    """

    name = "lowdensity"
    heldout_only = True
    statistic_name = "Mahalanobis score under the training data's PPCA covariance"

    def __init__(
        self,
        *,
        query_rate: float = 0.02,
        confidence: float = 0.999,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < query_rate < 1 or not 0 < confidence < 1:
            raise ConfigError("lowdensity: query_rate and confidence must be in (0, 1)")
        self.query_rate = float(query_rate)
        self.confidence = float(confidence)
        self.score_threshold_ = score_threshold
        self.space: FeatureSpace | None = None

    def bind(self, space: FeatureSpace) -> None:
        """Use ``space``'s covariance for the score (the monitor calls this)."""
        self.space = space

    def scores(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.space is None:
            raise ConfigError("lowdensity is not bound to a feature space; call Monitor.fit")
        return self.space.mahalanobis2(x, z)

    def hits(self, batch: Batch) -> np.ndarray:
        if self.score_threshold_ is None:
            raise ConfigError("lowdensity is not calibrated; call Monitor.fit first")
        if self.space is None:
            raise ConfigError("lowdensity is not bound to a feature space; call Monitor.fit")
        return batch_scores(batch, self.space) > self.score_threshold_  # shared with ood

    def benign_rate(self, per_stream: list[np.ndarray]) -> float:
        """The upper ``confidence`` bound (Clopper-Pearson) of the rate on the held-out records.

        The threshold is a high quantile of a few hundred held-out scores, so the rate a new
        benign client meets varies with the draw (measured on digits, three seeds: 2.1%, 3.0%
        and 5.3% of new held-out records above the calibrated 98% quantile); a test at the
        point estimate flags such clients. The orders replayed in calibration are the same
        records, so the bound counts each record once."""
        first = per_stream[0]
        return upper_rate(int(first.sum()), len(first), self.confidence)

    def calibrate_hits(self, streams: list[Stream]) -> list[np.ndarray]:
        scores = [self.scores(s.x, s.z) for s in streams]
        self.score_threshold_ = float(np.quantile(np.concatenate(scores), 1 - self.query_rate))
        rng = np.random.default_rng(0)
        out = []
        for s, v in zip(streams, scores, strict=True):
            h = v > self.score_threshold_
            out.append(h)
            out.append(h[np.lexsort((rng.random(len(h)), s.labels))])  # one class at a time
            out += [h[rng.permutation(len(h))] for _ in range(CALIBRATION_ORDERS)]
        return out

    def describe_hit(self) -> str:
        return f"queries above the benign {1 - self.query_rate:.3g} Mahalanobis quantile"

    def params(self) -> dict[str, Any]:
        return {
            "query_rate": self.query_rate,
            "confidence": self.confidence,
            "score_threshold": self.score_threshold_,
            **self.rate_params(),
        }
