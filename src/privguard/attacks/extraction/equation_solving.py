"""Equation-solving extraction of softmax (and logistic) regression.

Tramèr, Zhang, Juels, Reiter, Ristenpart, "Stealing Machine Learning Models via Prediction APIs",
USENIX Security 2016 (Section 4.1, equation-solving attacks on logistic regression and softmax
models).

For softmax regression p = softmax(W x + b), the log-ratio of two classes is linear in the input:
log(p_i / p_0) = (w_i - w_0) . x + (b_i - b_0). The logit differences to class 0 are all a model's
answers can ever determine (adding one vector to every row of W changes nothing), so they are its
identifiable parameters: (k - 1)(d + 1) of them. Every full probability vector gives k - 1 linear
equations in them; d + 1 queries with linearly independent inputs (uniform random ones are, with
probability 1) fix them exactly. A binary logistic regression is the case k = 2.

The attacker does not know the target is linear. After solving, it spends a few fresh queries
(``verify``) to check that the solved model reproduces the answers; if it does not, the target
is not a softmax regression and the attack says so (use a learning-based attack instead).

Answers that lost precision to an output policy (rounded to D decimals, noisy, zeros for tiny
probabilities) make the d + 1 equations inexact. The attack then asks more uniform queries
(``fit_queries``, by default 20 per unknown of a class, 20(d + 1)) and fits the parameters by
minimising the cross-entropy to the answers (maximum likelihood, which weights each answer by
its own precision better than least squares on log-ratios, whose zeros have no logarithm); the
paper reports this for rounded outputs. The check on fresh queries is then looser: answers are
compared up to the resolution they were given at.

Numerics: the exact solve is done in float64. It recovers the parameters a model computes with;
a model that computes in float32 (PyTorch modules, scikit-learn fitted on float32 data) answers
with about seven significant digits, which bounds the error of any recovery at ~1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from privguard.attacks.base import Attack, ExtractionGuesses, Knowledge, Progress
from privguard.attacks.extraction._common import uniform
from privguard.attacks.registry import register
from privguard.errors import ConfigError
from privguard.models.nets import build_model
from privguard.models.torch_predictor import TorchPredictor
from privguard.oracle import Access, Oracle

EXACT_TOLERANCE = 1e-4  # largest probability error of an exact solve on fresh queries
FIT_TOLERANCE = 0.05  # mean largest probability error of a fit to noisy answers on fresh queries
ROUNDED_FLOOR = 0.005  # ... of a fit to rounded answers: max(1.5 x the rounding step, this)
REPEAT_TOLERANCE = 1e-6  # a repeated query's answer differs by float rounding only, or is noisy
FIT_AGREEMENT = 0.9  # share of fresh queries whose top class a fitted solve must reproduce


@register
class EquationSolving(Attack):
    """Recover a softmax regression's identifiable parameters from d + 1 probability vectors.

    Args:
        verify: fresh queries spent checking that the solved model reproduces the answers (0:
            no check; the budget may also leave none, which the notes say).
        fit_queries: queries for the fit when answers are inexact (rounded, noisy); default
            20(d + 1).
        exact: try the d + 1 query solve first (``False`` goes straight to the fit).

    Example:
        >>> guesses = EquationSolving().run(target.oracle("probs"), knowledge)
        >>> guesses.parameters.shape        # (classes - 1, d + 1): logit differences to class 0
    """

    name = "equation-solving"
    family = "extraction"
    needs = Access.PROBS
    paper = (
        "Tramèr, Zhang, Juels, Reiter, Ristenpart, 'Stealing Machine Learning Models via "
        "Prediction APIs', USENIX Security 2016"
    )
    description = (
        "Solves for a softmax regression's parameters from d + 1 probability vectors (exactly), "
        "or fits them on more queries when the answers are rounded or noisy."
    )

    def __init__(
        self, *, verify: int = 16, fit_queries: int | None = None, exact: bool = True
    ) -> None:
        self.verify = verify
        self.fit_queries = fit_queries
        self.exact = exact

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> ExtractionGuesses:
        self.check_access(oracle)
        d = math.prod(oracle.input_shape)
        k = oracle.n_classes
        need = d + 1
        n_fit = self.fit_queries if self.fit_queries is not None else 20 * need
        self.check_settings(
            [
                (self.verify >= 0, "verify must be >= 0"),
                (n_fit >= need, f"fit_queries must be at least d + 1 = {need}"),
            ]
        )
        left = oracle.remaining
        if left is not None and left < need:
            raise ConfigError(
                f"{self.name}: solving for {k - 1} x {need} parameters needs at least d + 1 = "
                f"{need} queries, but the budget leaves {left}; raise --budget to {need} or more"
            )
        rng = np.random.default_rng(knowledge.seed)
        start = oracle.queries
        notes: list[str] = []
        x = uniform(need, oracle.input_shape, knowledge.bounds, rng)
        p = oracle.proba(x)
        theta = None
        tolerance = FIT_TOLERANCE
        if self.exact and _exact_answers(p):
            theta = _solve(_design(x), p)
            ok, err = self._check(oracle, knowledge, rng, theta, exact=True, notes=notes)
            if ok:
                notes.append(
                    f"solved exactly from d + 1 = {need} queries"
                    + (f" (largest probability error on fresh queries {err:.1e})" if err else "")
                )
            else:
                # A deterministic model answers a repeated query identically; then the miss
                # means the answers are not those of a softmax regression. Noisy answers
                # differ, and a fit on more queries can average the noise away.
                if oracle.remaining is not None and oracle.remaining < 1:
                    raise ConfigError(self._not_linear(need, err, "the exact solve"))
                again = oracle.proba(x[:1])
                if np.abs(again - p[:1]).max() <= REPEAT_TOLERANCE:
                    raise ConfigError(self._not_linear(need, err, "the exact solve"))
                notes.append(
                    "repeated queries get different answers (noisy outputs): fitting on more "
                    "queries; linearity can only be checked up to the noise"
                )
                theta = None
        resolution = _resolution(p)
        if theta is None:
            if resolution is not None:
                tolerance = max(1.5 * resolution, ROUNDED_FLOOR)
            budget_left = oracle.remaining
            extra = n_fit - len(x)
            if budget_left is not None:
                extra = max(0, min(extra, budget_left - min(self.verify, budget_left // 2)))
            if extra > 0:
                x_more = uniform(extra, oracle.input_shape, knowledge.bounds, rng)
                x, p = np.concatenate([x, x_more]), np.concatenate([p, oracle.proba(x_more)])
            theta = _fit(_design(x), p)
            ok, err = self._check(
                oracle, knowledge, rng, theta, exact=False, notes=notes, tolerance=tolerance
            )
            if not ok:
                raise ConfigError(self._not_linear(len(x), err, "the best linear fit"))
            what = f"rounded to {resolution:g}" if resolution else "inexact"
            notes.append(
                f"answers were {what}: parameters fitted by maximum likelihood on {len(x):,} "
                "uniform queries"
                + (f" (mean largest probability error on fresh queries {err:.2g})" if err else "")
            )
        spent = oracle.queries - start
        model, arch = _as_module(theta, oracle.input_shape, k)
        notes.append(f"copied with {spent:,} queries (softmax regression, {theta.size} parameters)")
        return ExtractionGuesses(
            model=model,
            architecture=arch,
            queries=spent,
            checkpoints=[(spent, model)],
            parameters=theta.T.copy(),
            outputs="probs",
            notes=notes,
        )

    def _check(
        self,
        oracle: Oracle,
        knowledge: Knowledge,
        rng: np.random.Generator,
        theta: np.ndarray,
        *,
        exact: bool,
        notes: list[str],
        tolerance: float = FIT_TOLERANCE,
    ) -> tuple[bool, float | None]:
        """Ask fresh uniform queries and compare; ``(True, None)`` when none can be spent."""
        n = self.verify if oracle.remaining is None else min(self.verify, oracle.remaining)
        if n <= 0:
            notes.append(
                "no query left to check the solved model on fresh inputs: the target was "
                "assumed to be linear"
            )
            return True, None
        xv = uniform(n, oracle.input_shape, knowledge.bounds, rng)
        pv = oracle.proba(xv)
        fit = _softmax(_design(xv) @ theta)
        gap = np.abs(fit - _normalised(pv)).max(axis=1)
        if exact:
            err = float(gap.max())
            return err <= EXACT_TOLERANCE, err
        err = float(gap.mean())
        agree = float((fit.argmax(axis=1) == pv.argmax(axis=1)).mean())
        return err <= tolerance and agree >= FIT_AGREEMENT, err

    def _not_linear(self, n: int, err: float | None, how: str) -> str:
        return (
            f"{self.name}: the target's answers are not those of a softmax regression - "
            f"{how} from {n:,} answers misses fresh ones (largest probability error "
            f"{err or 0:.2g}); the model is not linear, or an output policy distorts its "
            "probabilities: use a learning-based attack (knockoff, jacobian, active-extraction)"
        )


def _design(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.concatenate([flat, np.ones((len(flat), 1))], axis=1)


def _exact_answers(p: np.ndarray) -> bool:
    return bool((p > 0).all() and _resolution(p) is None)


def _resolution(p: np.ndarray, max_decimals: int = 8) -> float | None:
    """The rounding step of the answers (10^-D), when every answer is a multiple of it."""
    for dec in range(0, max_decimals + 1):
        scaled = p * 10.0**dec
        if np.abs(scaled - np.round(scaled)).max() < 1e-6:
            return 10.0**-dec
    return None


def _normalised(p: np.ndarray) -> np.ndarray:
    s = p.sum(axis=1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)


def _softmax(z_rest: np.ndarray) -> np.ndarray:
    z = np.concatenate([np.zeros((len(z_rest), 1)), z_rest], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _solve(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Logit differences to class 0, ``(d + 1, k - 1)``, from the log-ratios (least squares,
    exact for d + 1 independent rows)."""
    ratios = np.log(p[:, 1:]) - np.log(p[:, :1])
    theta, *_ = np.linalg.lstsq(a, ratios, rcond=None)
    return theta


