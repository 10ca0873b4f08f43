"""PyTorch ``nn.Module`` models the user already trained: the object, or safetensors weights.

:class:`TorchAdapter` queries a module as it is, in its own dtype, and never changes it: each
query runs under ``torch.no_grad()`` in eval mode, and every submodule's train/eval flag is put
back as it was (so no gradients are kept and the parameters are untouched; ``fingerprint``
hashes parameters, buffers, ``requires_grad``, gradients and modes, and tests compare it
before and after an audit). The module returns logits (``output="logits"``, the default) or
probabilities (``output="probs"``, a module ending in softmax).

How reference models (LiRA, RMIA, shadow models) are trained like the target — in order:

- ``train_fn=``: the user's own training hook, ``train_fn(model_factory, x, y, seed) -> module``
  where ``model_factory()`` builds a fresh, untrained module of the target's architecture (the
  ``factory=`` given, else a deep copy of the target with every layer's parameters reset), ``x``
  a float tensor in the model's dtype and ``y`` an int64 tensor of class indices (kind
  ``train_fn``);
- ``recipe=`` a recipe file (``--recipe recipe.toml``) or the same as a dict (kind
  ``recipe-file``)::

      factory = "mypackage.models:make_mlp"   # module:function, called with [factory_args]
      optimizer = "adam"                      # adam, adamw or sgd
      lr = 0.001
      epochs = 50
      batch_size = 64
      weight_decay = 0.0                      # optional; momentum = 0.9 for sgd
      [factory_args]                          # optional keyword arguments of the factory
      hidden = 128

  A recipe file names a factory the user trusts explicitly: its module is imported from the
  Python path (nothing else in the file runs code);
- otherwise the attacker's proxy (:mod:`privguard.models.adapters.proxy`), and the report says so.

Files (``privguard audit --model``): ``.safetensors`` weights with ``--factory module:function``
(or the recipe file's factory) building the architecture; the weights' names and shapes must
match it exactly. ``torch.export`` programs (``.pt2``) are refused: ``torch.export.load`` falls
back to an unrestricted unpickler (``torch.load`` with ``weights_only=False``) for payloads its safe
loader cannot read, so such a file can run code on load.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import math
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from privguard.data.preprocess import as_text
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    register_adapter,
    register_loader,
)
from privguard.models.adapters.generic import resolve_classes, softmax

BATCH = 1024
OPTIMIZERS = ("adam", "adamw", "sgd")
RECIPE_KEYS = {
    "factory",
    "factory_args",
    "optimizer",
    "lr",
    "epochs",
    "batch_size",
    "weight_decay",
    "momentum",
}


def is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class TorchAdapter(ModelAdapter):
    """A trained ``nn.Module``, queried without being changed (see the module docstring).

    Args:
        module: the trained module.
        train_fn: the user's training hook (kind ``train_fn``).
        factory: builds a fresh module of the same architecture (``module:function`` string or
            a callable); the default is a reset deep copy of ``module``.
        recipe: a recipe file path or dict (kind ``recipe-file``).
        classes / n_classes: labels of the output columns (default ``0..K-1``, ``K`` from the
            last ``nn.Linear``).
        input_shape: one record's shape (default from the first ``nn.Linear``).
        output: ``logits`` or ``probs``: what the module returns.
    """

    framework = "torch"

    def __init__(
        self,
        module: Any,
        *,
        train_fn: Callable[..., Any] | None = None,
        factory: str | Callable[[], Any] | None = None,
        recipe: str | Path | Mapping[str, Any] | None = None,
        classes: Sequence[Any] | None = None,
        n_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        output: str = "logits",
        **_: Any,
    ) -> None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"{type(module).__name__} is not a torch.nn.Module")
        if output not in ("logits", "probs"):
            raise ConfigError(f"output={output!r}: use logits or probs")
        self.module = module
        self.output = output
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        if n_classes is None and classes is None and linears:
            n_classes = int(linears[-1].out_features)
        self.classes = resolve_classes(module, classes, n_classes, what=type(module).__name__)
        self.n_classes = len(self.classes)
        first = next((m for m in module.modules() if hasattr(m, "weight")), None)
        if input_shape is None and isinstance(first, torch.nn.Linear):
            input_shape = (int(first.in_features),)
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else ()
        floats = [p for p in module.parameters() if p.is_floating_point()]
        self.torch_dtype = floats[0].dtype if floats else torch.float32
        self.dtype = np.dtype(str(self.torch_dtype).removeprefix("torch."))
        self.train_fn = train_fn
        self.factory = import_factory(factory) if isinstance(factory, str) else factory
        self.recipe_file = load_recipe(recipe) if recipe is not None else None
        if train_fn is not None and self.recipe_file is not None:
            raise ConfigError("give train_fn= or recipe=, not both")

    # -- answering ------------------------------------------------------------------------
    def predict_logits(self, x: Any) -> np.ndarray:
        import torch

        x = np.asarray(x)
        out = []
        with _frozen(self.module), torch.no_grad():
            for i in range(0, len(x), BATCH):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + BATCH], dtype=self.dtype))
                try:
                    z = self.module(xb)
                except (RuntimeError, ValueError, TypeError, IndexError) as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise DataError(f"the torch model refused the records: {first}") from None
                out.append(z.detach().double().cpu().numpy())
        z = np.concatenate(out) if out else np.zeros((0, self.n_classes))
        return check_proba(z, len(x), self.n_classes, who="the torch model")

    def predict_proba(self, x: Any) -> np.ndarray:
        z = self.predict_logits(x)
        if self.output == "probs":
            from privguard.models.adapters.generic import check_probabilities

            return check_probabilities(z, who="the torch model")
        return softmax(z)

    # -- recipe, report, fingerprint ---------------------------------------------------------
    def recipe(self) -> Recipe:
        factory = self.factory or (self.recipe_file.factory if self.recipe_file else None)
        factory = factory or (lambda: fresh_copy(self.module))
        if self.train_fn is not None:
            return TrainFnRecipe(self.train_fn, factory, self)
        if self.recipe_file is not None:
            return RecipeFileRecipe(self.recipe_file, self)
        from privguard.models.adapters.proxy import ProxyRecipe

        return ProxyRecipe(self.classes, data="image" if len(self.input_shape) == 3 else "array")

    def describe(self) -> dict[str, Any]:
        return {
            "framework": "torch",
            "type": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "parameters": int(sum(p.numel() for p in self.module.parameters())),
            "dtype": str(self.dtype),
            "output": self.output,
            "classes": [str(c) for c in self.classes],
        }

    def fingerprint(self) -> bytes:
        return module_fingerprint(self.module)

    def _wrap(self, module: Any) -> TorchAdapter:
        """A module privguard trained (a reference model), answering like the target."""
        return TorchAdapter(
            module, classes=self.classes, input_shape=self.input_shape, output=self.output
        )

    def _labels(self, y: np.ndarray) -> np.ndarray:
        index = {as_text(c): i for i, c in enumerate(self.classes)}
        try:
            return np.array([index[as_text(v)] for v in np.asarray(y).tolist()], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"label {e.args[0]!r} is not one of the model's classes") from None


@contextmanager
def _frozen(module: Any) -> Iterator[None]:
    """Eval mode for the duration; each submodule's own train/eval flag restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def module_fingerprint(module: Any) -> bytes:
    """sha256 over parameters and buffers (bytes, dtype, shape, requires_grad, gradient) and
    every submodule's train/eval flag."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"p:{name}:{t.dtype}:{tuple(t.shape)}:{p.requires_grad}".encode())
        h.update(t.view(-1).view(dtype=_bytes_dtype()).numpy().tobytes() if t.numel() else b"")
        h.update(b"grad" if p.grad is not None else b"nograd")
    for name, b in module.named_buffers():
        t = b.detach().cpu().contiguous()
        h.update(f"b:{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(dtype=_bytes_dtype()).numpy().tobytes() if t.numel() else b"")
    h.update(bytes(int(m.training) for m in module.modules()))
    return h.digest()


def _bytes_dtype() -> Any:
    import torch

    return torch.uint8


def fresh_copy(module: Any) -> Any:
    """A deep copy of ``module`` with every layer's parameters re-initialised (the target's
    architecture, untrained); the original is not touched."""
    new = copy.deepcopy(module)
    for m in new.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    for p in new.parameters():
        p.grad = None
    return new.train()


class TrainFnRecipe(Recipe):
    """The user's ``train_fn(model_factory, x, y, seed) -> module`` hook."""

    kind = "train_fn"

    def __init__(self, train_fn: Callable[..., Any], factory: Callable[[], Any], target: Any):
        self.train_fn = train_fn
        self.factory = factory
        self.target = target
        name = getattr(train_fn, "__qualname__", type(train_fn).__name__)
        self.description = (
            f"reference models are trained by the user's train_fn {name} (the target's own recipe)"
        )

    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> TorchAdapter:
        import torch

        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=self.target.dtype))
        yt = torch.from_numpy(self.target._labels(y))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.train_fn(self.factory, xt, yt, seed)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f"train_fn returned a {type(module).__name__}; it must return the trained "
                "torch.nn.Module"
            )
        return self.target._wrap(module)


