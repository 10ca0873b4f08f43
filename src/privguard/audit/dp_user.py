"""Audit a user's own DP training function in one run: ``privguard.dp_audit(train_fn, x, y,
claimed_epsilon=1, delta=1e-5)`` and ``privguard dp-audit --train-fn module:function``.

The user's ``train(x, y, seed)`` trains on the records privguard hands it and returns a model
(an object with ``predict_proba``, a PyTorch module returning logits, or a callable from inputs
to class probabilities). privguard inserts m canaries and bounds epsilon from below with two
one-run audits on the same scores (:mod:`privguard.audit.dp_audit`):

- Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023: the
  null hypothesis is (epsilon, delta)-DP;
- Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run", ICML 2025: the
  null hypothesis is the Gaussian trade-off curve of the (epsilon, delta)-DP Gaussian mechanism,
  the usual model of DP-SGD; tighter.

Each is tested at ``p / 2`` (Bonferroni), so the larger of the two holds at confidence
``1 - p``; the claim is **violated** when that larger bound exceeds the claimed epsilon.

Canaries: m records of the user's data, each relabelled with another random class (a
mislabelled record is the one training must memorise, so its presence moves its own score the
most); each joins the training set independently with probability 1/2; every other record is
always included. The score of a canary is its label's log-odds, log p_c - log sum_{j != c} p_j,
in float64 (from the logits when the model is a PyTorch module).

With ``canary="gradient"`` (white-box) there are no canary records: privguard calls
``train(x, y, seed, canaries=c)`` on all of the records and the function attaches ``c``
(:class:`privguard.audit.dp_canaries.GradientCanaries`) to its DP optimiser, which then adds m
Dirac gradient canaries to the per-record gradients before clipping; each is scored by how far
its parameter coordinate fell (Nasr et al., USENIX Security 2023; Steinke et al. 2023's
white-box setting). The relabelling check below is not run then; "canaries never seen" is the
error when no optimiser step drew them.

Calling ``train`` is the one place privguard runs code it did not write: the user names it.

Does the function train on the records it is given? A second, smaller run checks
(:func:`relabelling_check`): half of the real records (no canaries), each label c replaced by
pi(c) for a random derangement pi of the classes, and a fresh seed. A function that learns from
its records follows the relabelling at population level (DP hides single records, not the
class structure); one that ignores them (a model trained elsewhere, data read from its own
files) keeps predicting the original labels. The check fires only on positive evidence of the
latter: the second model must predict the *original* labels of its own training records
``RELABEL_MARGIN`` (0.2) above both the best constant guess and its accuracy on the labels it was
given. For a trainer that treats labels as symbols (its output on relabelled data is the
relabelled output, in distribution: DP-SGD from a zero or permutation-symmetric
initialisation), the second model's accuracy on the original labels is at most the error rate
of a model trained on the true labels, put on the derangement's pairs of classes, so firing
would need a model trained on correct labels to do worse on its own training records than a
constant guess by 0.2 (for two classes) or to have its errors line up with a random derangement
(more classes): training that follows its labels does not do that, at any epsilon. The
assumption fails for training that starts from a model already fitted to these very labels
(DP fine-tuning of such a classifier) and may stay there: ``check_records=False``
(``--no-record-check``) is for that case.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from privguard.audit.dp_audit import (
    DEFAULT_GUESS_FRACTIONS,
    P_VALUE,
    count_correct,
    epsilon_lower_bound,
    fdp_epsilon_lower_bound,
    guess_top_bottom,
)
from privguard.audit.train_fn import (
    TrainFn,
    call_train,
    describe_error,
    fn_name,
    run_limited,
    takes_canaries,
)
from privguard.errors import ConfigError

CANARY_KINDS = ("flipped", "quiet", "gradient")
QUIET_FRACTION = 0.5
RELABEL_MARGIN = 0.2
RELABEL_FRACTION = 0.5
RELABEL_MIN = 200


@dataclass
class BoundResult:
    """One bound's best pre-declared guess: epsilon ruled out at ``confidence``."""

    method: str
    epsilon_lower_bound: float
    confidence: float
    k_plus: int
    k_minus: int
    r: int
    v: int


