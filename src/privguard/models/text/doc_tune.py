"""Fine-tuning a Hugging Face causal LM on documents, as a user's fine-tune is made: whole
epochs over a seeded random half of the documents (the members; the other half are the
non-members, recorded in the target), LoRA adapters (:mod:`.lora`) on every block by default or
the last blocks in full, optionally with DP-SGD through Opacus
(:func:`privguard.training.dp.make_private` around :func:`privguard.training.loop.fit`).

A document longer than ``max_tokens`` tokens is trained on as consecutive windows of that
length (every token is learnt); under DP the privacy unit is then a window, which the recorded
``metrics.privacy.unit`` says.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.data.corpus import Corpus
from privguard.errors import ConfigError
from privguard.models.text.base import Progress
from privguard.models.text.hf import HFPredictor, load_hf, pad_batch
from privguard.models.text.hf_tune import _blocks
from privguard.models.text.lora import add_lora
from privguard.models.text.target import TextTarget
from privguard.models.text.tokenizer_fit import check_tokenizer
from privguard.models.threads import single_thread


@dataclass
class DocTuneConfig:
    """Document fine-tuning (recorded in model.json's ``training``).

    Attributes:
        epochs: passes over the member documents.
        lora_rank: rank of the adapters on every block; 0 trains the last ``train_layers``
            blocks in full instead.
        lr: AdamW learning rate (LoRA's usual 1e-3 by default; full blocks take ~1e-4).
        max_tokens: tokens per training window.
        dp_epsilon: train with DP-SGD to this ε (``None``: no DP).
    """

    epochs: int = 3
    lora_rank: int = 8
    lora_alpha: float = 16.0
    train_layers: int = 2
    lr: float = 1e-3
    batch_size: int = 8
    max_tokens: int = 128
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    max_grad_norm: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_documents(docs: list[str], seed: int) -> tuple[list[str], list[str]]:
    """A seeded random half of the documents (members) and the rest (non-members)."""
    if len(docs) < 4:
        raise ConfigError("document fine-tuning needs at least 4 documents (half are held out)")
    order = np.random.default_rng(seed).permutation(len(docs))
    half = len(docs) // 2
    return [docs[i] for i in sorted(order[:half])], [docs[i] for i in sorted(order[half:])]


def finetune_documents(
    source: str | Path,
    docs: list[str],
    config: DocTuneConfig | None = None,
    *,
    name: str = "documents",
    progress: Progress | None = None,
) -> TextTarget:
    """Fine-tune ``source`` on a seeded half of ``docs`` and return the target (its
    directory records the members and non-members)."""
    from privguard.training.dp import check_dp_settings, make_private, quiet_opacus
    from privguard.training.loop import fit

    config = config or DocTuneConfig()
    if config.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    if config.dp_epsilon is not None:
        check_dp_settings(config.dp_epsilon, config.dp_delta, config.max_grad_norm)
    members, nonmembers = split_documents(docs, config.seed)
    model, tok, record = load_hf(source)
    check_tokenizer(HFPredictor(model, tok), members[:4] + nonmembers[:4])
    torch.manual_seed(config.seed)
    lora = None
    if config.lora_rank > 0:
        trained = add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha)
        lora = {"rank": config.lora_rank, "alpha": config.lora_alpha}
    else:
        blocks = _blocks(model)[-config.train_layers :]
        keep = {f"{p}.{n}" for p, m in blocks for n, _ in m.named_parameters()}
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        trained = sorted(keep)
    predictor = HFPredictor(model, tok)
    windows = _windows(predictor, members, config.max_tokens)
    ids, mask = pad_batch(windows, predictor.pad)
    data = torch.utils.data.TensorDataset(ids, mask)
    gen = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=config.batch_size, shuffle=True, generator=gen
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    log: dict[str, Any] = {}
    t0 = time.perf_counter()
    with single_thread(), quiet_opacus():
        if config.dp_epsilon is None:
            result = fit(
                model,
                opt,
                loader,
                _loss,
                epochs=config.epochs,
                progress=progress,
                label="fine-tune",
            )
        else:
            private = make_private(
                model,
                opt,
                loader,
                epsilon=config.dp_epsilon,
                delta=config.dp_delta,
                epochs=config.epochs,
                max_grad_norm=config.max_grad_norm,
                grad_sample_mode="hooks",
                noise_seed=config.seed,
                unit="document" if len(windows) == len(members) else "document window",
            )
            result = fit(
                private.module,
                private.optimizer,
                private.batches,
                _loss,
                epochs=config.epochs,
                weights=private.inner,
                progress=progress,
                label="fine-tune (DP-SGD)",
            )
            log["privacy"] = private.spent().to_dict()
            private.release()
        model.eval()
    log["final_train_loss"] = round(result.final_train_loss, 5)
    log["train_seconds"] = round(time.perf_counter() - t0, 2)
    log["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    log["n_trained_parameters"] = int(sum(p.numel() for p in params))
    log["train_windows"] = len(windows)
    log["member_perplexity"] = round(perplexity(predictor, members[:100], config.max_tokens), 4)
    log["heldout_perplexity"] = round(perplexity(predictor, nonmembers[:100], config.max_tokens), 4)
    arch = {"type": "hf-causal-lm", **record, "trained_parameters": trained}
    if lora:
        arch["lora"] = lora
    return TextTarget(
        predictor,
        kind="hf-lm",
        architecture=arch,
        corpus=Corpus(name, [" ".join(d.split("\n")) for d in members], {"documents": True}),
        training={"mode": "documents", **config.to_dict()},
        metrics=log,
        documents={"members": members, "nonmembers": nonmembers},
    )


def perplexity(predictor: HFPredictor, docs: list[str], max_tokens: int) -> float:
    """Token perplexity exp(mean NLL) over ``docs`` (windowed as they are scored)."""
    stats = predictor.token_stats(docs, max_tokens=max_tokens)
    lp = np.concatenate([s[0] for s in stats])
    return float(np.exp(-lp.mean()))


def _windows(predictor: HFPredictor, docs: list[str], max_tokens: int) -> list[list[int]]:
    out = []
    for d in docs:
        ids = predictor.tokens(d)
        for w in range(0, max(len(ids), 1), max_tokens):
            out.append([predictor.start] + ids[w : w + max_tokens])
    return out


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch's windows of each window's mean next-token cross-entropy."""
    ids, mask = batch
    if len(ids) == 0:  # an empty Poisson batch under DP-SGD: a noise-only step
        return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)  # type: ignore[return-value]
    width = int(mask.sum(dim=1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tgt = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    per = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
    ).reshape(tgt.shape)
    n = (tgt >= 0).sum(dim=1).clamp(min=1)
    return (per.sum(dim=1) / n).mean()