class RecipeFile:
    """A parsed recipe file (see the module docstring)."""

    def __init__(self, spec: Mapping[str, Any], source: str) -> None:
        unknown = sorted(set(spec) - RECIPE_KEYS)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; a recipe has "
                f"{', '.join(sorted(RECIPE_KEYS))}"
            )
        if "factory" not in spec:
            raise ConfigError(f'{source}: name the architecture: factory = "module:function"')
        self.source = source
        self.factory_name = str(spec["factory"])
        args = spec.get("factory_args", {})
        if not isinstance(args, Mapping):
            raise ConfigError(f"{source}: [factory_args] must be a table of keyword arguments")
        self.factory_args = dict(args)
        self.optimizer = str(spec.get("optimizer", "adam")).lower()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{source}: optimizer must be one of {', '.join(OPTIMIZERS)}")
        self.lr = _number(spec, "lr", 1e-3, source, positive=True)
        self.epochs = int(_number(spec, "epochs", 20, source, positive=True, integer=True))
        self.batch_size = int(_number(spec, "batch_size", 64, source, positive=True, integer=True))
        self.weight_decay = _number(spec, "weight_decay", 0.0, source)
        self.momentum = _number(spec, "momentum", 0.0, source)
        import_factory(self.factory_name)  # fails here, before any training, if it cannot

    def factory(self) -> Any:
        """A fresh module from the named factory (a method, so the recipe pickles for worker
        processes: they import the factory's module from the Python path themselves)."""
        return import_factory(self.factory_name)(**self.factory_args)

    def settings(self) -> dict[str, Any]:
        return {
            "factory": self.factory_name,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
        }


