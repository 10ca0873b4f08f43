"""Knockoff Nets: copy a model by querying it with natural data from the same domain.

Orekondy, Schiele, Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019.

Threat model: the attacker holds unlabelled natural records of the kind the model serves (here
the auxiliary pool: same population, never members) and a prediction API. It asks the API about
those records and trains a substitute of its own choosing on the answers: soft labels when the
API returns probabilities (the paper's setting), a top-k vector or the label otherwise. This is
the paper's "random" sampling strategy; its adaptive (bandit) strategy matters when the
attacker's data spans many more classes than the model's, which is not the case here.

A query budget larger than the pool is spent on augmented pool records (small shifts, partial
blends of two records, a little noise; see ``_common.augment``): the pool is asked first, then
its neighbourhood. The substitute is trained after each doubling of the answers collected, so
the evaluator can draw fidelity against queries.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privguard.attacks.base import Knowledge
from privguard.attacks.extraction._common import augment, checkpoint_sizes
from privguard.attacks.extraction._learning import Collected, LearningExtraction
from privguard.attacks.registry import register
from privguard.errors import ConfigError
from privguard.oracle import Oracle


def auxiliary_pool(knowledge: Knowledge, name: str) -> np.ndarray:
    """The attacker's natural records, or a ConfigError naming what is missing."""
    pool = knowledge.aux_x
    if pool is None or len(pool) == 0:
        raise ConfigError(
            f"the {name} attack needs auxiliary data (natural records of the model's domain); "
            "the audit has none: keep an auxiliary share in the split, or use random-queries"
        )
    return np.asarray(pool, dtype=np.float32)


@register
class KnockoffNets(LearningExtraction):
    """Query the auxiliary records (then augmentations of them) and retrain on the answers.

    Args:
        first: queries before the first substitute (later checkpoints double it).
        augment: spend a budget beyond the pool on augmented pool records; with ``False`` the
            attack stops when the pool is used up.
        (others: see :class:`~privguard.attacks.extraction._learning.LearningExtraction`)

    Example:
        >>> guesses = KnockoffNets(queries=5000).run(target.oracle("probs"), knowledge)
        >>> guesses.model.predict_proba(x)
    """

    name = "knockoff"
    paper = (
        "Orekondy, Schiele, Fritz, 'Knockoff Nets: Stealing Functionality of Black-Box Models', "
        "CVPR 2019"
    )
    description = (
        "Asks the model about the attacker's own natural records (and augmentations of them) and "
        "trains a copy on its answers; with labels only when that is all the API returns."
    )

    def __init__(self, *, first: int = 250, augment: bool = True, **settings) -> None:
        super().__init__(**settings)
        self.first = first
        self.augment = augment

    def rounds(
        self,
        oracle: Oracle,
        knowledge: Knowledge,
        state: Collected,
        budget: int,
        rng: np.random.Generator,
        notes: list[str],
    ) -> Iterator[np.ndarray]:
        pool = auxiliary_pool(knowledge, self.name)
        xs = pool[rng.permutation(len(pool))][:budget]
        extra = budget - len(xs)
        if extra > 0 and self.augment:
            xs = np.concatenate([xs, augment(pool, extra, knowledge.bounds, knowledge.kind, rng)])
            notes.append(
                f"the auxiliary pool holds {len(pool):,} records: it was queried in full, the "
                f"other {extra:,} queries were augmented pool records (shifts, blends, noise)"
            )
        elif extra > 0:
            notes.append(
                f"the auxiliary pool holds {len(pool):,} records; with augmentation off the "
                f"attack stopped there, {extra:,} queries short of its budget"
            )
        prev = 0
        for n in checkpoint_sizes(len(xs), self.first):
            yield xs[prev:n]
            prev = n
