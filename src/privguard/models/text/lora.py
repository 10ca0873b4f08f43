"""Low-rank adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR
2022), written here rather than taken from PEFT: Opacus with recent PEFT versions has been
reported to corrupt DP training silently (opacus issue #820), and two plain ``nn.Linear`` maps
are layers Opacus computes per-sample gradients for by its own rule.

``LoRALinear`` keeps the pretrained ``nn.Linear`` frozen and adds ``B(A(x)) · alpha / r`` beside
it, ``A`` ``(r, in)`` initialised as PyTorch initialises a Linear, ``B`` ``(out, r)`` at zero, so
a fresh adapter leaves the model's outputs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from privguard.errors import ConfigError


class LoRALinear(nn.Module):
    """A frozen linear map plus a trainable rank-``r`` update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x)) * self.scale


def add_lora(model: Any, *, rank: int, alpha: float, blocks: list[str] | None = None) -> list[str]:
    """Replace every ``nn.Linear`` inside the transformer blocks (attention and MLP projections)
    by a :class:`LoRALinear`, freeze everything else, and return the adapters' parameter names.
    ``blocks``: the block prefixes to adapt (default: every block)."""
    from privguard.models.text.hf_tune import _blocks

    if rank < 1:
        raise ConfigError("--lora-rank must be at least 1")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = set(blocks) if blocks is not None else None
    for prefix, block in _blocks(model):
        if chosen is not None and prefix not in chosen:
            continue
        for sub in list(block.modules()):
            for child_name, child in list(sub.named_children()):
                if isinstance(child, nn.Linear) and not isinstance(sub, LoRALinear):
                    setattr(sub, child_name, LoRALinear(child, rank, alpha))
    return [n for n, p in model.named_parameters() if p.requires_grad]