def _number(
    spec: Mapping[str, Any],
    key: str,
    default: float,
    source: str,
    *,
    positive: bool = False,
    integer: bool = False,
) -> float:
    v = spec.get(key, default)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > 0 if positive else v >= 0) and (not integer or float(v).is_integer())
    if not ok:
        kind = "a positive integer" if integer else ("a positive number" if positive else ">= 0")
        raise ConfigError(f"{source}: {key} must be {kind}, got {v!r}")
    return float(v)


def load_recipe(recipe: str | Path | Mapping[str, Any] | RecipeFile) -> RecipeFile:
    """A recipe file (TOML) or dict, checked; a :class:`ConfigError` names what is wrong."""
    if isinstance(recipe, RecipeFile):
        return recipe
    if isinstance(recipe, Mapping):
        return RecipeFile(recipe, "recipe")
    p = Path(recipe)
    try:
        spec = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the recipe {p}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not a valid TOML recipe: {e}") from None
    return RecipeFile(spec, str(p))


class RecipeFileRecipe(Recipe):
    """Train with the recipe file's factory, optimiser, learning rate, epochs and batch size
    through privguard's training loop (cross-entropy on the logits)."""

    kind = "recipe-file"

    def __init__(self, recipe: RecipeFile, target: TorchAdapter) -> None:
        self.file = recipe
        self.target = target
        s = recipe.settings()
        self.description = (
            f"reference models follow the recipe {recipe.source}: {s['factory']}, "
            f"{s['optimizer']} lr {s['lr']:g}, {s['epochs']} epochs, batch {s['batch_size']}"
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "settings": self.file.settings()}

    def fit(self, x: Any, y: np.ndarray, *, seed: int) -> TorchAdapter:
        import torch

        from privguard.models.threads import single_thread
        from privguard.training.loop import ShuffledBatches, fit

        r = self.file
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=self.target.dtype))
        yt = torch.from_numpy(self.target._labels(y))
        with single_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            module = r.factory()
            if not isinstance(module, torch.nn.Module):
                raise ConfigError(f"{r.factory_name} returned a {type(module).__name__}")
            module = module.to(self.target.torch_dtype)
            params = module.parameters()
            if r.optimizer == "sgd":
                opt = torch.optim.SGD(
                    params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay
                )
            elif r.optimizer == "adamw":
                opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
            else:
                opt = torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
            loss = _loss(self.target.output)
            fit(
                module,
                opt,
                ShuffledBatches(xt, yt, r.batch_size, gen),
                lambda m, b: loss(m(b[0]), b[1]),
                epochs=r.epochs,
            )
        return self.target._wrap(module.eval())


