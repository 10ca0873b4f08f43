"""One audit: data and split -> target -> for each attack: oracle, attack, evaluator -> report.

Attacks see only the attacker's knowledge (auxiliary pool, candidate records in a shuffled
order, the training recipe); the evaluator alone holds the membership truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from privguard import __version__
from privguard.attacks import Knowledge, MembershipGuesses, resolve
from privguard.audit.metrics import membership_metrics
from privguard.audit.report import AttackResult, Report, summarise
from privguard.audit.risk import assess
from privguard.data import Dataset
from privguard.errors import ConfigError
from privguard.models import Target, load_target
from privguard.oracle import Access

Progress = Callable[[str, int, int], None]


def audit(
    target: Target | str | Path,
    *,
    data: str | Dataset | None = None,
    label: str | None = None,
    attacks: Sequence[str] | str = ("membership",),
    access: Access | str = Access.PROBS,
    seed: int = 0,
    budget: int | None = None,
    progress: Progress | None = None,
    command: str | None = None,
) -> Report:
    """Run attacks against ``target`` and score them.

    Args:
        target: a :class:`~privguard.models.Target` or a model directory.
        data: the data the model was trained on; by default the data recorded in model.json
            (checked against its content hash either way).
        label: label column, for CSV/Parquet data.
        attacks: attack or family names (``privguard attacks`` lists them).
        access: the most an attacker gets per query (``label`` ... ``whitebox``).
        seed: seeds every random choice of the attacks; the same seed gives the same report.
        budget: query budget per attack (``None``: unlimited).
        progress: ``progress(step, done, total)`` callback.

    Example:
        >>> report = privguard.audit("model-dir", attacks=["membership"], access="probs")
        >>> report.summary["overall_risk"]
    """
    if not isinstance(target, Target):
        target = load_target(target)
    access = Access.parse(access)
    if budget is not None and budget < 1:
        raise ConfigError("--budget must be a positive number of queries")
    chosen = resolve(list(attacks) if not isinstance(attacks, str) else attacks, access)
    ds = target.load_data(data, label=label)
    split = target.split

    rng = np.random.default_rng(seed)
    cand = np.concatenate([split.members, split.nonmembers])
    cand = cand[rng.permutation(len(cand))]
    is_member = np.isin(cand, split.members)
    knowledge = Knowledge(
        aux_x=ds.x[split.aux],
        aux_y=ds.y[split.aux],
        candidates_x=ds.x[cand],
        candidates_y=ds.y[cand],
        recipe=target.recipe,
        bounds=ds.bounds,
        seed=seed,
    )

    results: list[AttackResult] = []
    for i, cls in enumerate(chosen):
        if progress is not None:
            progress(f"attack {cls.name}", i, len(chosen))
        attack = cls()
        oracle = target.oracle(access, budget=budget)
        t0 = time.perf_counter()
        guesses = attack.run(oracle, knowledge, progress)
        seconds = time.perf_counter() - t0
        metrics, curves, notes = _evaluate(cls.family, guesses, is_member)
        results.append(
            AttackResult(
                name=cls.name,
                family=cls.family,
                access=cls.needs.label,
                queries=oracle.queries,
                seconds=round(seconds, 3),
                metrics=metrics,
                risk=assess(cls.family, metrics),
                paper=cls.paper,
                description=cls.description,
                notes=list(guesses.notes) + notes,
                curves=curves,
            )
        )
    if progress is not None:
        progress("attacks done", len(chosen), len(chosen))

    return Report(
        privguard_version=__version__,
        target=target.describe(),
        data=_describe_data(ds, target),
        attacks=results,
        summary=summarise(results),
        plan={
            "attacks": [c.name for c in chosen],
            "access": access.label,
            "seed": seed,
            "budget": budget,
            "command": command,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


def _evaluate(family: str, guesses: Any, is_member: np.ndarray):
    if family == "membership":
        assert isinstance(guesses, MembershipGuesses)
        return membership_metrics(guesses.scores, guesses.decisions, is_member)
    raise ConfigError(f"no evaluator for the {family} family yet")  # pragma: no cover


def cross_split_twins(x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray) -> int:
    """Non-members whose exact feature vector is also a member's (caps any membership attack)."""
    rows = x.reshape(len(x), -1)
    seen = {rows[i].tobytes() for i in members}
    return int(sum(rows[i].tobytes() in seen for i in nonmembers))


def _describe_data(ds: Dataset, target: Target) -> dict[str, Any]:
    s = target.split
    d = ds.summary()
    d["split"] = {
        "seed": s.seed,
        "members": len(s.members),
        "nonmembers": len(s.nonmembers),
        "aux": len(s.aux),
        "validation": len(s.validation),
    }
    twins = cross_split_twins(ds.x, s.members, s.nonmembers)
    note = (
        f"{twins} non-member(s) have an exact twin among the members: no membership attack can "
        "tell those apart, which caps the measurable leak"
        if twins
        else "no non-member duplicates a member's features"
    )
    d["duplicates"] = {"cross_split_twins": twins, "note": note}
    return d
