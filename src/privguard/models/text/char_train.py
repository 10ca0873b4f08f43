"""Training the character language model: settings, line batches, the loss, DP-SGD per line.

The model (:mod:`.char`) trains through privguard's one training loop
(:func:`privguard.training.loop.fit`). Without DP, batches are lines of similar length (less
padding); with ``dp_epsilon`` the module, optimiser and loader are wrapped for DP-SGD (Abadi et
al., CCS 2016) by :func:`privguard.training.dp.make_private` at the granularity of a corpus line
— Poisson sampling, the RDP accountant, the noise multiplier solved from the target epsilon,
``dp_delta`` checked against the number of lines — the conventions of privguard's classifiers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.data.corpus import Canary, Corpus
from privguard.errors import DataError
from privguard.models.text.base import Progress, bits_per_char, holdout_split
from privguard.models.text.char import CharLMPredictor, CharMLP, Vocab, windows
from privguard.models.text.target import TextTarget
from privguard.models.threads import single_thread
from privguard.training.dp import check_training_config, make_private, quiet_opacus
from privguard.training.loop import fit


@dataclass
class LMConfig:
    """How a ``char-lm`` target is trained (recorded in model.json).

    Attributes:
        window, embed, hidden: context length in characters, embedding width, hidden width.
        epochs: passes over the corpus lines.
        lr: Adam learning rate.
        batch_size: lines per step (the expected batch size under Poisson sampling with DP).
        seed: seeds the initialisation and the batch order (and the DP noise).
        holdout: share of the corpus lines held out to measure generalisation (never trained).
        dp_epsilon: train with DP-SGD to this ε (``None``: no DP).
        dp_delta: δ of the guarantee (``None``: 1 / (10 · lines)).
        max_grad_norm: per-line gradient clipping bound under DP.
    """

    window: int = 24
    embed: int = 24
    hidden: int = 512
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    holdout: float = 0.1
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.window <= 256, "window must be 1..256 characters"),
            (self.embed >= 1 and self.hidden >= 1, "embed and hidden must be positive"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (0 <= self.holdout < 0.5, "holdout must be in [0, 0.5)"),
            (self.max_grad_norm > 0, "--max-grad-norm must be positive"),
        ]
        check_training_config(checks, self.dp_epsilon, self.dp_delta, self.max_grad_norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _line_tensors(lines: Sequence[str], vocab: Vocab, window: int) -> tuple[torch.Tensor, ...]:
    """Padded ``(lines, T, window)`` contexts (int16), ``(lines, T)`` targets (-100 = none)."""
    longest = max(len(line) for line in lines) + 1
    ctx = np.zeros((len(lines), longest, window), dtype=np.int16)
    tgt = np.full((len(lines), longest), -100, dtype=np.int64)
    for i, line in enumerate(lines):
        ids = np.append(vocab.encode(line), vocab.newline)
        ctx[i, : len(ids)] = windows(ids, window)
        tgt[i, : len(ids)] = ids
    return torch.from_numpy(ctx), torch.from_numpy(tgt)


def _line_loss(model: nn.Module, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean over lines of each line's mean next-character cross-entropy (nats)."""
    keep = (tgt >= 0).any(dim=0)
    ctx, tgt = ctx[:, keep], tgt[:, keep]  # trim columns no line in the batch uses
    logits = model(ctx)
    per = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
    ).reshape(tgt.shape)
    n = (tgt >= 0).sum(dim=1).clamp(min=1)
    return (per.sum(dim=1) / n).mean()


