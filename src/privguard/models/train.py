"""Training of PyTorch targets with the usual regularization knobs.

The same :class:`TrainConfig` is the *training recipe*: recorded in model.json, it lets an
auditor (and a shadow-model attacker, who is assumed to know how the target was trained) train
more models the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.errors import ConfigError
from privguard.models.nets import MODEL_KINDS, build_model, seed_torch
from privguard.models.threads import single_thread
from privguard.models.torch_predictor import TorchPredictor
from privguard.training.dp import (
    DEFAULT_ACCOUNTANT,
    GRAD_SAMPLE_MODE,
    check_epsilon,
    check_training_config,
    make_private,
    quiet_opacus,
)
from privguard.training.loop import ShuffledBatches, fit

Progress = Callable[[str, int, int], None]


@dataclass
class TrainConfig:
    """How a target is trained. Defaults overfit small data on purpose (an audit's worst case).

    Attributes:
        model: ``logreg``, ``mlp`` or ``cnn``.
        epochs: passes over the members (an upper bound with early stopping).
        hidden: hidden layer widths (mlp), or the dense layer width (cnn, first entry).
        lr: Adam learning rate.
        batch_size: records per step.
        dropout: dropout probability after each hidden layer.
        weight_decay: L2 penalty (Adam's ``weight_decay``).
        early_stopping: stop when the validation loss has not improved for ``patience``
            epochs, keeping the best weights; the validation records are carved from the member
            share and are neither members nor non-members in the audit.
        patience: epochs without improvement before stopping.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        train_fraction: share of the data that is trained on (members).
        nonmember_fraction: share held out as non-members / test set; the rest is the
            attacker's auxiliary pool.
        seed: seeds the split, the initialisation and the batch order.
        dp_epsilon: train with DP-SGD (Opacus, :mod:`privguard.training.dp`) to this epsilon
            over the planned epochs; ``None`` trains without differential privacy.
        dp_delta: the delta of the DP guarantee (default ``1/(10 n)`` for ``n`` members).
        max_grad_norm: DP-SGD's per-record gradient clipping norm ``C``.
    """

    model: str = "mlp"
    epochs: int = 100
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 1e-3
    batch_size: int = 64
    dropout: float = 0.0
    weight_decay: float = 0.0
    early_stopping: bool = False
    patience: int = 10
    label_smoothing: float = 0.0
    train_fraction: float = 0.4
    nonmember_fraction: float = 0.3
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(
                f"unknown model kind {self.model!r}; use one of: {', '.join(MODEL_KINDS)}"
            )
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (0 <= self.dropout < 1, "--dropout must lie in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must lie in [0, 1)"),
            (self.patience >= 1, "--patience must be at least 1"),
            (all(h >= 1 for h in self.hidden), "--hidden widths must be positive integers"),
        ]
        check_training_config(checks, self.dp_epsilon, self.dp_delta, self.max_grad_norm)

    @property
    def validation_fraction(self) -> float:
        return 0.15 if self.early_stopping else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def architecture(self, input_shape, n_classes: int) -> dict[str, Any]:
        arch: dict[str, Any] = {
            "type": self.model,
            "input_shape": list(input_shape),
            "n_classes": int(n_classes),
        }
        if self.model != "logreg":
            arch["hidden"] = list(self.hidden)
            arch["dropout"] = self.dropout
        if self.model == "cnn":
            arch["channels"] = [16, 32]
        return arch


def train_module(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh model on ``(x, y)``; returns the module (eval mode, on the CPU) and a
    training log. ``device`` (``cpu``, ``cuda``, ``auto``) is where the training runs.

    With ``config.dp_epsilon`` set, DP-SGD trains it (:func:`train_private`) and the log's
    ``privacy`` entry records the guarantee achieved (DP-SGD runs on the CPU)."""
    from privguard.training.device import resolve_device

    dev = resolve_device(device)  # checked first: cuda without a GPU is an error either way
    if config.dp_epsilon is not None:
        return train_private(
            config, x, y, n_classes, x_val=x_val, y_val=y_val, seed=seed, progress=progress
        )
    seed = config.seed if seed is None else seed
    arch = config.architecture(x.shape[1:], n_classes)
    with single_thread():
        gen = seed_torch(seed)
        module = build_model(arch).to(dev)
        # fused: one kernel for all parameters instead of a loop of small ops per tensor; the
        # same update (logits within ~1e-6), 1.36x faster on a 2x256 MLP (docs/benchmarks.md)
        opt = torch.optim.Adam(
            module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        batches = ShuffledBatches(xt, yt, config.batch_size, gen)
        result = fit(
            module,
            opt,
            batches,
            lambda m, b: loss_fn(m(b[0]), b[1]),
            epochs=config.epochs,
            validation=_validation(config, x_val, y_val, dev),
            patience=config.patience,
            progress=progress,
        )
    module.cpu().eval()
    return module, result.log()


def train_private(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int | None = None,
    accountant: str = DEFAULT_ACCOUNTANT,
    grad_sample_mode: str = GRAD_SAMPLE_MODE,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config``'s model on ``(x, y)`` with DP-SGD at ``config.dp_epsilon``.

    The non-private recipe (Adam, loss, label smoothing, weight decay, early stopping) wrapped by
    :func:`privguard.training.dp.make_private`; batches are Poisson-sampled with expected size
    ``config.batch_size``. Returns the module (eval mode, no Opacus hooks left on it) and a
    training log whose ``privacy`` entry is :meth:`PrivacySpent.to_dict`. ``grad_sample_mode``
    is Opacus' engine for the per-record clipping: ``"ghost"`` (default, fastest here) or
    ``"hooks"`` (Opacus' classic per-record gradients); both clip and noise identically.
    """
    seed = config.seed if seed is None else seed
    check_epsilon(config.dp_epsilon)
    arch = config.architecture(x.shape[1:], n_classes)
    with single_thread(), quiet_opacus():
        gen = seed_torch(seed)
        module = build_model(arch)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=min(config.batch_size, max(len(x), 1)),
            generator=gen,
        )
        opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        private = make_private(
            module,
            opt,
            loader,
            epsilon=config.dp_epsilon,
            delta=config.dp_delta,
            epochs=config.epochs,
            max_grad_norm=config.max_grad_norm,
            accountant=accountant,
            criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
            grad_sample_mode=grad_sample_mode,
            noise_seed=seed,
        )
        criterion = private.criterion
        result = fit(
            private.module,
            private.optimizer,
            private.batches,
            lambda m, b: criterion(m(b[0]), b[1]),
            epochs=config.epochs,
            validation=_validation(config, x_val, y_val),
            patience=config.patience,
            weights=private.inner,
            progress=progress,
            label="training (DP-SGD)",
        )
        spent = private.spent()
        # A fresh module with the trained weights: nothing of Opacus (hooks, per-record
        # attributes) stays attached to what is saved and queried.
        clean = build_model(arch)
        clean.load_state_dict(private.release().state_dict())
    clean.eval()
    log = result.log()
    log["privacy"] = spent.to_dict()
    return clean, log


def _validation(
    config: TrainConfig,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    device: torch.device | str = "cpu",
):
    """Early stopping's validation loss (plain cross-entropy), or ``None`` when it is off."""
    if not config.early_stopping or x_val is None or len(x_val) == 0:
        return None
    xv, yv = torch.from_numpy(x_val).to(device), torch.from_numpy(y_val).to(device)
    return lambda m: nn.functional.cross_entropy(m(xv), yv).item()


@dataclass
class TrainingRecipe:
    """Train more models the way the target was trained (for shadow and reference models)."""

    config: TrainConfig
    n_classes: int

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> TorchPredictor:
        """Train on ``(x, y)``; with early stopping, a validation share is held out of them as
        it was for the target."""
        x_val = y_val = None
        if self.config.early_stopping:
            order = np.random.default_rng(seed).permutation(len(x))
            n_val = max(1, int(round(len(x) * self.config.validation_fraction)))
            val, fit = order[:n_val], order[n_val:]
            x_val, y_val, x, y = x[val], y[val], x[fit], y[fit]
        module, _ = train_module(
            self.config, x, y, self.n_classes, x_val=x_val, y_val=y_val, seed=seed
        )
        return TorchPredictor(module, x.shape[1:], self.n_classes)


def accuracy(predictor, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) == 0:
        return float("nan")
    return float((np.argmax(predictor.predict_proba(x), axis=1) == y).mean())
