"""Query streams for evaluating the detectors: attacks recorded through an oracle, benign replays,
synthetic extraction strategies and an evasive interleaving attacker.

An attack is run against a real target through an oracle whose predictor records every batch it
is asked (:class:`RecordingPredictor`); the recorded stream is then fed to a monitor in order, in
batches of at most the gateway's ``max_batch`` (:func:`replay`), and the first query index at
which each detector fires is the detection point. Benign clients replay held-out records.

Benign clients of four kinds (issue 19): shuffled natural records, class-sorted ones
(:func:`class_sorted`), bursts of one class sent in timed bursts (:func:`bursty`), and clients
that resend some requests, exactly or re-encoded (:func:`with_retries`). :func:`replay_keys`
sends one stream over several keys (sybils), optionally declared as one owner's.

Until the gateway can carry these clients over HTTP, streams are recorded directly through the
oracle (same queries, same order; the HTTP layer adds nothing the detectors see).

Two synthetic extraction query streams, for label-only clients without a whole attack run:

- :func:`uniform_queries`: inputs drawn uniformly within the bounds (Tramèr et al., USENIX
  Security 2016, retraining with random queries) -- the draw of the ``random-queries`` attack
  (``privguard.attacks.extraction``), without its substitute training;
- :func:`jacobian_queries`: Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017)
  with a softmax-regression substitute refitted on labels every round, every point pushed by
  ``lam * sign(grad_x p_sub(label | x))``. The registered ``jacobian`` attack trains a torch
  substitute on probabilities when it can and samples a reservoir, so its stream differs; the
  detector tests run both (``tests/gateway/test_detectors.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privguard.attacks.extraction._common import uniform
from privguard.errors import DataError
from privguard.gateway.monitor.monitor import Monitor
from privguard.oracle import Oracle, Predictor


class RecordingPredictor:
    """A predictor that appends every batch it is asked to ``calls`` before answering."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.n_classes = predictor.n_classes
        self.input_shape = tuple(predictor.input_shape)
        self.calls: list[np.ndarray] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(x, dtype=np.float32, copy=True))
        return self.predictor.predict_proba(x)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(x, dtype=np.float32, copy=True))
        return self.predictor.predict_logits(x)

    def stream(self) -> np.ndarray:
        """Every recorded query, in order, ``(n, *input_shape)``."""
        if not self.calls:
            return np.zeros((0, *self.input_shape), dtype=np.float32)
        return np.concatenate(self.calls)


@dataclass
class Replay:
    """What a monitor did with one client's stream.

    ``first``: detector -> number of queries sent up to and including the one that raised its
    first finding. ``findings``: every finding, in order.
    """

    queries: int
    first: dict[str, int] = field(default_factory=dict)
    findings: list[Any] = field(default_factory=list)

    def detected_by(self, detectors: list[str] | None = None) -> int | None:
        """Queries until the first finding of any of ``detectors`` (all when ``None``)."""
        hits = [q for d, q in self.first.items() if detectors is None or d in detectors]
        return min(hits) if hits else None


