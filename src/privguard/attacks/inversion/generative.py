"""The attacker's generative prior: a small autoencoder trained on the auxiliary pool.

Generative model inversion (Zhang et al., "The Secret Revealer: Generative Model-Inversion
Attacks Against Deep Neural Networks", CVPR 2020) searches the latent space of a generator
learned from public data of the same population, so that what it finds stays on the data
manifold instead of drifting into adversarial noise. The paper uses a GAN; privguard trains a
CPU-sized deterministic autoencoder instead, and turns it into a generator the way Ghosh et al.
("From Variational to Deterministic Autoencoders", ICLR 2020) do: the latent codes are kept
small and smooth during training (an L2 penalty on the codes and Gaussian noise added to them
before decoding), and a Gaussian fitted to the auxiliary records' codes afterwards ("ex-post
density estimation") is the prior the attacks sample from.

Attacks work in *whitened* coordinates ``u``: the code is ``z = mean + L u`` with ``L`` the
Cholesky factor of the codes' covariance, so ``u ~ N(0, I)`` samples the prior and ``||u||^2 / 2``
is its negative log-density (up to a constant) — the term that keeps a search where the decoder
was trained. The decoder's output is squashed into the data's bounds, so every decoded point is
a valid input.

The model is trained only on the auxiliary inputs, without labels (the realistic threat model of
GMI: the attacker has unlabelled public data), seeded and on one thread, so the same seed gives
the same prior. Flattened inputs make the same code serve images and tabular records.

Device. ``train_prior(..., device=)`` (the audit's ``--device cpu|cuda|auto``, via
``knowledge.compute.device``) trains the autoencoder and keeps the decoder and the latent
Gaussian on that device; the attacks' latent searches then run there too. Every random draw
(subsample, batch order, code noise) comes from the same CPU generator on any device, so a GPU
prior equals the CPU one up to floating-point rounding. Numpy in and out
(:meth:`GenerativePrior.decode_numpy`, :meth:`~GenerativePrior.encode`) stays on the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from privguard.attacks.base import Knowledge
from privguard.errors import DataError
from privguard.models.nets import seed_torch
from privguard.models.threads import single_thread
from privguard.training.device import resolve_device

Progress = Callable[[str, int, int], None]

# Gaussian noise on the codes during training, relative to their running scale: it makes the
# decoder smooth between the training codes, which a latent search (and NES) relies on.
LATENT_NOISE = 0.1
CODE_PENALTY = 1e-3
RIDGE = 1e-4


@dataclass(frozen=True)
class PriorConfig:
    """How the generative prior is trained.

    Attributes:
        latent_dim: size of the latent code.
        hidden: hidden layer widths of the encoder (the decoder mirrors them).
        epochs: passes over the auxiliary pool.
        batch_size: records per step.
        lr: Adam learning rate.
        max_records: train on a seeded subsample of at most this many auxiliary records (the
            prior needs the population's shape, not every record; keeps training to seconds).
        seed: seeds the subsample, the initialisation and the batch order.
    """

    latent_dim: int = 16
    hidden: tuple[int, ...] = (256,)
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    max_records: int = 4000
    seed: int = 0

    def key(self, n_aux: int, input_shape: tuple[int, ...]) -> str:
        """Cache key for :meth:`Knowledge.cached`: everything the trained model depends on."""
        shape = "x".join(map(str, input_shape))
        hidden = "-".join(map(str, self.hidden))
        return (
            f"inversion-prior/ae/d{self.latent_dim}/h{hidden}/e{self.epochs}/b{self.batch_size}/"
            f"lr{self.lr}/m{self.max_records}/s{self.seed}/n{n_aux}/{shape}"
        )


class _Autoencoder(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        width = n_in
        for h in hidden:
            enc += [nn.Linear(width, h), nn.ReLU()]
            width = h
        enc.append(nn.Linear(width, latent_dim))
        dec: list[nn.Module] = []
        width = latent_dim
        for h in reversed(hidden):
            dec += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec.append(nn.Linear(width, n_in))  # logits of the [0, 1]-scaled input
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)


@dataclass
class GenerativePrior:
    """A trained decoder with a Gaussian prior over its latent codes.

    Attributes:
        autoencoder: the trained encoder / decoder pair (eval mode, float32).
        mean_, chol_: the Gaussian fitted to the auxiliary codes (``z = mean_ + chol_ @ u``).
        input_shape: shape of one decoded record.
        low_, high_: input bounds, broadcast to ``input_shape`` (flattened).
        radius_: 99th percentile of the auxiliary records' whitened code norms: the shell
            beyond which the decoder saw no data.
        recon_mse_: mean squared reconstruction error on the auxiliary pool (in input units).
        seconds_: training time.
        n_train: auxiliary records trained on.
    """

    autoencoder: _Autoencoder
    mean_: torch.Tensor
    chol_: torch.Tensor
    input_shape: tuple[int, ...]
    low_: torch.Tensor
    high_: torch.Tensor
    radius_: float
    recon_mse_: float
    seconds_: float
    n_train: int
    config: PriorConfig = field(default_factory=PriorConfig)

    @property
    def latent_dim(self) -> int:
        return int(self.mean_.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the decoder and the latent Gaussian live (and latent searches run)."""
        return self.mean_.device

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Whitened codes ``(n, latent_dim)`` -> records ``(n, *input_shape)`` within the bounds
        (differentiable; call under :func:`single_thread`)."""
        z = self.mean_ + u @ self.chol_.T
        unit = torch.sigmoid(self.autoencoder.decoder(z))
        x = self.low_ + (self.high_ - self.low_) * unit
        return x.reshape(len(u), *self.input_shape)

    def decode_numpy(self, u: np.ndarray) -> np.ndarray:
        """:meth:`decode` for numpy arrays, float32 ``(n, *input_shape)``."""
        with single_thread(), torch.no_grad():
            u_t = torch.from_numpy(np.asarray(u, dtype=np.float32)).to(self.device)
            x = self.decode(u_t).cpu()
        return self._clip(x.numpy())

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Records -> whitened codes ``(n, latent_dim)``, float32."""
        with single_thread(), torch.no_grad():
            z = self.autoencoder.encoder(self._unit(x))
            u = torch.linalg.solve_triangular(self.chol_, (z - self.mean_).T, upper=False).T
        return u.cpu().numpy().astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` whitened codes drawn from the prior ``N(0, I)``, float32."""
        return rng.standard_normal((n, self.latent_dim)).astype(np.float32)

    def _unit(self, x: np.ndarray) -> torch.Tensor:
        flat = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        flat = flat.to(self.device)
        return ((flat - self.low_) / (self.high_ - self.low_)).clamp(0.0, 1.0)

    def _clip(self, x: np.ndarray) -> np.ndarray:
        low = self.low_.cpu().numpy().reshape(self.input_shape)
        high = self.high_.cpu().numpy().reshape(self.input_shape)
        return np.clip(x, low, high).astype(np.float32)


def _bounds(bounds, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    n_in = math.prod(input_shape)
    low = np.broadcast_to(np.asarray(bounds[0], dtype=np.float32), input_shape).reshape(n_in)
    high = np.broadcast_to(np.asarray(bounds[1], dtype=np.float32), input_shape).reshape(n_in)
    if not np.all(high > low):
        raise DataError(f"input bounds must have high > low everywhere, got {bounds}")
    return torch.from_numpy(low.copy()), torch.from_numpy(high.copy())


def train_prior(
    x: np.ndarray,
    bounds: tuple = (0.0, 1.0),
    config: PriorConfig | None = None,
    progress: Progress | None = None,
    device: str | torch.device | None = "cpu",
) -> GenerativePrior:
    """Train the autoencoder prior on auxiliary records ``x`` ``(n, *input_shape)`` (no labels)
    on ``device`` (``cpu``, ``cuda``, ``auto``; ``cuda`` without a GPU is a ConfigError).

    Example:
        >>> prior = train_prior(aux_x, (0.0, 1.0), PriorConfig(latent_dim=16, seed=0))
        >>> x = prior.decode_numpy(prior.sample(5, np.random.default_rng(0)))
    """
    config = config or PriorConfig()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    x = np.asarray(x, dtype=np.float32)
    if len(x) < 2 * config.latent_dim:
        raise DataError(
            f"the generative prior needs at least {2 * config.latent_dim} auxiliary records "
            f"(latent size {config.latent_dim}), got {len(x)}; give the attacker more auxiliary "
            "data or lower latent_dim"
        )
    if len(x) > config.max_records:
        keep = np.random.default_rng(config.seed).choice(len(x), config.max_records, replace=False)
        x = x[np.sort(keep)]
    input_shape = tuple(x.shape[1:])
    n_in = math.prod(input_shape)
    low, high = _bounds(bounds, input_shape)
    low, high = low.to(dev), high.to(dev)
    t0 = time.perf_counter()
    with single_thread():
        gen = seed_torch(config.seed)
        model = _Autoencoder(n_in, tuple(config.hidden), config.latent_dim).to(dev)
        data = torch.from_numpy(x.reshape(len(x), n_in)).to(dev)
        data = ((data - low) / (high - low)).clamp(0, 1)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
        bce = nn.BCEWithLogitsLoss()
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(len(data), generator=gen)
            for i in range(0, len(data), config.batch_size):
                xb = data[order[i : i + config.batch_size].to(dev)]
                z = model.encoder(xb)
                # correction=0: a last batch of one record has a (zero) spread, not NaN
                scale = z.detach().std(dim=0, keepdim=True, correction=0) + 1e-6
                # drawn on the CPU generator on every device: same stream, same prior
                noise = torch.randn(z.shape, generator=gen).to(dev) * scale * LATENT_NOISE
                logits = model.decoder(z + noise)
                loss = bce(logits, xb) + CODE_PENALTY * (z**2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if progress is not None:
                progress("training the generative prior", epoch + 1, config.epochs)
        model.eval()
        with torch.no_grad():
            z = model.encoder(data).double()
            recon = torch.sigmoid(model.decoder(z.float()))
            mse = float((((recon - data) * (high - low)) ** 2).mean())
            mean = z.mean(dim=0)
            cov = torch.cov((z - mean).T).reshape(config.latent_dim, config.latent_dim)
            eye = torch.eye(config.latent_dim, dtype=cov.dtype, device=dev)
            cov = cov + RIDGE * torch.trace(cov) / config.latent_dim * eye
            chol = torch.linalg.cholesky(cov)
            u = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False).T
            radius = float(torch.quantile(u.norm(dim=1), 0.99))
    return GenerativePrior(
        autoencoder=model,
        mean_=mean.float(),
        chol_=chol.float(),
        input_shape=input_shape,
        low_=low,
        high_=high,
        radius_=radius,
        recon_mse_=mse,
        seconds_=time.perf_counter() - t0,
        n_train=len(x),
        config=config,
    )


def shared_prior(
    knowledge: Knowledge, config: PriorConfig, progress: Progress | None = None
) -> GenerativePrior:
    """The prior for this audit, trained once on ``knowledge.aux_x`` on the audit's device
    (``knowledge.compute.device``) and shared by every attack that asks with the same
    settings."""
    aux = np.asarray(knowledge.aux_x)
    dev = resolve_device(getattr(knowledge.compute, "device", None) or "cpu")
    key = config.key(len(aux), tuple(aux.shape[1:])) + f"/{dev.type}"
    return knowledge.cached(
        key, lambda: train_prior(aux, knowledge.bounds, config, progress, device=dev)
    )
