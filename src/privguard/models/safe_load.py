"""Loading model files without running code from them, and refusing what does not fit.

Used by :meth:`privguard.models.Target.load` for privguard model directories:

- :func:`weights_path`: the weights file ``model.json`` names must be a plain file name inside
  the model's own directory (no ``..``, no absolute path, no link out of it);
- :func:`torch_module`: a PyTorch model from ``model.json``'s architecture and safetensors
  weights; the architecture is first built on PyTorch's ``meta`` device (no memory) and checked
  against the tensors' names and shapes, so neither a file that is not safetensors nor a huge
  architecture in ``model.json`` gets past a one-line :class:`~privguard.errors.ModelError`;
- :func:`sklearn_estimator`: a ``.skops`` blob through the exact-type allowlist of
  :mod:`privguard.models.adapters.sklearn`.

Nothing is unpickled anywhere in privguard: PyTorch weights are safetensors (``torch.load`` is
never called), NPZ files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privguard.errors import ModelError, PrivguardError


def weights_path(directory: Path, name: Any) -> Path:
    """``directory / name`` when ``name`` is a plain file name that stays inside ``directory``."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ModelError(f"{directory}/model.json names no valid weights file")
    candidate = directory / name
    inside = directory.resolve()
    if Path(name).name != name or name.startswith(("/", "\\")) or "\\" in name:
        raise ModelError(
            f"{directory}/model.json points its weights outside the model directory ({name!r}); "
            "a model directory's files must stay inside it"
        )
    if candidate.is_symlink() and inside not in candidate.resolve().parents:
        raise ModelError(
            f"{candidate} links outside the model directory; copy the weights file into it"
        )
    return candidate


def torch_module(arch: dict[str, Any], blob: bytes, where: Path) -> Any:
    """The PyTorch module ``arch`` describes, with the safetensors ``blob``'s weights."""
    import torch
    from safetensors.torch import load as load_tensors

    from privguard.models.nets import build_model

    try:
        tensors = load_tensors(blob)
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise ModelError(
            f"{where} is not a safetensors file ({type(e).__name__}); privguard loads PyTorch "
            "weights only as safetensors"
        ) from None
    try:
        with torch.device("meta"):
            shell = build_model(arch)
    except PrivguardError as e:
        raise ModelError(f"{where.parent}/model.json: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ModelError(
            f"{where.parent}/model.json has an invalid architecture ({type(e).__name__}: {e})"
        ) from None
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise ModelError(
            f"the architecture in {where.parent}/model.json does not match the weights in "
            f"{where.name} (e.g. {diff}); restore the original files or retrain the model"
        )
    module = build_model(arch)
    module.load_state_dict(tensors)
    return module


def sklearn_estimator(blob: bytes, where: Path, trusted: Iterable[str] = ()) -> Any:
    """The estimator in a ``.skops`` blob, loaded through the exact-type allowlist."""
    from privguard.models.adapters.sklearn import load_skops_estimator

    return load_skops_estimator(where, trusted=trusted, data=blob)