def answers(predictor: Predictor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels and probabilities the gateway would answer (no output policy)."""
    p = np.asarray(predictor.predict_proba(np.asarray(x, dtype=np.float32)), dtype=np.float64)
    return p.argmax(axis=1).astype(np.int64), p


def replay(
    monitor: Monitor,
    client: str,
    x: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray | None = None,
    *,
    max_batch: int = 32,
    times: np.ndarray | None = None,
    tier: str | None = None,
) -> Replay:
    """Feed one client's stream to ``monitor`` in order, ``max_batch`` queries at a time.

    ``times``: the send time of each query (the monitor's clock is set to the time of each
    batch's first query); ``None`` leaves the monitor's clock alone.
    """
    out = Replay(queries=len(x))
    clock = monitor.clock
    try:
        for i in range(0, len(x), max_batch):
            if times is not None:
                t = float(times[i])
                monitor.clock = lambda t=t: t
            p = None if probs is None else probs[i : i + max_batch]
            for f in monitor.observe(
                client, x[i : i + max_batch], labels[i : i + max_batch], p, tier=tier
            ):
                out.findings.append(f)
                out.first.setdefault(f.detector, int(f.evidence["query_index"]) + 1)
    finally:
        monitor.clock = clock
    return out


# -- synthetic extraction strategies --------------------------------------------------------


def uniform_queries(
    oracle: Oracle, budget: int, bounds: tuple[float, float], seed: int = 0, batch: int = 100
) -> None:
    """Ask ``budget`` uniformly random inputs within ``bounds`` for their labels."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < budget:
        n = min(batch, budget - done)
        oracle.labels(uniform(n, oracle.input_shape, bounds, rng))
        done += n


def jacobian_queries(
    oracle: Oracle,
    seed_x: np.ndarray,
    budget: int,
    bounds: tuple[float, float],
    *,
    lam: float = 0.1,
    tau: int = 3,
    seed: int = 0,
) -> None:
    """Papernot et al.'s Jacobian-based augmentation with a softmax-regression substitute: label
    the seed set, then repeatedly train the substitute, push every point by
    ``lam * sign(grad)`` of its label's substitute probability (the sign of ``lam`` flips every
    ``tau`` rounds, the paper's periodic step size), and label the new points, until ``budget``
    queries are spent."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    lo, hi = bounds
    shape = oracle.input_shape
    s = np.asarray(seed_x, dtype=np.float32).reshape(len(seed_x), -1)[:budget]
    y = oracle.labels(s.reshape(len(s), *shape))
    spent, rounds = len(s), 0
    while spent < budget:
        classes = np.unique(y)
        if len(classes) < 2:
            grad = rng.standard_normal(s.shape)
        else:
            sub = LogisticRegression(max_iter=200).fit(s, y)
            p = sub.predict_proba(s)
            w = sub.coef_ if len(classes) > 2 else np.vstack([-sub.coef_[0], sub.coef_[0]])
            col = np.searchsorted(sub.classes_, y)
            # d p_y / dx = p_y (w_y - sum_j p_j w_j)
            grad = p[np.arange(len(s)), col, None] * (w[col] - p @ w)
        step = (-1.0) ** (rounds // tau) * lam * np.sign(grad)
        rounds += 1
        new = np.clip(s + step, lo, hi).astype(np.float32)[: budget - spent]
        y_new = oracle.labels(new.reshape(len(new), *shape))
        s, y = np.concatenate([s, new]), np.concatenate([y, y_new])
        spent += len(new)


def interleave(
    attack_x: np.ndarray, natural_x: np.ndarray, ratio: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An evasive client: ``ratio`` natural queries per attack query on average (distinct records
    of ``natural_x``, drawn without replacement), spread at random between the attack's queries,
    whose order is kept. Returns the mixed stream and a mask of the attack queries."""
    rng = np.random.default_rng(seed)
    n_nat = int(round(len(attack_x) * ratio))
    if n_nat > len(natural_x):
        raise DataError(
            f"interleaving {len(attack_x)} attack queries at {ratio} natural per query needs "
            f"{n_nat} natural records; {len(natural_x)} were given"
        )
    nat = natural_x[rng.choice(len(natural_x), size=n_nat, replace=False)]
    mixed = np.concatenate([attack_x, nat])
    is_attack = np.r_[np.ones(len(attack_x), bool), np.zeros(n_nat, bool)]
    # keep the attack's own order, place natural queries at random positions among them
    order = np.argsort(
        np.r_[np.arange(len(attack_x)) + 0.5, rng.uniform(0, len(attack_x), n_nat)], kind="stable"
    )
    return mixed[order], is_attack[order]


# -- benign client kinds (issue 19) ---------------------------------------------------------


def class_sorted(idx: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``idx`` grouped by ``labels`` (the label each record is answered), random within a class
    and in a random order of classes: a client asking about one class at a time."""
    classes = rng.permutation(np.unique(labels))
    rank = np.empty(int(classes.max()) + 1, dtype=np.int64)
    rank[classes] = np.arange(len(classes))
    return idx[np.lexsort((rng.random(len(idx)), rank[labels]))]


def bursty(
    idx: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    run: tuple[int, int] = (5, 60),
    rate: float = 20.0,
    idle_minutes: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A client that works in bursts: runs of ``run`` records of one class (a user uploading a
    batch of related images), each run sent at ``rate`` queries a second, separated by idle
    gaps of ``idle_minutes`` on average. Returns the order of ``idx`` and each query's send
    time (seconds)."""
    pools = {c: list(rng.permutation(idx[labels == c])) for c in np.unique(labels)}
    order: list[int] = []
    times: list[float] = []
    t = 0.0
    while any(pools.values()):
        c = rng.choice([k for k, v in pools.items() if v])
        n = int(rng.integers(run[0], run[1] + 1))
        for _ in range(min(n, len(pools[c]))):
            order.append(int(pools[c].pop()))
            t += rng.exponential(1.0 / rate)
            times.append(t)
        t += rng.exponential(60.0 * idle_minutes)
    return np.asarray(order, dtype=idx.dtype), np.asarray(times)


def with_retries(
    x: np.ndarray,
    rng: np.random.Generator,
    bounds: tuple[float, float],
    *,
    exact: float = 0.08,
    reencoded: float = 0.04,
    lag: int = 5,
) -> np.ndarray:
    """A client whose requests are sometimes sent again: after each query, with probability
    ``exact`` the same input is resent (a retry after a timeout), with probability ``reencoded``
    a re-encoded copy (8-bit quantisation, one grey level of jitter on a tenth of the values: a
    client re-saving the image), each within ``lag`` queries."""
    lo, hi = bounds
    out: list[np.ndarray] = []
    pending: list[tuple[int, np.ndarray]] = []
    for i, rec in enumerate(x):
        out.append(rec)
        u = rng.random()
        if u < exact:
            pending.append((i + int(rng.integers(0, lag + 1)), rec))
        elif u < exact + reencoded:
            step = (hi - lo) / 255.0
            q = np.round((rec - lo) / step) * step + lo
            jitter = (rng.random(rec.shape) < 0.1) * rng.choice([-1.0, 1.0], rec.shape) * step
            pending.append((i + int(rng.integers(0, lag + 1)), np.clip(q + jitter, lo, hi)))
        due = [p for p in pending if p[0] <= i]
        pending = [p for p in pending if p[0] > i]
        out += [p[1] for p in due]
    out += [p[1] for p in pending]
    return np.asarray(out, dtype=np.float32)


def replay_keys(
    monitor: Monitor,
    keys: list[str],
    x: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray | None = None,
    *,
    account: str | None = None,
    max_batch: int = 32,
) -> Replay:
    """One client's stream sent over several keys (sybils): batch ``i`` of ``max_batch``
    queries goes to key ``i mod len(keys)``; with ``account``, every key is declared as owned by
    it. ``first`` counts queries over the whole stream (all keys together)."""
    out = Replay(queries=len(x))
    seen = dict.fromkeys(keys, 0)
    acct_seen = 0
    for b, i in enumerate(range(0, len(x), max_batch)):
        key = keys[b % len(keys)]
        p = None if probs is None else probs[i : i + max_batch]
        for f in monitor.observe(
            key, x[i : i + max_batch], labels[i : i + max_batch], p, account=account
        ):
            base = acct_seen if "account" in f.evidence else seen[key]
            out.findings.append(f)
            out.first.setdefault(f.detector, i + int(f.evidence["query_index"]) - base + 1)
        n = len(x[i : i + max_batch])
        seen[key] += n
        acct_seen += n
    return out
