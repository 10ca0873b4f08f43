"""Label-only boundary probing: successive queries that flip the label within a tiny step.

Decision-based attacks (label-only membership by boundary distance, Choquette-Choo et al., ICML
2021, with HopSkipJump, Chen, Jordan and Wainwright, IEEE S&P 2020; label-only inversion)
bisect the segment between a point and one of another class and probe the boundary's normal with
small random steps: they send pairs of queries a tiny distance apart that the model labels
differently. Natural inputs of different classes lie far apart. The per-query statistic is the
distance (in the monitor's feature space) from a query to the nearest of the client's recent
queries that received a *different* label (an abstention, label ``-1``, counts as a label); a
query is suspicious when that distance is below a radius calibrated on benign streams (the
``query_rate`` quantile), and the alarm needs ``min_count`` suspicious queries among the last
``window`` (see ``similarity.py`` for the count rule).

Threat model: a client with label-only access mapping where the decision boundary lies around
chosen points. Known evasions: coarse searches (few bisection steps, so that successive queries
stay further apart than the radius, at the cost of precision), spreading one search over
several accounts, interleaving many natural queries between probes, and searching in a region
where natural inputs of different classes do overlap (the radius is small there too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.gateway.monitor.base import Batch
from privguard.gateway.monitor.knn import KnnDetector, other_label_nearest


class BoundaryDetector(KnnDetector):
    """Distance to the nearest earlier query with another label below a benign radius.

    Example:
        >>> det = BoundaryDetector(window=50)   # inside a Monitor; calibrated by Monitor.fit
    """

    name = "boundary"
    statistic_name = "distance to the nearest earlier query labelled otherwise"

    def __init__(self, *, query_rate: float = 0.002, **kwargs: Any) -> None:
        # Natural inputs of different classes do come close now and then (ambiguous or
        # misclassified records, clustered in a natural order); a bisection's steps are orders
        # of magnitude closer, so a low quantile costs no detection.
        super().__init__(query_rate=query_rate, **kwargs)

    def per_query(self, d: np.ndarray, columns: np.ndarray, labels: np.ndarray) -> np.ndarray:
        other = columns[None, :] != labels[:, None]
        return np.where(other, d, np.inf).min(axis=1, initial=np.inf)

    def values(self, batch: Batch) -> np.ndarray:
        # the least squared distance to another label (masks shared with copies), rooted
        return np.sqrt(np.maximum(other_label_nearest(batch), 0.0))
