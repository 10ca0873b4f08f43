"""What the learning-based extraction attacks share: asking the oracle in whatever form it answers,
a substitute model trained on those answers, and new query points made from auxiliary records.

Answers as soft targets. Every answer becomes a probability row the substitute is trained to
match with the cross-entropy: a full (possibly rounded or noisy) probability vector, renormalised;
a top-k answer with the remaining mass spread evenly over the classes it leaves out; a label as a
one-hot row. Abstentions (a row of zeros, label -1) are dropped: they cost a query and teach
nothing. So one attack class serves every access level, and its label-only variant is the same
attack run with ``outputs="labels"`` (or through a label-only oracle).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.attacks.base import Knowledge
from privguard.errors import ConfigError
from privguard.models.nets import build_model, seed_torch
from privguard.models.threads import single_thread
from privguard.models.torch_predictor import TorchPredictor
from privguard.oracle import Access, Oracle

OUTPUTS = ("auto", "probs", "topk", "labels")


def choose_outputs(oracle: Oracle, outputs: str) -> str:
    """The richest answer the oracle gives (``auto``), or the one asked for if it gives it."""
    if outputs not in OUTPUTS:
        raise ConfigError(f"outputs must be one of {', '.join(OUTPUTS)}, not {outputs!r}")
    if outputs == "auto":
        if oracle.access >= Access.PROBS:
            return "probs"
        return "topk" if oracle.access >= Access.TOPK else "labels"
    needed = {"probs": Access.PROBS, "topk": Access.TOPK, "labels": Access.LABEL}[outputs]
    oracle.require(needed, f"outputs={outputs!r}")
    return outputs


def ask(oracle: Oracle, x: np.ndarray, outputs: str) -> tuple[np.ndarray, np.ndarray]:
    """Query ``x``; returns soft targets ``(n, k)`` (rows sum to 1) and a mask of the rows that
    were answered (not abstained)."""
    k = oracle.n_classes
    if outputs == "labels":
        y = oracle.labels(x)
        keep = y >= 0
        t = np.zeros((len(y), k))
        t[np.flatnonzero(keep), y[keep]] = 1.0
        return t, keep
    if outputs == "topk":
        idx, vals = oracle.topk(x)
        vals = np.clip(np.asarray(vals, dtype=np.float64), 0.0, None)
        mass = vals.sum(axis=1)
        keep = mass > 0
        t = np.zeros((len(idx), k))
        left = np.clip(1.0 - mass, 0.0, None) / max(k - idx.shape[1], 1)
        if k > idx.shape[1]:
            t += left[:, None]
        np.put_along_axis(t, idx, vals, axis=1)
        t[keep] /= t[keep].sum(axis=1, keepdims=True)
        return t, keep
    p = np.clip(np.asarray(oracle.proba(x), dtype=np.float64), 0.0, None)
    s = p.sum(axis=1)
    keep = s > 0
    p[keep] /= s[keep, None]
    return p, keep


def substitute_architecture(
    knowledge: Knowledge,
    input_shape: tuple[int, ...],
    n_classes: int,
    model: str | None,
    hidden: list[int] | None,
) -> dict[str, Any]:
    """The substitute's ``build_model`` description: the attacker's choice (``model``,
    ``hidden``), else the target's own architecture when the recipe is known (a CNN recipe is
    replaced by an MLP, which trains much faster on a CPU), else a 2x256 MLP."""
    config = getattr(knowledge.recipe, "config", None)
    kind = model or (config.model if config is not None else "mlp")
    if kind == "cnn" and model is None:
        kind = "mlp"
    width = hidden or (
        list(config.hidden) if config is not None and config.model == kind else [256, 256]
    )
    arch: dict[str, Any] = {
        "type": kind,
        "input_shape": list(input_shape),
        "n_classes": int(n_classes),
    }
    if kind != "logreg":
        arch["hidden"] = [int(h) for h in width]
        arch["dropout"] = 0.0
    if kind == "cnn":
        arch["channels"] = [16, 32]
    return arch


class Substitute:
    """A PyTorch model trained (and re-trained, warm) on the oracle's answers.

    Example:
        >>> sub = Substitute(arch, seed=0)
        >>> sub.fit(x, soft_targets, epochs=10)
        >>> sub.snapshot().predict_proba(x_new)
    """

    def __init__(
        self,
        architecture: dict[str, Any],
        *,
        seed: int = 0,
        lr: float = 1e-3,
        batch_size: int = 64,
    ) -> None:
        self.architecture = architecture
        self.lr = lr
        self.batch_size = batch_size
        with single_thread():
            self.gen = seed_torch(seed)
            self.module = build_model(architecture)
        self.opt = torch.optim.Adam(self.module.parameters(), lr=lr)
        self.input_shape = tuple(architecture["input_shape"])
        self.n_classes = int(architecture["n_classes"])

    def fit(self, x: np.ndarray, targets: np.ndarray, epochs: int) -> None:
        """``epochs`` passes over ``(x, targets)`` from the current weights; targets are
        probability rows (soft labels)."""
        if len(x) == 0:
            return
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        tt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        with single_thread():
            self.module.train()
            for _ in range(epochs):
                order = torch.randperm(len(xt), generator=self.gen)
                for i in range(0, len(order), self.batch_size):
                    b = order[i : i + self.batch_size]
                    self.opt.zero_grad(set_to_none=True)
                    logp = torch.log_softmax(self.module(xt[b]), dim=1)
                    loss = -(tt[b] * logp).sum(dim=1).mean()
                    loss.backward()
                    self.opt.step()
            self.module.eval()

    def proba(self, x: np.ndarray) -> np.ndarray:
        return TorchPredictor(self.module, self.input_shape, self.n_classes).predict_proba(x)

    def class_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d softmax(f(x))_y / dx per record (Papernot et al.'s Jacobian row of class ``y``)."""
        with single_thread():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
            p = torch.softmax(self.module(xt), dim=1)
            picked = p[torch.arange(len(y)), torch.from_numpy(y.astype(np.int64))].sum()
            (g,) = torch.autograd.grad(picked, xt)
        return g.numpy()

    def snapshot(self) -> TorchPredictor:
        """A frozen copy of the substitute as it is now."""
        module: nn.Module = copy.deepcopy(self.module).eval()
        return TorchPredictor(module, self.input_shape, self.n_classes)


