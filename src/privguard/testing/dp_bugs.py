"""Planted-bug DP-SGD trainers: the known-answer corpus for ``privguard dp-audit --train-fn``.

Not product code: nothing outside :mod:`privguard.testing` imports it. Each trainer is a
``train(x, y, seed)`` function of the kind a user hands to :func:`privguard.dp_audit`, running
DP-SGD (Abadi et al., CCS 2016) on a softmax-regression model: per-record gradients clipped to
``C``, Gaussian noise of standard deviation ``sigma * C`` added to their sum, Poisson-sampled
batches, and ``sigma`` solved for the claimed ``(epsilon, delta)`` over the planned steps by
the RDP accountant (:func:`privguard.training.dp.noise_for`). Two corpora:

- :func:`opacus_trainer`: privguard's own trainer (``training/dp.py``'s ``make_private``
  around ``training/loop.py``'s ``fit``, Opacus underneath), each bug planted by wrapping what
  ``make_private`` returns (an optimiser mixin, a changed noise multiplier, a different
  loader); ``training/dp.py`` itself is untouched. The benchmark's corpus.
- :func:`dp_trainer`: the same steps written out in numpy, a fast reference (one run is two to
  three seconds on mnist-5k at 30 epochs).

Every variant reports the *same* claim (the accountant's epsilon for the correct run) while
doing something else:

- ``no-clipping``: per-record gradients are not clipped; the noise is still ``sigma * C``.
- ``small-noise``: the noise multiplier is 10x too small; the accountant still claims
  ``sigma``.
- ``shuffling``: each epoch is a random permutation cut into fixed batches, accounted as
  Poisson sampling at ``q = batch / n``.
- ``noise-once-per-epoch``: Gaussian noise ``sigma * C`` is added to one step of each epoch
  only.
- ``batch-clipping``: the batch's mean gradient is clipped to ``C`` (not each record's), with
  the noise ``sigma * C / B`` that DP-SGD adds to the mean of ``B`` clipped gradients; one
  record can then move the clipped mean by ``C`` instead of ``C / B``.

Example:
    >>> train = opacus_trainer(epsilon=1.0, delta=1e-5, bug="small-noise")
    >>> privguard.dp_audit(train, x, y, claimed_epsilon=1.0, delta=1e-5).violated
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from privguard.errors import ConfigError

BUGS = ("no-clipping", "small-noise", "shuffling", "noise-once-per-epoch", "batch-clipping")


@dataclass
class SoftmaxRegression:
    """A fitted linear softmax classifier on flattened inputs: ``predict_proba`` only."""

    weights: np.ndarray  # (d + 1, k), the last row the bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return softmax(flat @ self.weights[:-1] + self.weights[-1], axis=1)


def dp_trainer(
    *,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    bug: str | None = None,
    epochs: int = 30,
    batch_size: int = 50,
    lr: float = 2.0,
    max_grad_norm: float = 1.0,
    n_classes: int | None = None,
) -> Callable[[np.ndarray, np.ndarray, int], SoftmaxRegression]:
    """A ``train(x, y, seed)`` running DP-SGD at a claimed ``(epsilon, delta)``, correct when
    ``bug`` is ``None``, else with one of :data:`BUGS` planted."""
    if bug is not None and bug not in BUGS:
        raise ConfigError(f"unknown planted bug {bug!r}; use one of: {', '.join(BUGS)}")

    def train(x: np.ndarray, y: np.ndarray, seed: int) -> SoftmaxRegression:
        from privguard.training.dp import noise_for

        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        feats = np.hstack([flat, np.ones((len(flat), 1))])
        labels = np.asarray(y, dtype=np.int64)
        n, d = feats.shape
        k = n_classes or int(labels.max()) + 1
        q = min(1.0, batch_size / n)
        per_epoch = max(1, round(1 / q))
        steps = epochs * per_epoch
        sigma = noise_for(epsilon, delta, q, steps)
        if bug == "small-noise":
            sigma /= 10.0
        rng = np.random.default_rng(seed)
        w = np.zeros((d, k))
        onehot = np.eye(k)[labels]
        clip = max_grad_norm
        for _epoch in range(epochs):
            order = rng.permutation(n)
            for step in range(per_epoch):
                if bug == "shuffling":
                    batch = order[step * batch_size : (step + 1) * batch_size]
                else:
                    batch = np.flatnonzero(rng.random(n) < q)
                xb = feats[batch]
                resid = softmax(xb @ w, axis=1) - onehot[batch]  # dL/dlogits per record
                if bug == "batch-clipping":
                    g = xb.T @ resid / max(len(batch), 1)
                    g *= min(1.0, clip / max(np.linalg.norm(g), 1e-12))
                    g += rng.normal(0.0, sigma * clip / batch_size, size=g.shape)
                    w -= lr * g
                    continue
                # per-record gradient norm of the outer product resid_i x_i^T
                norms = np.linalg.norm(resid, axis=1) * np.linalg.norm(xb, axis=1)
                scale = (
                    np.ones(len(batch))
                    if bug == "no-clipping"
                    else np.minimum(1.0, clip / np.maximum(norms, 1e-12))
                )
                g = xb.T @ (resid * scale[:, None])
                noisy = bug != "noise-once-per-epoch" or step == per_epoch - 1
                if noisy:
                    g += rng.normal(0.0, sigma * clip, size=g.shape)
                w -= lr * g / batch_size
        return SoftmaxRegression(w)

    train.__name__ = f"dp_sgd_{(bug or 'correct').replace('-', '_')}"
    train.__qualname__ = train.__name__
    return train


# --- planted bugs in privguard's own Opacus DP-SGD trainer -------------------------------------

OPACUS_BUGS = BUGS
NO_CLIP = 1e6  # a clipping norm no gradient reaches: clipping off


class _Planted:
    """Mixed in front of the Opacus ``DPOptimizer`` class that :func:`make_private` built: the
    optimiser's own steps, with one of them changed. ``bug_clip`` is the claimed clipping norm
    ``C`` and ``bug_sigma`` the claimed noise multiplier."""

    bug: str
    bug_clip: float
    bug_sigma: float
    bug_per_epoch: int
    bug_steps: int

    def clip_and_accumulate(self) -> None:
        if self.bug not in ("no-clipping", "batch-clipping"):
            return super().clip_and_accumulate()  # type: ignore[misc]
        self.max_grad_norm = NO_CLIP  # every per-record factor is 1
        super().clip_and_accumulate()  # type: ignore[misc]
        self.max_grad_norm = self.bug_clip
        if self.bug == "batch-clipping":
            # clip the batch's mean gradient (sum / expected batch) to C, not each record's
            import torch

            grads = [p.summed_grad for p in self.params]  # type: ignore[attr-defined]
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
            limit = self.bug_clip * self.expected_batch_size  # type: ignore[attr-defined]
            factor = min(1.0, float(limit / max(float(norm), 1e-12)))
            for g in grads:
                g.mul_(factor)

    def add_noise(self) -> None:
        if self.bug == "noise-once-per-epoch":
            noisy = self.bug_steps % self.bug_per_epoch == self.bug_per_epoch - 1
            self.noise_multiplier = self.bug_sigma if noisy else 0.0
        self.bug_steps += 1
        super().add_noise()  # type: ignore[misc]


def plant(optimizer: Any, bug: str, clip: float, sigma: float, steps_per_epoch: int) -> Any:
    """Plant ``bug`` (one handled by :class:`_Planted`: ``no-clipping``,
    ``noise-once-per-epoch`` or ``batch-clipping``) in an Opacus ``DPOptimizer`` in place, for
    the claimed clipping norm ``clip`` and noise multiplier ``sigma``; returns it."""
    if bug not in ("no-clipping", "noise-once-per-epoch", "batch-clipping"):
        raise ConfigError(f"plant handles the optimiser bugs, not {bug!r}")
    cls = type(optimizer)
    optimizer.__class__ = type(f"Planted{cls.__name__}", (_Planted, cls), {})
    optimizer.bug, optimizer.bug_clip, optimizer.bug_sigma = bug, clip, sigma
    optimizer.bug_per_epoch, optimizer.bug_steps = steps_per_epoch, 0
    return optimizer


class LinearSoftmax(nn.Module):
    """Softmax regression on flattened inputs (logits out), the corpus' model."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, k)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(len(x), -1))


