"""Training the reference models of :mod:`.reference`: fan-out, stacked groups, disk cache.

Model k is trained the way the target was (``Knowledge.recipe``), on the pool records its row of
``inclusion`` marks, seeded from (seed, k) only: one at a time in local processes or on a Dask
cluster, or — for privguard's own small recipes — as stacked groups of K copies trained as one
vectorised model (:mod:`privguard.models.stacked`). Trained PyTorch models are cached on disk as
safetensors + JSON under a key that hashes the recipe, the exact training rows, the seed and the
index; an entry whose weights do not match their recorded hash is retrained, never used. The
papers and the threat model are in :mod:`.reference`'s docstring.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privguard._io import atomic_write_bytes
from privguard.attacks.base import Knowledge, Progress
from privguard.attacks.membership.reference import (
    CACHE_FORMAT,
    CACHE_SUBDIR,
    MIN_TRAIN_RECORDS,
    ReferenceSet,
    Shift,
    finite_logits,
    model_seed,
    views,
)
from privguard.compute import dask_client, fan_out
from privguard.errors import ConfigError, DataError

# -- training ------------------------------------------------------------------------------


def train_reference_models(
    knowledge: Knowledge,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    inclusion: np.ndarray,
    *,
    seed: int,
    shifts: Sequence[Shift] = ((0, 0),),
    progress: Progress | None = None,
    first: int = 0,
) -> ReferenceSet:
    """Train K models with the target's recipe, model k on ``pool[inclusion[k]]``, and return
    their float64 logits on every pool record (and its ``shifts`` views).

    Runs on ``knowledge.compute``: in this process (``n_jobs=1``), in local worker processes
    (joblib/loky), or on the Dask scheduler it names; model k is seeded from ``(seed, k)``, so
    the logits are the same wherever it runs. With a ``cache_dir``, models already trained
    (same recipe, rows, seed and index) are loaded instead, after checking their hash.
    ``first``: the index of ``inclusion``'s first row in its set (row k is model ``first + k``:
    its seed and cache key), to extend a set trained earlier.

    Raises:
        ConfigError: no training recipe, a model with too little data, an unreachable
            scheduler, an unusable cache directory.
    """
    recipe = knowledge.recipe
    if recipe is None:
        raise ConfigError(
            "reference-model attacks need the target's training recipe to train models like it; "
            "audit a model trained by privguard (its model.json records the recipe)"
        )
    pool_x = np.ascontiguousarray(pool_x, dtype=np.float32)
    pool_y = np.ascontiguousarray(pool_y, dtype=np.int64)
    inclusion = np.asarray(inclusion, dtype=bool)
    if inclusion.ndim != 2 or inclusion.shape[1] != len(pool_y) or len(pool_x) != len(pool_y):
        raise DataError(
            f"inclusion must be (models, {len(pool_y)}) for a pool of {len(pool_y)} records, "
            f"got {inclusion.shape}"
        )
    for k, rows in enumerate(inclusion):
        _check_training_rows(pool_y[rows], first + k)
    shifts = tuple((int(a), int(b)) for a, b in shifts)
    fill = float(np.min(knowledge.bounds[0]))
    n_models = len(inclusion)
    seeds = [model_seed(seed, first + k) for k in range(n_models)]
    cache = _Cache.open(knowledge.compute.cache_dir, recipe, pool_x.shape[1:])

    keys: list[str | None] = [None] * n_models
    logits: list[np.ndarray | None] = [None] * n_models
    reused = 0
    done = 0
    if progress is not None:
        progress("reference models", 0, n_models)
    if cache is not None:
        for k in range(n_models):
            keys[k] = cache.key(
                pool_x[inclusion[k]], pool_y[inclusion[k]], seed, first + k, seeds[k]
            )
            predictor = cache.load(keys[k])
            if predictor is not None:
                logits[k] = _evaluate(predictor, pool_x, shifts, fill)
                reused += 1
                done += 1
                if progress is not None:
                    progress("reference models", done, n_models)
    todo = [k for k in range(n_models) if logits[k] is None]
    notes = []
    how = ""
    why_not = stacked_reason(recipe, knowledge.compute)
    if why_not is None and todo:
        device = getattr(knowledge.compute, "device", "cpu")
        groups = _groups(todo, knowledge.compute, stack_size(recipe, pool_x.shape[1:], device))
        jobs = [
            (
                recipe,
                pool_x,
                pool_y,
                inclusion[g],
                [seeds[k] for k in g],
                shifts,
                fill,
                cache is not None,
                device,
            )
            for g in groups
        ]
        results = fan_out(
            _stacked_job,
            jobs,
            n_jobs=knowledge.compute.n_jobs,
            scheduler=knowledge.compute.scheduler,
        )
        pairs = (
            (k, r)
            for g, rs in zip(groups, results, strict=True)
            for k, r in zip(g, rs, strict=True)
        )
        how = f" stacked ({len(groups)} vectorised group{'s' if len(groups) > 1 else ''})"
    else:
        pairs = zip(
            todo,
            fan_out(
                _job,
                [
                    (
                        recipe,
                        pool_x,
                        pool_y,
                        inclusion[k],
                        seeds[k],
                        shifts,
                        fill,
                        cache is not None,
                    )
                    for k in todo
                ],
                n_jobs=knowledge.compute.n_jobs,
                scheduler=knowledge.compute.scheduler,
            ),
            strict=True,
        )
        if todo and why_not is not None:
            how = f" one at a time ({why_not})"
    for k, (state, z) in pairs:
        logits[k] = z
        if cache is not None and state is not None:
            cache.store(keys[k], state)
        done += 1
        if progress is not None:
            progress("reference models", done, n_models)
    if cache is None and knowledge.compute.cache_dir is not None:
        notes.append("reference models not cached: only PyTorch recipes are cached")
    return ReferenceSet(
        logits=np.stack(logits),
        inclusion=inclusion,
        shifts=shifts,
        trained=len(todo),
        reused=reused,
        how=how,
        cache_dir=str(cache.root) if cache is not None else None,
        notes=notes,
    )


def _check_training_rows(y: np.ndarray, index: int) -> None:
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=int)
    present = counts[counts > 0]
    if len(y) < MIN_TRAIN_RECORDS or (len(present) and present.min() < 2):
        raise ConfigError(
            f"reference model {index} would train on {len(y)} records "
            f"(fewest of one class: {int(present.min()) if len(present) else 0}); each needs at "
            f"least {MIN_TRAIN_RECORDS} and two of every class"
        )


def _job(
    recipe: Any,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    rows: np.ndarray,
    seed: int,
    shifts: tuple[Shift, ...],
    fill: float,
    want_state: bool,
) -> tuple[dict[str, Any] | None, np.ndarray]:
    """One reference model: train it, evaluate it on the pool's views. Runs in a worker."""
    from privguard.models.threads import single_thread

    if not pool_x.flags.writeable:  # joblib hands large arrays over as read-only memmaps
        pool_x = np.array(pool_x)
    with single_thread():
        predictor = recipe.fit(pool_x[rows], pool_y[rows], seed=seed)
        z = _evaluate(predictor, pool_x, shifts, fill)
    state = None
    module = getattr(predictor, "module", None)
    if want_state and module is not None:
        state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    return state, z


