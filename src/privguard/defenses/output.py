"""Output policies: what a deployed model's answers may reveal.

A policy is a function of the model's probability vectors (and of a random stream independent of
the inputs, for the noise policies): it never adds information, only removes or blurs it. The
same objects serve two uses — the audit measures attacks through them
(``privguard audit --policy "topk:3,round:2"``) and the gateway applies them to live answers — so
what the audit measures is exactly what the gateway enforces.

Specs (comma-separated, applied left to right)::

    label                     the predicted class only
    topk:K                    the K most likely classes with their probabilities
    round:D                   probabilities rounded to D decimals
    noise:gaussian:S          Gaussian noise of standard deviation S, then clipped and renormalised
    noise:laplace:S           Laplace noise of scale S, then clipped and renormalised
    reverse-sigmoid:BETA:GAMMA  Lee et al. (2019) deceptive perturbation
    threshold:T               abstain (no answer, label -1) when the top probability is below T

A policy also caps the access level: after ``label`` an attacker gets labels only, after
``topk:K`` the top K; every policy removes logits and gradients (the output is no longer the
model's own, so ``logits`` and ``whitebox`` access make no sense through it).

Reference: Lee, Edraki, Bavani, Sotiriadis, Chang — "Defending Against NN Model Stealing Attacks
Using Deceptive Perturbations", IEEE S&P Workshops 2019 (reverse sigmoid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from privguard.errors import ConfigError
from privguard.oracle import ABSTAIN, Access, Oracle, Predictor, top_k


class OutputPolicy(ABC):
    """One transformation of probability vectors ``(n, classes)`` -> ``(n, classes)``.

    Rows stay non-negative; a row of zeros means "abstained" (no answer for that record)."""

    #: the most an answer carries after this policy
    max_access: Access = Access.PROBS
    #: for ``topk`` policies, how many classes are kept
    k: int | None = None

    @property
    @abstractmethod
    def spec(self) -> str:
        """The string that parses back to this policy."""

    @abstractmethod
    def apply(self, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform ``p`` (rows sum to 1, or 0 when already abstained)."""

    def __repr__(self) -> str:
        return f"OutputPolicy({self.spec!r})"


@dataclass(repr=False)
class Label(OutputPolicy):
    """Only the predicted class (returned as a one-hot row)."""

    max_access: Access = Access.LABEL

    @property
    def spec(self) -> str:
        return "label"

    def apply(self, p, rng):
        out = np.zeros_like(p)
        live = p.sum(axis=1) > 0
        out[np.flatnonzero(live), p[live].argmax(axis=1)] = 1.0
        return out


@dataclass(repr=False)
class TopK(OutputPolicy):
    """The ``k`` most likely classes keep their probabilities; the others read 0."""

    k: int = 3
    max_access: Access = Access.TOPK

    @property
    def spec(self) -> str:
        return f"topk:{self.k}"

    def apply(self, p, rng):
        keep, scores = top_k(p, self.k)
        out = np.zeros_like(p)
        np.put_along_axis(out, keep, scores, axis=1)
        return out


@dataclass(repr=False)
class Round(OutputPolicy):
    """Probabilities rounded to ``decimals`` places (Fredrikson et al. 2015's suggested defence)."""

    decimals: int = 2

    @property
    def spec(self) -> str:
        return f"round:{self.decimals}"

    def apply(self, p, rng):
        return np.round(p, self.decimals)


@dataclass(repr=False)
class Noise(OutputPolicy):
    """Additive Gaussian or Laplace noise on the probabilities, clipped at 0 and renormalised.

    The noise is drawn fresh per answer; repeated queries average it away, which the audit
    measures (a black-box attack that re-asks pays in queries)."""

    kind: str = "gaussian"
    scale: float = 0.01

    @property
    def spec(self) -> str:
        return f"noise:{self.kind}:{self.scale:g}"

    def apply(self, p, rng):
        draw = rng.normal if self.kind == "gaussian" else rng.laplace
        noisy = np.clip(p + draw(0.0, self.scale, size=p.shape), 0.0, None)
        return _renormalise(noisy, alive=p.sum(axis=1) > 0)


@dataclass(repr=False)
class ReverseSigmoid(OutputPolicy):
    """Lee et al. (2019): ``q_i ∝ p_i − β·(σ(γ·logit(p_i)) − ½)``, clipped and renormalised.

    The perturbation is largest where the sigmoid of the scaled logit is steep, which scrambles
    the information a substitute model learns from confidences while the top class is, for
    reasonable (β, γ), preserved."""

    beta: float = 0.7
    gamma: float = 0.2

    @property
    def spec(self) -> str:
        return f"reverse-sigmoid:{self.beta:g}:{self.gamma:g}"

    def apply(self, p, rng):
        q = np.clip(p, 1e-12, 1 - 1e-12)
        logit = np.log(q) - np.log1p(-q)
        r = self.beta * (1.0 / (1.0 + np.exp(-self.gamma * logit)) - 0.5)
        out = np.clip(p - r, 0.0, None)
        # keep the served label the model's own: the perturbation must not change the argmax
        top = p.argmax(axis=1)
        rows = np.arange(len(p))
        out[rows, top] = np.maximum(out[rows, top], out.max(axis=1) + 1e-9)
        return _renormalise(out, alive=p.sum(axis=1) > 0)


@dataclass(repr=False)
class Threshold(OutputPolicy):
    """Abstain (a row of zeros, label -1) when the top probability is below ``t``."""

    t: float = 0.5

    @property
    def spec(self) -> str:
        return f"threshold:{self.t:g}"

    def apply(self, p, rng):
        out = p.copy()
        out[p.max(axis=1) < self.t] = 0.0
        return out


