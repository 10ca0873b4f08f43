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
from privguard.gateway.monitor.knn import KnnDetector


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
        k = self.k
        if d.shape[1] < k:
            return np.full(len(d), np.inf)
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        return nearest.mean(axis=1)  # inf when fewer than k earlier queries exist

    def evidence(self, value: float) -> dict[str, Any]:
        return {"k": self.k}

    def params(self) -> dict[str, Any]:
        return {"k": self.k, **super().params()}