def _loss(output: str) -> Callable[[Any, Any], Any]:
    import torch

    if output == "probs":
        return lambda p, y: torch.nn.functional.nll_loss(torch.log(p.clamp_min(1e-12)), y)
    return torch.nn.functional.cross_entropy


def import_factory(name: str) -> Callable[..., Any]:
    """The function ``module:function`` names, imported from the Python path."""
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise ConfigError(
            f"factory {name!r}: name it as module:function (e.g. mypackage.models:make_mlp)"
        )
    mod_name, attr = name.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import {mod_name} for the factory {name} ({e}); put its directory on "
            "PYTHONPATH"
        ) from None
    fn = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"{mod_name} has no {attr} (factory {name})")
    if not callable(fn):
        raise ConfigError(f"factory {name} is not callable")
    return fn


# -- files -----------------------------------------------------------------------------------


def load_safetensors(
    path: str | Path,
    *,
    factory: str | Callable[[], Any] | None = None,
    recipe: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> TorchAdapter:
    """A ``.safetensors`` file into the module ``factory()`` builds (or the recipe's factory);
    names and shapes must match exactly. Nothing is unpickled."""
    import torch
    from safetensors.torch import load_file

    p = Path(path)
    rf = load_recipe(recipe) if recipe is not None else None
    if factory is None and rf is None:
        raise ModelError(
            f"{p} holds only weights: name the architecture with --factory module:function "
            "(Python: factory=) or a --recipe file with a factory"
        )
    build = (
        import_factory(factory)
        if isinstance(factory, str)
        else (factory if factory is not None else rf.factory)  # type: ignore[union-attr]
    )
    try:
        tensors = load_file(str(p))
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise ModelError(f"{p} is not a safetensors file ({type(e).__name__})") from None
    module = build()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"the factory returned a {type(module).__name__}, not an nn.Module")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise ModelError(
            f"the weights in {p} do not match the factory's architecture (e.g. {diff}); give "
            "the factory the model was trained with"
        )
    module.load_state_dict(tensors)
    module.eval()
    return TorchAdapter(module, factory=build, recipe=rf, **options)


def refuse_pickled_torch(path: str | Path, **_: Any) -> TorchAdapter:
    """``.pt`` / ``.pth`` / ``.pt2`` files are refused: loading them can run code."""
    p = Path(path)
    why = (
        "torch.export.load falls back to an unrestricted unpickler"
        if p.suffix.lower() == ".pt2"
        else "torch.load unpickles"
    )
    raise ModelError(
        f"{p}: privguard does not load {p.suffix} files ({why}, so the file could run code); "
        "save the weights with safetensors.torch.save_file and pass --factory module:function"
    )


register_adapter(is_torch_module, TorchAdapter, name="torch", priority=40)
register_loader(
    lambda p: p.is_file() and p.suffix.lower() == ".safetensors",
    load_safetensors,
    name=".safetensors (+ --factory)",
    priority=60,
)
register_loader(
    lambda p: p.suffix.lower() in (".pt2", ".pt", ".pth"),
    refuse_pickled_torch,
    name=".pt / .pth / .pt2 (refused)",
    priority=60,
)
