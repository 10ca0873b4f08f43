"""Target architectures, built from a JSON description (stored in model.json beside the
safetensors weights, so loading a model never unpickles anything).

- ``logreg``: softmax regression on the flattened input.
- ``mlp``: flattened input, ``hidden`` ReLU layers with dropout, linear output.
- ``cnn``: two 3x3 conv + ReLU + 2x2 max-pool blocks (``channels``), a ReLU layer of
  ``hidden[0]`` units with dropout, linear output. Images only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from privguard.errors import ConfigError

MODEL_KINDS = ("logreg", "mlp", "cnn")


def build_model(arch: dict[str, Any]) -> nn.Module:
    kind = arch["type"]
    shape = tuple(arch["input_shape"])
    n_in = math.prod(shape)
    k = int(arch["n_classes"])
    hidden = [int(h) for h in arch.get("hidden", [])]
    p = float(arch.get("dropout", 0.0))
    if kind == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, k))
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if p > 0:
                layers.append(nn.Dropout(p))
            width = h
        layers.append(nn.Linear(width, k))
        return nn.Sequential(*layers)
    if kind == "cnn":
        if len(shape) != 3:
            raise ConfigError(
                "the cnn model needs image data (channels, height, width); use mlp or logreg "
                "for tabular data"
            )
        c, h, w = shape
        chans = [int(v) for v in arch.get("channels", [16, 32])]
        layers = []
        for out in chans:
            if min(h, w) < 2:
                raise ConfigError(f"images of {shape[1]}x{shape[2]} are too small for this cnn")
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        width = hidden[0] if hidden else 128
        layers += [nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU()]
        if p > 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(width, k))
        return nn.Sequential(*layers)
    raise ConfigError(f"unknown model kind {kind!r}; use one of: {', '.join(MODEL_KINDS)}")


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def seed_torch(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g
