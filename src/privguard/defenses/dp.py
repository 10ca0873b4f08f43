"""Differentially private training with DP-SGD, through Opacus.

DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with
Differential Privacy", ACM CCS 2016) clips every record's gradient to norm ``C``
(``max_grad_norm``), adds Gaussian noise of standard deviation ``sigma * C`` to their sum and
samples each batch by Poisson sampling (every record independently, with probability ``q``).
An accountant turns ``(q, sigma, steps)`` into the ``(epsilon, delta)`` guarantee. privguard does
none of that itself: Opacus (Yousefpour et al., "Opacus: User-Friendly Differential Privacy
Library in PyTorch", 2021) is the engine, and this module only

- checks the request (``epsilon > 0``, ``0 < delta < 1/n``; default ``delta = 1/(10 n)``) and
  the model (every layer must be one Opacus can train privately; BatchNorm, for one, mixes
  records within a batch and cannot be);
- derives the noise multiplier from the target epsilon for the *planned* number of steps
  (epochs x batches per epoch) with the chosen accountant. The RDP accountant (Mironov, "Renyi
  Differential Privacy", CSF 2017; subsampled Gaussian by Mironov, Talwar and Zhang 2019) is the
  default: Opacus' PRV accountant is tighter but has known numerical failures on long runs;
- trains with Opacus' Poisson-sampling data loader and its ghost-clipping engine (the same
  per-record clipping, computed without materialising per-record gradients: about 3x the time
  of non-private training instead of 10-15x on 2 small cores, see docs/benchmarks.md);
- returns the *achieved* guarantee (the accountant's epsilon after the steps actually taken:
  early stopping spends less), which model.json records and the report shows.

Example:
    >>> config = privguard.TrainConfig(model="mlp", epochs=30, lr=3e-3, dp_epsilon=1.0)
    >>> target = privguard.train("digits", config)
    >>> target.metrics["privacy"]["epsilon"]     # <= 1.0
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from privguard.errors import ConfigError

if TYPE_CHECKING:
    from privguard.models.train import TrainConfig

Progress = Callable[[str, int, int], None]

ACCOUNTANTS = ("rdp", "prv", "gdp")
DEFAULT_ACCOUNTANT = "rdp"
DEFAULT_MAX_GRAD_NORM = 1.0
EPSILON_TOLERANCE = 0.01  # the achieved epsilon lies in [target - this, target]
# Opacus' ghost clipping: per-record gradient norms without per-record gradients.
GRAD_SAMPLE_MODE = "ghost"


def default_delta(n: int) -> float:
    """``1 / (10 n)`` for ``n`` training records: well below ``1/n``, the level at which an
    (epsilon, delta) guarantee allows publishing one record outright."""
    return 1.0 / (10.0 * n)


def resolve_delta(delta: float | None, n: int) -> float:
    """The delta to use for ``n`` records: ``delta`` after checking it, or the default."""
    if n < 1:
        raise ConfigError("differentially private training needs at least one training record")
    if delta is None:
        return default_delta(n)
    if not 0 < delta < 1.0 / n:
        raise ConfigError(
            f"--dp-delta {delta:g} must lie strictly between 0 and 1/n = {1.0 / n:.3g} for the "
            f"{n} training records (a delta of 1/n lets the mechanism publish a record "
            f"outright); omit it for the default 1/(10 n) = {default_delta(n):.3g}"
        )
    return float(delta)


def check_epsilon(epsilon: float) -> float:
    """``epsilon`` as a float, or a ConfigError when it is not a positive number."""
    if epsilon is None or not math.isfinite(epsilon) or epsilon <= 0:
        raise ConfigError(
            f"--dp-epsilon {epsilon} is not a privacy target: pass a positive epsilon such as "
            "1 or 8 (smaller is more private), or drop --dp-epsilon to train without DP"
        )
    return float(epsilon)


def check_dp_settings(epsilon: float | None, delta: float | None, max_grad_norm: float) -> None:
    """What can be checked before the number of training records is known."""
    if epsilon is None:
        raise ConfigError("--dp-delta needs --dp-epsilon: pass the privacy target epsilon too")
    check_epsilon(epsilon)
    if delta is not None and not 0 < delta < 1:
        raise ConfigError(
            f"--dp-delta {delta:g} must lie strictly between 0 and 1/n for n training records; "
            "omit it for the default 1/(10 n)"
        )
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(
            f"--max-grad-norm {max_grad_norm:g} must be a positive clipping norm such as 1.0"
        )


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(
            f"unknown privacy accountant {accountant!r}; use one of: {', '.join(ACCOUNTANTS)}"
        )
    return accountant


def check_private_module(module: nn.Module) -> None:
    """Raise a ConfigError naming the layers Opacus cannot train privately.

    Those are the layers Opacus' ``ModuleValidator`` rejects: BatchNorm, which mixes the records
    of a batch so that no record's influence can be bounded; LSTM and attention layers, which
    need Opacus' DP versions; InstanceNorm tracking running statistics. (Any other trainable
    layer gets per-record gradients from Opacus, through functorch when it has no rule of its
    own.)
    """
    from opacus.validators import ModuleValidator

    problems: list[str] = []
    for name, sub in module.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        if validator is not None and validator(sub):
            kind = type(sub).__name__
            fix = (
                "use GroupNorm or drop it"
                if "BatchNorm" in kind
                else "replace it with the DP layer Opacus offers "
                "(opacus.validators.ModuleValidator.fix shows which) or drop it"
            )
            problems.append(f"layer {name or '(model)'!r} ({kind}): {fix}")
    if problems:
        raise ConfigError(
            "Opacus cannot train this model with differential privacy: " + "; ".join(problems)
        )


def noise_for(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """The smallest noise multiplier (to Opacus' tolerance) for which ``steps`` Poisson-sampled
    Gaussian steps at ``sample_rate`` spend at most ``epsilon`` at ``delta``."""
    from opacus.accountants.utils import get_noise_multiplier

    check_epsilon(epsilon)
    check_accountant(accountant)
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=EPSILON_TOLERANCE,
            )
        )
    except ValueError as e:
        raise ConfigError(
            f"no noise level reaches epsilon {epsilon:g} at delta {delta:.3g} over {steps} steps "
            f"({e}); raise --dp-epsilon or train fewer epochs"
        ) from None


def epsilon_for(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """The accountant's epsilon after ``steps`` Poisson-sampled Gaussian steps."""
    from opacus.accountants import create_accountant

    acc = create_accountant(check_accountant(accountant))
    if steps == 0:
        return 0.0
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


@dataclass
class PrivacySpent:
    """The guarantee a DP-SGD run achieved, as model.json records it.

    ``epsilon`` is the accountant's figure for the steps actually taken (at most
    ``target_epsilon``); ``sample_rate`` is the Poisson sampling probability of each record per
    step (1 / batches per epoch); ``noise_multiplier`` is sigma (noise std / ``max_grad_norm``).
    """

    epsilon: float
    delta: float
    target_epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    planned_steps: int
    max_grad_norm: float
    accountant: str
    n_records: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("epsilon", "noise_multiplier", "sample_rate"):
            d[k] = round(float(d[k]), 6)
        return d


def train_private(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int | None = None,
    accountant: str = DEFAULT_ACCOUNTANT,
    grad_sample_mode: str = GRAD_SAMPLE_MODE,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config``'s model on ``(x, y)`` with DP-SGD at ``config.dp_epsilon``.

    Same optimiser (Adam), loss, label smoothing, weight decay and early stopping as the
    non-private path; batches are Poisson-sampled with expected size ``config.batch_size``.
    Returns the module (eval mode, no Opacus hooks left on it) and a training log whose
    ``privacy`` entry is :meth:`PrivacySpent.to_dict`. ``grad_sample_mode`` is Opacus' engine
    for the per-record clipping: ``"ghost"`` (default, fastest here) or ``"hooks"`` (Opacus'
    classic per-record gradients); both clip and noise identically.
    """
    from opacus import PrivacyEngine

    from privguard.models.nets import build_model, seed_torch
    from privguard.models.threads import single_thread

    seed = config.seed if seed is None else seed
    n = len(x)
    epsilon = check_epsilon(config.dp_epsilon)
    delta = resolve_delta(config.dp_delta, n)
    check_accountant(accountant)
    clip = float(config.max_grad_norm)
    arch = config.architecture(x.shape[1:], n_classes)
    with single_thread(), warnings.catch_warnings():
        # Opacus warns that its default RNG is not cryptographically secure (seeded runs are
        # the point here) and about optimiser details it handles itself; PyTorch warns that
        # Opacus' backward hooks fire on a first layer whose input needs no gradient.
        warnings.filterwarnings("ignore", module=r"opacus(\.|$)")
        warnings.filterwarnings("ignore", message=".*[Ss]ecure.*")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        gen = seed_torch(seed)
        noise_gen = torch.Generator().manual_seed(seed + 1_000_003)
        module = build_model(arch)
        module.train()
        check_private_module(module)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=min(config.batch_size, n),
            generator=gen,
        )
        sample_rate = 1.0 / len(loader)
        planned = config.epochs * len(loader)
        sigma = noise_for(epsilon, delta, sample_rate, planned, accountant)
        opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        engine = PrivacyEngine(accountant=accountant)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        made = engine.make_private(
            module=module,
            optimizer=opt,
            criterion=loss_fn,
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=clip,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
            noise_generator=noise_gen,
        )
        if len(made) == 4:  # ghost clipping wraps the loss too
            private, dp_opt, criterion, dp_loader = made
        else:
            (private, dp_opt, dp_loader), criterion = made, loss_fn
        inner = private._module
        use_val = config.early_stopping and x_val is not None and len(x_val) > 0
        best, best_state, stale, epochs_run = float("inf"), None, 0, 0
        for epoch in range(config.epochs):
            private.train()
            for xb, yb in dp_loader:
                # An empty Poisson batch still takes its (noise-only) step, as the accountant
                # assumes every step happens.
                dp_opt.zero_grad(set_to_none=True)
                criterion(private(xb), yb).backward()
                dp_opt.step()
            epochs_run = epoch + 1
            if progress is not None:
                progress("training (DP-SGD)", epochs_run, config.epochs)
            if use_val:
                inner.eval()
                with torch.no_grad():
                    v = nn.functional.cross_entropy(
                        inner(torch.from_numpy(x_val)), torch.from_numpy(y_val)
                    ).item()
                if v < best - 1e-6:
                    best, best_state, stale = v, copy.deepcopy(inner.state_dict()), 0
                else:
                    stale += 1
                    if stale >= config.patience:
                        break
        steps = len(engine.accountant.history) and sum(h[2] for h in engine.accountant.history)
        spent = PrivacySpent(
            epsilon=float(engine.accountant.get_epsilon(delta)) if steps else 0.0,
            delta=delta,
            target_epsilon=epsilon,
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=int(steps),
            planned_steps=planned,
            max_grad_norm=clip,
            accountant=accountant,
            n_records=n,
        )
        # A fresh module with the trained weights: nothing of Opacus (hooks, per-record
        # attributes) stays attached to what is saved and queried.
        clean = build_model(arch)
        clean.load_state_dict(best_state if best_state is not None else inner.state_dict())
    clean.eval()
    log: dict[str, Any] = {
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < config.epochs,
        "privacy": spent.to_dict(),
    }
    if use_val:
        log["best_validation_loss"] = round(best, 6)
    return clean, log
