"""Differentially private training with DP-SGD, through Opacus, as a wrapper around the one
training loop (:func:`privguard.training.loop.fit`).

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
- wraps the module, optimiser and data loader the Opacus way (:func:`make_private`): Poisson
  sampling, seeded noise, and by default Opacus' ghost-clipping engine (the same per-record
  clipping, computed without materialising per-record gradients: about 3x the time of
  non-private training instead of 10-15x on 2 small cores, see docs/benchmarks.md);
- returns the *achieved* guarantee (:meth:`PrivateTraining.spent`: the accountant's epsilon
  after the steps actually taken; early stopping spends less), which model.json records as
  ``metrics.privacy`` and the report shows.

Example:
    >>> with quiet_opacus():
    ...     private = make_private(model, optimizer, loader, epsilon=1.0, delta=1e-5, epochs=30,
    ...                            criterion=nn.CrossEntropyLoss(), noise_seed=0)
    ...     fit(private.module, private.optimizer, private.batches,
    ...         lambda m, b: private.criterion(m(b[0]), b[1]), epochs=30, weights=private.inner)
    ...     private.spent().epsilon                # <= 1.0
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from privguard.errors import ConfigError

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


def check_training_config(
    checks: list[tuple[bool, str]],
    epsilon: float | None,
    delta: float | None,
    max_grad_norm: float,
) -> None:
    """A training config's own ``(ok, message)`` checks (the first failing one is the
    ConfigError), then :func:`check_dp_settings` when either DP field is set."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if epsilon is not None or delta is not None:
        check_dp_settings(epsilon, delta, max_grad_norm)


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
    """The guarantee a DP-SGD run achieved: model.json's ``metrics.privacy``, for classifiers
    and text models alike.

    ``epsilon`` is the accountant's figure for the steps actually taken (at most
    ``target_epsilon``); ``sample_rate`` is the Poisson sampling probability of each record per
    step (1 / batches per epoch); ``noise_multiplier`` is sigma (noise std / ``max_grad_norm``);
    ``unit`` is what one of the ``n_records`` is (``record``, or ``corpus line`` for a text
    model): the granularity the guarantee protects.
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
    unit: str = "record"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("epsilon", "noise_multiplier", "sample_rate"):
            d[k] = round(float(d[k]), 6)
        return d


# Seeds the DP noise apart from the model's initialisation and the batch sampling.
NOISE_SEED_OFFSET = 1_000_003


@contextlib.contextmanager
def quiet_opacus() -> Iterator[None]:
    """Silence what Opacus and PyTorch say about a seeded DP-SGD run.

    Opacus warns that its default RNG is not cryptographically secure (seeded runs are the point
    here) and about optimiser details it handles itself; PyTorch warns that Opacus' backward
    hooks fire on a first layer whose input needs no gradient (an embedding's integer ids)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"opacus(\.|$)")
        warnings.filterwarnings("ignore", message=".*[Ss]ecure.*")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


@dataclass
class PrivateTraining:
    """A module, optimiser and data loader wrapped by Opacus for DP-SGD.

    Hand ``module``, ``optimizer`` and ``batches`` to the training loop (``weights=inner``), and
    compute the loss with ``criterion`` when one was wrapped (ghost clipping needs its own loss
    object); then :meth:`spent` says what the run cost and :meth:`release` takes Opacus off the
    module.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    batches: Any
    criterion: Any
    inner: nn.Module
    engine: Any
    target_epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    max_grad_norm: float
    accountant: str
    n_records: int
    unit: str

    @property
    def steps(self) -> int:
        """Noisy steps taken so far (every optimiser step, an empty batch's included)."""
        return int(sum(h[2] for h in self.engine.accountant.history))

    def spent(self) -> PrivacySpent:
        """The guarantee achieved by the steps taken so far."""
        steps = self.steps
        return PrivacySpent(
            epsilon=float(self.engine.accountant.get_epsilon(self.delta)) if steps else 0.0,
            delta=self.delta,
            target_epsilon=self.target_epsilon,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=steps,
            planned_steps=self.planned_steps,
            max_grad_norm=self.max_grad_norm,
            accountant=self.accountant,
            n_records=self.n_records,
            unit=self.unit,
        )

    def release(self) -> nn.Module:
        """Remove Opacus' hooks and per-record attributes; returns the plain trained module."""
        close = getattr(self.module, "_close", None)
        if close is not None:
            close()
        return self.inner


def make_private(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    *,
    epsilon: float,
    delta: float | None,
    epochs: int,
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM,
    accountant: str = DEFAULT_ACCOUNTANT,
    criterion: nn.Module | None = None,
    grad_sample_mode: str = GRAD_SAMPLE_MODE,
    noise_seed: int = 0,
    unit: str = "record",
) -> PrivateTraining:
    """Wrap ``module``, ``optimizer`` and ``loader`` for DP-SGD at ``(epsilon, delta)`` over
    ``epochs`` passes: Opacus' ``PrivacyEngine.make_private`` with Poisson sampling (expected
    batch size that of ``loader``), the noise multiplier solved for the planned steps, the noise
    drawn from a generator seeded with ``noise_seed + NOISE_SEED_OFFSET``.

    ``delta`` is checked against the ``n = len(loader.dataset)`` records (``None``: ``1/(10 n)``).
    ``grad_sample_mode`` is Opacus' per-record clipping engine: ``"ghost"`` (fastest here; needs
    ``criterion``, which comes back wrapped) or ``"hooks"`` (Opacus' classic per-record
    gradients; any loss); both clip and noise identically.

    Raises:
        ConfigError: a bad epsilon, delta or accountant, a layer Opacus cannot train, or no noise
            level that reaches epsilon.
    """
    from opacus import PrivacyEngine

    n = len(loader.dataset)  # type: ignore[arg-type]
    target = check_epsilon(epsilon)
    delta = resolve_delta(delta, n)
    check_accountant(accountant)
    if grad_sample_mode == "ghost" and criterion is None:
        raise ConfigError("ghost clipping needs the loss (criterion) to wrap")
    clip = float(max_grad_norm)
    module.train()
    check_private_module(module)
    sample_rate = 1.0 / len(loader)
    planned = epochs * len(loader)
    sigma = noise_for(target, delta, sample_rate, planned, accountant)
    engine = PrivacyEngine(accountant=accountant)
    made = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=clip,
        poisson_sampling=True,
        grad_sample_mode=grad_sample_mode,
        noise_generator=torch.Generator().manual_seed(noise_seed + NOISE_SEED_OFFSET),
        **({"criterion": criterion} if criterion is not None else {}),
    )
    if len(made) == 4:  # ghost clipping wraps the loss too
        private, dp_opt, wrapped, dp_loader = made
    else:
        (private, dp_opt, dp_loader), wrapped = made, criterion
    return PrivateTraining(
        module=private,
        optimizer=dp_opt,
        batches=dp_loader,
        criterion=wrapped,
        inner=private._module,
        engine=engine,
        target_epsilon=target,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        planned_steps=planned,
        max_grad_norm=clip,
        accountant=accountant,
        n_records=n,
        unit=unit,
    )


LEGACY_TEXT_KEYS = {
    "epsilon_spent": "epsilon",
    "epsilon_target": "target_epsilon",
    "delta": "delta",
    "noise_multiplier": "noise_multiplier",
    "sample_rate": "sample_rate",
    "max_grad_norm": "max_grad_norm",
    "accountant": "accountant",
    "unit": "unit",
}


def privacy_from_legacy(dp: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.privacy`` record for a text model saved before it had one: such models
    recorded ``metrics.dp`` with ``epsilon_spent`` / ``epsilon_target`` (no step count)."""
    return {new: dp[old] for old, new in LEGACY_TEXT_KEYS.items() if old in dp}
