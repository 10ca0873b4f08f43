"""PRADA: detection of model-extraction query streams by the shape of their distance distribution.

Juuti, Szyller, Marchal and Asokan, "PRADA: Protecting Against DNN Model Stealing Attacks",
IEEE EuroS&P 2019 (arXiv:1805.02628). For each client and each predicted class ``c`` PRADA keeps
a *growing set* ``G_c`` of earlier queries. For a new query ``x`` labelled ``c``:

- if ``G_c`` is empty, ``x`` joins it;
- otherwise ``d = min_{g in G_c} ||x - g||_2`` joins the client's set of distances ``D``, and if
  ``d > T_c`` then ``x`` joins ``G_c``, ``d`` joins ``D_{G_c}`` and
  ``T_c = max(T_c, mean(D_{G_c}) - std(D_{G_c}))``;
- once ``D`` holds enough distances (100 in the paper), the Shapiro-Wilk statistic ``W`` of ``D``
  is computed and an alarm is raised when ``W < delta``.

Natural queries give minimum distances that are close to normally distributed; synthetic
extraction queries (Jacobian-based augmentation, small perturbations of a seed set, random or
adaptively generated inputs) produce skewed or multi-modal distances (many near-identical steps,
a few long jumps), and ``W`` drops.

Choices made here, so that the state per client is bounded:

- distances are L2 in the monitor's feature space, a PCA of the training inputs with
  ``n_components`` (64 by default) components: exactly the paper's input-space L2 distances for
  inputs with at most that many features (a rotation), a projection for larger inputs;
- the growing sets share one ring of at most ``growing`` points per client (oldest first out);
- ``W`` is computed over the last ``window`` distances, every ``test_every`` new distances;
- a window whose distances hardly vary (an attacker repeating one query) has no meaningful ``W``
  and counts as maximally non-normal (``W = 0``);
- ``delta`` is calibrated on benign streams: below the lowest ``W`` a benign stream of each kind
  (shuffled, class-sorted) is expected to reach with probability ``target_fpr`` -- a Gumbel law
  fitted to the calibration streams' lowest ``W`` (``base.extreme_bound``), never above the
  lowest seen -- less a ``margin`` (the paper also chose delta per dataset on benign data).
  After an alarm the client's distances start afresh.

Threat model: one client (one key) extracting the model with synthetic queries. Known evasions
(the paper's own discussion and ours): interleaving natural queries (e.g. from public data of
the same domain) dilutes the synthetic distances until ``D`` looks normal again -- measured in
``benchmarks/detectors.py``; extraction with natural data only (Knockoff Nets, Orekondy et al.,
CVPR 2019) looks like a benign client by construction; spreading the queries over many keys.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.stats import shapiro

from privguard.errors import ConfigError
from privguard.gateway.monitor.base import Batch, Detector, Finding, Stream, extreme_bound
from privguard.gateway.monitor.knn import batch_sq_norms, pairwise

CALIBRATION_BATCH = 32


class PradaState:
    def __init__(self, growing: int, k: int, window: int) -> None:
        self.g = np.zeros((growing, k), dtype=np.float32)
        self.g_sq = np.zeros(growing, dtype=np.float64)
        self.g_labels = np.zeros(growing, dtype=np.int64)
        self.g_filled = 0
        self.g_pos = 0
        self.dist = np.zeros(window, dtype=np.float64)
        self.d_filled = 0
        self.d_pos = 0
        self.since_test = 0
        # per class: threshold T_c and the running sums of D_{G_c}
        self.classes: dict[int, list[float]] = {}

    def add_point(self, z: np.ndarray, label: int) -> None:
        self.g[self.g_pos] = z
        self.g_sq[self.g_pos] = float(np.dot(z.astype(np.float64), z.astype(np.float64)))
        self.g_labels[self.g_pos] = label
        self.g_pos = (self.g_pos + 1) % len(self.g)
        self.g_filled = min(len(self.g), self.g_filled + 1)

    def add_distance(self, d: float) -> None:
        self.dist[self.d_pos] = d
        self.d_pos = (self.d_pos + 1) % len(self.dist)
        self.d_filled = min(len(self.dist), self.d_filled + 1)
        self.since_test += 1

    def window(self) -> np.ndarray:
        return self.dist[: self.d_filled]

    def reset_distances(self) -> None:
        self.d_filled = 0
        self.d_pos = 0
        self.since_test = 0


def normality(d: np.ndarray) -> float:
    """Shapiro-Wilk W of the distances; 0 for a window that does not vary.

    W is scipy's (Royston's AS R94 algorithm, ``swilk``), called directly with the test's
    coefficients cached per window length: ``scipy.stats.shapiro`` recomputes them and adds
    its argument handling on every call (112 us vs 5 us for 300 distances; the same W bit for
    bit, checked on 20,000 windows of random, skewed, tied and constant-heavy distances)."""
    spread = float(np.std(d))
    if spread <= 1e-9 * max(float(np.mean(np.abs(d))), 1e-12):
        return 0.0
    if _swilk is None:  # pragma: no cover - a scipy without the private routine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on ties and large n; W is still defined
            return float(shapiro(d).statistic)
    x = np.asarray(d, dtype=np.float64).ravel()
    n = len(x)
    a = _SWILK_COEFFS.get(n)
    init = 1
    if a is None:
        a, init = np.zeros(n // 2, dtype=np.float64), 0
    y = np.sort(x)
    y -= x[n // 2]  # as scipy.stats.shapiro does (gh-15777)
    w, _, _ = _swilk(y, a, init)
    if not init:
        _SWILK_COEFFS[n] = a  # filled by the first call for this length
    return float(np.float64(w))


try:  # scipy.stats.shapiro's own routine, without its per-call overhead
    from scipy.stats._ansari_swilk_statistics import swilk as _swilk
except ImportError:  # pragma: no cover
    _swilk = None
_SWILK_COEFFS: dict[int, np.ndarray] = {}


MASK_BY_PENALTY_FROM = 16  # smaller batches mask the distances directly (fewer steps)


def _nearest_same_label(
    z: np.ndarray,
    qq: np.ndarray,
    g: np.ndarray,
    g_sq: np.ndarray,
    g_labels: np.ndarray,
    labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared distances from the batch to the growing sets, ``inf`` where the labels differ
    (not clamped at 0), each row's argmin and its minimum clamped at 0: the values of
    ``pairwise`` (clamped), masked, then ``argmin``, in fewer passes. The mask rides on the
    norms: ``(q + (g + p)) - 2 q.g`` with ``p`` 0 on the row's label and ``inf`` elsewhere is
    ``(q + g) - 2 q.g`` or ``inf``; the clamp is monotone, so the minimum is clamped, not the
    matrix (the argmin may name another of several clamped zeros; the caller only compares its
    validity, and every valid one holds the same minimum). A row holding a NaN (an overflowed
    product) is redone as before."""
    classes = np.unique(g_labels)
    col = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
    row = np.where(classes[col] == labels, col, len(classes))
    onehot = np.zeros((len(classes) + 1, len(g_labels)), dtype=bool)
    np.equal(g_labels[None, :], classes[:, None], out=onehot[:-1])
    masked_sq = g_sq[None, :] + np.where(onehot, 0.0, np.inf)
    dg = np.add(qq[:, None], masked_sq[row])
    prod = z @ g.T  # float32, as pairwise computes it
    prod *= 2.0
    np.subtract(dg, prod, out=dg)
    nearest = dg.argmin(axis=1)
    near_d2 = np.maximum(dg[np.arange(len(dg)), nearest], 0.0)
    for i in np.flatnonzero(np.isnan(near_d2)):
        exact = np.maximum((qq[i] + g_sq) - prod[i], 0.0)
        exact[g_labels != labels[i]] = np.inf
        dg[i] = exact
        nearest[i] = exact.argmin()
        near_d2[i] = exact[nearest[i]]
    return dg, nearest, near_d2