@dataclass(repr=False)
class Chain(OutputPolicy):
    """Several policies, applied left to right."""

    steps: list[OutputPolicy] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return ",".join(s.spec for s in self.steps) or "none"

    @property
    def max_access(self) -> Access:  # type: ignore[override]
        caps = [s.max_access for s in self.steps]
        return min(caps) if caps else Access.WHITEBOX

    @property
    def k(self) -> int | None:  # type: ignore[override]
        ks = [s.k for s in self.steps if s.k is not None]
        return min(ks) if ks else None

    def apply(self, p, rng):
        for s in self.steps:
            p = s.apply(p, rng)
        return p


def _renormalise(p: np.ndarray, alive: np.ndarray) -> np.ndarray:
    s = p.sum(axis=1, keepdims=True)
    out = np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)
    # a live row that noise zeroed entirely keeps no information but must stay an answer
    dead = alive & (s[:, 0] <= 0)
    out[dead] = 1.0 / p.shape[1]
    return out


_HELP = (
    "use comma-separated steps among: label, topk:K, round:D, noise:gaussian:S, "
    "noise:laplace:S, reverse-sigmoid:BETA:GAMMA, threshold:T (e.g. 'topk:3,round:2')"
)


def parse_policy(spec: str | OutputPolicy | Sequence[OutputPolicy] | None) -> Chain:
    """Parse a policy spec (``"topk:3,round:2"``); ``None``, ``""`` and ``"none"`` give the
    empty chain (answers pass unchanged)."""
    if isinstance(spec, Chain):
        return spec
    if isinstance(spec, OutputPolicy):
        return Chain([spec])
    if spec is None:
        return Chain([])
    if not isinstance(spec, str):
        return Chain(list(spec))
    steps: list[OutputPolicy] = []
    for raw in spec.split(","):
        part = raw.strip().lower()
        if not part or part == "none":
            continue
        name, *args = part.split(":")
        try:
            steps.append(_one(name, args))
        except (ValueError, IndexError):
            raise ConfigError(f"cannot parse output policy {raw.strip()!r}: {_HELP}") from None
    return Chain(steps)


def _one(name: str, args: list[str]) -> OutputPolicy:
    def only(n: int) -> None:
        if len(args) != n:
            raise ValueError

    if name == "label":
        only(0)
        return Label()
    if name == "topk":
        only(1)
        k = int(args[0])
        if k < 1:
            raise ValueError
        return TopK(k)
    if name == "round":
        only(1)
        d = int(args[0])
        if not 0 <= d <= 15:
            raise ValueError
        return Round(d)
    if name == "noise":
        only(2)
        kind, scale = args[0], float(args[1])
        if kind not in ("gaussian", "laplace") or not scale > 0 or not np.isfinite(scale):
            raise ValueError
        return Noise(kind, scale)
    if name == "reverse-sigmoid":
        only(2)
        beta, gamma = float(args[0]), float(args[1])
        if not (beta > 0 and gamma > 0 and np.isfinite(beta) and np.isfinite(gamma)):
            raise ValueError
        return ReverseSigmoid(beta, gamma)
    if name == "threshold":
        only(1)
        t = float(args[0])
        if not 0 <= t <= 1:
            raise ValueError
        return Threshold(t)
    raise ValueError


class ProtectedPredictor:
    """A predictor whose answers pass through an output policy (no logits of its own, no
    gradients). ``seed`` seeds the noise stream."""

    def __init__(self, predictor: Predictor, policy: OutputPolicy, *, seed: int = 0) -> None:
        self.inner = predictor
        self.policy = policy
        self.n_classes = predictor.n_classes
        self.input_shape = tuple(predictor.input_shape)
        self.dtype = getattr(predictor, "dtype", None) or np.float32
        self.rng = np.random.default_rng(seed)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.policy.apply(np.asarray(self.inner.predict_proba(x), np.float64), self.rng)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(x), 1e-300, None))


def policy_access(access: Access | str, policy: str | OutputPolicy | None) -> Access:
    """What an answer through ``policy`` carries when the attacker is granted ``access``.

    Without a policy, ``access`` itself. Through one, ``access`` capped at what the policy lets
    through and at ``probs``: a policy rewrites the probabilities, so the model's own logits
    and gradients are gone. The one access-cap rule of the audit, the sweep, the endpoint audit
    and the gateway (which also never serves gradients over HTTP).

    Example:
        >>> policy_access("logits", "topk:3")
        <Access.TOPK: 1>
    """
    access = Access.parse(access)
    chain = parse_policy(policy)
    if not chain.steps:
        return access
    return min(access, chain.max_access, Access.PROBS)


def protect(
    predictor: Predictor,
    policy: str | OutputPolicy | None,
    access: Access | str = Access.PROBS,
    *,
    budget: int | None = None,
    seed: int = 0,
) -> Oracle:
    """An oracle that answers through ``policy``, at ``access`` capped by what the policy lets
    through. With no policy it is the plain oracle.

    Example:
        >>> oracle = protect(target.predictor, "topk:3,round:2", "probs")
        >>> oracle.access   # Access.TOPK
    """
    chain = parse_policy(policy)
    access = Access.parse(access)
    if not chain.steps:
        return Oracle(predictor, access, budget=budget)
    capped = policy_access(access, chain)
    oracle = Oracle(ProtectedPredictor(predictor, chain, seed=seed), capped, budget=budget)
    if chain.k is not None:
        oracle.top_k = chain.k
    return oracle


def answer_labels(p: np.ndarray) -> np.ndarray:
    """Labels of policy outputs: the argmax, or :data:`ABSTAIN` for an abstained row."""
    labels = p.argmax(axis=1).astype(np.int64)
    labels[p.sum(axis=1) <= 0] = ABSTAIN
    return labels