def augment(
    pool: np.ndarray, n: int, bounds: tuple[float, float], kind: str, rng: np.random.Generator
) -> np.ndarray:
    """``n`` new query points made from the auxiliary ``pool``.

    Images: a random record shifted by up to 2 pixels, blended half the time with another record
    (weight 0.6-1 on the first, as in mixup) and given a little pixel noise. Tabular records: a
    mixup of two records (weight 0.5-1 on the first) plus noise of 5% of the range. Everything
    stays within ``bounds``. These cover the neighbourhood of natural data, where a query budget
    larger than the pool is best spent (Knockoff Nets query natural images; the pool is small).
    """
    lo, hi = bounds
    span = hi - lo
    a = pool[rng.integers(0, len(pool), n)].astype(np.float32)
    b = pool[rng.integers(0, len(pool), n)].astype(np.float32)
    if kind == "image" and a.ndim == 4:
        out = np.empty_like(a)
        shifts = rng.integers(-2, 3, size=(n, 2))
        for i in range(n):
            out[i] = _shift(a[i], int(shifts[i, 0]), int(shifts[i, 1]), lo)
        w = np.where(rng.random(n) < 0.5, rng.uniform(0.6, 1.0, n), 1.0).astype(np.float32)
        out = w.reshape(-1, 1, 1, 1) * out + (1 - w.reshape(-1, 1, 1, 1)) * b
        out += rng.normal(0.0, 0.03 * span, out.shape).astype(np.float32)
    else:
        w = rng.uniform(0.5, 1.0, n).astype(np.float32).reshape((-1,) + (1,) * (a.ndim - 1))
        out = w * a + (1 - w) * b
        out += rng.normal(0.0, 0.05 * span, out.shape).astype(np.float32)
    return np.clip(out, lo, hi).astype(np.float32)


def _shift(img: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    out = np.full_like(img, fill)
    h, w = img.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def uniform(
    n: int, input_shape: tuple[int, ...], bounds: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    lo, hi = bounds
    return rng.uniform(lo, hi, size=(n, *input_shape)).astype(np.float32)


def query_budget(oracle: Oracle, wanted: int) -> int:
    """What the attack may spend: its own setting, capped by the oracle's remaining budget."""
    left = oracle.remaining
    return int(wanted if left is None else min(wanted, left))


def checkpoint_sizes(total: int, first: int, rounds: int | None = None) -> list[int]:
    """Geometric query counts from ``first`` to ``total`` (doubling), ending at ``total``."""
    first = max(1, min(first, total))
    sizes = []
    n = first
    while n < total:
        sizes.append(n)
        n *= 2
    sizes.append(total)
    if rounds is not None and len(sizes) > rounds:
        sizes = sizes[-rounds:]
    return sizes


def entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(q * np.log(q)).sum(axis=1)
