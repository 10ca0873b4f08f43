"""Which device training runs on: ``--device cpu|cuda|auto`` for target and reference training.

Kept apart from the training loop and the stacked trainer so that the CLI, the audit plan and
``models/`` can check a device name without importing either.
"""

from __future__ import annotations

import torch

from privguard.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | None) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when a GPU is visible, else cpu) as a torch
    device. Raises :class:`ConfigError` for ``cuda`` without a GPU or an unknown name."""
    name = (device or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu or auto"
            )
        return torch.device(name)
    raise ConfigError(f"unknown --device {device!r}; use cpu, cuda or auto")
