"""White-box model inversion by gradient descent on the input (MI-Face).

Fredrikson, Jha, Ristenpart, "Model Inversion Attacks that Exploit Confidence Information and
Basic Countermeasures", ACM CCS 2015 (Algorithm 1, "MI-Face").

Threat model: the attacker holds the trained classifier itself (``whitebox`` access: it can ask
for the gradient of the loss with respect to an input, and for the outputs), knows the input
format and its valid range, and wants to know what the model learned each class looks like: the
face of a person in a face recogniser, the look of a digit. It starts from a neutral input (by
default the mean of its own auxiliary records over all classes, which says nothing about any one
class) and descends a cost c(x) whose minimum is an input the model assigns to the class with
high confidence, keeping the input plausible with image priors. A reconstruction that an
independent classifier labels as its class shows the model gives away a class representative; it
shows that *training records* leak only if it is closer to the members of the class than to
non-members, which the auditor's evaluator measures, not this attack.

The paper's algorithm is: c(x) = 1 - f_y(x) + AuxTerm(x); x_i = Process(x_{i-1} - lambda grad
c(x_{i-1})); stop after alpha iterations, when c has not improved in beta iterations, or when
c <= gamma; return the iterate with the lowest cost. The settings usually quoted for it are
alpha=5000, beta=100, gamma=0.99, lambda=0.1 (40-class face models); Process is a denoise and
sharpen filter. Here, with the reasons measured on our targets (digits MLP, digits softmax
regression, mnist-5k MLP and CNN; attack accuracy by an RBF SVM / a pixel 5-NN trained on all of
the data):

- ``max_iter`` is alpha, ``patience`` is beta (stop a class when its cost has not reached a new
  low in beta iterations) and ``threshold`` is gamma in the paper's sense, a bound on the cost:
  stop a class once 1 - p_y <= ``threshold``. Stopping on confidence returns the first input
  that crosses the line, a small adversarial change from the start: gamma = 0.99 stops at the
  first iterate (0.1-0.5 / 0.1-0.4) and 0.5-0.01 gave 0.3-1.0 / 0.4-1.0 depending on the
  target. The default is ``None`` (off): descend until converged or ``max_iter``.
- ``objective="logit"`` (default) descends the class-score gap mean_j z_j - z_y (z: logits),
  the unnormalised class score of Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional
  Networks", ICLR 2014 workshop: its gradient does not vanish as p_y -> 1, and it pulls
  towards the class rather than only away from the current runner-up. 1.0 / 1.0 on all four
  targets. The paper's cost 1 - p_y (``objective="confidence"``, gradient p_y * dCE/dx)
  saturates within a few steps: 1.0 / 1.0 on the digits targets but 1.0 / 0.6 (mnist MLP) and
  1.0 / 0.9 (mnist CNN) - the pixel noise one evaluator accepts and another does not.
- Steps are normalised (lambda times the gradient over its root mean square, per record), so
  ``step`` is in units of the input range whatever the model's gradient scale: 60 iterations
  take 0.03-1 s on these targets, where the paper's raw steps need thousands (IBM ART's
  ``MIFace`` took 70-940 s on mnist-5k targets here).
- AuxTerm: a total-variation prior (``tv_weight``) and, for images, an L1 "ink" prior pulling
  pixels towards the lower bound (``l1_weight``; digit images are mostly background at the
  lower bound; set it to 0 for light backgrounds). Both weights are relative to the normalised
  class-score gradient. The L2 prior is a constraint: the reconstruction stays within
  root-mean-square distance ``radius`` (a fraction of the input range) of the start. That
  bound matters most: unconstrained descent keeps adding class-specific noise that fools one
  evaluator and not another (shared/PAPERS.md, "Evaluators can be fooled").
- Process is a Gaussian denoise blend (``smooth``, sigma = width / 40) for images, the identity
  for tabular records; every iterate is clipped to the input bounds.
- All target classes are optimised as one batch; the iterate with the lowest cost is returned
  (on ties, as when the cost saturates, the later one).

Gradients come through the oracle: ``oracle.loss_gradient(x, y)`` = dCE(f(x), y)/dx per record.
Since CE_j = logsumexp(z) - z_j, the class-score gap's gradient is dCE_y/dx - mean_j dCE_j/dx,
which takes one gradient query per class per record (with more than ``class_samples`` classes a
random subset estimates the mean). Every gradient and output query is counted, as it should be:
white-box queries are cheap but not free. scikit-learn linear models give the oracle no
gradients; for them this attack uses the estimator's ``coef_`` / ``intercept_`` to compute the
input gradient analytically (softmax regression, binary logistic, one-vs-rest logistic), and
queries the oracle's outputs itself so the queries are counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from privguard.attacks.base import Attack, InversionGuesses, Knowledge, Progress
from privguard.attacks.inversion._common import (
    budget_note,
    initial_guess,
    input_bounds,
    is_image,
    plan_budget,
    rms,
    smooth_images,
    target_classes,
    total_variation_grad,
)
from privguard.attacks.registry import register
from privguard.errors import AccessError, BudgetExhaustedError, ConfigError
from privguard.oracle import Access, Oracle

OBJECTIVES = ("logit", "confidence")
MIN_ITERATIONS = 5


@register
class MIFace(Attack):
    """Gradient descent on the input towards each class, with priors and a denoising step.

    Example:
        >>> guesses = MIFace().run(target.oracle("whitebox"), knowledge)
        >>> guesses.reconstructions.shape      # (classes, *input_shape)
    """

    name = "mi-face"
    family = "inversion"
    needs = Access.WHITEBOX
    # Audits run it on images only (a class "representative" of tabular records says little);
    # run() itself handles records of any shape, without the image priors.
    kinds = ("image",)
    paper = (
        "Fredrikson, Jha, Ristenpart, Model Inversion Attacks that Exploit Confidence "
        "Information and Basic Countermeasures, ACM CCS 2015"
    )
    description = (
        "White-box inversion (MI-Face): gradient descent on the input to each class's score, "
        "with total-variation and L1/L2 priors and a denoising step; one reconstruction per class."
    )

    def __init__(
        self,
        *,
        max_iter: int = 60,
        patience: int = 20,
        threshold: float | None = None,
        step: float = 0.05,
        objective: str = "logit",
        radius: float = 0.2,
        tv_weight: float = 0.3,
        l1_weight: float = 0.3,
        smooth: float = 0.1,
        init: str = "aux-mean",
        class_samples: int = 10,
    ) -> None:
        self.max_iter = max_iter
        self.patience = patience
        self.threshold = threshold
        self.step = step
        self.objective = objective
        self.radius = radius
        self.tv_weight = tv_weight
        self.l1_weight = l1_weight
        self.smooth = smooth
        self.init = init
        self.class_samples = class_samples

    def _check_settings(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"unknown mi-face objective {self.objective!r}; use one of: {', '.join(OBJECTIVES)}"
            )
        checks = [
            (self.max_iter >= 1, "max_iter must be at least 1"),
            (self.patience >= 1, "patience must be at least 1"),
            (self.step > 0, "step must be positive"),
            (self.radius > 0, "radius must be positive"),
            (self.tv_weight >= 0 and self.l1_weight >= 0, "prior weights must be >= 0"),
            (0 <= self.smooth <= 1, "smooth must lie in [0, 1]"),
            (self.class_samples >= 1, "class_samples must be at least 1"),
        ]
        self.check_settings(checks)

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> InversionGuesses:
        self.check_access(oracle)
        self._check_settings()
        shape = oracle.input_shape
        classes = target_classes(oracle, knowledge)
        n, k = len(classes), oracle.n_classes
        low, high = input_bounds(knowledge, shape)
        span = (high - low).astype(np.float32)
        image = is_image(knowledge, shape)
        grads = _gradient_source(oracle)
        rng = np.random.default_rng(knowledge.seed)

        start, init_note = initial_guess(knowledge, shape, n, self.init)
        safe_span = np.where(span > 0, span, 1.0)
        u0 = ((start - low) / safe_span).astype(np.float32)  # search in [0, 1] per feature
        u = u0.copy()
        best_u = u0.copy()
        best_cost = np.full(n, np.inf)
        since_best = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        queries = np.zeros(n, dtype=np.int64)
        notes = [init_note, self._method_note(image, grads)]

        if self.objective == "confidence":
            n_grad = 1
        else:
            n_grad = k if k <= self.class_samples else self.class_samples + 1
        per_iter = 1 + (n_grad if grads.counted else 0)
        plan = plan_budget(
            oracle, n, self.max_iter * per_iter + 1, MIN_ITERATIONS * per_iter + 1, classes
        )
        iterations = max(0, min(self.max_iter, (plan.per_class - 1) // per_iter))
        active[plan.n_run :] = False
        if plan.note:
            notes.append(plan.note)
        stopped = {"patience": 0, "threshold": 0}

        def evaluate(rows: np.ndarray) -> np.ndarray:
            """Cost of the current iterates ``rows``; updates the best-so-far."""
            x = low + u[rows] * span
            z = oracle.logits(x)
            queries[rows] += 1
            grads.observe(x, z)
            y = classes[rows]
            cost = _cost(self.objective, z, y)
            improved = cost < best_cost[rows] - 1e-9
            # ties (a saturated cost) keep the later iterate, which has moved further
            keep = cost <= best_cost[rows]
            best_cost[rows[keep]] = cost[keep]
            best_u[rows[keep]] = u[rows[keep]]
            since_best[rows] = np.where(improved, 0, since_best[rows] + 1)
            return _confidence_cost(z, y)

        try:
            for it in range(iterations):
                rows = np.flatnonzero(active)
                if len(rows) == 0:
                    break
                conf_cost = evaluate(rows)
                done = since_best[rows] >= self.patience
                stopped["patience"] += int(done.sum())
                if self.threshold is not None:
                    hit = (conf_cost <= self.threshold) & ~done
                    stopped["threshold"] += int(hit.sum())
                    done |= hit
                active[rows[done]] = False
                rows = rows[~done]
                if len(rows) == 0:
                    break
                x = low + u[rows] * span
                p_y = 1.0 - conf_cost[~done]
                g = grads.gradient(
                    self.objective, x, classes[rows], p_y, k, self.class_samples, rng
                )
                queries[rows] += n_grad if grads.counted else 0
                g = g * span  # chain rule into the [0, 1] search space
                direction = g / np.maximum(rms(g), 1e-30)
                ur = u[rows]
                if image:
                    direction = direction + self.tv_weight * total_variation_grad(ur)
                    direction = direction + self.l1_weight
                ur = ur - self.step * direction.astype(np.float32)
                if image and self.smooth > 0:
                    sigma = shape[-1] / 40
                    ur = (1 - self.smooth) * ur + self.smooth * smooth_images(ur, sigma)
                d = ur - u0[rows]
                d = d * np.minimum(1.0, self.radius / np.maximum(rms(d), 1e-30))
                u[rows] = np.clip(u0[rows] + d, 0.0, 1.0)
                if progress is not None:
                    progress("mi-face", it + 1, iterations)
            rows = np.flatnonzero(active)
            if len(rows):
                evaluate(rows)
        except BudgetExhaustedError:
            unfinished = [int(c) for c in classes[active]]
            finished = [int(c) for c in classes[: plan.n_run] if c not in set(unfinished)]
            last_done = finished[-1] if finished else None
            notes.append(budget_note(oracle, last_done, unfinished))

        if stopped["patience"]:
            notes.append(
                f"{stopped['patience']} class(es) stopped early: cost not improved in "
                f"{self.patience} iterations"
            )
        if stopped["threshold"]:
            notes.append(
                f"{stopped['threshold']} class(es) stopped once 1 - p_y <= {self.threshold}"
            )
        recon = np.clip(low + best_u * span, low, high).astype(np.float32)
        return InversionGuesses(
            reconstructions=recon,
            labels=classes.copy(),
            notes=notes,
            queries_per_class=[int(q) for q in queries],
        )

    def _method_note(self, image: bool, grads: _Gradients) -> str:
        what = (
            "class-score gap mean_j z_j - z_y"
            if self.objective == "logit"
            else "confidence cost 1 - p_y (the paper's)"
        )
        priors = (
            f"TV weight {self.tv_weight}, L1 weight {self.l1_weight}, "
            if image
            else "no image priors (tabular records), "
        )
        return (
            f"normalised gradient descent on the {what}: step {self.step}, up to "
            f"{self.max_iter} iterations, {priors}L2 radius {self.radius} of the input range; "
            f"gradients {grads.how}"
        )


def _cost(objective: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if objective == "confidence":
        return _confidence_cost(z, y)
    finite = np.where(np.isfinite(z), z, np.nan)
    floor = np.nanmin(finite, axis=1, keepdims=True) - 50.0  # log(0) from a probability API
    z = np.where(np.isfinite(z), z, floor)
    return z.mean(axis=1) - z[np.arange(len(y)), y]


def _confidence_cost(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - p_y from logits, as the other classes' mass (exact near certainty)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - np.max(z, axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    others = p.sum(axis=1) - p[rows, y]
    return np.clip(others, 0.0, 1.0)


class _Gradients(ABC):
    """Input gradients of the descent objective, from the oracle or a linear model's weights."""

    how: str
    counted = True  # whether a gradient costs oracle queries

    def observe(self, x: np.ndarray, z: np.ndarray) -> None:
        """Sees each batch of outputs queried (the analytic source checks its model with it);
        nothing to do for oracle gradients."""
        return None

    @abstractmethod
    def gradient(
        self,
        objective: str,
        x: np.ndarray,
        y: np.ndarray,
        p_y: np.ndarray,
        k: int,
        class_samples: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """d objective / dx for records ``x`` of class ``y`` (``p_y`` their confidences)."""


class _OracleGradients(_Gradients):
    how = "from the oracle's loss gradients"

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def gradient(self, objective, x, y, p_y, k, class_samples, rng) -> np.ndarray:
        n = len(x)
        if objective == "confidence":
            # d(1 - p_y)/dx = p_y * dCE_y/dx, with p_y from the output query just made at x
            g = self.oracle.loss_gradient(x, y)
            return g * p_y.reshape((-1,) + (1,) * (x.ndim - 1)).astype(np.float32)
        # d(mean_j z_j - z_y)/dx = dCE_y/dx - mean_j dCE_j/dx, since CE_j = logsumexp(z) - z_j
        if k <= class_samples:
            cols = np.tile(np.arange(k), (n, 1))
        else:  # an unbiased estimate of the mean from a random subset of classes
            picks = np.stack([rng.choice(k, class_samples, replace=False) for _ in range(n)])
            cols = np.concatenate([y[:, None], picks], axis=1)
        m = cols.shape[1]
        g = self.oracle.loss_gradient(np.repeat(x, m, axis=0), cols.reshape(-1))
        g = g.reshape((n, m) + x.shape[1:])
        if k <= class_samples:
            return g[np.arange(n), y] - g.mean(axis=1)
        return g[:, 0] - g[:, 1:].mean(axis=1)


@dataclass
class _LinearGradients(_Gradients):
    """Analytic input gradients of a scikit-learn linear classifier (``coef_``, ``intercept_``).

    The oracle has no ``loss_gradient`` for scikit-learn models and oracle.py is shared, so the
    white-box attacker reads the weights itself. Which link the estimator uses (softmax,
    binary logistic, one-vs-rest normalised logistic) is checked against the probabilities the
    oracle actually returns on the first query; an estimator matching none is refused.
    """

    w: np.ndarray
    b: np.ndarray
    link: str | None = None
    how: str = "computed analytically from the scikit-learn model's coef_ and intercept_"
    counted: bool = False  # only the output queries reach the oracle

    def observe(self, x: np.ndarray, z: np.ndarray) -> None:
        if self.link is not None:
            return
        p = np.exp(np.asarray(z, dtype=np.float64))
        s = x.reshape(len(x), -1).astype(np.float64) @ self.w.T + self.b
        for link in ("softmax", "ovr"):
            if np.allclose(_link_proba(link, s), p, atol=1e-6, rtol=1e-4):
                self.link = link
                return
        raise AccessError(
            "this scikit-learn model's probabilities are not a softmax or one-vs-rest logistic "
            "function of coef_ / intercept_, so mi-face has no input gradients for it; use the "
            "blackbox-inversion attack (probs access) instead"
        )

    def gradient(self, objective, x, y, p_y, k, class_samples, rng) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        s = flat @ self.w.T + self.b
        if self.link == "softmax":
            dz = np.broadcast_to(self.w, (len(x),) + self.w.shape)  # dz_j/dx = w_j
        else:
            dz = (1.0 - expit(s))[:, :, None] * self.w[None]  # z_j = log sigmoid(s_j)
        rows = np.arange(len(x))
        if objective == "confidence":
            p = _link_proba(self.link or "softmax", s)
            # d(1 - p_y)/dx = -p_y (dz_y - sum_j p_j dz_j)
            g = -p[rows, y, None] * (dz[rows, y] - np.einsum("nj,njd->nd", p, dz))
        else:
            g = dz.mean(axis=1) - dz[rows, y]
        return g.reshape(x.shape).astype(np.float32)


def _link_proba(link: str, s: np.ndarray) -> np.ndarray:
    if link == "softmax":
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    sig = expit(s)
    return sig / sig.sum(axis=1, keepdims=True)


def _gradient_source(oracle: Oracle) -> _Gradients:
    predictor: Any = oracle.predictor
    if getattr(predictor, "loss_gradient", None) is not None:
        return _OracleGradients(oracle)
    est = getattr(predictor, "estimator", None)
    coef = getattr(est, "coef_", None)
    if coef is not None and getattr(est, "intercept_", None) is not None:
        w = np.asarray(coef, dtype=np.float64)
        b = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
        if w.shape[0] == 1 and oracle.n_classes == 2:  # binary: softmax over (0, s)
            w = np.vstack([np.zeros_like(w), w])
            b = np.concatenate([[0.0], b])
        if w.shape[0] == oracle.n_classes and b.shape[0] == oracle.n_classes:
            return _LinearGradients(w, b)
    raise AccessError(
        "the mi-face attack needs input gradients: this model gives none (white-box access needs "
        "a PyTorch model or a scikit-learn linear model with coef_); use blackbox-inversion"
    )
