"""The shadow model the threshold attacks calibrate on, shared within an audit.

Song and Mittal (USENIX Security 2021) set membership thresholds on a shadow model: trained with
the target's recipe on half of the attacker's auxiliary pool, it gives records known to be
members (that half) and non-members (the other half). The metric-threshold and label-only
attacks all use the same one, trained once per audit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.base import Knowledge, Progress


def shadow_key(fraction: float) -> str:
    return f"shadow-model-{fraction}"


def shadow_model(
    knowledge: Knowledge, fraction: float, progress: Progress | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The shadow model and the indices (into the auxiliary pool) of its members and
    non-members. Needs ``knowledge.recipe``."""

    def make() -> tuple[Any, np.ndarray, np.ndarray]:
        if progress is not None:
            progress("training shadow model", 0, 1)
        rng = np.random.default_rng(knowledge.seed)
        n = len(knowledge.aux_y)
        order = rng.permutation(n)
        k = int(round(n * fraction))
        ins, outs = order[:k], order[k:]
        model = knowledge.recipe.fit(
            knowledge.aux_x[ins], knowledge.aux_y[ins], seed=knowledge.seed + 1
        )
        if progress is not None:
            progress("training shadow model", 1, 1)
        return model, ins, outs

    return knowledge.cached(shadow_key(fraction), make)
