"""Model inversion in the latent space of the attacker's generative prior (GMI).

Zhang, Jia, Pei, Wang, Li, Song, "The Secret Revealer: Generative Model-Inversion Attacks
Against Deep Neural Networks", CVPR 2020. Black-box gradient estimates: Ilyas, Engstrom,
Athalye, Lin, "Black-box Adversarial Attacks with Limited Queries and Information", ICML 2018
(NES with antithetic sampling).

Threat model. The attacker holds the target model's query interface and unlabelled public data
from the same population as the training set (here the auxiliary pool, disjoint from the
model's members and non-members). From that public data it learns a generative model of what
records look like (:mod:`privguard.attacks.inversion.generative`), then asks the target which
generated record it finds most typical of a class: for each class it searches the generator's
latent space for a code whose decoded record the target assigns to the class with the highest
confidence, while the prior keeps the code where the generator saw data. A reconstruction is
therefore a natural-looking record that the *model* considers representative of the class — for
a face recogniser, a face the model takes for a given person. Searching pixels directly (MI-Face)
tends to return adversarial noise that the target accepts but no person would; the prior removes
that failure. Whether the result reveals *training records* rather than the class is a separate
question, which the auditor answers by comparing reconstructions with members and non-members
(``member_closeness``).

The prior term. Codes live in the whitened latent space of the generator, where the auxiliary
codes are roughly ``N(0, I)``; every search step is projected back into the ball that holds 99%
of the auxiliary codes, outside which the decoder never saw data. An additional Gaussian pull
``prior_weight * ||u||^2 / 2`` (the form a VAE prior would give) is available but off by default:
in 16 dimensions typical codes lie on a shell of radius ~4, not at the origin, and pulling towards
the origin blurs reconstructions into the average of several classes (measured on a mnist-5k MLP:
a pixel 5-NN evaluator agreed on 0.8–1.0 of the classes with weights 0.01–0.05, on all of them
without the pull).

Two variants:

- ``prior-inversion`` (``whitebox``): the oracle returns the gradient of the cross-entropy with
  respect to the input; it is chained through the decoder by autograd to get the gradient with
  respect to the latent code, and Adam descends it from several random starts per class. The
  start with the best final objective (the oracle's log-confidence, minus the optional pull) is
  kept.
- ``prior-inversion-blackbox`` (``probs``): no gradients. A shared pool of prior samples is
  queried once; each class starts from the samples the target is most confident about, and NES
  estimates the gradient of the log-confidence from antithetic pairs of queries around the
  current code. The finite-difference radius adapts to the output resolution: when most pairs
  return identical confidences (rounded or saturated outputs) it grows, so 2-decimal rounding
  does not stall the search. Rounded outputs also tie many points at 1.00, so the point kept is
  not the best single sample but the search centre whose whole neighbourhood scored best (a point
  deep inside the class), confirmed by one query. Much of the leak comes from the prior and the
  target's own ranking: on mnist-5k targets the pool alone (20 queries per class) was already
  recognised by both evaluators for 0.8–1.0 of the classes; the search lifts that to 0.9–1.0
  under 2-decimal rounding and to 1.0 with exact confidences.

Device: the generative prior trains on the audit's ``--device`` (``knowledge.compute.device``;
:mod:`privguard.attacks.inversion.generative`) and the white-box latent search (codes, Adam, the
decoder's backward pass) runs there too; only the oracle's queries cross to the host. The
black-box search is numpy NES around decoder calls, which run on the same device.

Queries: white-box spends ``starts`` queries per step per class (one gradient per record) and
one final confidence query per start; black-box spends at most ``queries_per_class`` per class,
including its share of the pool. A spent budget ends the search with the best point so far and a
note, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from privguard.attacks.base import Attack, InversionGuesses, Knowledge, Progress
from privguard.attacks.inversion.generative import GenerativePrior, PriorConfig, shared_prior
from privguard.attacks.registry import register
from privguard.errors import BudgetExhaustedError, ConfigError
from privguard.models.threads import single_thread
from privguard.oracle import Access, Oracle

PAPER = (
    "Zhang et al., The Secret Revealer: Generative Model-Inversion Attacks Against Deep Neural "
    "Networks, CVPR 2020"
)
LOG_FLOOR = 1e-12


def log_confidence(p: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """log p_c per row in float64, exact near 1 (log1p of the other classes' mass) and floored
    near 0 so rounded-to-zero confidences stay finite."""
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(p))
    pc = np.clip(p[rows, classes], LOG_FLOOR, 1.0)
    rest = p.copy()
    rest[rows, classes] = 0.0
    others = np.clip(rest.sum(axis=1), 0.0, None)
    return -np.log1p(others / pc)


def confidence_note(conf: np.ndarray) -> str:
    return (
        f"target confidence in the reconstructed class: min {conf.min():.3f}, median "
        f"{np.median(conf):.3f}"
    )


def target_classes(oracle: Oracle, knowledge: Knowledge) -> np.ndarray:
    """The classes to reconstruct, checked against the oracle's class count."""
    k = oracle.n_classes
    classes = list(range(k)) if knowledge.target_classes is None else knowledge.target_classes
    out = np.asarray([int(c) for c in classes], dtype=np.int64)
    if len(out) == 0 or out.min() < 0 or out.max() >= k:
        raise ConfigError(f"target classes must be class indices in 0..{k - 1}, got {classes}")
    return out


class PriorAttackBase(Attack):
    """Common settings and set-up of the attacks that search the generative prior."""

    # Reconstructing "a record of class c" from a tabular model says little (with two classes
    # any plausible record qualifies); attribute inference is the tabular attack.
    kinds = ("image",)

    family: ClassVar[str] = "inversion"
    paper: ClassVar[str] = PAPER

    def __init__(
        self,
        *,
        latent_dim: int = 16,
        prior_hidden: tuple[int, ...] = (256,),
        prior_epochs: int = 30,
        prior_weight: float = 0.0,
    ) -> None:
        self.latent_dim = latent_dim
        self.prior_hidden = tuple(prior_hidden)
        self.prior_epochs = prior_epochs
        self.prior_weight = prior_weight

    def prior(self, knowledge: Knowledge, progress: Progress | None) -> GenerativePrior:
        # Records with few features (tabular data) get a code no wider than half of them.
        n_in = int(np.prod(np.shape(knowledge.aux_x)[1:]))
        config = PriorConfig(
            latent_dim=max(2, min(self.latent_dim, n_in // 2)),
            hidden=self.prior_hidden,
            epochs=self.prior_epochs,
            seed=knowledge.seed,
        )
        return shared_prior(knowledge, config, progress)

    def objective(self, p: np.ndarray, classes: np.ndarray, u: np.ndarray) -> np.ndarray:
        """What the search maximises: log-confidence minus the prior's negative log-density."""
        return log_confidence(p, classes) - 0.5 * self.prior_weight * (
            u.astype(np.float64) ** 2
        ).sum(1)

    @staticmethod
    def prior_note(prior: GenerativePrior) -> str:
        return (
            f"generative prior: autoencoder (latent {prior.latent_dim}) trained without labels on "
            f"{prior.n_train} auxiliary records (reconstruction MSE "
            f"{prior.recon_mse_:.4f}); reconstructions are decoder outputs"
        )


def project_ball(u: np.ndarray, radius: float) -> np.ndarray:
    """Pull codes back inside the ball where the prior saw data."""
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    return u * np.minimum(1.0, radius / np.maximum(norms, 1e-12))


def project_scale(u: torch.Tensor, radius: float) -> torch.Tensor:
    """:func:`project_ball`'s per-row factor for a tensor, computed on its own device."""
    norms = torch.linalg.vector_norm(u, dim=1, keepdim=True)
    return torch.clamp(radius / torch.clamp(norms, min=1e-12), max=1.0)


@register
class PriorInversion(PriorAttackBase):
    """White-box GMI: gradient descent on the latent code through the decoder."""

    name = "prior-inversion"
    needs = Access.WHITEBOX
    description = (
        "Trains a small autoencoder on the attacker's auxiliary data and searches its latent "
        "space with the target's input gradients for each class's most typical record."
    )

    def __init__(
        self,
        *,
        starts: int = 8,
        steps: int = 100,
        lr: float = 0.1,
        latent_dim: int = 16,
        prior_hidden: tuple[int, ...] = (256,),
        prior_epochs: int = 30,
        prior_weight: float = 0.0,
    ) -> None:
        super().__init__(
            latent_dim=latent_dim,
            prior_hidden=prior_hidden,
            prior_epochs=prior_epochs,
            prior_weight=prior_weight,
        )
        self.starts = starts
        self.steps = steps
        self.lr = lr

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> InversionGuesses:
        self.check_access(oracle)
        classes = target_classes(oracle, knowledge)
        prior = self.prior(knowledge, progress)
        notes = [self.prior_note(prior)]
        rng = np.random.default_rng(knowledge.seed)
        n_c, s = len(classes), max(1, self.starts)
        ys = np.repeat(classes, s)
        u0 = prior.sample(n_c * s, rng)

        # Plan the budget: each step costs one query per start, plus one final query per start.
        steps = self.steps
        if oracle.remaining is not None:
            affordable = max(0, (oracle.remaining - len(ys)) // len(ys))
            if affordable < steps:
                notes.append(
                    f"query budget allows {affordable} of {steps} gradient steps per start; "
                    "reconstructions are less optimised"
                )
                steps = affordable

        dev = prior.device  # the audit's --device: the search runs where the decoder lives
        with single_thread():
            u = torch.from_numpy(u0.copy()).to(dev).requires_grad_(True)
            opt = torch.optim.Adam([u], lr=self.lr)
            for t in range(steps):
                x = prior.decode(u)
                try:
                    grad = oracle.loss_gradient(x.detach().cpu().numpy(), ys)
                except BudgetExhaustedError:
                    notes.append(f"query budget spent after {t} gradient steps")
                    break
                opt.zero_grad()
                g = torch.from_numpy(np.ascontiguousarray(grad, dtype=np.float32))
                x.backward(g.to(dev))
                with torch.no_grad():
                    u.grad += self.prior_weight * u
                opt.step()
                with torch.no_grad():
                    u.mul_(project_scale(u, prior.radius_))
                if progress is not None:
                    progress(f"{self.name}: gradient steps", t + 1, steps)
            u_final = u.detach().cpu().numpy().copy()

        x_final = prior.decode_numpy(u_final)
        conf: np.ndarray | None = None
        try:
            p = oracle.proba(x_final)
            score = self.objective(p, ys, u_final)
            conf = p[np.arange(len(ys)), ys]
        except BudgetExhaustedError:
            # Without a final confidence query, prefer the most typical code.
            score = -0.5 * (u_final.astype(np.float64) ** 2).sum(1)
            notes.append("no queries left to rank the starts; kept the most typical one per class")
        best = score.reshape(n_c, s).argmax(axis=1) + np.arange(n_c) * s
        pull = f" + {self.prior_weight} * ||u||^2 / 2" if self.prior_weight else ""
        if conf is not None:
            notes.append(confidence_note(conf[best]))
        notes.append(
            f"{s} random starts per class, {steps} Adam steps (lr {self.lr}) on the "
            f"cross-entropy{pull} in the prior's whitened latent space"
        )
        per_class = oracle.queries // n_c if n_c else 0
        return InversionGuesses(
            reconstructions=x_final[best],
            labels=classes.copy(),
            notes=notes,
            queries_per_class=[per_class] * n_c,
        )


@register
class PriorInversionBlackbox(PriorAttackBase):
    """Black-box GMI: NES in the prior's latent space from confidence scores."""

    name = "prior-inversion-blackbox"
    needs = Access.PROBS
    description = (
        "Trains a small autoencoder on the attacker's auxiliary data and searches its latent "
        "space with NES gradient estimates from confidence scores, adapting its step to "
        "rounded outputs."
    )

    def __init__(
        self,
        *,
        queries_per_class: int = 500,
        pool_per_class: int = 20,
        starts: int = 2,
        samples: int = 20,
        sigma: float = 0.25,
        sigma_max: float = 2.0,
        lr: float = 0.15,
        latent_dim: int = 16,
        prior_hidden: tuple[int, ...] = (256,),
        prior_epochs: int = 30,
        prior_weight: float = 0.0,
    ) -> None:
        super().__init__(
            latent_dim=latent_dim,
            prior_hidden=prior_hidden,
            prior_epochs=prior_epochs,
            prior_weight=prior_weight,
        )
        self.queries_per_class = queries_per_class
        self.pool_per_class = pool_per_class
        self.starts = starts
        self.samples = samples
        self.sigma = sigma
        self.sigma_max = sigma_max
        self.lr = lr

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> InversionGuesses:
        self.check_access(oracle)
        classes = target_classes(oracle, knowledge)
        prior = self.prior(knowledge, progress)
        notes = [self.prior_note(prior)]
        rng = np.random.default_rng(knowledge.seed)
        n_c = len(classes)

        # One pool of prior samples, queried once, seeds every class's search.
        n_pool = self.pool_per_class * n_c
        limited = oracle.remaining is not None and oracle.remaining < self.queries_per_class * n_c
        if oracle.remaining is not None:
            n_pool = min(n_pool, max(0, oracle.remaining))
        u_pool = prior.sample(max(n_pool, 1), rng)
        if n_pool > 0:
            p_pool = oracle.proba(prior.decode_numpy(u_pool))
        else:
            p_pool = np.full((1, oracle.n_classes), 1.0 / oracle.n_classes)
        spent = np.full(n_c, n_pool // n_c, dtype=np.int64)
        spent[: n_pool % n_c] += 1

        out = np.zeros((n_c, prior.latent_dim), dtype=np.float32)
        conf = np.zeros(n_c)
        sigmas: list[float] = []
        searched = np.zeros(n_c, dtype=bool)
        exhausted = n_pool == 0
        for i, c in enumerate(classes):
            cs = np.full(len(u_pool), c)
            order = np.argsort(-self.objective(p_pool, cs, u_pool), kind="stable")
            out[i], conf[i] = u_pool[order[0]], p_pool[order[0], c]
            best_key = (-np.inf, 0.0)
            starts = order[: max(1, self.starts)]
            left = int(self.queries_per_class - spent[i])
            if oracle.remaining is not None:
                left = min(left, oracle.remaining // (n_c - i))
            for k, j in enumerate(starts):
                if exhausted:
                    break
                quota = left // (len(starts) - k)
                found = self._nes(oracle, prior, int(c), u_pool[j], quota, rng)
                left -= found.used
                spent[i] += found.used
                exhausted = found.exhausted
                if found.used:
                    sigmas.append(found.sigma)
                if found.key > best_key:
                    best_key, out[i], conf[i] = found.key, found.u, found.conf
                    searched[i] = True
            if progress is not None:
                progress(f"{self.name}: classes", i + 1, n_c)

        if limited or exhausted:
            notes.append(
                f"query budget of {oracle.budget} below {self.queries_per_class} per class: the "
                f"search stopped early; {int((~searched).sum())} of {n_c} classes kept their best "
                "prior sample unsearched"
            )
        notes.append(
            f"NES ({self.samples // 2} antithetic pairs per estimate) from the best {self.starts} "
            f"of {n_pool} shared prior samples per class; finite-difference radius "
            f"{self.sigma} grown to at most {max(sigmas, default=self.sigma):.2f} where outputs "
            "tied (coarse or saturated confidences)"
        )
        notes.append(confidence_note(conf))
        return InversionGuesses(
            reconstructions=prior.decode_numpy(out),
            labels=classes.copy(),
            notes=notes,
            queries_per_class=[int(q) for q in spent],
        )

    def _nes(
        self,
        oracle: Oracle,
        prior: GenerativePrior,
        c: int,
        u0: np.ndarray,
        quota: int,
        rng: np.random.Generator,
    ) -> _Found:
        """Ascend the objective from ``u0`` with NES, using at most ``quota`` queries.

        Each estimate also measures the objective smoothed over the current radius (the mean
        over its samples). The centre with the best smoothed value — and, among ties, the widest
        radius — is returned once one query confirms the target gives it class ``c``: with
        rounded confidences many points tie at 1.00 and the best single sample is arbitrary,
        while a centre whose whole neighbourhood scores high lies deep inside the class."""
        pairs = max(1, self.samples // 2)
        d = prior.latent_dim
        u = u0.astype(np.float64).copy()
        m, v = np.zeros(d), np.zeros(d)
        b1, b2 = 0.9, 0.999
        sigma = self.sigma
        used, t = 0, 0
        sample = (u0.astype(np.float32), -np.inf, 0.0)  # best single queried point
        centre, key = u0.astype(np.float32), (-np.inf, 0.0)
        while used + 2 * pairs + 1 <= quota:
            delta = rng.standard_normal((pairs, d))
            cand = np.concatenate([u + sigma * delta, u - sigma * delta]).astype(np.float32)
            try:
                p = oracle.proba(prior.decode_numpy(cand))
            except BudgetExhaustedError:
                return _Found(used, *sample, (sample[1], 0.0), sigma, True)
            used += len(cand)
            cs = np.full(len(cand), c)
            score = self.objective(p, cs, cand)
            k = int(np.argmax(score))
            if score[k] > sample[1]:
                sample = (cand[k].copy(), float(score[k]), float(p[k, c]))
            if (float(score.mean()), sigma) > key:
                centre, key = u.astype(np.float32), (float(score.mean()), sigma)
            f = log_confidence(p, cs)
            diff = f[:pairs] - f[pairs:]
            grad = (diff[:, None] * delta).sum(0) / (2 * sigma * pairs) - self.prior_weight * u
            ties = float(np.mean(np.abs(diff) < 1e-12))
            if ties > 0.5:
                # Outputs too coarse (or saturated) to tell the pair apart: look further out.
                sigma = min(sigma * 1.5, self.sigma_max)
            elif ties == 0.0:
                sigma = max(sigma / 1.2, self.sigma)
            t += 1
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad**2
            step = self.lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
            u = project_ball((u + step)[None], prior.radius_)[0]
        if t == 0:
            return _Found(used, *sample, (sample[1], 0.0), sigma, False)
        try:
            p = oracle.proba(prior.decode_numpy(centre[None]))
        except BudgetExhaustedError:
            return _Found(used, *sample, key, sigma, True)
        used += 1
        if int(np.argmax(p[0])) != c:
            return _Found(used, *sample, key, sigma, False)
        return _Found(used, centre, key[0], float(p[0, c]), key, sigma, False)


@dataclass
class _Found:
    used: int
    u: np.ndarray
    score: float
    conf: float
    key: tuple[float, float]
    sigma: float
    exhausted: bool
