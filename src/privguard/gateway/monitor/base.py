"""What every detector shares: the finding it raises, the batch it sees, the feature space
its distances are measured in, and the windowed count rule that turns per-query suspicion into a
client-level alarm with a bounded false-positive rate.

A detector is configured in its constructor, calibrated on benign query streams in
:meth:`Detector.calibrate` (learned values end with an underscore), and then updates a small
per-client state object in :meth:`Detector.observe`, one answered batch at a time. It keeps no
per-client data itself: the :class:`~privguard.gateway.monitor.monitor.Monitor` owns the states,
bounds their number and serialises access to each.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.stats import binom, chi2

from privguard.errors import ConfigError, ModelError

ACTIONS = ("record", "alert", "throttle", "block")
Progress = Callable[[str, int, int], None]


@dataclass
class Finding:
    """One detector's alarm about one client.

    Attributes:
        detector: the detector's short name (``prada``, ``similarity``, ...).
        statistic: the value that crossed the threshold (PRADA's Shapiro-Wilk W, a count of
            suspicious queries in the window, ...).
        threshold: the threshold it crossed; ``evidence["direction"]`` says which way.
        action: what the gateway should do: ``record``, ``alert``, ``throttle`` or ``block``.
        evidence: JSON-safe details: the per-query statistic and its threshold, the client's
            query index at which the alarm fired, fingerprints (keyed HMAC-SHA256, the query
            log's) of the queries behind it.
        client: the client the finding is about (filled by the monitor).
    """

    detector: str
    statistic: float
    threshold: float
    action: str = "alert"
    evidence: dict[str, Any] = field(default_factory=dict)
    client: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "detector": self.detector,
            "statistic": float(self.statistic),
            "threshold": float(self.threshold),
            "action": self.action,
            "evidence": self.evidence,
        }


@dataclass
class Batch:
    """One answered batch as the detectors see it.

    Attributes:
        x: flattened inputs ``(n, d)`` float32.
        z: the same inputs in the monitor's feature space ``(n, k)`` float32.
        labels: the labels answered ``(n,)`` int64 (``-1``: the policy abstained).
        probs: the probabilities answered ``(n, classes)`` or ``None`` (label / top-k tiers).
        start: how many of this client's queries the monitor had seen before this batch.
        now: the time of the batch (seconds, the monitor's clock).
        d2: squared distances to the client's earlier queries, not yet clamped at zero (filled
            for the buffer detectors by ``knn.with_neighbours``), ``(n, earlier + n)``, ``inf``
            for the query itself and later ones: the detectors take minima and the ``k``
            smallest of these and square-root only those (the square root is monotone, so the
            values are those of the distances, bit for bit).
        d: the distances themselves, ``sqrt(max(d2, 0))``, computed only when a detector asks
            (``knn.batch_distances``).
        prev_labels: the labels of the columns of ``d2``.
        by_label: per-label column masks of ``d2``, shared by the detectors that compare a
            query with earlier ones of its own or another label (``knn.same_label_nearest``).
        fingerprinter: keyed HMAC of records (the gateway's fingerprint key, so that alert
            evidence matches the query log and cannot be recomputed from a guessed input).
        z_sq: squared norms of ``z`` (float64), computed once per batch and shared by the
            detectors that need them (``knn.batch_sq_norms``).
        scores: the batch's Mahalanobis scores (:meth:`FeatureSpace.mahalanobis2`), computed
            once per batch for the detectors that use them (``ood``, ``lowdensity``;
            :func:`batch_scores`).
    """

    x: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None
    start: int
    now: float
    d: np.ndarray | None = None
    prev_labels: np.ndarray | None = None
    fingerprinter: Callable[[np.ndarray], list[str]] | None = None
    z_sq: np.ndarray | None = None
    scores: tuple[Any, np.ndarray] | None = None
    d2: np.ndarray | None = None
    by_label: tuple[np.ndarray, ...] | None = None

    def fingerprints(self, end: int, count: int = 8) -> list[str]:
        """Keyed fingerprints of up to ``count`` queries of this batch ending at index ``end``
        (without a ``fingerprinter``, under a random key of this process)."""
        lo = max(0, end + 1 - count)
        fp = self.fingerprinter or _process_fingerprinter()
        return fp(self.x[lo : end + 1])


def batch_scores(batch: Batch, space: FeatureSpace) -> np.ndarray:
    """``space.mahalanobis2(batch.x, batch.z)``, computed once per batch and feature space."""
    cached = batch.scores
    if cached is None or cached[0] is not space:
        cached = batch.scores = (space, space.mahalanobis2(batch.x, batch.z))
    return cached[1]


def _process_fingerprinter() -> Callable[[np.ndarray], list[str]]:
    global _PROCESS_FP
    if _PROCESS_FP is None:
        from privguard.gateway.inputs import Fingerprinter

        _PROCESS_FP = Fingerprinter(secrets.token_bytes(32))
    return _PROCESS_FP


_PROCESS_FP: Callable[[np.ndarray], list[str]] | None = None


class FeatureSpace:
    """Principal components of the training inputs: where k-NN distances are measured and the
    out-of-distribution score is computed.

    ``z = (x - mean) @ components.T`` keeps the ``k`` directions of largest variance, so for
    inputs of at most ``k`` features it is a rotation (distances are exactly the input-space L2
    distances). The eigenvalues and the mean variance of the discarded directions
    (``noise_variance``) define a probabilistic-PCA covariance (Tipping & Bishop, JRSS-B 1999)
    for the Mahalanobis score.
    """

    def __init__(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        variances: np.ndarray,
        noise_variance: float,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.variances = np.asarray(variances, dtype=np.float64)
        self.noise_variance = float(noise_variance)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int = 64, seed: int = 0) -> FeatureSpace:
        from sklearn.decomposition import PCA

        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        k = int(min(n_components, x.shape[1], len(x) - 1))
        if k < 1:
            raise ConfigError("the monitor needs at least 2 training records to fit on")
        pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(x)
        total = float(x.var(axis=0, ddof=1).sum())
        rest = x.shape[1] - k
        noise = (total - float(pca.explained_variance_.sum())) / rest if rest else 0.0
        # a floor keeps the score finite for inputs that vary along no discarded direction
        floor = 1e-6 * max(float(pca.explained_variance_.mean()), 1e-12)
        return cls(pca.mean_, pca.components_, pca.explained_variance_, max(noise, floor))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def mahalanobis2(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of flattened inputs ``x`` (features ``z``) under the
        probabilistic-PCA covariance of the training data."""
        z2 = z.astype(np.float64) ** 2
        inside = (z2 / np.maximum(self.variances, 1e-12)).sum(axis=1)
        if self.k >= self.n_features:
            return inside  # a rotation: nothing outside the principal subspace
        centred = x.astype(np.float64) - self.mean
        residual = (centred**2).sum(axis=1) - z2.sum(axis=1)
        return inside + np.maximum(residual, 0.0) / max(self.noise_variance, 1e-12)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "space_mean": self.mean,
            "space_components": self.components,
            "space_variances": self.variances,
            "space_noise_variance": np.asarray([self.noise_variance]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureSpace:
        try:
            return cls(
                arrays["space_mean"],
                arrays["space_components"],
                arrays["space_variances"],
                float(arrays["space_noise_variance"][0]),
            )
        except (KeyError, IndexError) as e:
            raise ModelError(
                f"the monitor's arrays lack {e}; re-fit and save the monitor"
            ) from None


@dataclass
class Stream:
    """A benign query stream used for calibration, already in the monitor's coordinates."""

    x: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None = None
    kind: str = "shuffled"  # how the benign client orders its queries (see extreme_bound)

    def batches(self, size: int) -> list[Batch]:
        out = []
        for i in range(0, len(self.x), size):
            p = None if self.probs is None else self.probs[i : i + size]
            out.append(
                Batch(
                    self.x[i : i + size], self.z[i : i + size], self.labels[i : i + size], p, i, 0
                )
            )
        return out


class Detector(ABC):
    """A stateful per-client detector. Subclasses set ``name`` and implement the methods."""

    name: ClassVar[str]
    statistic_name: ClassVar[str] = ""
    uses_recent: ClassVar[bool] = False  # needs the client's recent queries (Batch.d2)
    heldout_only: ClassVar[bool] = False  # calibrate on held-out records only, not training ones

    @abstractmethod
    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        """Set the thresholds from benign streams so that at most about ``target_fpr`` of benign
        clients of the calibrated stream length are flagged."""

    @abstractmethod
    def new_state(self) -> Any:
        """A fresh, empty per-client state."""

    @abstractmethod
    def observe(self, state: Any, batch: Batch) -> Finding | None:
        """Update ``state`` with ``batch``; a finding when the alarm fires (at most one per batch).
        The finding's action is filled in by the monitor."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Settings and learned scalars, JSON-safe."""

    @classmethod
    @abstractmethod
    def from_params(cls, params: dict[str, Any]) -> Detector:
        """The detector back from :meth:`params`."""

    def state_bytes(self, state: Any) -> int:
        """Bytes held by one client's state (for the memory bound reported by the monitor)."""
        return sum(v.nbytes for v in vars(state).values() if isinstance(v, np.ndarray))


# -- windowed count rule ---------------------------------------------------------------------


def count_threshold(rate: float, window: int, stream_len: int, target_fpr: float) -> int:
    """The smallest count ``m`` such that a benign client whose queries are suspicious
    independently with probability ``rate`` has ``m`` suspicious queries among some ``window``
    consecutive ones of a ``stream_len``-query stream with probability at most ``target_fpr``
    (binomial tail, union bound over the ``stream_len - window + 1`` sliding windows)."""
    rate = min(max(rate, 1e-6), 1.0)
    windows = max(1, stream_len - window + 1)
    for m in range(1, window + 1):
        if windows * float(binom.sf(m - 1, window, rate)) <= target_fpr:
            return m
    return window


EULER_GAMMA = 0.5772156649015329


def extreme_bound(
    worst: list[float],
    kinds: list[str],
    target_fpr: float,
    *,
    lower: bool = False,
    confidence: float = 0.9,
) -> float:
    """A bound that a new benign stream's worst statistic exceeds (``lower``: falls below) with
    probability about ``target_fpr``, from the worst value of each calibration stream.

    The largest of a few calibration streams' worst values is a poor threshold: a new stream
    beats the largest of ``n`` with probability ``1 / (n + 1)`` (a third with two class-sorted
    streams; issue 19 on mnist-5k). Each stream's worst value is itself the extreme of many
    window statistics, so it follows an extreme-value law (Fisher-Tippett-Gnedenko); within each
    ``kind`` of stream (natural order, shuffled, class-sorted: different laws) with at least
    three streams a Gumbel law is fitted by its moments (scale ``beta = s sqrt(6) / pi``,
    location ``mean -/+ gamma beta``; Gumbel, "Statistics of Extremes", 1958), with ``s`` the
    one-sided ``confidence`` upper bound of the standard deviation (chi-square with ``n - 1``
    degrees of freedom: a few streams understate the spread as often as not), and its
    ``1 - target_fpr`` quantile taken (never inside the values seen). A kind with fewer streams
    contributes its worst value. The bound is the most extreme over kinds."""
    if len(worst) != len(kinds) or not worst:
        raise ConfigError("extreme_bound needs one worst value per calibration stream")
    sign = -1.0 if lower else 1.0
    bounds = []
    for kind in dict.fromkeys(kinds):
        v = sign * np.array([w for w, k in zip(worst, kinds, strict=True) if k == kind], float)
        b = float(v.max())
        if len(v) >= 3 and v.std(ddof=1) > 0:
            # the scale from an upper confidence bound of the spread (chi-square, ``confidence``)
            # so that the few streams of a kind do not understate the tail
            s = float(v.std(ddof=1)) * np.sqrt((len(v) - 1) / chi2.ppf(1 - confidence, len(v) - 1))
            beta = s * np.sqrt(6.0) / np.pi
            mu = float(v.mean()) - EULER_GAMMA * beta
            b = max(b, mu - beta * float(np.log(-np.log1p(-target_fpr))))
        bounds.append(b)
    return sign * max(bounds)


class WindowState:
    """A client's last ``window`` suspicion flags as a ring, with their running count."""

    def __init__(self, window: int) -> None:
        self.flags = np.zeros(window, dtype=bool)
        self.pos = 0
        self.count = 0

    def push(self, hits: np.ndarray, m: int) -> int | None:
        """Append ``hits``; the index in ``hits`` at which the count over the window first reached
        ``m``, or ``None``."""
        hits = np.asarray(hits, dtype=bool).ravel()
        n, w = len(hits), len(self.flags)
        if n < 8:  # a few flags: the loop is cheaper than the vector steps
            return self._push_each(hits, m)
        # the flag each push overwrites: the ring's, oldest first, then this batch's own
        ring = self.flags
        older = np.concatenate([ring[self.pos :], ring[: self.pos], hits[: max(n - w, 0)]])
        counts = self.count + np.cumsum(hits, dtype=np.int64) - np.cumsum(older[:n], dtype=np.int64)
        fired = np.flatnonzero(hits & (counts >= m))
        keep = min(n, w)  # the ring keeps the batch's last w flags
        self.flags[(self.pos + np.arange(n - keep, n)) % w] = hits[n - keep :]
        self.pos = (self.pos + n) % w
        self.count = int(counts[-1])
        return int(fired[0]) if len(fired) else None

    def _push_each(self, hits: np.ndarray, m: int) -> int | None:
        w = len(self.flags)
        first = None
        for i, h in enumerate(hits.tolist()):
            old = bool(self.flags[self.pos])
            self.flags[self.pos] = h
            self.pos = (self.pos + 1) % w
            self.count += int(h) - int(old)
            if first is None and h and self.count >= m:
                first = i
        return first

    def reset(self) -> None:
        self.flags[:] = False
        self.count = 0

    def max_count(self, hits: np.ndarray) -> int:
        """The largest window count reached while pushing ``hits`` (calibration)."""
        best = 0
        w = len(self.flags)
        for h in hits:
            old = self.flags[self.pos]
            self.flags[self.pos] = h
            self.pos = (self.pos + 1) % w
            self.count += int(h) - int(old)
            best = max(best, self.count)
        return best


def check_action(action: str, where: str) -> str:
    if action not in ACTIONS:
        raise ConfigError(f"{where}: unknown action {action!r}; use one of: {', '.join(ACTIONS)}")
    return action
