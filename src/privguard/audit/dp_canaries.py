"""White-box Dirac gradient canaries for auditing a user's own DP-SGD loop in one run.

``privguard.dp_audit(train_fn, x, y, ..., canary="gradient")`` (``privguard dp-audit --train-fn
... --canary gradient``) calls ``train_fn(x, y, seed, canaries=c)`` with a
:class:`GradientCanaries` ``c``; the function attaches it to its DP optimiser, in one call for
Opacus::

    private = PrivacyEngine().make_private(module=..., optimizer=..., data_loader=...)
    canaries.attach(optimizer)  # the DPOptimizer make_private returned

or, for other DP code, adds the rows :meth:`GradientCanaries.step_rows` returns to each step's
per-record gradients **before** it clips them (the lower-level hook).

The canaries are the white-box ones of Nasr, Song, Thakurta, Papernot & Carlini ("Adversary
Instantiation", IEEE S&P 2021) and Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini &
Terzis ("Tight Auditing of Differentially Private Machine Learning", USENIX Security 2023),
audited in one run as in Steinke, Nasr & Jagielski ("Privacy Auditing with One (1) Training
Run", NeurIPS 2023, Section 7's white-box setting): canary i is a *Dirac* per-record gradient,
``magnitude`` on one parameter coordinate ``j_i`` and zero elsewhere, each canary on its own
coordinate, the coordinates being those the real records' gradients touch least (the
``m`` with the smallest summed absolute per-record gradient in the first step privguard sees;
ties broken at random). privguard's coin includes each canary with probability 1/2; an included
canary joins each step independently with the optimiser's sampling rate ``q`` (Poisson
sampling, as DP-SGD samples records). Its row goes in with the real records' rows before
clipping, so the user's clipping and noise act on it as on a record: correct DP-SGD clips it to
``C`` (the magnitude is ``MAGNITUDE_SCALE * C``, far above), a loop that forgets to clip lets
the whole magnitude through. The score of canary i is how far its coordinate fell over
training, ``theta_0[j_i] - theta_T[j_i]`` (gradient descent moves a coordinate against its
gradient), in float64.

What this tests: the clipping, noise and accounting of the user's optimiser step, on the
user's model, data and hyper-parameters. What it does not: the sampling of the user's records
(the canaries are sampled by privguard at ``q``, so a loop that shuffles instead of Poisson-
sampling its data is out of its reach) and anything before the per-record gradients (the
canaries skip the model's forward and backward pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from privguard.errors import ConfigError

MAGNITUDE_SCALE = 1000.0  # canary gradient = MAGNITUDE_SCALE * the clipping norm C


class GradientCanaries:
    """``m`` Dirac gradient canaries, ``included[i]`` saying which ones privguard's coin put in.

    Attach to an Opacus ``DPOptimizer`` with :meth:`attach`, or drive by hand: :meth:`bind` to
    the trainable parameters, then :meth:`step_rows` once per optimiser step. After training
    :meth:`scores` reads each canary's coordinate off the same parameters.
    """

    def __init__(
        self,
        m: int,
        included: np.ndarray,
        *,
        n_records: int,
        seed: int,
        magnitude_scale: float = MAGNITUDE_SCALE,
    ) -> None:
        self.m = int(m)
        self.included = np.asarray(included, dtype=bool)
        if self.included.shape != (self.m,):
            raise ConfigError(f"included must hold one flag per canary ({self.m})")
        self.n_records = int(n_records)
        self.magnitude_scale = float(magnitude_scale)
        self._rng = np.random.default_rng(seed)
        self.params: list[torch.Tensor] | None = None
        self.initial: list[np.ndarray] = []
        self.sample_rate: float | None = None
        self.magnitude: float | None = None
        self.coords: np.ndarray | None = None  # flat coordinate of each canary
        self.active_coords = 0  # chosen coordinates the first step's real gradients touched
        self.steps = 0  # optimiser steps that drew canaries (step_rows calls)
        self.rows_added = 0  # canary rows handed out over all steps
        self._offsets: np.ndarray | None = None

    # --- the one-call Opacus attachment ---------------------------------------------------

    def attach(self, optimizer: Any, *, sample_rate: float | None = None) -> Any:
        """Put the canaries into every step of an Opacus ``DPOptimizer`` (the optimiser that
        ``PrivacyEngine.make_private`` returns, per-record gradients in ``p.grad_sample``:
        the ``hooks``, ``functorch`` or ``ew`` modes). Before each real step (not one that
        gradient accumulation skips) the canary rows are appended to every parameter's
        ``grad_sample``; the optimiser's own ``clip_and_accumulate``, ``add_noise`` and
        ``scale_grad`` then run as always, on them too. ``sample_rate`` defaults to the
        optimiser's ``expected_batch_size`` over the records privguard handed the function.
        Returns the optimiser."""
        cls = type(optimizer)
        if not hasattr(cls, "clip_and_accumulate") or not hasattr(optimizer, "expected_batch_size"):
            raise ConfigError(
                "canaries.attach takes the Opacus DPOptimizer that make_private returns; for "
                "other DP code add canaries.step_rows(per_record_grads) to each step's "
                "per-record gradients before clipping"
            )
        if not hasattr(cls, "grad_samples") or "FastGradientClipping" in cls.__name__:
            raise ConfigError(
                "gradient canaries need per-record gradients (p.grad_sample): use Opacus' "
                "grad_sample_mode='hooks' (ghost clipping never materialises them)"
            )
        if sample_rate is None:
            batch = optimizer.expected_batch_size
            if not batch:
                raise ConfigError(
                    "the optimiser has no expected_batch_size: pass "
                    "canaries.attach(optimizer, sample_rate=q)"
                )
            sample_rate = batch / self.n_records
        self.bind(optimizer.params, sample_rate=sample_rate, max_grad_norm=optimizer.max_grad_norm)
        original = optimizer.pre_step  # the bound method; it looks up clip/noise on the class
        canaries = self

        def pre_step(closure: Any = None) -> Any:
            grads = optimizer.grad_samples
            if grads and not optimizer._check_skip_next_step(pop_next=False):
                rows = canaries.step_rows(grads)
                for p, g, r in zip(optimizer.params, grads, rows, strict=True):
                    p.grad_sample = torch.cat([g, r.to(g.device, g.dtype)])
            return original(closure)

        optimizer.pre_step = pre_step  # the instance's: DPOptimizer.step calls self.pre_step
        return optimizer

    # --- the lower-level hook ---------------------------------------------------------------

    def bind(
        self,
        params: Sequence[torch.Tensor],
        *,
        sample_rate: float,
        max_grad_norm: float,
        magnitude: float | None = None,
    ) -> None:
        """Tie the canaries to the trainable ``params`` (the tensors the optimiser updates, in
        the order of the per-record gradients that :meth:`step_rows` gets), the Poisson rate
        ``sample_rate`` of one record per step and the clipping norm ``max_grad_norm``; the
        canary gradient is ``magnitude`` (default ``MAGNITUDE_SCALE * max_grad_norm``).
        Records the parameters' initial values."""
        params = [p for p in params if p.requires_grad]
        total = sum(p.numel() for p in params)
        if self.m > total:
            raise ConfigError(
                f"{self.m} gradient canaries need {self.m} parameter coordinates, one each, but "
                f"the model has {total}: pass --canaries {total} or fewer"
            )
        if not (0 < sample_rate <= 1):
            raise ConfigError(f"the canaries' sample rate must lie in (0, 1], not {sample_rate}")
        if not (max_grad_norm > 0 and np.isfinite(max_grad_norm)):
            raise ConfigError(f"the clipping norm must be a positive number, not {max_grad_norm}")
        self.params = list(params)
        self.sample_rate = float(sample_rate)
        self.magnitude = float(
            magnitude if magnitude is not None else self.magnitude_scale * max_grad_norm
        )
        self.initial = [p.detach().to("cpu", torch.float64).numpy().ravel().copy() for p in params]
        self._offsets = np.cumsum([0] + [p.numel() for p in params])

    def step_rows(self, per_record_grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The canary rows for one optimiser step: one tensor per bound parameter, shaped
        ``(k, *p.shape)`` for the ``k`` canaries Poisson-sampled into this step (``k`` may be
        0); row ``r`` is zero except ``magnitude`` at its canary's coordinate. Append them to
        the step's real per-record gradients (``per_record_grads``, one ``(b, *p.shape)``
        tensor per parameter) before clipping. The first call picks the canaries' coordinates
        from those real gradients: the ``m`` they touch least."""
        if self.params is None or self._offsets is None:
            raise ConfigError("bind the canaries to the parameters first (or use attach)")
        if len(per_record_grads) != len(self.params):
            raise ConfigError(
                f"step_rows got {len(per_record_grads)} per-record gradients for "
                f"{len(self.params)} bound parameters"
            )
        if self.coords is None:
            self._choose(per_record_grads)
        assert self.coords is not None and self.sample_rate is not None
        self.steps += 1
        drawn = np.flatnonzero(self.included & (self._rng.random(self.m) < self.sample_rate))
        self.rows_added += len(drawn)
        rows = [torch.zeros((len(drawn), *p.shape), dtype=p.dtype) for p in self.params]
        coords = self.coords[drawn]
        which = np.searchsorted(self._offsets, coords, side="right") - 1
        for r, (c, w) in enumerate(zip(coords, which, strict=True)):
            rows[w].view(len(drawn), -1)[r, c - self._offsets[w]] = self.magnitude
        return rows

    def _choose(self, per_record_grads: Sequence[torch.Tensor]) -> None:
        activity = np.concatenate(
            [
                g.detach().abs().sum(dim=0).to("cpu", torch.float64).numpy().ravel()
                if len(g)
                else np.zeros(p.numel())
                for g, p in zip(per_record_grads, self.params or [], strict=True)
            ]
        )
        if len(activity) != self._offsets[-1]:  # type: ignore[index]
            raise ConfigError(
                "the per-record gradients do not match the bound parameters' shapes: pass one "
                "(batch, *p.shape) tensor per parameter"
            )
        tie = self._rng.random(len(activity))
        order = np.lexsort((tie, activity))  # least touched first, ties at random
        self.coords = order[: self.m]
        self.active_coords = int(np.count_nonzero(activity[self.coords]))

    # --- after training ---------------------------------------------------------------------

    @property
    def seen(self) -> bool:
        """Whether any optimiser step drew canaries (the training used them)."""
        return self.steps > 0

    def scores(self) -> np.ndarray:
        """``theta_0[j_i] - theta_T[j_i]`` for each canary, in float64 (the parameters as they
        are now, read off the bound tensors)."""
        if self.params is None or self.coords is None or self._offsets is None:
            raise ConfigError("the canaries were never used in a training step")
        final = np.concatenate(
            [p.detach().to("cpu", torch.float64).numpy().ravel() for p in self.params]
        )
        start = np.concatenate(self.initial)
        return start[self.coords] - final[self.coords]

    def stats(self) -> dict[str, Any]:
        return {
            "magnitude": self.magnitude,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "rows_added": self.rows_added,
            "coordinates": int(self._offsets[-1]) if self._offsets is not None else None,
            "active_coordinates": self.active_coords,
        }