@dataclass
class TrainFnAuditResult:
    """What auditing a user's DP training function in one run found.

    ``epsilon_lower_bound`` is the larger of ``steinke`` and ``fdp`` (each at confidence
    ``1 - p/2``, so the larger holds at ``1 - p``); ``violated`` says whether it exceeds
    ``claimed_epsilon``.
    """

    train_fn: str
    claimed_epsilon: float
    delta: float
    p: float
    epsilon_lower_bound: float
    bound: str
    violated: bool
    steinke: BoundResult
    fdp: BoundResult
    m: int
    n_included: int
    n_train: int
    canary: str
    data: str
    seed: int
    seconds: float
    train_seconds: float
    guesses: list[dict[str, Any]] = field(default_factory=list)
    record_check: dict[str, Any] | None = None
    gradient: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        head = (
            "claimed epsilon is violated"
            if self.violated
            else "no violation of the claimed epsilon found"
        )
        s, f = self.steinke, self.fdp
        return (
            f"{head}: {self.train_fn} on {self.data} claims ({self.claimed_epsilon:g}, "
            f"{self.delta:.2g})-DP; epsilon lower bound {self.epsilon_lower_bound:.3f} at "
            f"{1 - self.p:.0%} confidence ({self.bound}; Steinke {s.epsilon_lower_bound:.3f} "
            f"with {s.v}/{s.r} right, f-DP {f.epsilon_lower_bound:.3f} with {f.v}/{f.r} right, "
            f"on {self.m} {self.canary} canaries, {self.n_included} included)"
            + (
                f"; the relabelled check run followed its labels "
                f"({self.record_check['accuracy_given_labels']:.0%} right)"
                if self.record_check
                else ""
            )
        )


def label_log_odds(values: np.ndarray, labels: np.ndarray, logits: bool) -> np.ndarray:
    """log p_c - log sum_{j != c} p_j for each row's label c, in float64."""
    values = np.asarray(values, dtype=np.float64)
    rows = np.arange(len(values))
    if logits:
        from scipy.special import logsumexp

        others = values.copy()
        others[rows, labels] = -np.inf
        return values[rows, labels] - logsumexp(others, axis=1)
    tiny = np.finfo(np.float64).tiny
    own = values[rows, labels]
    rest = values.sum(axis=1) - own
    return np.log(np.maximum(own, tiny)) - np.log(np.maximum(rest, tiny))


