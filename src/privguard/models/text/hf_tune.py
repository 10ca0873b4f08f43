"""Brief fine-tuning of a local Hugging Face causal LM on a corpus, on CPU.

The last few transformer blocks are trained (AdamW, a seeded line order) and the rest is frozen;
the target's directory stores only the trained tensors (:mod:`.target`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.data.corpus import Canary, Corpus
from privguard.errors import ModelError
from privguard.models.text.base import Progress, bits_per_char, holdout_split
from privguard.models.text.hf import HFPredictor, load_hf, pad_batch
from privguard.models.text.target import TextTarget
from privguard.models.threads import single_thread


@dataclass
class HFTuneConfig:
    """Brief fine-tuning of a Hugging Face causal LM on CPU (recorded in model.json).

    Attributes:
        steps: optimizer steps; lines are drawn in a seeded order, ``batch_size`` per step.
        lr: AdamW learning rate.
        train_layers: the last this-many transformer blocks are trained; the rest is frozen.
        max_tokens: lines are cut to this many tokens.
    """

    steps: int = 60
    lr: float = 3e-4
    batch_size: int = 8
    train_layers: int = 2
    max_tokens: int = 48
    seed: int = 0
    holdout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _blocks(model: Any) -> list[tuple[str, nn.Module]]:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.endswith("layers") and len(mod):
            return [(f"{name}.{i}", m) for i, m in enumerate(mod)]
    raise ModelError("cannot find the transformer blocks of this model to fine-tune")


def finetune_hf(
    source: str | Path,
    corpus: Corpus,
    config: HFTuneConfig | None = None,
    *,
    canaries: Sequence[Canary] = (),
    progress: Progress | None = None,
) -> TextTarget:
    """Fine-tune the last blocks of a local Hugging Face causal LM on ``corpus`` (on CPU, one
    thread) and return it as a target whose directory stores only the trained tensors."""
    config = config or HFTuneConfig()
    model, tok, record = load_hf(source)
    rng = np.random.default_rng(config.seed)
    train_lines, test_lines = holdout_split(corpus, canaries, config.holdout, rng)
    blocks = _blocks(model)
    trained = blocks[-config.train_layers :] if config.train_layers > 0 else []
    names = {f"{prefix}.{n}" for prefix, mod in trained for n, _ in mod.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    predictor = HFPredictor(model, tok)
    seqs = [s[: config.max_tokens] for s in predictor.encode_lines(train_lines, end=True)]
    params = [p for p in model.parameters() if p.requires_grad]
    log: dict[str, Any] = {}
    t0 = time.perf_counter()
    with single_thread():
        torch.manual_seed(config.seed)
        if params:
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
            model.train()
            order = np.concatenate(
                [
                    rng.permutation(len(seqs))
                    for _ in range(config.steps * config.batch_size // len(seqs) + 1)
                ]
            )
            for step in range(config.steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], predictor.pad)
                labels = ids.masked_fill(mask == 0, -100)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                log["final_train_loss"] = round(float(loss.detach()), 5)
                if progress is not None:
                    progress("fine-tune", step + 1, config.steps)
            model.eval()
    log["train_seconds"] = round(time.perf_counter() - t0, 2)
    log["steps"] = config.steps
    log["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    log["n_trained_parameters"] = int(sum(p.numel() for p in params))
    sample = train_lines[:200]
    log["train_bits_per_char"] = round(bits_per_char(predictor, sample, end=True), 4)
    if test_lines:
        log["test_bits_per_char"] = round(bits_per_char(predictor, test_lines[:200], end=True), 4)
    arch = {"type": "hf-causal-lm", **record, "trained_parameters": sorted(names)}
    return TextTarget(
        predictor,
        kind="hf-lm",
        architecture=arch,
        corpus=Corpus(corpus.name, train_lines, corpus.source),
        canaries=list(canaries),
        training=config.to_dict(),
        metrics=log,
    )
