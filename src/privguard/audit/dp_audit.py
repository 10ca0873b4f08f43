"""Auditing differential privacy with one training run.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023.

m canary records are drawn; each is included in the training set independently with
probability 1/2 (S_i = +1) or left out (S_i = -1). After **one** training run the auditor
scores every canary (higher = "looks trained on"), guesses IN for the k+ highest scores and OUT
for the k- lowest, and abstains on the rest: r = k+ + k- guesses, v of them correct.

Because the inclusions are independent, an (epsilon, delta)-DP training algorithm can do no
better on each guess than epsilon-DP randomised response, whose accuracy is
q = e^epsilon / (1 + e^epsilon). The paper's main theorem bounds the number of correct guesses
W: for every v,

    P[W >= v] <= f(v) + 2 m delta * max_{i = 1..v} (f(v - i) - f(v)) / i,

with f(v) = P[Binomial(r, q) >= v]. The audit's p-value for "the algorithm is (epsilon, delta)-
DP" is that right-hand side; the epsilon lower bound at confidence 1 - p is the largest epsilon
whose p-value stays below p. By construction the bound exceeds the true epsilon in at most a
fraction p of audits, and it saturates: with all r guesses right it cannot exceed the epsilon
at which q^r = p (r = 100: 3.49; r = 1000: 5.81, at delta = 0 and p = 0.05).

The guess counts must be fixed before the scores are seen. :func:`audit_scores` accepts several
pre-declared (k+, k-) pairs and divides p among them (Bonferroni), so reporting the best of
them keeps the 1 - p confidence.

The end-to-end audit (:func:`one_run_audit`) uses records of the data the recipe is trained on
as canaries, by default with their labels replaced by another random class ("flipped"): a
mislabelled record is the one a model must memorise to fit, so its loss moves the most when it
is included, which is what makes a black-box one-run audit tight (the paper's input-space
canaries; natural records, ``canary="natural"``, measure the average record instead and give
far weaker bounds). Scores are the logit-scaled confidence in the canary's label,
z_c - logsumexp(z_{j != c}), computed from the logits in float64 (shared/PAPERS.md, "Loss
precision").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logsumexp, ndtr, ndtri
from scipy.stats import binom, norm

from privguard import __version__
from privguard._io import atomic_write_json, out_directory
from privguard.errors import ConfigError

Progress = Callable[[str, int, int], None]

P_VALUE = 0.05
CANARY_KINDS = ("flipped", "natural")
# Guesses per side, as fractions of m, declared before any score is seen.
DEFAULT_GUESS_FRACTIONS = (0.05, 0.1, 0.25, 0.5)
EPS_MAX = 50.0
EPS_TOLERANCE = 1e-6


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Probability of ``v`` or more correct guesses out of ``r`` (on ``m`` canaries) under an
    (``epsilon``, ``delta``)-DP algorithm: the theorem's bound, capped at 1."""
    _check_counts(m, r, v)
    if v == 0:
        return 1.0
    q = float(expit(epsilon))
    bound = float(binom.sf(v - 1, r, q))
    if delta > 0:
        # max over i of P[v - i <= Binomial(r, q) < v] / i: the mass just below v, spread.
        below = binom.pmf(np.arange(v - 1, -1, -1), r, q)
        bound += 2.0 * m * delta * float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(bound, 1.0)


def epsilon_lower_bound(
    r: int, v: int, *, delta: float = 0.0, p: float = P_VALUE, m: int | None = None
) -> float:
    """The largest epsilon that ``v`` correct of ``r`` guesses rule out at confidence ``1 - p``.

    ``m`` (the number of canaries, default ``r``) only enters through the delta term.

    Example:
        >>> round(epsilon_lower_bound(100, 100), 2)     # all right: the bound saturates
        3.49
    """
    m = r if m is None else m
    _check_counts(m, r, v)
    if not 0 < p < 1:
        raise ConfigError(f"the p-value level must lie in (0, 1), not {p}")
    if not 0 <= delta < 1:
        raise ConfigError(f"delta must lie in [0, 1), not {delta}")

    def gap(eps: float) -> float:
        return p_value(m, r, v, eps, delta) - p

    if gap(0.0) >= 0:
        return 0.0
    # Bisection keeping gap(lo) < 0: the returned epsilon is itself ruled out, never a hair
    # above the crossing.
    lo, hi = 0.0, 1.0
    while gap(hi) < 0:
        if hi >= EPS_MAX:
            return EPS_MAX
        lo, hi = hi, min(2 * hi, EPS_MAX)
    while hi - lo > EPS_TOLERANCE:
        mid = (lo + hi) / 2
        if gap(mid) < 0:
            lo = mid
        else:
            hi = mid
    return lo


