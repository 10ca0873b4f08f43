"""Volume anomalies: a burst of queries against the client's own history.

Each client's queries are counted in buckets of ``bucket_seconds``; an exponentially weighted
mean and variance of its past bucket counts (the EWMA control chart of Roberts, Technometrics
1959, as used for rate anomalies in traffic monitoring) give the count it usually sends. The
current bucket raises an alarm when its count exceeds ``max(min_queries, mean + z * sd)``, where
``sd`` is at least ``sqrt(mean)`` (Poisson noise), once the client has ``min_history`` finished
buckets. One alarm per bucket at most.

No benign data calibrates it: the held-out records carry no timing. ``z`` and ``min_queries``
are settings; the defaults (z = 6, 100 queries a minute) flag a client sending several times its
usual rate, and never a client below 100 queries a minute. New clients (fewer than
``min_history`` buckets) are left to the gateway's rate limits.

Threat model: an attacker who, once it has a key with some benign history, runs an attack that
needs many queries quickly. Known evasions: pacing the attack at the client's usual rate (the
other detectors still see the queries), building a high-volume history slowly (the EWMA adapts),
and fresh keys.
"""

from __future__ import annotations

import math
from typing import Any

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch, Detector, Finding, Stream

MAX_IDLE_STEPS = 200  # (1 - alpha) ** 200 is negligible for any useful alpha


class VolumeState:
    def __init__(self) -> None:
        self.bucket: int | None = None
        self.count = 0
        self.mean = 0.0
        self.var = 0.0
        self.history = 0
        self.alarmed = False


class VolumeDetector(Detector):
    """Queries in the current time bucket far above the client's EWMA of past buckets.

    Example:
        >>> det = VolumeDetector(bucket_seconds=60, z=6)
    """

    name = "volume"
    statistic_name = "queries in the current bucket"

    def __init__(
        self,
        *,
        bucket_seconds: float = 60.0,
        alpha: float = 0.1,
        z: float = 6.0,
        min_queries: int = 100,
        min_history: int = 3,
    ) -> None:
        if bucket_seconds <= 0 or not 0 < alpha <= 1 or z <= 0 or min_queries < 1:
            raise ConfigError(
                "volume: bucket_seconds and z must be positive, alpha in (0, 1], min_queries >= 1"
            )
        self.bucket_seconds = float(bucket_seconds)
        self.alpha = float(alpha)
        self.z = float(z)
        self.min_queries = int(min_queries)
        self.min_history = int(min_history)

    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        """Nothing to learn from untimed benign records (see the module docstring)."""

    def new_state(self) -> VolumeState:
        return VolumeState()

    def _fold(self, state: VolumeState, count: float) -> None:
        diff = count - state.mean
        inc = self.alpha * diff
        state.mean += inc
        state.var = (1 - self.alpha) * (state.var + diff * inc)
        state.history += 1

    def threshold(self, state: VolumeState) -> float:
        sd = math.sqrt(max(state.var, state.mean))
        return max(float(self.min_queries), state.mean + self.z * sd)

    def observe(self, state: VolumeState, batch: Batch) -> Finding | None:
        bucket = int(batch.now // self.bucket_seconds)
        if state.bucket is None:
            state.bucket = bucket
        elif bucket > state.bucket:
            self._fold(state, state.count)
            for _ in range(min(bucket - state.bucket - 1, MAX_IDLE_STEPS)):
                self._fold(state, 0.0)
            state.bucket, state.count, state.alarmed = bucket, 0, False
        state.count += len(batch.x)
        limit = self.threshold(state)
        if state.alarmed or state.history < self.min_history or state.count <= limit:
            return None
        state.alarmed = True
        return Finding(
            detector=self.name,
            statistic=float(state.count),
            threshold=limit,
            evidence={
                "direction": "above",
                "statistic": f"queries in the current {self.bucket_seconds:g} s bucket",
                "usual_per_bucket": state.mean,
                "usual_sd": math.sqrt(max(state.var, 0.0)),
                "history_buckets": state.history,
                "query_index": batch.start + len(batch.x) - 1,
                "fingerprints": batch.fingerprints(len(batch.x) - 1),
            },
        )

    def state_bytes(self, state: VolumeState) -> int:
        return 64

    def params(self) -> dict[str, Any]:
        return {
            "bucket_seconds": self.bucket_seconds,
            "alpha": self.alpha,
            "z": self.z,
            "min_queries": self.min_queries,
            "min_history": self.min_history,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> VolumeDetector:
        return cls(**params)