#: most copies one stacked run trains
MAX_STACK = 64
#: parameters (all copies together) one stacked run aims at: past this the copies' weights and
#: Adam moments fall out of the CPU caches and a bigger stack stops paying (measured on 2 cores:
#: 2x256 MLPs on digits gain ~1.45x per model at 16 copies, ~1.25x at 32; 64-unit MLPs ~5x at 32)
STACK_PARAMETERS = 1_500_000


def stacked_reason(recipe: Any, compute: Any) -> str | None:
    """``None`` when reference models of ``recipe`` are trained stacked
    (:mod:`privguard.models.stacked`), else why they are trained one at a time."""
    from privguard.models.stacked import stackable

    if not getattr(compute, "stacked", True):
        return "stacked training switched off"
    config = getattr(recipe, "config", None)
    device = str(getattr(compute, "device", "cpu") or "cpu")
    if getattr(config, "model", None) == "cnn" and not device.startswith("cuda"):
        # vmap'd convolutions train slower than one model after another on a CPU (16 copies,
        # mnist-5k, 1,000 rows each: 0.54-0.77x in CPU seconds, 2026-12-05); a GPU stacks them
        return "the cnn trains faster one model at a time on a CPU"
    return stackable(recipe)


def stack_size(recipe: Any, input_shape: tuple[int, ...], device: str = "cpu") -> int:
    """How many copies of ``recipe``'s model one stacked run trains: all (up to
    ``MAX_STACK``) on a GPU, else as many as fit ``STACK_PARAMETERS`` (at least 4)."""
    if str(device).startswith("cuda"):
        return MAX_STACK
    from privguard.models.nets import build_model, count_parameters

    arch = recipe.config.architecture(input_shape, recipe.n_classes)
    n = count_parameters(build_model(arch))
    return int(min(MAX_STACK, max(4, STACK_PARAMETERS // max(n, 1))))


def _groups(todo: list[int], compute: Any, per_group: int = MAX_STACK) -> list[list[int]]:
    """Split the models to train into groups: at least one per worker, at most ``per_group``
    models each. A worker trains a group as one stacked model, and the pool data is shipped
    once per group, not once per model."""
    n_jobs = int(compute.n_jobs or 1)
    if compute.scheduler is not None:
        workers = _dask_workers(compute.scheduler)
    else:
        workers = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
    n_groups = max(1, min(len(todo), max(workers, -(-len(todo) // per_group))))
    return [list(g) for g in np.array_split(np.asarray(todo), n_groups) if len(g)]


def _dask_workers(scheduler: Any) -> int:
    """The cluster's worker threads (tasks it runs at once)."""
    client, owned = dask_client(scheduler)
    try:
        workers = client.scheduler_info().get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))
    finally:
        if owned:
            client.close()


def _stacked_job(
    recipe: Any,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    inclusion: np.ndarray,
    seeds: list[int],
    shifts: tuple[Shift, ...],
    fill: float,
    want_state: bool,
    device: str = "cpu",
) -> list[tuple[dict[str, Any] | None, np.ndarray]]:
    """A group of reference models trained as one stacked model; runs in a worker. Each copy
    gets exactly the training rows, validation split and seed :meth:`recipe.fit` would."""
    from privguard.models.stacked import train_stacked
    from privguard.models.threads import single_thread

    if not pool_x.flags.writeable:
        pool_x = np.array(pool_x)
    config = recipe.config
    rows, val_rows = [], []
    for included, s in zip(inclusion, seeds, strict=True):
        r = np.flatnonzero(included)
        if config.early_stopping:  # the split TrainingRecipe.fit makes, on the same rows
            order = np.random.default_rng(s).permutation(len(r))
            n_val = max(1, int(round(len(r) * config.validation_fraction)))
            val_rows.append(r[order[:n_val]])
            rows.append(r[order[n_val:]])
        else:
            rows.append(r)
    with single_thread():
        result = train_stacked(
            config,
            pool_x,
            pool_y,
            recipe.n_classes,
            rows,
            seeds,
            val_rows=val_rows if config.early_stopping else None,
            device=device,
        )
        z = np.stack(
            [finite_logits(result.logits(v)) for v in views(pool_x, shifts, fill)], axis=1
        )  # (K, V, N, C)
    return [(result.state_dict(k) if want_state else None, z[k]) for k in range(result.n_models)]


def _evaluate(predictor: Any, x: np.ndarray, shifts: Sequence[Shift], fill: float) -> np.ndarray:
    return np.stack([finite_logits(predictor.predict_logits(v)) for v in views(x, shifts, fill)])


# -- disk cache ----------------------------------------------------------------------------


class _Cache:
    """Trained reference models on disk: ``<key>.safetensors`` (weights) + ``<key>.json`` (the
    key, the weights' sha256 and the recipe, for people). Nothing is unpickled; the
    architecture is rebuilt from the recipe, not read from the file."""

    def __init__(self, root: Path, recipe: Any, input_shape: tuple[int, ...]) -> None:
        self.root = root
        self.recipe = recipe
        self.input_shape = tuple(int(s) for s in input_shape)
        self.recipe_desc = {
            "format": CACHE_FORMAT,
            "config": recipe.config.to_dict(),
            "n_classes": int(recipe.n_classes),
        }

    @classmethod
    def open(
        cls, cache_dir: str | os.PathLike | None, recipe: Any, input_shape: tuple[int, ...]
    ) -> _Cache | None:
        if cache_dir is None or not hasattr(recipe, "config"):
            return None
        root = Path(cache_dir) / CACHE_SUBDIR
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot use {cache_dir} as the model cache ({e.strerror}); pass a writable "
                "--cache-dir"
            ) from None
        return cls(root, recipe, input_shape)

    def key(self, x: np.ndarray, y: np.ndarray, seed: int, index: int, mseed: int) -> str:
        h = hashlib.sha256()
        head = {"recipe": self.recipe_desc, "seed": int(seed), "index": int(index), "mseed": mseed}
        h.update(json.dumps(head, sort_keys=True).encode())
        h.update(repr((x.shape, str(x.dtype), y.shape, str(y.dtype))).encode())
        h.update(np.ascontiguousarray(x).tobytes())
        h.update(np.ascontiguousarray(y).tobytes())
        return h.hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(self, key: str | None) -> Any | None:
        """The cached model, or ``None`` when absent or not intact (then it is retrained)."""
        if key is None:
            return None
        wpath, mpath = self._paths(key)
        try:
            meta = json.loads(mpath.read_text())
            blob = wpath.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
            return None
        try:
            from safetensors.torch import load as load_tensors

            from privguard.models.nets import build_model
            from privguard.models.torch_predictor import TorchPredictor

            arch = self.recipe.config.architecture(self.input_shape, self.recipe.n_classes)
            module = build_model(arch)
            module.load_state_dict(load_tensors(blob), strict=True)
        except Exception:  # a damaged entry of any kind is retrained, never trusted
            return None
        return TorchPredictor(module, self.input_shape, self.recipe.n_classes)

    def store(self, key: str | None, state: dict[str, Any]) -> None:
        if key is None:
            return
        from safetensors.torch import save as save_tensors

        blob = save_tensors(state)
        meta = {
            "key": key,
            "weights_sha256": hashlib.sha256(blob).hexdigest(),
            "input_shape": list(self.input_shape),
            "recipe": self.recipe_desc,
        }
        wpath, mpath = self._paths(key)
        atomic_write_bytes(wpath, blob)  # the JSON last: an entry without it is incomplete
        atomic_write_bytes(mpath, json.dumps(meta, indent=1).encode())