def quiet_canaries(flat: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` inputs at the data's mean plus a random direction of the quietest half of its
    principal subspace (the directions in which the records barely vary), of the length of a
    typical record's deviation from the mean.

    Training on the real records barely moves a model's response along those directions, so a
    canary's score there is set by its own inclusion (and the noise), not by how the real data
    shaped the model: the input-space analogue of the gradient canaries that white-box audits
    plant (Steinke et al. 2023, Section 7; Nasr et al. 2023).
    """
    mean = flat.mean(axis=0)
    centred = flat - mean
    if len(centred) >= centred.shape[1]:  # the covariance's eigenvectors: cheaper than an SVD
        _, vecs = np.linalg.eigh(centred.T @ centred)
        vt = vecs[:, ::-1].T  # by decreasing variance, as the SVD's rows
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    quiet = vt[int(len(vt) * QUIET_FRACTION) :]
    if len(quiet) == 0:
        quiet = vt[-1:]
    directions = rng.standard_normal((m, len(quiet))) @ quiet
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    scale = float(np.median(np.linalg.norm(centred, axis=1)))
    return mean + scale * directions


def dp_audit(
    train_fn: TrainFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    claimed_epsilon: float,
    delta: float,
    canaries: int = 1000,
    p: float = P_VALUE,
    seed: int = 0,
    time_limit: float | None = None,
    guesses: Sequence[tuple[int, int]] | None = None,
    canary: str = "quiet",
    data_name: str = "data",
    check_records: bool = True,
) -> TrainFnAuditResult:
    """Audit ``train_fn`` (``train(x, y, seed) -> model``) against its claimed
    (``claimed_epsilon``, ``delta``)-DP with ``canaries`` canaries and one training run.

    With ``check_records`` (the default) a second, smaller run checks that the function
    trains on the records it is given (:func:`relabelling_check`). ``canary`` is ``"quiet"``,
    ``"flipped"`` (records) or ``"gradient"`` (white-box: ``train(x, y, seed, canaries=c)``
    must call ``c.attach(optimizer)``; :mod:`privguard.audit.dp_canaries`).

    Raises:
        ConfigError: bad arguments, or a train function that raises, returns nothing usable,
            ignores the records it is given, or runs past ``time_limit`` seconds.

    Example:
        >>> from privguard.testing.dp_bugs import dp_trainer
        >>> res = dp_audit(dp_trainer(epsilon=1, delta=1e-5, bug="small-noise"), x, y,
        ...                claimed_epsilon=1, delta=1e-5, canaries=2000)
        >>> res.violated, res.epsilon_lower_bound
    """
    t0 = time.perf_counter()
    if not callable(train_fn):
        raise ConfigError("the train function must be callable as train(x, y, seed)")
    if claimed_epsilon is None or not math.isfinite(claimed_epsilon) or claimed_epsilon <= 0:
        raise ConfigError(f"--claimed-epsilon must be a positive number, not {claimed_epsilon}")
    if delta is None or not 0 < delta < 1:
        raise ConfigError(f"--delta must lie strictly between 0 and 1, not {delta}")
    if not 0 < p < 1:
        raise ConfigError(f"the p-value level must lie in (0, 1), not {p}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(
            f"x must be (n, features...) and y (n,) labels of the same n; got {x.shape} and "
            f"{y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ConfigError("y must hold integer class labels 0..k-1")
    n = len(x)
    if canary not in CANARY_KINDS:
        raise ConfigError(f"unknown canary kind {canary!r}; use one of: {', '.join(CANARY_KINDS)}")
    if canary == "gradient":
        return _gradient_audit(
            train_fn,
            x,
            y,
            claimed_epsilon=claimed_epsilon,
            delta=delta,
            m=canaries,
            p=p,
            seed=seed,
            time_limit=time_limit,
            guesses=guesses,
            data_name=data_name,
            t0=t0,
        )
    k = int(y.max()) + 1 if n else 0
    if k < 2:
        raise ConfigError("a DP audit with mislabelled canaries needs at least 2 classes")
    if not 2 <= canaries <= n - 2:
        raise ConfigError(f"--canaries must lie between 2 and {max(2, n - 2)} for {n} records")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(n)
    chosen, rest = pick[:canaries], pick[canaries:]
    labels = (y[chosen] + rng.integers(1, k, size=canaries)) % k
    included = rng.random(canaries) < 0.5
    flat = x.reshape(n, -1).astype(np.float64)
    canary_x = x[chosen]
    if canary == "quiet":
        canary_x = (
            quiet_canaries(flat, canaries, rng).astype(x.dtype).reshape((canaries, *x.shape[1:]))
        )
        labels = rng.integers(0, k, size=canaries)
    x_train = np.concatenate([x[rest], canary_x[included]])
    y_train = np.concatenate([y[rest], labels[included]])
    order = rng.permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]
    values, logits, train_seconds = call_train(
        train_fn, x_train, y_train, seed, canary_x, k, time_limit
    )
    check = None
    if check_records:
        check = relabelling_check(train_fn, x[rest], y[rest], k, seed, rng, time_limit)
        train_seconds += check["train_seconds"]
    scores = label_log_odds(values, labels, logits)
    return _result(
        train_fn,
        scores,
        included,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        p=p,
        guesses=guesses,
        n_train=len(x_train),
        canary=canary,
        data_name=data_name,
        seed=seed,
        t0=t0,
        train_seconds=train_seconds,
        record_check=check,
    )


def _result(
    train_fn: Any,
    scores: np.ndarray,
    included: np.ndarray,
    *,
    claimed_epsilon: float,
    delta: float,
    p: float,
    guesses: Sequence[tuple[int, int]] | None,
    n_train: int,
    canary: str,
    data_name: str,
    seed: int,
    t0: float,
    train_seconds: float,
    record_check: dict[str, Any] | None = None,
    gradient: dict[str, Any] | None = None,
) -> TrainFnAuditResult:
    bounds, table = audit_both(scores, included, delta=delta, p=p, guesses=guesses)
    steinke, fdp = bounds
    best = fdp if fdp.epsilon_lower_bound >= steinke.epsilon_lower_bound else steinke
    return TrainFnAuditResult(
        train_fn=fn_name(train_fn),
        claimed_epsilon=float(claimed_epsilon),
        delta=float(delta),
        p=p,
        epsilon_lower_bound=best.epsilon_lower_bound,
        bound=best.method,
        violated=best.epsilon_lower_bound > claimed_epsilon,
        steinke=steinke,
        fdp=fdp,
        m=len(scores),
        n_included=int(included.sum()),
        n_train=n_train,
        canary=canary,
        data=data_name,
        seed=seed,
        seconds=round(time.perf_counter() - t0, 3),
        train_seconds=round(train_seconds, 3),
        guesses=table,
        record_check=record_check,
        gradient=gradient,
    )


def _gradient_audit(
    train_fn: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    claimed_epsilon: float,
    delta: float,
    m: int,
    p: float,
    seed: int,
    time_limit: float | None,
    guesses: Sequence[tuple[int, int]] | None,
    data_name: str,
    t0: float,
) -> TrainFnAuditResult:
    """The white-box audit (:mod:`privguard.audit.dp_canaries`): ``train_fn(x, y, seed,
    canaries=c)`` on all of the records, ``m`` Dirac gradient canaries put in its optimiser
    steps by ``c``; scores from the parameters' canary coordinates."""
    from privguard.audit.dp_canaries import GradientCanaries

    if m < 2:
        raise ConfigError("--canaries must be at least 2")
    if not takes_canaries(train_fn):
        raise ConfigError(
            "--canary gradient calls train(x, y, seed, canaries=c): give the train function a "
            "canaries parameter and call canaries.attach(optimizer) on its Opacus DPOptimizer"
        )
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    canaries = GradientCanaries(m, included, n_records=len(x), seed=int(rng.integers(2**63 - 1)))

    def work() -> tuple[np.ndarray, dict[str, Any], float]:
        start = time.perf_counter()
        try:
            train_fn(x, y, seed, canaries=canaries)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(describe_error(e)) from None
        seconds = time.perf_counter() - start
        if not canaries.seen:
            raise ConfigError(
                "canaries never seen: the train function took the canaries but no optimiser "
                "step used them; call canaries.attach(optimizer) on the DPOptimizer it steps "
                "(or add canaries.step_rows(...) to each step's per-record gradients)"
            )
        scores = canaries.scores()
        if not np.all(np.isfinite(scores)):
            raise ConfigError("the trained parameters at the canaries' coordinates are not finite")
        return scores, canaries.stats(), seconds

    scores, stats, train_seconds = run_limited(work, time_limit)
    return _result(
        train_fn,
        scores,
        included,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        p=p,
        guesses=guesses,
        n_train=len(x),
        canary="gradient",
        data_name=data_name,
        seed=seed,
        t0=t0,
        train_seconds=train_seconds,
        gradient=stats,
    )


def derangement(k: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(k)`` with no fixed point (``k >= 2``)."""
    while True:
        pi = rng.permutation(k)
        if not np.any(pi == np.arange(k)):
            return pi


def relabelling_check(
    train_fn: TrainFn,
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    seed: int,
    rng: np.random.Generator,
    time_limit: float | None,
) -> dict[str, Any]:
    """Train once more on a random half (at least ``RELABEL_MIN``) of the real records ``x``
    with every label c replaced by pi(c) (a random derangement) and seed ``seed + 1``; raise a
    ConfigError when the model predicts the records' *original* labels ``RELABEL_MARGIN`` above
    both the best constant guess and the labels it was given (it ignored the records). Returns
    the accuracies, which the report keeps."""
    n = len(x)
    size = min(n, max(RELABEL_MIN, int(RELABEL_FRACTION * n)))
    pick = rng.permutation(n)[:size]
    pi = derangement(k, rng)
    xs, ys = x[pick], y[pick]
    values, _, seconds = call_train(train_fn, xs, pi[ys], seed + 1, xs, k, time_limit)
    predicted = np.argmax(values, axis=1)
    given = float(np.mean(predicted == pi[ys]))
    original = float(np.mean(predicted == ys))
    constant = float(np.bincount(ys, minlength=k).max() / size)
    check = {
        "n": int(size),
        "accuracy_given_labels": round(given, 4),
        "accuracy_original_labels": round(original, 4),
        "best_constant_accuracy": round(constant, 4),
        "train_seconds": round(seconds, 3),
    }
    if original >= max(constant, given) + RELABEL_MARGIN:
        raise ConfigError(
            f"the train function ignores the records it is given: trained on {size} records "
            f"whose labels privguard permuted, its model still predicts their original labels "
            f"({original:.0%} right, {given:.0%} on the labels it was given), so it never saw "
            "the canaries either; train on the x and y passed in (training that starts from "
            "a model already fitted to these labels: --no-record-check)"
        )
    return check


def audit_both(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    p: float = P_VALUE,
    guesses: Sequence[tuple[int, int]] | None = None,
) -> tuple[tuple[BoundResult, BoundResult], list[dict[str, Any]]]:
    """The Steinke and f-DP bounds on the same ``scores``: each method tests every pre-declared
    ``(k+, k-)`` at ``p / (2 * len(guesses))`` and keeps its best, so the larger of the two
    holds at confidence ``1 - p``. Returns ``((steinke, fdp), per-guess rows)``."""
    scores = np.asarray(scores, dtype=np.float64)
    m = len(scores)
    if m < 2:
        raise ConfigError("a one-run audit needs at least 2 canaries")
    if guesses is None:
        ks = sorted({max(1, int(round(f * m))) for f in DEFAULT_GUESS_FRACTIONS})
        guesses = [(kk, kk) for kk in ks if 2 * kk <= m]
    if not guesses:
        raise ConfigError("pass at least one (k+, k-) guess count")
    level = p / (2 * len(guesses))
    rows: list[dict[str, Any]] = []
    best: dict[str, BoundResult] = {}
    for kp, km in guesses:
        r, v = count_correct(guess_top_bottom(scores, kp, km), included)
        s = round(epsilon_lower_bound(r, v, delta=delta, p=level, m=m), 6)
        f = round(fdp_epsilon_lower_bound(r, v, delta=delta, p=level, m=m), 6)
        rows.append({"k_plus": kp, "k_minus": km, "r": r, "v": v, "steinke": s, "fdp": f})
        for method, eps in (("steinke", s), ("fdp", f)):
            if method not in best or eps > best[method].epsilon_lower_bound:
                best[method] = BoundResult(method, eps, 1 - p / 2, kp, km, r, v)
    return (best["steinke"], best["fdp"]), rows