def opacus_trainer(
    *,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    bug: str | None = None,
    epochs: int = 10,
    batch_size: int = 50,
    lr: float = 2.0,
    max_grad_norm: float = 1.0,
    n_classes: int | None = None,
) -> Callable[[np.ndarray, np.ndarray, int], nn.Module]:
    """A ``train(x, y, seed)`` running privguard's own DP-SGD trainer
    (:func:`privguard.training.dp.make_private` around :func:`privguard.training.loop.fit`,
    Opacus' per-record ``hooks`` engine, the RDP accountant) on softmax regression at a claimed
    ``(epsilon, delta)``: correct when ``bug`` is ``None``, else with one of :data:`BUGS`
    planted by wrapping what ``make_private`` returns (``training/dp.py`` is untouched):

    - ``no-clipping``: per-record clipping off; the noise stays ``sigma * C``;
    - ``small-noise``: the optimiser's noise multiplier divided by 10 after ``make_private``
      solved it for the claim;
    - ``shuffling``: Opacus' Poisson loader replaced by a shuffled loader of fixed batches
      (the accountant still assumes Poisson sampling at ``q = batch / n``);
    - ``noise-once-per-epoch``: noise on the last step of each epoch only;
    - ``batch-clipping``: the batch's summed gradient clipped to ``C * batch`` (the mean to
      ``C``) instead of each record's to ``C``, with the usual noise ``sigma * C``.

    ``train(x, y, seed, canaries=c)`` attaches white-box gradient canaries
    (:class:`privguard.audit.dp_canaries.GradientCanaries`) to the optimiser after the bug is
    planted: their rows join the per-record gradients before the (bugged) clipping and noise.
    """
    if bug is not None and bug not in OPACUS_BUGS:
        raise ConfigError(f"unknown planted bug {bug!r}; use one of: {', '.join(OPACUS_BUGS)}")

    def train(x: np.ndarray, y: np.ndarray, seed: int, canaries: Any = None) -> nn.Module:
        from privguard.training.dp import make_private, quiet_opacus
        from privguard.training.loop import fit

        torch.manual_seed(seed)
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
        k = n_classes or int(yt.max()) + 1
        model = LinearSoftmax(xt.shape[1], k)
        data = torch.utils.data.TensorDataset(xt, yt)
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, generator=gen)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        with quiet_opacus():
            private = make_private(
                model,
                optimizer,
                loader,
                epsilon=epsilon,
                delta=delta,
                epochs=epochs,
                max_grad_norm=max_grad_norm,
                grad_sample_mode="hooks",
                noise_seed=seed,
            )
            opt = private.optimizer
            batches = private.batches
            if bug == "small-noise":
                opt.noise_multiplier = private.noise_multiplier / 10.0
            elif bug == "shuffling":
                batches = torch.utils.data.DataLoader(
                    data, batch_size=batch_size, shuffle=True, generator=gen
                )
            elif bug is not None:
                plant(opt, bug, max_grad_norm, private.noise_multiplier, len(private.batches))
            if canaries is not None:  # white-box audit: canary rows go in before clipping
                canaries.attach(opt)
            loss = nn.CrossEntropyLoss()
            fit(
                private.module,
                opt,
                batches,
                lambda m, b: loss(m(b[0]), b[1]),
                epochs=epochs,
                weights=private.inner,
            )
        return private.release().eval()

    train.__name__ = f"opacus_{(bug or 'correct').replace('-', '_')}"
    train.__qualname__ = train.__name__
    return train