def gaussian_mu(epsilon: float, delta: float) -> float:
    """The mu of the Gaussian mechanism that is exactly (``epsilon``, ``delta``)-DP.

    mu-GDP (Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022) is
    (epsilon, delta(epsilon))-DP for every epsilon with
    delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2)
    (their Corollary 2.13; Balle & Wang 2018), increasing in mu; this solves it for mu.
    """
    if epsilon < 0 or not 0 < delta < 1:
        raise ConfigError(f"need epsilon >= 0 and 0 < delta < 1, got ({epsilon}, {delta})")

    def excess(mu: float) -> float:
        return (
            norm.cdf(-epsilon / mu + mu / 2)
            - np.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)
            - delta
        )

    lo, hi = 1e-6, 1.0
    if excess(lo) >= 0:
        return lo
    while excess(hi) < 0:
        hi *= 2
        if hi > 1e3:
            return hi
    return float(brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


def fdp_rejects(m: int, r: int, v: int, mu: float, p: float = P_VALUE) -> bool:
    """Whether ``v`` correct of ``r`` guesses on ``m`` canaries rule out mu-GDP at level ``p``.

    Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run", ICML 2025
    (Theorem 9 and its numerical procedure, "audit_rh"): for an f-DP mechanism, P[W >= v] <= p
    holds whenever the recursion from r_v = p v / m and h_v = p (r - v) / m,

        h_i = max(h_{i+1}, fbar^-1(r_{i+1})),   r_i = r_{i+1} + i / (r - i) * (h_i - h_{i+1})

    for i = v-1 .. 0 (r_i capped at 1) ends with r_0 + h_0 > r / m: the guesses then carry more
    probability than r guesses on m canaries can. For the Gaussian trade-off curve
    f(a) = Phi(Phi^-1(1 - a) - mu), fbar^-1(x) = Phi(Phi^-1(x) - mu).
    """
    _check_counts(m, r, v)
    if v == 0:
        return False
    rr = p * v / m
    h = p * (r - v) / m
    for i in range(v - 1, -1, -1):
        h_new = max(h, float(ndtr(ndtri(rr) - mu)))
        if h_new == h:
            break  # neither moves again
        rr = min(rr + i / (r - i) * (h_new - h), 1.0)
        h = h_new
    return rr + h > r / m


def fdp_epsilon_lower_bound(
    r: int, v: int, *, delta: float, p: float = P_VALUE, m: int | None = None
) -> float:
    """The largest epsilon whose Gaussian trade-off curve (the mu-GDP mechanism that is exactly
    (epsilon, ``delta``)-DP) ``v`` correct of ``r`` guesses rule out at confidence ``1 - p``:
    the f-DP one-run bound of Mahloujifar, Melis & Chaudhuri (ICML 2025).

    Its null hypothesis is "the training's trade-off curve is at least that Gaussian curve",
    the usual model of DP-SGD (Dong, Roth & Su's central limit theorem); pure (epsilon, delta)
    curves with a kink are the Steinke bound's (:func:`epsilon_lower_bound`).
    """
    m = r if m is None else m
    _check_counts(m, r, v)
    if not 0 < p < 1:
        raise ConfigError(f"the p-value level must lie in (0, 1), not {p}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must lie in (0, 1), not {delta}")

    def rejects(eps: float) -> bool:
        return fdp_rejects(m, r, v, gaussian_mu(eps, delta), p)

    if not rejects(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejects(hi):
        if hi >= EPS_MAX:
            return EPS_MAX
        lo, hi = hi, min(2 * hi, EPS_MAX)
    while hi - lo > EPS_TOLERANCE:
        mid = (lo + hi) / 2
        if rejects(mid):
            lo = mid
        else:
            hi = mid
    return lo


def guess_top_bottom(scores: np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """Guesses in {+1 (IN), -1 (OUT), 0 (abstain)}: IN for the ``k_plus`` highest scores, OUT
    for the ``k_minus`` lowest. Ties are broken by a fixed stable order (the canaries'
    positions)."""
    scores = np.asarray(scores, dtype=np.float64)
    m = len(scores)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ConfigError(f"k+ = {k_plus} and k- = {k_minus} guesses do not fit {m} canaries")
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    guesses = np.zeros(m, dtype=np.int8)
    guesses[order[:k_plus]] = 1
    if k_minus:
        guesses[order[m - k_minus :]] = -1
    return guesses


def count_correct(guesses: np.ndarray, included: np.ndarray) -> tuple[int, int]:
    """``(r, v)``: guesses made (non-zero) and how many match the truth (+1 = included)."""
    guesses = np.asarray(guesses)
    truth = np.where(np.asarray(included, dtype=bool), 1, -1)
    made = guesses != 0
    return int(made.sum()), int((guesses[made] == truth[made]).sum())


@dataclass
class GuessResult:
    k_plus: int
    k_minus: int
    r: int
    v: int
    epsilon_lower_bound: float


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    guesses: Sequence[tuple[int, int]] | None = None,
    p: float = P_VALUE,
) -> tuple[GuessResult, list[GuessResult]]:
    """The one-run bound from canary ``scores`` and the truth ``included``.

    ``guesses``: pre-declared ``(k+, k-)`` pairs (default: k+ = k- = 5%, 10%, 25%, 50% of m);
    each is tested at ``p / len(guesses)`` and the best is returned with all of them.
    """
    m = len(scores)
    if m < 2:
        raise ConfigError("a one-run audit needs at least 2 canaries")
    if guesses is None:
        ks = sorted({max(1, int(round(f * m))) for f in DEFAULT_GUESS_FRACTIONS})
        guesses = [(k, k) for k in ks if 2 * k <= m]
    if not guesses:
        raise ConfigError("pass at least one (k+, k-) guess count")
    level = p / len(guesses)
    results = []
    for kp, km in guesses:
        r, v = count_correct(guess_top_bottom(scores, kp, km), included)
        eps = epsilon_lower_bound(r, v, delta=delta, p=level, m=m)
        results.append(GuessResult(kp, km, r, v, round(eps, 6)))
    best = max(results, key=lambda g: g.epsilon_lower_bound)
    return best, results


def randomised_response(
    m: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A mechanism with known epsilon: each canary's bit S_i in {+1, -1} is reported truthfully
    with probability e^eps / (1 + e^eps). Returns ``(included, reports)``; the paper's audit of
    it guesses the reports themselves (r = m)."""
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < expit(epsilon)
    signs = np.where(included, 1.0, -1.0)
    return included, np.where(truthful, signs, -signs)


@dataclass
class DPAuditResult:
    """What one-run auditing a training recipe found.

    ``epsilon_lower_bound``: epsilon ruled out at ``1 - p`` confidence at ``delta``;
    ``epsilon_accountant``: the guarantee the DP accountant gives for the same run (``None``
    for non-private training). The first can never honestly exceed the second, except in
    about a fraction ``p`` of audits. ``fdp_epsilon_lower_bound``: the f-DP one-run bound
    (Mahloujifar, Melis & Chaudhuri 2025) on the same guesses, also at ``1 - p`` on its own
    (the larger of the two is not itself at ``1 - p``; ``dp-audit --train-fn`` splits p).
    """

    epsilon_lower_bound: float
    epsilon_accountant: float | None
    delta: float
    p: float
    m: int
    n_included: int
    k_plus: int
    k_minus: int
    r: int
    v: int
    canary: str
    data: str
    model: str
    n_train: int
    train_accuracy: float
    test_accuracy: float
    n_test: int
    seed: int
    seconds: float
    privacy: dict[str, Any] | None = None
    fdp_epsilon_lower_bound: float | None = None
    guesses: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        acc = (
            f"accountant epsilon {self.epsilon_accountant:.3g}"
            if self.epsilon_accountant is not None
            else "no DP guarantee (non-private training)"
        )
        return (
            f"one-run DP audit of {self.model} on {self.data}: epsilon lower bound "
            f"{self.epsilon_lower_bound:.3f} at {1 - self.p:.0%} confidence (delta "
            f"{self.delta:.2g}; {self.v}/{self.r} guesses right on {self.m} {self.canary} "
            f"canaries, {self.n_included} included) vs {acc}; test accuracy "
            f"{self.test_accuracy:.3f}"
        )


def one_run_audit(
    data: Any,
    config: Any = None,
    *,
    canaries: int = 1000,
    canary: str = "flipped",
    guesses: Sequence[tuple[int, int]] | None = None,
    p: float = P_VALUE,
    seed: int | None = None,
    progress: Progress | None = None,
) -> DPAuditResult:
    """Audit a training recipe (``config``, a :class:`~privguard.TrainConfig`; DP when its
    ``dp_epsilon`` is set) on ``data`` with one training run.

    The recipe's usual member split is kept; ``canaries`` records are drawn from the rest
    (non-members and auxiliary pool), relabelled when ``canary="flipped"``, and each joins the
    training set with probability 1/2. The records of the rest that are not canaries measure
    test accuracy.

    Example:
        >>> cfg = privguard.TrainConfig(model="mlp", epochs=30, dp_epsilon=1.0)
        >>> res = one_run_audit("digits", cfg, canaries=1000, seed=0)
        >>> res.epsilon_lower_bound, res.epsilon_accountant
    """
    from privguard.data import Dataset, load_dataset, make_split
    from privguard.models.torch_predictor import TorchPredictor
    from privguard.models.train import TrainConfig, train_module
    from privguard.training.dp import default_delta

    t0 = time.perf_counter()
    config = config or TrainConfig()
    seed = config.seed if seed is None else seed
    if canary not in CANARY_KINDS:
        raise ConfigError(f"unknown canary kind {canary!r}; use one of: {', '.join(CANARY_KINDS)}")
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    split = make_split(
        ds.y,
        seed=config.seed,
        member_fraction=config.train_fraction,
        nonmember_fraction=config.nonmember_fraction,
        validation_fraction=config.validation_fraction,
    )
    pool = np.concatenate([split.nonmembers, split.aux])
    if not 2 <= canaries <= len(pool):
        raise ConfigError(
            f"--canaries must lie between 2 and {len(pool)} for {ds.name} (the records outside "
            f"the {len(split.members)} members); pass --canaries {min(len(pool), 1000)} or "
            "lower --train-fraction"
        )
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(pool))
    chosen, rest = pool[pick[:canaries]], pool[pick[canaries:]]
    labels = ds.y[chosen].copy()
    k = ds.n_classes
    if canary == "flipped":
        labels = (labels + rng.integers(1, k, size=canaries)) % k
    included = rng.random(canaries) < 0.5
    x_train = np.concatenate([ds.x[split.members], ds.x[chosen[included]]])
    y_train = np.concatenate([ds.y[split.members], labels[included]])
    v_idx = split.validation
    module, log = train_module(
        config,
        x_train,
        y_train,
        k,
        x_val=ds.x[v_idx] if len(v_idx) else None,
        y_val=ds.y[v_idx] if len(v_idx) else None,
        seed=config.seed,
        progress=progress,
    )
    predictor = TorchPredictor(module, ds.input_shape, k)
    z = predictor.predict_logits(ds.x[chosen])
    rows = np.arange(canaries)
    own = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    scores = own - logsumexp(others, axis=1)
    privacy = log.get("privacy")
    delta = privacy["delta"] if privacy else default_delta(len(x_train))
    best, all_guesses = audit_scores(scores, included, delta=delta, guesses=guesses, p=p)
    # The f-DP bound (Mahloujifar, Melis & Chaudhuri 2025) on the same guesses, at the same
    # per-guess level: reported beside the Steinke bound, each at 1 - p on its own.
    level = p / len(all_guesses)
    fdp_rows = [
        round(fdp_epsilon_lower_bound(g.r, g.v, delta=float(delta), p=level, m=canaries), 6)
        for g in all_guesses
    ]

    def acc(idx: np.ndarray) -> float:
        if len(idx) == 0:
            return float("nan")
        return float((predictor.predict_logits(ds.x[idx]).argmax(axis=1) == ds.y[idx]).mean())

    return DPAuditResult(
        epsilon_lower_bound=best.epsilon_lower_bound,
        epsilon_accountant=privacy["epsilon"] if privacy else None,
        delta=float(delta),
        p=p,
        m=canaries,
        n_included=int(included.sum()),
        k_plus=best.k_plus,
        k_minus=best.k_minus,
        r=best.r,
        v=best.v,
        canary=canary,
        data=ds.name,
        model=config.model,
        n_train=len(x_train),
        train_accuracy=round(acc(split.members), 6),
        test_accuracy=round(acc(rest), 6),
        n_test=len(rest),
        seed=seed,
        seconds=round(time.perf_counter() - t0, 3),
        privacy=privacy,
        guesses=[asdict(g) | {"fdp": f} for g, f in zip(all_guesses, fdp_rows, strict=True)],
        fdp_epsilon_lower_bound=max(fdp_rows),
        training=config.to_dict(),
    )


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ConfigError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")


def write_dp_audit(result: DPAuditResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/dp-audit.json`` atomically (the directory is created when absent)."""
    out = out_directory(out_dir)
    data = {"privguard_version": __version__, "dp_audit": result.to_dict()}
    path = out / "dp-audit.json"
    try:
        atomic_write_json(path, data, indent=1)
    except OSError as e:
        raise ConfigError(
            f"could not write {path} ({e.strerror or e}): choose another --out"
        ) from e
    return path
