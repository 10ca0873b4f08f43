"""Extraction by retraining on uniformly random queries.

Tramèr, Zhang, Juels, Reiter, Ristenpart, "Stealing Machine Learning Models via Prediction APIs",
USENIX Security 2016 (Section 5: retraining on queries drawn uniformly from the input space, the
attacker who knows nothing of the data but its format and range).

Threat model: the attacker knows only the input format and its valid range (``bounds``); it
draws queries uniformly within it and trains a substitute on the answers. For tabular models
with few features this copies the decision function well everywhere; for images, uniform noise
is far from natural data and the copy agrees with the target on noise (``fidelity_uniform``)
much more than on real records (``fidelity``) — the gap shows why auxiliary data matters.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privguard.attacks.base import Knowledge
from privguard.attacks.extraction._common import checkpoint_sizes, uniform
from privguard.attacks.extraction._learning import Collected, LearningExtraction
from privguard.attacks.registry import register
from privguard.oracle import Oracle


@register
class RandomQueries(LearningExtraction):
    """Uniform queries within ``Knowledge.bounds``, a substitute retrained on the answers.

    Args:
        first: queries before the first substitute (later checkpoints double it).
        (others: see :class:`~privguard.attacks.extraction._learning.LearningExtraction`)
    """

    name = "random-queries"
    paper = (
        "Tramèr, Zhang, Juels, Reiter, Ristenpart, 'Stealing Machine Learning Models via "
        "Prediction APIs', USENIX Security 2016"
    )
    description = (
        "Asks the model about uniformly random inputs within the valid range and trains a copy "
        "on its answers: the attacker needs no data at all."
    )

    def __init__(self, *, first: int = 250, **settings) -> None:
        super().__init__(**settings)
        self.first = first

    def rounds(
        self,
        oracle: Oracle,
        knowledge: Knowledge,
        state: Collected,
        budget: int,
        rng: np.random.Generator,
        notes: list[str],
    ) -> Iterator[np.ndarray]:
        prev = 0
        for n in checkpoint_sizes(budget, self.first):
            yield uniform(n - prev, oracle.input_shape, knowledge.bounds, rng)
            prev = n