def train_char_lm(
    corpus: Corpus,
    config: LMConfig | None = None,
    *,
    canaries: Sequence[Canary] = (),
    progress: Progress | None = None,
) -> TextTarget:
    """Train a ``char-lm`` on ``corpus`` (canaries already inserted), one thread, on CPU.

    A seeded ``holdout`` share of the lines that are not canary copies is kept out of training
    to measure generalisation. With ``config.dp_epsilon`` the model is trained with DP-SGD
    through Opacus (per-line clipping, Poisson sampling, RDP accountant), and
    ``metrics.privacy`` records the guarantee achieved, as for classifiers.

    Example:
        >>> corpus, canaries = insert_canaries(builtin_corpus("synthetic-records"),
        ...                                    ["my pin is {digits:6}"], [1, 10, 50])
        >>> target = train_char_lm(corpus, LMConfig(epochs=10), canaries=canaries)
    """
    config = config or LMConfig()
    rng = np.random.default_rng(config.seed)
    train_lines, test_lines = holdout_split(corpus, canaries, config.holdout, rng)
    if len(train_lines) < 2:
        raise DataError("the corpus is too small to train on; give at least a few lines")
    trained_corpus = Corpus(corpus.name, train_lines, corpus.source)
    vocab = Vocab("".join(train_lines))
    with single_thread():
        torch.manual_seed(config.seed)
        model = CharMLP(len(vocab), config.window, config.embed, config.hidden)
        ctx, tgt = _line_tensors(train_lines, vocab, config.window)
        t0 = time.perf_counter()
        log = _fit(model, ctx, tgt, config, progress)
        log["train_seconds"] = round(time.perf_counter() - t0, 2)
        model.eval()
        predictor = CharLMPredictor(model, vocab)
        log["train_bits_per_char"] = round(bits_per_char(predictor, train_lines), 4)
        if test_lines:
            log["test_bits_per_char"] = round(bits_per_char(predictor, test_lines), 4)
    log["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    arch = {
        "type": "char-mlp",
        "vocab": vocab.chars,
        "window": config.window,
        "embed": config.embed,
        "hidden": config.hidden,
    }
    return TextTarget(
        predictor,
        kind="char-lm",
        architecture=arch,
        corpus=trained_corpus,
        canaries=list(canaries),
        training=config.to_dict(),
        metrics=log,
    )


def _fit(
    model: CharMLP,
    ctx: torch.Tensor,
    tgt: torch.Tensor,
    config: LMConfig,
    progress: Progress | None,
) -> dict[str, Any]:
    """Train ``model`` on the line tensors through the one training loop; with
    ``config.dp_epsilon``, wrapped for DP-SGD at the granularity of a corpus line."""
    data = torch.utils.data.TensorDataset(ctx, tgt)
    lengths = (tgt >= 0).sum(dim=1).numpy()
    sampler = _LengthBuckets(lengths, config.batch_size, config.seed)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    log: dict[str, Any] = {}
    with quiet_opacus():
        if config.dp_epsilon is None:
            result = fit(
                model,
                optimizer,
                loader,
                _batch_loss,
                epochs=config.epochs,
                progress=progress,
                label="train char-lm",
            )
        else:
            # Opacus' classic per-record gradients: ghost clipping needs a per-record loss
            # object, and the line loss is a function of the whole padded batch.
            private = make_private(
                model,
                optimizer,
                loader,
                epsilon=config.dp_epsilon,
                delta=config.dp_delta,
                epochs=config.epochs,
                max_grad_norm=config.max_grad_norm,
                grad_sample_mode="hooks",
                noise_seed=config.seed,
                unit="corpus line",
            )
            result = fit(
                private.module,
                private.optimizer,
                private.batches,
                _batch_loss,
                epochs=config.epochs,
                weights=private.inner,
                progress=progress,
                label="train char-lm (DP-SGD)",
            )
            log["privacy"] = private.spent().to_dict()
            private.release()  # back to the plain module for inference
    log["final_train_loss"] = round(result.final_train_loss, 5)
    log["epochs_run"] = result.epochs_run
    return log


def _batch_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return _line_loss(model, *batch)


class _LengthBuckets(torch.utils.data.Sampler):
    """Random batches of lines of similar length (less padding), in a random order per epoch.

    Without DP only; DP-SGD replaces it with Poisson sampling."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def _batches(self) -> list[np.ndarray]:
        order = self.rng.permutation(len(self.lengths))
        pool = 50 * self.batch_size
        batches = []
        for i in range(0, len(order), pool):
            chunk = order[i : i + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def __iter__(self):
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)
