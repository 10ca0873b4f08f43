"""A sequential rate test over a client's whole history: the alarm rule of the
interleaving-resistant detectors (``copies``, ``lowdensity``).

The windowed count rule (:func:`~privguard.gateway.monitor.base.count_threshold`) asks for ``m``
suspicious queries among the client's *last* ``window``; an attacker who mixes ``r`` natural
queries into each attack query divides the suspicious queries in every window by ``1 + r`` and
stays below ``m``. This rule instead keeps two exponentially forgotten counts over the client's
history, queries ``n`` and suspicious queries ``c`` (each forgotten with factor
``1 - 1/horizon`` per query), and raises the alarm when ``c`` is improbably high for a benign
client whose queries are suspicious at the calibrated base rate ``p``:

    P(Binomial(n, p) >= c) = I_p(c, n - c + 1) < alpha

(the regularised incomplete beta function extends the binomial tail to the non-integer counts the
forgetting produces). Mixing natural queries in raises ``n`` but not ``c``: to stay below the
test an attacker must send about ``1 / p`` natural queries per suspicious one (``p`` is a few
percent or less), which is what the benchmark's interleaved and adaptive clients measure.

Calibration (:meth:`RateDetector.calibrate`) takes ``p`` as the rate of suspicious queries on the
benign calibration streams (``copies`` overrides it: the upper bound of the rate measured out of
sample, on natural records its radius was not fitted on), and ``alpha`` as the smaller of
``target_fpr / stream_len`` (a union bound over the tests of a ``stream_len``-query client) and
half the lowest p-value a benign stream of each kind is expected to reach with probability
``target_fpr`` (a Gumbel law fitted to the calibration streams' lowest log p-values,
``base.extreme_bound``; never above the lowest seen).
This rule is privguard's own (a one-sided sequential binomial test with Bonferroni control), not
a paper's.

The per-client state is two floats and a flag (:class:`RateState`), plain values that serialise
without pickle.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betainc
from scipy.stats import beta

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch, Detector, Finding, Stream, extreme_bound

CALIBRATION_BATCH = 32


@dataclass
class RateState:
    """A client's forgotten counts: queries ``n``, suspicious queries ``c``."""

    n: float = 0.0
    c: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "c": self.c}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> RateState:
        return cls(float(d["n"]), float(d["c"]))


def tail_pvalues(n: np.ndarray, c: np.ndarray, p: float) -> np.ndarray:
    """``P(Binomial(n, p) >= c)`` for (possibly non-integer) counts; 1 where ``c <= 0``."""
    out = np.ones(len(n))
    ok = c > 0
    out[ok] = betainc(c[ok], np.maximum(n[ok] - c[ok] + 1.0, 1e-9), p)
    return out