class PradaDetector(Detector):
    """Shapiro-Wilk W of per-class minimum distances below ``delta`` (Juuti et al. 2019).

    Example:
        >>> det = PradaDetector(window=300)     # inside a Monitor; calibrated by Monitor.fit
    """

    name = "prada"
    statistic_name = "Shapiro-Wilk W of the minimum distances"

    def __init__(
        self,
        *,
        growing: int = 1000,
        window: int = 300,
        min_distances: int = 100,
        test_every: int = 20,
        margin: float = 0.02,
        delta: float | None = None,
        dim: int | None = None,
    ) -> None:
        """Args:
        growing: points of the growing sets kept per client (all classes together).
        window: most recent minimum distances the test runs on.
        min_distances: distances needed before the first test (the paper's 100).
        test_every: run the test after this many new distances.
        margin: how far below the lowest benign W ``delta`` is set.
        delta, dim: calibrated values (``delta`` may also be set by hand).
        """
        if growing < 2 or min_distances < 3 or window < min_distances or test_every < 1:
            raise ConfigError(
                "prada: growing must be >= 2, min_distances >= 3, window >= min_distances and "
                "test_every >= 1"
            )
        self.growing = int(growing)
        self.window = int(window)
        self.min_distances = int(min_distances)
        self.test_every = int(test_every)
        self.margin = float(margin)
        self.delta_ = delta
        self.fixed_delta = delta is not None and dim is None  # set by hand, not calibrated
        self.dim_ = dim
        self.benign_min_w_: float | None = None

    def new_state(self) -> PradaState:
        if self.dim_ is None:
            raise ConfigError("prada is not calibrated; call Monitor.fit first")
        return PradaState(self.growing, self.dim_, self.window)

    def _tests(
        self, state: PradaState, batch: Batch, seen: list[float] | None = None
    ) -> tuple[int, float] | None:
        """Run the batch through the paper's per-query step; the first (index, W) at which
        W < delta. While calibrating (``seen`` given) every tested W is appended to ``seen``.

        The distances to the growing sets as they stood before the batch are one matrix
        product; points the batch adds are compared with later rows of the batch in the loop.
        """
        z = batch.z
        labels = batch.labels
        n, filled = len(z), state.g_filled
        g_labels = state.g_labels[:filled].copy()
        qq = batch_sq_norms(batch)
        dz = None  # distances between the batch's rows: only once a row joined a growing set
        # each query's nearest snapshot point of its own class, for every query at once (one
        # masked minimum, not a mask per query); a query whose nearest point was overwritten by
        # the ring during this batch is searched again among the rows still valid
        if filled and n >= MASK_BY_PENALTY_FROM:
            dg, nearest, near_d2 = _nearest_same_label(
                z, qq, state.g[:filled], state.g_sq[:filled], g_labels, labels
            )
        elif filled:
            dg = pairwise(z, qq, state.g[:filled], state.g_sq[:filled])
            dg[g_labels[None, :] != labels[:, None]] = np.inf
            nearest = dg.argmin(axis=1)
            near_d2 = dg[np.arange(n), nearest]
        valid = np.ones(filled, dtype=bool)  # snapshot rows not yet overwritten by the ring
        overwritten = 0
        added: dict[int, list[int]] = {}  # label -> batch rows that joined its growing set
        label_list = labels.tolist()
        near_list = near_d2.tolist() if filled else []  # Python floats: the same values
        classes = state.classes
        dist, d_len = state.dist, len(state.dist)
        min_distances, test_every = self.min_distances, self.test_every
        for i in range(n):
            label = label_list[i]
            stats = classes.get(label)
            if not filled:
                d2 = math.inf
            elif overwritten and not valid[nearest[i]]:
                # (dg is not clamped at 0 on the penalty path: the clamp is monotone)
                d2 = float(np.maximum(dg[i][valid].min(initial=np.inf), 0.0))
            else:
                d2 = near_list[i]
            same = added.get(label)
            if same:
                if dz is None:
                    dz = pairwise(z, qq, z, qq)
                d2 = min(d2, float(dz[i, same].min()))
            if stats is None or not math.isfinite(d2):
                classes.setdefault(label, [0.0, 0.0, 0.0, 0.0])  # T_c, n, sum, squares
                overwritten += self._grow(state, z[i], label, valid, added, i)
                continue
            d = math.sqrt(max(d2, 0.0))  # IEEE square root, as np.sqrt
            # state.add_distance(d), inlined (once per query)
            dist[state.d_pos] = d
            state.d_pos = (state.d_pos + 1) % d_len
            state.d_filled = min(d_len, state.d_filled + 1)
            state.since_test += 1
            if d > stats[0]:
                overwritten += self._grow(state, z[i], label, valid, added, i)
                stats[1] += 1
                stats[2] += d
                stats[3] += d * d
                mean = stats[2] / stats[1]
                stats[0] = max(stats[0], mean - np.sqrt(max(stats[3] / stats[1] - mean**2, 0.0)))
            if state.d_filled < min_distances or state.since_test < test_every:
                continue
            state.since_test = 0
            w = normality(state.window())
            if seen is not None:
                seen.append(w)
            elif self.delta_ is not None and w < self.delta_:
                return i, w
        return None

    @staticmethod
    def _grow(
        state: PradaState,
        z: np.ndarray,
        label: int,
        valid: np.ndarray,
        added: dict[int, list[int]],
        i: int,
    ) -> int:
        """Add batch row ``i`` to its class's growing set; 1 if it overwrote a snapshot row."""
        hit = state.g_pos < len(valid)
        if hit:
            valid[state.g_pos] = False  # the ring overwrites a snapshot row
        state.add_point(z, label)
        added.setdefault(label, []).append(i)
        return int(hit)

    def calibrate(self, streams: list[Stream], target_fpr: float) -> None:
        self.dim_ = int(streams[0].z.shape[1])
        minima, kinds = [], []
        for s in streams:
            seen: list[float] = []
            state = self.new_state()
            for batch in s.batches(CALIBRATION_BATCH):
                self._tests(state, batch, seen)
            if seen:
                minima.append(min(seen))
                kinds.append(s.kind)
        if not minima:
            raise ConfigError(
                f"prada: the benign calibration streams give fewer than {self.min_distances} "
                "distances each; give longer benign streams (more held-out records)"
            )
        self.benign_min_w_ = float(min(minima))
        # with few benign streams no quantile at 1% is seen: extrapolate each kind's lowest W
        # (an extreme-value law, extreme_bound; issue 19), and stay below all of them
        if not self.fixed_delta:
            low = extreme_bound(minima, kinds, target_fpr, lower=True)
            self.delta_ = float(low - self.margin)

    def observe(self, state: PradaState, batch: Batch) -> Finding | None:
        if self.delta_ is None:
            raise ConfigError("prada is not calibrated; call Monitor.fit first")
        hit = self._tests(state, batch)
        if hit is None:
            return None
        i, w = hit
        finding = Finding(
            detector=self.name,
            statistic=w,
            threshold=self.delta_,
            evidence={
                "direction": "below",
                "statistic": "Shapiro-Wilk W of the last minimum distances to earlier queries "
                "of the same predicted class",
                "distances": int(state.d_filled),
                "median_distance": float(np.median(state.window())),
                "benign_min_w": self.benign_min_w_,
                "query_index": batch.start + i,
                "fingerprints": batch.fingerprints(i),
            },
        )
        state.reset_distances()
        return finding

    def state_bytes(self, state: PradaState) -> int:
        fixed = state.g.nbytes + state.g_sq.nbytes + state.g_labels.nbytes + state.dist.nbytes
        return fixed + 48 * len(state.classes)

    def params(self) -> dict[str, Any]:
        return {
            "growing": self.growing,
            "window": self.window,
            "min_distances": self.min_distances,
            "test_every": self.test_every,
            "margin": self.margin,
            "delta": self.delta_,
            "dim": self.dim_,
            "benign_min_w": self.benign_min_w_,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PradaDetector:
        params = dict(params)
        benign = params.pop("benign_min_w", None)
        det = cls(**params)
        det.benign_min_w_ = benign
        return det
