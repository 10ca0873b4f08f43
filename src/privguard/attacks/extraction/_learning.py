"""The frame of every learning-based extraction attack: query, retrain a substitute, repeat.

A subclass decides *which* points to ask about (its query strategy, :meth:`rounds`); this class
asks the oracle in the richest form it answers (or the one chosen with ``outputs``), trains the
substitute on the answers warm from round to round, and keeps a snapshot after every round for
the evaluator's fidelity-vs-queries curve.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from privguard.attacks.base import Attack, ExtractionGuesses, Knowledge, Progress, Setting
from privguard.attacks.extraction._common import (
    Substitute,
    ask,
    choose_outputs,
    query_budget,
    substitute_architecture,
)
from privguard.errors import ConfigError
from privguard.oracle import Access, Oracle

MIN_QUERIES = 10


class LearningExtraction(Attack):
    """Base class: settings shared by the learning-based attacks.

    Args:
        queries: queries the attack spends (capped by the oracle's budget). By default the
            oracle's whole budget when it has one (``privguard audit --budget N``), else
            ``default_queries`` (2,000: cheap enough for ``--attacks all``).
        epochs: passes over the answers collected so far, after each round.
        final_epochs: passes after the last round (the substitute that is returned).
        outputs: ``auto`` (the richest the oracle gives), ``probs``, ``topk`` or ``labels``
            (the label-only variant).
        model: substitute architecture (``mlp``, ``cnn``, ``logreg``); default: the target's
            recipe when known (a CNN recipe becomes an MLP), else an MLP.
        hidden: hidden layer widths of the substitute.
        lr, batch_size: Adam learning rate and batch size of the substitute.

    The defaults keep ``--attacks all`` cheap (a few seconds per attack on small data); more
    epochs buy a little fidelity (the benchmark uses ``epochs=8, final_epochs=20,
    batch_size=64``).
    """

    family = "extraction"
    needs = Access.LABEL
    default_queries: ClassVar[int] = 2000
    settings = (
        Setting("queries", int, None, "queries to spend (default: the budget, else 2000)", 10),
        Setting("epochs", int, 5, "passes over the answers after each round", 1, 1000),
        Setting("final_epochs", int, 10, "passes after the last round", 1, 1000),
        Setting(
            "outputs",
            str,
            "auto",
            "what to learn from",
            choices=("auto", "probs", "topk", "labels"),
        ),
    )

    def __init__(
        self,
        *,
        queries: int | None = None,
        epochs: int = 5,
        final_epochs: int = 10,
        outputs: str = "auto",
        model: str | None = None,
        hidden: list[int] | None = None,
        lr: float = 1e-3,
        batch_size: int = 128,
    ) -> None:
        self.queries = None if queries is None else int(queries)
        self.epochs = epochs
        self.final_epochs = final_epochs
        self.outputs = outputs
        self.model = model
        self.hidden = hidden
        self.lr = lr
        self.batch_size = batch_size

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> ExtractionGuesses:
        self.check_settings(
            [
                (
                    self.queries is None or self.queries >= MIN_QUERIES,
                    f"queries must be at least {MIN_QUERIES}",
                ),
                (self.epochs >= 1 and self.final_epochs >= 1, "epochs must be at least 1"),
                (self.lr > 0 and self.batch_size >= 1, "lr must be > 0 and batch_size >= 1"),
            ]
        )
        self.check_access(oracle)
        outputs = choose_outputs(oracle, self.outputs)
        if self.queries is not None:
            budget = query_budget(oracle, self.queries)
        elif oracle.remaining is not None:
            budget = oracle.remaining
        else:
            budget = self.default_queries
        if budget < MIN_QUERIES:
            raise ConfigError(
                f"{self.name}: the query budget leaves {budget} queries; it needs at least "
                f"{MIN_QUERIES} - raise --budget"
            )
        arch = substitute_architecture(
            knowledge, oracle.input_shape, oracle.n_classes, self.model, self.hidden
        )
        state = Collected(
            Substitute(arch, seed=knowledge.seed, lr=self.lr, batch_size=self.batch_size)
        )
        rng = np.random.default_rng(knowledge.seed)
        notes: list[str] = []
        checkpoints: list[tuple[int, Any]] = []
        start = oracle.queries
        for batch in self.rounds(oracle, knowledge, state, budget, rng, notes):
            batch = batch[: budget - state.spent]
            if len(batch) == 0:
                break
            targets, keep = ask(oracle, batch, outputs)
            state.add(batch, targets, keep)
            if progress is not None:
                progress(f"{self.name}: queries", state.spent, budget)
            if state.spent >= budget:
                break
            state.substitute.fit(state.x, state.t, self.epochs)
            checkpoints.append((oracle.queries - start, state.substitute.snapshot()))
        state.substitute.fit(state.x, state.t, self.final_epochs)
        model = state.substitute.snapshot()
        spent = oracle.queries - start
        if checkpoints and checkpoints[-1][0] == spent:
            checkpoints.pop()
        checkpoints.append((spent, model))
        if state.abstained:
            notes.append(
                f"{state.abstained} of {state.spent} queries were abstentions (the output policy "
                "declined to answer); they were spent but taught the substitute nothing"
            )
        if len(state.x) == 0:
            notes.append("no query was answered: the substitute is untrained")
        notes.append(
            f"copied with {spent:,} queries, learning from {_OUTPUT_WORDS[outputs]}; substitute: "
            f"{_describe(arch)}"
        )
        return ExtractionGuesses(
            model=model,
            architecture=arch,
            queries=spent,
            checkpoints=checkpoints,
            outputs=outputs,
            notes=notes,
        )

    @abstractmethod
    def rounds(
        self,
        oracle: Oracle,
        knowledge: Knowledge,
        state: Collected,
        budget: int,
        rng: np.random.Generator,
        notes: list[str],
    ) -> Iterator[np.ndarray]:
        """Yield the next batch of query points. When the generator resumes, the batch has been
        answered (``state.x`` / ``state.t`` hold every answered query so far) and the substitute
        retrained on everything collected."""


class Collected:
    """The answered queries so far (abstentions dropped) and the substitute trained on them."""

    def __init__(self, substitute: Substitute) -> None:
        self.substitute = substitute
        self.x = np.zeros((0, *substitute.input_shape), dtype=np.float32)
        self.t = np.zeros((0, substitute.n_classes))
        self.spent = 0
        self.abstained = 0
        self.last_x = self.x
        self.last_t = self.t

    def add(self, x: np.ndarray, t: np.ndarray, keep: np.ndarray) -> None:
        self.spent += len(x)
        self.abstained += int((~keep).sum())
        self.last_x, self.last_t = x[keep], t[keep]
        self.x = np.concatenate([self.x, self.last_x])
        self.t = np.concatenate([self.t, self.last_t])


_OUTPUT_WORDS = {
    "probs": "full probability vectors",
    "topk": "top-k probabilities",
    "labels": "labels only",
}


def _describe(arch: dict[str, Any]) -> str:
    if arch["type"] == "logreg":
        return "softmax regression"
    return f"{arch['type']} with hidden layers {arch.get('hidden')}"
