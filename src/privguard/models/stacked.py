"""K copies of one small model trained at once, as one stacked model.

Reference-model attacks (LiRA, RMIA, shadow models) train K models with the target's recipe, each
on its own subset of one pool. For the small models privguard trains (``logreg``, ``mlp``, the
small ``cnn``) one model's step is too small to keep a core busy: a good part of its time is
Python and dispatch overhead. Training the K copies as one model — their parameters side by side
in one ``(K, P)`` buffer, one forward and backward pass and one optimiser step for all — does the
same arithmetic in K-times larger kernels (the technique of ``torch.func.stack_module_state``,
"model ensembling" in the PyTorch docs; used for cheap reference models by e.g. Zarifzadeh et
al., "Low-Cost High-Power Membership Inference Attacks", ICML 2024, whose code trains its
references in parallel batches).

How: for a ``[Flatten] Linear (ReLU Linear)*`` stack (``logreg``, ``mlp`` without dropout) the
forward and backward passes are written out as batched matmuls (:func:`_dense_backward`: the
textbook gradients of the mean cross-entropy, written straight into a ``(K, P)`` gradient
buffer, no autograd graph); anything else goes through ``torch.func.vmap`` over
``torch.func.functional_call`` and autograd. The update is PyTorch's fused Adam kernel over the
copies' rows (:class:`_Adam`). On a CPU the stacked MLP step is compute-bound (~43 GFLOP per
CPU-second for 2x256 MLPs, about three quarters of one core's matmul peak; docs/compute.md);
vmap'd convolutions were slower than one model after another on a CPU, so reference training
stacks the CNN only on a GPU (``reference_training.stacked_reason``).

Same recipe, copy by copy: copy k

- is initialised exactly as :func:`privguard.models.train.train_module` initialises a model with
  seed ``seeds[k]`` (``torch.manual_seed`` then the same constructor);
- draws its batches from its own generator seeded with ``seeds[k]``, one ``torch.randperm`` of
  *its own* training rows per epoch (as :class:`~privguard.training.loop.ShuffledBatches`), so
  it sees exactly the batches the sequential run would;
- takes Adam steps with its own step count (``torch.optim.Adam``'s update with L2
  ``weight_decay``, through the same fused kernel ``Adam(fused=True)`` uses); a copy whose epoch
  has fewer batches, or that has stopped early, is left out of the step (no moment update, no
  step count);
- has its own early-stopping state (best validation loss, best weights, patience counter).

Without dropout the result equals the sequential training's up to floating-point summation
order (batched kernels add in another order), so the two agree in distribution and, in practice,
nearly exactly; with dropout the masks come from another random stream
(``vmap(randomness="different")``), so copies agree in distribution only.

DP-SGD recipes are not stacked (their per-record clipping and accountant are Opacus'); callers
fall back to training one model at a time (:func:`stackable`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from privguard.errors import ConfigError
from privguard.models.nets import build_model
from privguard.training.device import resolve_device
from privguard.training.loop import MIN_IMPROVEMENT

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: records per stacked evaluation chunk (per copy)
EVAL_BATCH = 2048

__all__ = ["StackedResult", "stackable", "train_stacked"]


def stackable(recipe: Any) -> str | None:
    """``None`` when :func:`train_stacked` can train ``recipe``'s models, else why not (the
    reason the report notes give for falling back to one model at a time)."""
    from privguard.models.train import TrainConfig, TrainingRecipe

    if type(recipe) is not TrainingRecipe or not isinstance(recipe.config, TrainConfig):
        return "the recipe is not one of privguard's own PyTorch recipes"
    config = recipe.config
    if getattr(config, "dp_epsilon", None) is not None:
        return "DP-SGD recipes train one model at a time (Opacus' per-record clipping)"
    if config.model not in ("logreg", "mlp", "cnn"):
        return f"model kind {config.model!r} is not stackable"
    return None


class StackedResult:
    """K trained copies: ``params``/``buffers`` stacked on axis 0, the architecture, and each
    copy's epochs run."""

    def __init__(self, arch: dict, params: dict, buffers: dict, epochs_run: list[int]) -> None:
        self.arch = arch
        self.params = params
        self.buffers = buffers
        self.epochs_run = epochs_run
        self._base = build_model(arch).to("meta").eval()
        self._plan = _dense_plan(self._base)

    @property
    def n_models(self) -> int:
        return len(self.epochs_run)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Copy k's weights as a CPU ``state_dict`` of the (unstacked) architecture."""
        out = {name: p[k].detach().cpu().clone().contiguous() for name, p in self.params.items()}
        out.update({n: b[k].detach().cpu().clone().contiguous() for n, b in self.buffers.items()})
        return out

    def module(self, k: int) -> nn.Module:
        m = build_model(self.arch)
        m.load_state_dict(self.state_dict(k))
        return m.eval()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Every copy's float64 logits on the same records: ``(K, n, C)``."""
        device = next(iter(self.params.values())).device
        f = _forward(self._base, "same")
        out = []
        with torch.no_grad():
            for i in range(0, len(x), EVAL_BATCH):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + EVAL_BATCH], np.float32))
                xb = xb.to(device)
                if self._plan is not None:  # batched matmuls, as in training
                    xk = xb.unsqueeze(0).expand(self.n_models, *xb.shape)
                    z = _dense_forward(self._plan, self.params, xk)
                else:  # copy by copy: faster on a CPU than vmap'd convolutions (measured)
                    z = torch.stack(
                        [
                            f(
                                {n: v[k] for n, v in self.params.items()},
                                {n: v[k] for n, v in self.buffers.items()},
                                xb,
                            )
                            for k in range(self.n_models)
                        ]
                    )
                out.append(z.double().cpu().numpy())
        k, c = self.n_models, int(self.arch["n_classes"])
        return np.concatenate(out, axis=1) if out else np.zeros((k, 0, c))