def _fit(a: np.ndarray, p: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Maximum-likelihood logit differences: minimise the cross-entropy to the answers (rows
    renormalised, abstentions dropped), with a tiny ridge that keeps saturated answers
    (p = 1.00 after rounding) from pushing parameters to infinity."""
    q = _normalised(p)
    live = q.sum(axis=1) > 0
    a, q = a[live], q[live]
    n, m = a.shape
    k = q.shape[1]

    def loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        theta = v.reshape(m, k - 1)
        z = np.concatenate([np.zeros((n, 1)), a @ theta], axis=1)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -(q * logp).sum() / n + ridge * float(v @ v)
        grad = a.T @ (np.exp(logp) - q)[:, 1:] / n
        return value, grad.ravel() + 2 * ridge * v

    res = minimize(
        loss,
        np.zeros(m * (k - 1)),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 200, "ftol": 1e-10, "gtol": 1e-7},
    )
    return res.x.reshape(m, k - 1)


def _as_module(theta: np.ndarray, input_shape: tuple[int, ...], k: int):
    """The solved model as a PyTorch softmax regression (class 0's row is zero)."""
    arch = {"type": "logreg", "input_shape": list(input_shape), "n_classes": int(k)}
    module = build_model(arch)
    weight = np.zeros((k, theta.shape[0] - 1))
    bias = np.zeros(k)
    weight[1:] = theta[:-1].T
    bias[1:] = theta[-1]
    with torch.no_grad():
        module[1].weight.copy_(torch.from_numpy(weight))
        module[1].bias.copy_(torch.from_numpy(bias))
    return TorchPredictor(module.eval(), input_shape, k), arch
