"""The one training loop: epochs over batches, progress, optional early stopping.

Every model privguard trains goes through :func:`fit` — the classifiers of ``privguard train``
(:mod:`privguard.models.train`) and the character language model (:mod:`privguard.models.text`),
with or without differential privacy. DP-SGD does not copy this loop: :mod:`privguard.training.dp`
wraps the module, optimiser and batches the Opacus way and hands the wrapped ones to it.

The loop itself draws no random numbers (the batches and the model carry their own seeded
generators), so wrapping or not wrapping it never shifts a seeded run.

Example:
    >>> result = fit(model, optimizer, batches, lambda m, b: loss_fn(m(b[0]), b[1]), epochs=10)
    >>> result.epochs_run, result.final_train_loss
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Progress = Callable[[str, int, int], None]
# batch -> loss of ``module`` on it (a scalar tensor to back-propagate)
BatchLoss = Callable[[nn.Module, Any], torch.Tensor]
# the weights' module, in eval mode and without gradients -> validation loss
Validation = Callable[[nn.Module], float]
MIN_IMPROVEMENT = 1e-6


@dataclass
class FitResult:
    """What one run of :func:`fit` did.

    Attributes:
        epochs_run: epochs completed (fewer than asked when early stopping ended the run).
        stopped_early: whether early stopping ended the run.
        best_validation_loss: the lowest validation loss (``None`` without validation); the
            weights were restored to the epoch that reached it.
        final_train_loss: mean training loss over the batches of the last epoch.
        batches: optimiser steps taken, over all epochs.
    """

    epochs_run: int
    stopped_early: bool
    best_validation_loss: float | None
    final_train_loss: float
    batches: int

    def log(self) -> dict[str, Any]:
        """The training log entries model.json records for a classifier."""
        d: dict[str, Any] = {"epochs_run": self.epochs_run, "stopped_early": self.stopped_early}
        if self.best_validation_loss is not None:
            d["best_validation_loss"] = round(self.best_validation_loss, 6)
        return d


class ShuffledBatches:
    """``(x[b], y[b])`` batches in a fresh seeded order each epoch (the last batch may be short).

    The order is ``torch.randperm(n, generator=generator)``, one draw per epoch and nothing else
    from the generator, so a seed gives the same batches however the loop around it changes.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.generator = generator

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.generator)
        for i in range(0, len(order), self.batch_size):
            b = order[i : i + self.batch_size].to(self.x.device)
            yield self.x[b], self.y[b]

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def fit(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Any],
    batch_loss: BatchLoss,
    *,
    epochs: int,
    validation: Validation | None = None,
    patience: int = 10,
    weights: nn.Module | None = None,
    progress: Progress | None = None,
    label: str = "training",
) -> FitResult:
    """Train ``module`` for up to ``epochs`` passes over ``batches``.

    Each batch takes one step: zero the gradients, back-propagate ``batch_loss(module, batch)``,
    step the optimiser. Every batch steps, an empty one included (under DP-SGD an empty Poisson
    batch still takes its noise-only step, as the accountant assumes).

    With ``validation``, the loss it returns is checked after each epoch; the best weights are
    kept and the run stops after ``patience`` epochs without improvement, restoring them.
    ``weights`` is the module whose parameters are validated, kept and restored: ``module``
    itself unless a wrapper (Opacus' ``GradSampleModule``) stands in front of it.

    Returns:
        :class:`FitResult`; ``module`` is left in training mode, with the best weights loaded.
    """
    weights = module if weights is None else weights
    best, best_state, stale, epochs_run, steps = float("inf"), None, 0, 0, 0
    final_loss = float("nan")
    for epoch in range(epochs):
        module.train()
        total, n, n_loss = 0.0, 0, 0
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(module, batch)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if math.isfinite(value):  # an empty batch has no mean loss
                total, n_loss = total + value, n_loss + 1
            n += 1
        steps += n
        final_loss = total / n_loss if n_loss else float("nan")
        epochs_run = epoch + 1
        if progress is not None:
            progress(label, epochs_run, epochs)
        if validation is not None:
            weights.eval()
            with torch.no_grad():
                v = float(validation(weights))
            if v < best - MIN_IMPROVEMENT:
                best, best_state, stale = v, copy.deepcopy(weights.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
    if best_state is not None:
        weights.load_state_dict(best_state)
    return FitResult(
        epochs_run=epochs_run,
        stopped_early=epochs_run < epochs,
        best_validation_loss=best if validation is not None else None,
        final_train_loss=final_loss,
        batches=steps,
    )