def _dense_plan(base: nn.Module) -> list[str] | None:
    """The layers of a Flatten/Linear/ReLU stack as a plan for batched matmuls (faster than
    vmap over ``functional_call``); ``None`` for anything else (the cnn, dropout)."""
    plan = []
    for name, m in base.named_children():
        if isinstance(m, nn.Flatten):
            plan.append("flatten")
        elif isinstance(m, nn.Linear):
            plan.append(f"linear:{name}")
        elif isinstance(m, nn.ReLU):
            plan.append("relu")
        else:
            return None
    return plan


def _dense_forward(plan: list[str], p: dict[str, torch.Tensor], xb: torch.Tensor):
    h = xb
    for step in plan:
        if step == "flatten":
            h = h.reshape(h.shape[0], h.shape[1], -1)
        elif step == "relu":
            h = torch.relu(h)
        else:
            name = step.split(":", 1)[1]
            h = torch.baddbmm(
                p[f"{name}.bias"].unsqueeze(1), h, p[f"{name}.weight"].transpose(1, 2)
            )
    return h


def _dense_layers(plan: list[str]) -> list[str] | None:
    """The Linear layers of a dense plan when it is ``[flatten] linear (relu linear)*`` — the
    shape :func:`_dense_backward` differentiates — else ``None``."""
    body = plan[1:] if plan and plan[0] == "flatten" else plan
    if not body or len(body) % 2 == 0:
        return None
    for i, step in enumerate(body):
        if (i % 2 == 0) != step.startswith("linear:"):
            return None
        if i % 2 == 1 and step != "relu":
            return None
    return [step.split(":", 1)[1] for step in body[::2]]


def _dense_backward(
    layers: list[str],
    p: dict[str, torch.Tensor],
    g: dict[str, torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    weight: torch.Tensor,
    label_smoothing: float,
) -> None:
    """Forward and backward pass of K ReLU MLPs at once, the gradients written into ``g``.

    ``xb`` is ``(K, B, ...)``, ``yb`` ``(K, B)``; ``weight`` ``(K, B)`` is each row's weight in
    its copy's loss (1/batch size, 0 on padding), so copy k's gradient is that of its mean
    cross-entropy (with label smoothing) over its batch, as ``nn.CrossEntropyLoss`` gives.
    The gradients are the textbook ones (softmax minus target; ``dW = dAᵀ h``; ReLU passes
    where its output is positive, as PyTorch's ReLU backward), computed with batched matmuls
    straight into the (K, P) gradient buffer — no autograd graph, no per-step allocation of
    the parameters' gradients.
    """
    h = xb.reshape(xb.shape[0], xb.shape[1], -1)
    hs = [h]
    last = len(layers) - 1
    for i, name in enumerate(layers):
        a = torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), h, p[f"{name}.weight"].transpose(1, 2))
        h = torch.relu_(a) if i < last else a
        hs.append(h)
    n_classes = h.shape[-1]
    d = torch.softmax(h, dim=-1)
    d.scatter_add_(-1, yb.unsqueeze(-1), torch.full_like(d[..., :1], -(1.0 - label_smoothing)))
    if label_smoothing:
        d.sub_(label_smoothing / n_classes)
    d.mul_(weight.unsqueeze(-1))
    for i in range(last, -1, -1):
        name = layers[i]
        torch.bmm(d.transpose(1, 2), hs[i], out=g[f"{name}.weight"])
        torch.sum(d, dim=1, out=g[f"{name}.bias"])
        if i > 0:
            d = torch.bmm(d, p[f"{name}.weight"]).mul_(hs[i] > 0)


