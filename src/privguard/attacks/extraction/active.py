"""Active extraction: ask about the points the substitute is least sure of.

Uncertainty sampling (Lewis and Gale, SIGIR 1994) applied to model extraction, as in
Chandrasekaran, Chaudhuri, Giacomelli, Jha, Yan, "Exploring Connections Between Active Learning
and Model Extraction", USENIX Security 2020, and Pal, Gupta, Shukla, Kanade, Shevade,
Ganapathy, "ActiveThief: Model Extraction Using Active Learning and Unannotated Public Data",
AAAI 2020 (its entropy strategy).

Threat model: the attacker holds unlabelled natural records (the auxiliary pool) and a
prediction API, and wants the most fidelity per query. It asks about a random start set,
trains the substitute, and then, round after round (each as large as everything asked so far),
scores fresh candidates by the substitute's prediction entropy and asks the oracle only about
the most uncertain ones: points near the copy's decision boundaries, where it most likely
disagrees with the target. Candidates are pool records not yet asked about, then augmented pool
records once the pool runs out (``_common.augment``); without any auxiliary data they are
uniform within the input bounds, and the notes say so.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privguard.attacks.base import Knowledge
from privguard.attacks.extraction._common import augment, entropy, uniform
from privguard.attacks.extraction._learning import Collected, LearningExtraction
from privguard.attacks.registry import register
from privguard.oracle import Oracle


@register
class ActiveExtraction(LearningExtraction):
    """Entropy-based uncertainty sampling.

    Args:
        first: random queries before the first substitute.
        candidates: candidates scored per query asked (the most uncertain 1 in ``candidates``
            is asked).
        (others: see :class:`~privguard.attacks.extraction._learning.LearningExtraction`)
    """

    name = "active-extraction"
    paper = (
        "Pal, Gupta, Shukla, Kanade, Shevade, Ganapathy, 'ActiveThief: Model Extraction Using "
        "Active Learning and Unannotated Public Data', AAAI 2020 (uncertainty sampling; "
        "Chandrasekaran et al., USENIX Security 2020)"
    )
    description = (
        "Asks the model only about the candidate records its copy is least sure of, retraining "
        "the copy after every round."
    )

    def __init__(self, *, first: int = 250, candidates: int = 3, **settings) -> None:
        super().__init__(**settings)
        self.first = first
        self.candidates = candidates

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
                (self.first >= 1, "first must be at least 1"),
                (self.candidates >= 1, "candidates must be at least 1"),
            ]
        )
        pool = knowledge.aux_x
        natural = pool is not None and len(pool) > 0
        if natural:
            pool = np.asarray(pool, dtype=np.float32)
            unused = rng.permutation(len(pool))
        else:
            notes.append(
                "no auxiliary data: candidates were drawn uniformly within the input bounds "
                "(fallback; active extraction normally ranks natural records)"
            )
        bounds, kind = knowledge.bounds, knowledge.kind
        n_first = min(self.first, budget)
        if natural:
            first, unused = unused[:n_first], unused[n_first:]
            yield pool[first]
        else:
            yield uniform(n_first, oracle.input_shape, bounds, rng)
        augmented = False
        while state.spent < budget:
            n = min(state.spent, budget - state.spent)
            want = n * self.candidates
            if natural:
                unused = rng.permutation(unused)
                idx = unused[:want]
                cand = pool[idx]
                if len(idx) < want:
                    extra = augment(pool, want - len(idx), bounds, kind, rng)
                    cand = np.concatenate([cand, extra])
                    if not augmented:
                        augmented = True
                        notes.append(
                            f"the auxiliary pool ({len(pool):,} records) ran short of "
                            "candidates: augmented pool records were ranked too"
                        )
            else:
                cand = uniform(want, oracle.input_shape, bounds, rng)
            score = entropy(state.substitute.proba(cand))
            top = np.argsort(-score, kind="stable")[:n]
            if natural:  # asked pool records leave the pool; the others stay candidates
                unused = np.delete(unused, top[top < len(idx)])
            yield cand[top]
