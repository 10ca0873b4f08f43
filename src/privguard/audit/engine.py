"""The audit engine: one loop that runs attacks against an oracle factory and scores them.

Classifier, text-model and endpoint audits all come here (:mod:`privguard.audit.runner` builds
the target, the truth and the attacker's knowledge for each). For every attack the engine
decides whether it applies (the attack's data kinds, the family's truth), asks the oracle
factory for a fresh oracle, runs the attack with its checked settings, has the family's
evaluator (:mod:`privguard.audit.families`) score the guesses against the truth, applies the
family's risk rule and collects the family's artifacts; then it builds the summary once.

An attack asked for by name that cannot run is an error; one selected through its family or
``all`` is skipped with the reason (``summary.skipped``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privguard.attacks.base import Attack, KnowledgeLike
from privguard.attacks.registry import ATTACKS, discover, families, resolve
from privguard.audit.families import Evaluator, family
from privguard.audit.report import AttackResult, summarise
from privguard.errors import ConfigError, PrivguardError
from privguard.oracle import Access, QueryMeter

log = logging.getLogger("privguard.audit")
Progress = Callable[[str, int, int], None]
AttackClass = type[Attack[Any, Any]]
OracleFactory = Callable[[AttackClass, int], QueryMeter]
Settings = Mapping[str, Mapping[str, Any]]
# Counters some attacks report on their guesses (reference models trained, reused, ...).
COUNTERS = ("reference_models", "trained_models", "reused_models", "shared_models")


@dataclass
class EngineRun:
    """What the engine hands back: scored results, skipped attacks, artifacts, summary."""

    ran: list[AttackClass]
    results: list[AttackResult]
    skipped: list[dict[str, str]]
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def check_settings(settings: Settings | None) -> dict[str, dict[str, Any]]:
    """Per-attack settings (``{attack: {key: value}}``) checked against what each attack
    declares; an unknown attack or key, or a bad value, is a ConfigError naming the valid ones.
    Values given as strings (``--set``) are converted."""
    if not settings:
        return {}
    discover()
    out: dict[str, dict[str, Any]] = {}
    for raw, values in settings.items():
        name = str(raw).strip().lower()
        if name not in ATTACKS:
            tunable = sorted(n for n, c in ATTACKS.items() if c.settings)
            raise ConfigError(
                f"settings for an unknown attack {raw!r}; attacks with settings: "
                f"{', '.join(tunable)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"the settings of {name} must be a table of KEY = VALUE")
        out[name] = ATTACKS[name].configure(values)
    return out


def select(
    names: Sequence[str],
    access: Access,
    *,
    members_known: bool = True,
) -> list[AttackClass]:
    """The attack classes ``names`` select at ``access``.

    Without member truth (``members_known=False``: an endpoint audited without its model
    directory) a family that needs it cannot be scored: naming it (or one of its attacks) is a
    ConfigError, and ``all`` leaves it out."""
    if members_known:
        return resolve(list(names), access)
    for n in names:
        if n == "all":
            continue
        fams = [n] if n in families() else [c.family for c in resolve([n], access)]
        if any(family(f).needs_member_truth for f in fams):
            raise ConfigError(
                f"scoring {n} needs to know who the model was trained on: pass --model DIR (the "
                "directory of the served model; its model.json records the split) together "
                "with --endpoint; without it only inversion attacks are scored"
            )
    chosen = resolve(list(names), access)
    return [c for c in chosen if not family(c.family).needs_member_truth]


def run(
    chosen: Sequence[AttackClass],
    *,
    asked: Sequence[str],
    knowledge: KnowledgeLike,
    truth: Any,
    oracle_for: OracleFactory,
    settings: Settings | None = None,
    progress: Progress | None = None,
    subject: str = "this data",
) -> EngineRun:
    """Run ``chosen`` (from :func:`select`) and score them.

    Args:
        asked: the normalised names the user gave (an attack asked for by name that cannot run
            is an error instead of a skip).
        knowledge: what the attacker knows (handed to every attack).
        truth: what only the auditor knows (handed to the families' evaluators).
        oracle_for: ``oracle_for(attack_class, i)`` -> a fresh oracle for the ``i``-th attack.
        settings: checked per-attack settings (:func:`check_settings`).
        subject: how errors name what is audited (``"this text model"``).
    """
    settings = settings or {}
    runnable, skipped = _applicable(chosen, asked, knowledge, truth, subject)
    evaluators: dict[str, Evaluator] = {}
    results: list[AttackResult] = []
    artifacts: dict[str, dict[str, Any]] = {}
    for i, cls in enumerate(runnable):
        if progress is not None:
            progress(f"attack {cls.name}", i, len(runnable))
        attack = cls.create(settings.get(cls.name))
        oracle = oracle_for(cls, i)
        t0 = time.perf_counter()
        try:
            guesses = attack.run(oracle, knowledge, progress)
        except PrivguardError as e:
            # An attack selected through a family or "all" that cannot run on this data
            # (too few auxiliary records, say) is skipped with the reason; one asked for by
            # name is an error.
            if cls.name in asked:
                raise
            skipped.append({"attack": cls.name, "reason": str(e)})
            continue
        seconds = time.perf_counter() - t0
        fam = family(cls.family)
        if cls.family not in evaluators:
            evaluators[cls.family] = fam.evaluator(truth)
        evaluator = evaluators[cls.family]
        metrics, curves, notes = evaluator.evaluate(cls, guesses)
        for counter in COUNTERS:
            if getattr(guesses, counter, None) is not None:
                metrics[counter] = int(getattr(guesses, counter))
        if fam.assessment is not None:
            risk, reason = fam.assessment(metrics)
        else:
            risk, reason = fam.risk(metrics), f"the {cls.family} family's rule (docs/metrics.md)"
        result = AttackResult(
            name=cls.name,
            family=cls.family,
            access=cls.needs.label,
            queries=oracle.queries,
            seconds=round(seconds, 3),
            metrics=metrics,
            risk=risk,
            risk_reason=reason,
            paper=cls.paper,
            description=cls.description,
            notes=list(guesses.notes) + notes,
            curves=curves,
        )
        results.append(result)
        log.info("%s: %s risk in %.1f s: %s", cls.name, risk, seconds, reason)
        artifacts.update(evaluator.keep(result, guesses))
    if progress is not None:
        progress("attacks done", len(runnable), len(runnable))

    summary = summarise(results)
    if skipped:
        summary["skipped"] = skipped
    for evaluator in evaluators.values():
        files, extra = evaluator.finish(results)
        artifacts.update(files)
        summary.update(extra)
    if "distribution_warning" in summary:  # the blind baseline's check leads the headline
        head = summary.get("headline")
        warn = summary["distribution_warning"]
        summary["headline"] = f"{warn} {head}" if head else warn
    return EngineRun(runnable, results, skipped, artifacts, summary)


TEXT_WORLD = ("text", "documents")


def _world(kinds: Sequence[str]) -> str:
    """``text`` (canaries, corpus), ``documents`` (document membership) or ``classifier``."""
    for k in TEXT_WORLD:
        if k in kinds:
            return k
    return "classifier"


def _applicable(
    chosen: Sequence[AttackClass],
    asked: Sequence[str],
    knowledge: KnowledgeLike,
    truth: Any,
    subject: str,
) -> tuple[list[AttackClass], list[dict[str, str]]]:
    """Split ``chosen`` into the attacks that apply and the skipped ones (with reasons)."""
    text_data = knowledge.kind in TEXT_WORLD
    runnable: list[AttackClass] = []
    skipped: list[dict[str, str]] = []
    unseen: list[dict[str, str]] = []
    for cls in chosen:
        wrong_kind = cls.unsuitable(knowledge)
        why = wrong_kind
        if why is None:
            check = family(cls.family).unsuitable
            why = check(truth, cls) if check is not None else None
        if why is None:  # a user's model may refuse made-up inputs (a text classifier)
            adapter = getattr(getattr(truth, "audited", None), "adapter", None)
            why = adapter.unsuitable(cls) if hasattr(adapter, "unsuitable") else None
        if why is None:
            runnable.append(cls)
        elif cls.name in asked:
            if wrong_kind is not None and knowledge.kind not in cls.kinds and text_data:
                why = f"{why}; this is a text model"
            raise ConfigError(why)
        elif _world(cls.kinds) != _world((knowledge.kind,)) and not (
            not text_data and "text" in cls.kinds and cls.family in asked
        ):
            # text attacks under "all" on a classifier (and the other way round; canary
            # attacks on a document audit, document attacks elsewhere) are not worth a line
            # in the report
            unseen.append({"attack": cls.name, "reason": why})
            continue
        else:
            skipped.append({"attack": cls.name, "reason": why})
    if not runnable:
        reasons = "; ".join(s["reason"] for s in skipped or unseen)
        raise ConfigError(f"none of the selected attacks applies to {subject}: {reasons}")
    return runnable, skipped