def upper_rate(hits: int, n: int, confidence: float) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate seen as ``hits`` of ``n``."""
    if n <= 0:
        return 1.0
    if hits >= n:
        return 1.0
    return float(beta.ppf(confidence, hits + 1, n - hits))


class RateDetector(Detector):
    """Base of the sequential-rate detectors: subclasses say which queries are suspicious
    (:meth:`hits`) and how they are calibrated (:meth:`calibrate_hits`)."""

    def __init__(
        self,
        *,
        horizon: int = 2000,
        min_hits: int = 4,
        stream_len: int = 1000,
        base_rate: float | None = None,
        alpha: float | None = None,
    ) -> None:
        """Args:
        horizon: queries after which a count has been forgotten to ``1/e`` of its weight.
        min_hits: suspicious queries (forgotten count) needed before the test may fire.
        stream_len: length of the benign client stream the false-positive target refers to.
        base_rate, alpha: calibrated values.
        """
        if horizon < 10 or min_hits < 1 or stream_len < 1:
            raise ConfigError(
                f"{self.name}: horizon must be >= 10, min_hits >= 1 and stream_len >= 1"
            )
        self.horizon = int(horizon)
        self.min_hits = int(min_hits)
        self.stream_len = int(stream_len)
        self.base_rate_ = base_rate
        self.alpha_ = alpha
        self.benign_min_pvalue_: float | None = None

    # -- what subclasses define -----------------------------------------------------------
    @abstractmethod
    def hits(self, batch: Batch) -> np.ndarray:
        """Whether each query of the batch is suspicious, ``(n,)`` bool."""

    @abstractmethod
    def calibrate_hits(self, streams: list[Stream]) -> list[np.ndarray]:
        """Set the per-query rule from benign streams; each stream's hits, in order."""

    def describe_hit(self) -> str:
        return "suspicious queries"

    # -- the test -------------------------------------------------------------------------
    def _run(self, state: RateState, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the counts over ``hits``; the counts after each query."""
        keep = 1.0 - 1.0 / self.horizon
        n_after = np.empty(len(hits))
        c_after = np.empty(len(hits))
        n, c = state.n, state.c
        for i, h in enumerate(hits):
            n = n * keep + 1.0
            c = c * keep + float(h)
            n_after[i], c_after[i] = n, c
        state.n, state.c = n, c
        return n_after, c_after

    def _pvalues(self, n: np.ndarray, c: np.ndarray, hits: np.ndarray) -> np.ndarray:
        """p-values at the suspicious queries with enough hits (1 elsewhere)."""
        out = np.ones(len(n))
        test = hits & (c >= self.min_hits)
        if test.any():
            out[test] = tail_pvalues(n[test], c[test], float(self.base_rate_))
        return out

    def benign_rate(self, per_stream: list[np.ndarray]) -> float:
        """The base rate ``p`` from each benign stream's hits (default: pooled over all)."""
        return float(np.concatenate(per_stream).mean())

    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        per_stream = self.calibrate_hits(streams)
        total = sum(len(h) for h in per_stream)
        if total == 0:
            raise ConfigError(f"{self.name}: no benign calibration queries; give benign records")
        # a floor keeps the test finite when no benign query was suspicious at all
        self.base_rate_ = float(max(self.benign_rate(per_stream), 1.0 / total, 1e-4))
        # (hits not one per stream, as lowdensity's reorderings: the lowest seen, as before)
        if len(per_stream) == len(streams):
            kinds = [s.kind for s in streams]
        else:
            kinds = [str(i) for i in range(len(per_stream))]
        self._fit_alpha(per_stream, kinds, target_fpr)

    def _fit_alpha(self, per_stream: list[np.ndarray], kinds: list[str], target_fpr: float) -> None:
        """``alpha`` from the benign streams' lowest p-values at the calibrated base rate."""
        logs = []  # each benign stream's lowest log10 p-value
        for h in per_stream:
            n, c = self._run(RateState(), h)
            logs.append(float(np.log10(max(self._pvalues(n, c, h).min(initial=1.0), 1e-300))))
        self.benign_min_pvalue_ = float(10.0 ** min(logs))
        # below every benign stream's, extrapolated past the few streams of each kind
        # (extreme_bound on log10 p; issue 19)
        low = extreme_bound(logs, kinds, target_fpr, lower=True)
        self.alpha_ = float(min(target_fpr / self.stream_len, 0.5 * 10.0**low))

    def new_state(self) -> RateState:
        return RateState()

    def observe(self, state: RateState, batch: Batch) -> Finding | None:
        if self.base_rate_ is None or self.alpha_ is None:
            raise ConfigError(f"{self.name} is not calibrated; call Monitor.fit first")
        hits = np.asarray(self.hits(batch), dtype=bool)
        n, c = self._run(state, hits)
        pv = self._pvalues(n, c, hits)
        fired = np.flatnonzero(pv < self.alpha_)
        if len(fired) == 0:
            return None
        i = int(fired[0])
        finding = Finding(
            detector=self.name,
            statistic=float(pv[i]),
            threshold=float(self.alpha_),
            evidence={
                "direction": "below",
                "statistic": f"binomial tail p-value of the client's {self.describe_hit()} "
                f"(forgotten over {self.horizon} queries) at the benign rate",
                "suspicious": round(float(c[i]), 2),
                "queries": round(float(n[i]), 2),
                "benign_rate": self.base_rate_,
                "query_index": batch.start + i,
                "fingerprints": batch.fingerprints(i),
            },
        )
        state.n = state.c = 0.0  # a new alarm needs new evidence
        return finding

    def state_bytes(self, state: RateState) -> int:
        return 16

    def rate_params(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "min_hits": self.min_hits,
            "stream_len": self.stream_len,
            "base_rate": self.base_rate_,
            "alpha": self.alpha_,
            "benign_min_pvalue": self.benign_min_pvalue_,
        }

    def _restore(self, benign_min_pvalue: float | None) -> RateDetector:
        self.benign_min_pvalue_ = benign_min_pvalue
        return self

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RateDetector:
        """The detector back from :meth:`params` (its constructor's arguments and the learned
        values of :meth:`rate_params`)."""
        params = dict(params)
        low = params.pop("benign_min_pvalue", None)
        return cls(**params)._restore(low)