class _Adam:
    """``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient) applied to each copy's
    row of the flat parameter buffer through PyTorch's fused Adam kernel — one call per step
    for all copies, each row with its own step count."""

    def __init__(self, rows: dict[str, list[torch.Tensor]], lr: float, weight_decay: float):
        self.rows, self.lr, self.wd = rows, lr, weight_decay
        self.n = len(rows["p"])

    def step(self, active: np.ndarray, steps: torch.Tensor) -> None:
        r = self.rows
        if len(active) == self.n:
            steps.add_(1.0)
            lists = [r["p"], r["g"], r["m1"], r["m2"], [], r["t"]]
        else:  # copies with no batch at this step keep their weights, moments and count
            if not len(active):
                return
            sel = torch.from_numpy(active).to(steps.device)
            steps.index_add_(0, sel, torch.ones(len(active), device=steps.device))
            lists = [[r[key][k] for k in active] for key in ("p", "g", "m1", "m2")]
            lists[4:] = [[], [r["t"][k] for k in active]]
        torch._fused_adam_(
            *lists,
            lr=self.lr,
            beta1=ADAM_BETAS[0],
            beta2=ADAM_BETAS[1],
            weight_decay=self.wd,
            eps=ADAM_EPS,
            amsgrad=False,
            maximize=False,
        )


def _forward(base: nn.Module, randomness: str):
    def f(params, buffers, xb):
        return functional_call(base, (params, buffers), (xb,))

    return f


