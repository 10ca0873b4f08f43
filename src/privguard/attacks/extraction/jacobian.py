"""Jacobian-based dataset augmentation: a few seed records grown along the substitute's gradients.

Papernot, McDaniel, Goodfellow, Jha, Celik, Swami, "Practical Black-Box Attacks against Machine
Learning", ACM AsiaCCS 2017 (Algorithm 1, substitute training with Jacobian-based augmentation).

Threat model: the attacker holds only a small seed set of natural records (the paper: 150) and a
label API. Each substitute epoch rho: label the current set S through the oracle, train the
substitute F on it, then add, for every x in S, x + lambda_rho * sign(dF_{O(x)}(x) / dx), where
O(x) is the oracle's label: the new points step towards the substitute's decision boundaries,
where the oracle's answers are the most informative, so S doubles per round. lambda flips sign
every ``tau`` rounds (the paper's periodic step size, which keeps the points from drifting off
the data), and once the set grows past the remaining budget a random subset of S is augmented
(the paper's reservoir sampling).

The seed comes from the attacker's auxiliary records; without any it is drawn uniformly within
the input bounds, and the notes say so. With probabilities available the substitute learns from
them (soft labels); O(x) is then their top class.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privguard.attacks.base import Knowledge
from privguard.attacks.extraction._common import uniform
from privguard.attacks.extraction._learning import Collected, LearningExtraction
from privguard.attacks.registry import register
from privguard.oracle import Oracle


@register
class JacobianAugmentation(LearningExtraction):
    """Papernot et al.'s substitute training.

    Args:
        seed_size: natural records to start from (from the auxiliary pool).
        step: lambda, the augmentation step in input units (the paper: 0.1 on [0, 1] images).
        tau: rounds between flips of the step's sign.
        (others: see :class:`~privguard.attacks.extraction._learning.LearningExtraction`)
    """

    name = "jacobian"
    paper = (
        "Papernot, McDaniel, Goodfellow, Jha, Celik, Swami, 'Practical Black-Box Attacks against "
        "Machine Learning', ACM AsiaCCS 2017"
    )
    description = (
        "Starts from a few of the attacker's records and grows them along the copy's gradients "
        "towards its decision boundaries, asking the model about each new point."
    )

    def __init__(
        self, *, seed_size: int = 100, step: float = 0.1, tau: int = 3, **settings
    ) -> None:
        super().__init__(**settings)
        self.seed_size = seed_size
        self.step = step
        self.tau = tau

    def rounds(
        self,
        oracle: Oracle,
        knowledge: Knowledge,
        state: Collected,
        budget: int,
        rng: np.random.Generator,
        notes: list[str],
    ) -> Iterator[np.ndarray]:
        self.check_settings(
            [
                (self.seed_size >= 1, "seed_size must be at least 1"),
                (self.step > 0, "step must be > 0"),
                (self.tau >= 1, "tau must be at least 1"),
            ]
        )
        n_seed = min(self.seed_size, budget)
        pool = knowledge.aux_x
        if pool is not None and len(pool) > 0:
            seed = np.asarray(pool, dtype=np.float32)[rng.permutation(len(pool))[:n_seed]]
        else:
            seed = uniform(n_seed, oracle.input_shape, knowledge.bounds, rng)
            notes.append(
                "no auxiliary data: the seed set was drawn uniformly within the input bounds "
                "(fallback; Papernot et al. start from natural records)"
            )
        yield seed
        lo, hi = knowledge.bounds
        rho = 0
        while state.spent < budget and len(state.x) > 0:
            remaining = budget - state.spent
            pick = np.arange(len(state.x))
            if len(pick) > remaining:  # reservoir sampling: augment a random subset
                pick = rng.choice(len(pick), remaining, replace=False)
            xs, labels = state.x[pick], state.t[pick].argmax(axis=1)
            grads = state.substitute.class_gradient(xs, labels)
            lam = self.step * (-1.0) ** (rho // self.tau)
            yield np.clip(xs + lam * np.sign(grads), lo, hi).astype(np.float32)
            rho += 1
