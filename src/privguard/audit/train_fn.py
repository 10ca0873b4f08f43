"""Running a user's training function for ``privguard dp-audit --train-fn``: finding it
(``module:function``), asking whether it takes privguard's gradient canaries, and calling it
under a time limit in a forked child process, every failure a one-line
:class:`~privguard.errors.ConfigError` (docs/dp.md). The audits themselves are in
:mod:`privguard.audit.dp_user`."""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from privguard.errors import ConfigError

#: ``train(x, y, seed) -> model``: a fitted model with ``predict_proba``, a PyTorch module, or a
#: callable from inputs to probabilities
TrainFn = Callable[[np.ndarray, np.ndarray, int], Any]

__all__ = [
    "TrainFn",
    "call_train",
    "describe_error",
    "fn_name",
    "load_train_fn",
    "run_limited",
    "takes_canaries",
]


def load_train_fn(spec: str) -> TrainFn:
    """``module:function`` -> the function, importing the user's module (the current directory
    is searched first, as ``python -m`` would). Every failure is a one-line ConfigError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--train-fn takes module:function such as my_module:train, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: anything it raises is their error
        raise ConfigError(
            f"--train-fn {spec}: importing {module_name!r} failed ({type(e).__name__}: {e})"
        ) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"--train-fn {spec}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"--train-fn {spec}: {attr!r} is not a function")
    return fn


def fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def takes_canaries(train_fn: Any) -> bool:
    """Whether ``train_fn`` can be called with a ``canaries=`` keyword."""
    try:
        params = inspect.signature(train_fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        return True
    return any(
        (q.name == "canaries" and q.kind is not inspect.Parameter.POSITIONAL_ONLY)
        or q.kind is inspect.Parameter.VAR_KEYWORD
        for q in params
    )


def _single_threaded_after_fork() -> None:
    """In a forked child, run torch on one thread: the OpenMP thread pool a parent has used is
    not carried over by ``fork``, and the child's first parallel region would wait on threads
    that do not exist (measured: a time-limited Opacus audit hung until its limit once the
    parent had run one multi-threaded matmul)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def run_limited(work: Callable[[], Any], time_limit: float | None) -> Any:
    """``work()``, in a forked child process killed after ``time_limit`` seconds when one is
    given; what it raises comes back as a one-line ConfigError."""
    if time_limit is None:
        return work()
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise ConfigError(f"--time-limit must be a positive number of seconds, not {time_limit}")
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():  # pragma: no cover - Windows
        raise ConfigError("--time-limit needs a platform that can fork; leave it out here")
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            _single_threaded_after_fork()
            child.send(("ok", work()))
        except BaseException as e:  # reported to the parent as one line
            child.send(("error", e if isinstance(e, ConfigError) else describe_error(e)))

    proc = ctx.Process(target=run, daemon=True)
    proc.start()
    child.close()
    ready = parent.poll(time_limit)
    if not ready:
        proc.kill()
        proc.join()
        raise ConfigError(
            f"the train function ran past the {time_limit:g} s time limit: raise --time-limit "
            "or train less (fewer epochs or records)"
        )
    try:
        status, payload = parent.recv()
    except EOFError:
        proc.join()
        raise ConfigError(
            f"the train function's process died (exit code {proc.exitcode}) before returning"
        ) from None
    proc.join()
    if status == "error":
        raise payload if isinstance(payload, ConfigError) else ConfigError(payload)
    return payload


def describe_error(e: BaseException) -> str:
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {os.path.basename(frame.filename)}:{frame.lineno}" if frame else ""
    return f"the train function raised {type(e).__name__}{where}: {e}"


def model_outputs(model: Any, x: np.ndarray, n_classes: int) -> tuple[np.ndarray, bool]:
    """The model's outputs on ``x``: ``(values, are_logits)``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        model.eval()
        try:
            param = next(model.parameters())
            device, dtype = param.device, param.dtype
        except StopIteration:
            device, dtype = torch.device("cpu"), torch.float32
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), 1024):
                xb = torch.as_tensor(x[start : start + 1024], dtype=dtype, device=device)
                outs.append(model(xb).detach().to("cpu", torch.float64).numpy())
        return np.concatenate(outs), True
    if hasattr(model, "predict_proba"):
        values = model.predict_proba(x)
    elif callable(model):
        values = model(x)
    else:
        raise ConfigError(
            f"the train function returned {type(model).__name__}, not a model: return a fitted "
            "model with predict_proba, a PyTorch module or a callable from inputs to "
            "probabilities"
        )
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64), False


def check_outputs(values: np.ndarray, n: int, k: int, logits: bool) -> None:
    what = "logits" if logits else "probabilities"
    if values.shape != (n, k):
        raise ConfigError(
            f"the trained model's {what} have shape {values.shape} for {n} records of {k} "
            f"classes; it must give one row of {k} per record"
        )
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"the trained model's {what} contain NaN or infinite values")
    if not logits and (values.min() < 0 or np.abs(values.sum(axis=1) - 1).max() > 1e-3):
        raise ConfigError(
            "the trained model's outputs are not probabilities (each row must be >= 0 and sum "
            "to 1): return predict_proba, or a PyTorch module whose outputs are logits"
        )


def call_train(
    train_fn: TrainFn,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    probe: np.ndarray,
    k: int,
    time_limit: float | None,
) -> tuple[np.ndarray, bool, float]:
    """Train and return the model's outputs on ``probe``, raising one-line errors. With a
    ``time_limit`` the run happens in a forked child process that is killed at the limit."""
    return run_limited(lambda: train_and_score(train_fn, x, y, seed, probe, k), time_limit)


def train_and_score(
    train_fn: TrainFn, x: np.ndarray, y: np.ndarray, seed: int, probe: np.ndarray, k: int
) -> tuple[np.ndarray, bool, float]:
    t0 = time.perf_counter()
    try:
        model = train_fn(x, y, seed)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(describe_error(e)) from None
    seconds = time.perf_counter() - t0
    if model is None:
        raise ConfigError(
            "the train function returned None: return the fitted model (predict_proba, a "
            "PyTorch module or a callable from inputs to probabilities)"
        )
    try:
        values, logits = model_outputs(model, probe, k)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"the trained model could not score records ({type(e).__name__}: {e}): it must "
            "take inputs shaped like the x it was trained on"
        ) from None
    check_outputs(values, len(probe), k, logits)
    return values, logits, seconds