def train_stacked(
    config: Any,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    rows: Sequence[np.ndarray],
    seeds: Sequence[int],
    *,
    val_rows: Sequence[np.ndarray] | None = None,
    device: str | torch.device | None = "cpu",
) -> StackedResult:
    """Train ``len(rows)`` copies of ``config``'s model, copy k on ``x[rows[k]]`` (in that
    order) seeded with ``seeds[k]``, with early stopping on ``x[val_rows[k]]`` when the config
    asks for it. All copies share ``x``/``y`` (sent to ``device`` once).

    Returns a :class:`StackedResult` (eval mode; the best weights restored per copy under early
    stopping)."""
    from privguard.models.train import TrainingRecipe

    reason = stackable(TrainingRecipe(config, n_classes))
    if reason is not None:
        raise ConfigError(f"cannot stack this recipe: {reason}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    n_models = len(rows)
    if n_models == 0 or len(seeds) != n_models:
        raise ValueError("train_stacked needs one seed per copy and at least one copy")
    arch = config.architecture(x.shape[1:], n_classes)
    modules = []
    gens = []
    for s in seeds:
        torch.manual_seed(int(s))  # as seed_torch + build_model in train_module
        modules.append(build_model(arch))
        g = torch.Generator()
        g.manual_seed(int(s))
        gens.append(g)
    stacked, buffers = stack_module_state(modules)
    names = list(stacked)
    shapes = [tuple(stacked[n].shape[1:]) for n in names]
    sizes_p = [math.prod(sh) for sh in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes_p)]).astype(int)
    # one flat (K, P) leaf holds every parameter of every copy: Adam is then a handful of ops
    flat = torch.cat([stacked[n].detach().reshape(n_models, -1) for n in names], dim=1).to(dev)
    buffers = {k: v.detach().to(dev) for k, v in buffers.items()}

    def unflat(w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: w[:, offsets[i] : offsets[i + 1]].reshape((w.shape[0], *shapes[i]))
            for i, n in enumerate(names)
        }

    base = copy.deepcopy(modules[0]).to("meta")
    base.train()
    has_dropout = any(isinstance(m, nn.Dropout) for m in base.modules())
    dense = _dense_plan(base) if not has_dropout else None
    # the dense stack's gradients are written out by hand (_dense_backward); anything else
    # goes through autograd on views of ``flat``
    layers = _dense_layers(dense) if dense is not None else None
    flat.requires_grad_(layers is None)
    randomness = "different" if has_dropout else "error"
    if dense is not None:

        def f_train(p, b, xb):
            return _dense_forward(dense, p, xb)

        f_eval = f_train
    else:
        f_train = vmap(_forward(base, randomness), in_dims=(0, 0, 0), randomness=randomness)
        eval_base = copy.deepcopy(base).eval()
        f_eval = vmap(_forward(eval_base, "error"), in_dims=(0, 0, 0))

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(dev)
    rows_t = [torch.as_tensor(np.asarray(r, dtype=np.int64)) for r in rows]
    sizes = np.array([len(r) for r in rows_t], dtype=np.int64)
    bs = int(config.batch_size)
    n_batches = -(-sizes // bs)
    ls = float(config.label_smoothing)

    # the gradient of every copy's loss lands in one (K, P) buffer laid out like ``flat``
    grad = torch.zeros_like(flat, requires_grad=False)
    gviews = unflat(grad)
    # Adam state, per copy: torch's fused Adam kernel over the copies' rows (one contiguous
    # row of ``flat`` per copy), each row with its own step count, so a copy that sits a step
    # out keeps its moments and step count — exactly torch.optim.Adam run per copy
    m1 = torch.zeros_like(flat, requires_grad=False)
    m2 = torch.zeros_like(flat, requires_grad=False)
    steps = torch.zeros(n_models, dtype=torch.float32, device=dev)
    rows_of = {
        "p": list(flat.detach().unbind(0)),
        "g": list(grad.unbind(0)),
        "m1": list(m1.unbind(0)),
        "m2": list(m2.unbind(0)),
        "t": list(steps.unbind(0)),
    }
    adam = _Adam(rows_of, float(config.lr), float(config.weight_decay))

    validate = bool(config.early_stopping) and val_rows is not None
    if validate:
        vpad, vmask = _pad([torch.as_tensor(np.asarray(r, np.int64)) for r in val_rows], dev)
    best = torch.full((n_models,), math.inf, dtype=torch.float64)
    best_flat = None
    stale = np.zeros(n_models, dtype=int)
    running = np.ones(n_models, dtype=bool)
    epochs_run = [0] * n_models

    for _epoch in range(int(config.epochs)):
        if not running.any():
            break
        n_steps = int(n_batches[running].max())
        width = n_steps * bs
        # each copy's batch order for the epoch (its own generator, as ShuffledBatches), padded
        # to the longest epoch; ``weight`` is 1/batch-size on a copy's real rows, 0 on padding
        idx = torch.zeros((n_models, width), dtype=torch.int64)
        for k in np.flatnonzero(running):
            idx[k, : sizes[k]] = rows_t[k][torch.randperm(int(sizes[k]), generator=gens[k])]
        # rows copy k has at step i (0: it sits the step out), known here, not on the device
        counts = np.where(
            running[None, :],
            np.clip(sizes[None, :] - np.arange(n_steps)[:, None] * bs, 0, bs),
            0,
        )
        pos = np.arange(width) % bs
        weight = np.where(
            pos[None, :] < np.repeat(counts.T, bs, axis=1),
            1.0 / np.maximum(np.repeat(counts.T, bs, axis=1), 1),
            0.0,
        ).astype(np.float32)
        idx = idx.to(dev)
        weight = torch.from_numpy(weight).to(dev)
        for i in range(n_steps):
            sl = slice(i * bs, (i + 1) * bs)
            bi, bw = idx[:, sl], weight[:, sl]
            if layers is not None:
                _dense_backward(layers, unflat(flat), gviews, xt[bi], yt[bi], bw, ls)
            else:
                views = unflat(flat)
                z = f_train(views, buffers, xt[bi])
                ce = nn.functional.cross_entropy(
                    z.reshape(-1, z.shape[-1]),
                    yt[bi].reshape(-1),
                    reduction="none",
                    label_smoothing=ls,
                ).reshape(bi.shape)
                # gradients of the views, not of ``flat``: a view's backward would zero-fill a
                # whole (K, P) tensor per parameter
                gs = torch.autograd.grad((ce * bw).sum(), list(views.values()))
                with torch.no_grad():
                    torch.cat([v.reshape(n_models, -1) for v in gs], dim=1, out=grad)
            with torch.no_grad():
                adam.step(np.flatnonzero(counts[i] > 0), steps)
        for k in range(n_models):
            if running[k]:
                epochs_run[k] += 1
        if validate:
            with torch.no_grad():
                zv = f_eval(unflat(flat), buffers, xt[vpad])
                cev = nn.functional.cross_entropy(
                    zv.reshape(-1, zv.shape[-1]), yt[vpad].reshape(-1), reduction="none"
                ).reshape(vpad.shape)
                vloss = ((cev * vmask).sum(1) / vmask.sum(1).clamp(min=1.0)).double().cpu()
                if best_flat is None:
                    best_flat = flat.detach().clone()
                improved = running & (vloss.numpy() < best.numpy() - MIN_IMPROVEMENT)
                worse = running & ~improved
                if improved.any():
                    sel = torch.from_numpy(np.flatnonzero(improved))
                    best[sel] = vloss[sel]
                    best_flat[sel.to(dev)] = flat.detach()[sel.to(dev)]
                stale[improved] = 0
                stale[worse] += 1
                running &= ~(worse & (stale >= int(config.patience)))
    final = (best_flat if best_flat is not None else flat).detach()
    params = {k: v.contiguous() for k, v in unflat(final).items()}
    return StackedResult(arch, params, buffers, epochs_run)


def _pad(rows: list[torch.Tensor], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    idx = torch.zeros((len(rows), width), dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.float32)
    for k, r in enumerate(rows):
        idx[k, : len(r)] = r
        mask[k, : len(r)] = 1.0
    return idx.to(dev), mask.to(dev)
