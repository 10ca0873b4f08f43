"""One audit: data and split -> target -> for each attack: oracle, attack, evaluator -> report.

Attacks see only the attacker's knowledge (auxiliary pool, candidate records in a shuffled
order, partial records with the sensitive field hidden, the training recipe); the evaluators
alone hold the truth (who is a member, the hidden values, the members' records).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from privguard import __version__
from privguard.attacks import Attack, Compute, Knowledge, resolve
from privguard.audit.metrics import membership_metrics
from privguard.audit.report import AttackResult, Report, summarise
from privguard.audit.risk import assess
from privguard.data import Dataset, Split
from privguard.defenses.output import parse_policy, protect
from privguard.errors import AccessError, ConfigError, PrivguardError
from privguard.models import Target, load_target
from privguard.oracle import Access

Progress = Callable[[str, int, int], None]
TOP_RECORDS = 20  # most exposed members listed in the report


def audit(
    target: Target | str | Path,
    *,
    data: str | Dataset | None = None,
    label: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str = Access.PROBS,
    policy: str | None = None,
    sensitive: str | None = None,
    seed: int = 0,
    budget: int | None = None,
    n_jobs: int = 1,
    scheduler: Any = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    command: str | None = None,
) -> Report:
    """Run attacks against ``target`` and score them.

    Args:
        target: a :class:`~privguard.models.Target` or a model directory.
        data: the data the model was trained on; by default the data recorded in model.json
            (checked against its content hash either way).
        label: label column, for CSV/Parquet data.
        attacks: attack or family names (``privguard attacks`` lists them); ``all`` (the
            default) runs every attack the access level allows and the data suits.
        access: the most an attacker gets per query (``label`` ... ``whitebox``).
        policy: an output policy the answers pass through (``"topk:3,round:2"``; see
            :mod:`privguard.defenses.output`); it caps ``access`` at what it lets through, and
            the attacks that still apply (label-only ones under ``label``) run through it.
        sensitive: the hidden field for attribute inference (tabular data; default: the
            dataset's recorded sensitive field, e.g. ``sex``).
        seed: seeds every random choice of the attacks; the same seed gives the same report.
        budget: query budget per attack (``None``: unlimited).
        n_jobs: local processes for shadow / reference model training.
        scheduler: a Dask scheduler address (or ``distributed.Client``) to train them on instead.
        cache_dir: where trained reference models are kept and reused (``None``: no cache).
        progress: ``progress(step, done, total)`` callback.

    Example:
        >>> report = privguard.audit("model-dir", attacks=["membership"], access="probs")
        >>> report.summary["overall_risk"]
    """
    from privguard.models.text import TextTarget, is_text_model

    if isinstance(target, TextTarget) or (not isinstance(target, Target) and is_text_model(target)):
        # text models (canary exposure, training-data extraction) have their own audit path
        from privguard.audit.memorization_eval import text_audit

        return text_audit(
            target,
            data=data,
            attacks=attacks,
            access=access,
            seed=seed,
            budget=budget,
            progress=progress,
            command=command,
        )
    if not isinstance(target, Target):
        target = load_target(target)
    access = Access.parse(access)
    chain = parse_policy(policy)
    if chain.steps:
        access = min(access, chain.max_access, Access.PROBS)
    if budget is not None and budget < 1:
        raise ConfigError("--budget must be a positive number of queries")
    names = [attacks] if isinstance(attacks, str) else list(attacks)
    names = [n.strip().lower() for raw in names for n in raw.split(",") if n.strip()]
    try:
        chosen = resolve(names, access)
    except AccessError as e:
        if not chain.steps:
            raise
        raise AccessError(
            f"{e} (the output policy '{chain.spec}' lets through only '{access.label}')"
        ) from None
    ds = target.load_data(data, label=label)
    truth = _Truth.build(ds, target.split, seed)
    # the real model: only the extraction evaluator looks at it (an endpoint audit's target,
    # privguard.endpoint.EndpointTarget, keeps the served model's directory in .local)
    truth.target = getattr(target, "local", None) or target
    if n_jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    knowledge = truth.knowledge(target, ds, sensitive, needs_sensitive=_wants_attribute(chosen))
    knowledge.compute = Compute(
        n_jobs=n_jobs, scheduler=scheduler, cache_dir=str(cache_dir) if cache_dir else None
    )

    runnable, skipped = [], []
    for cls in chosen:
        why = cls.unsuitable(knowledge)
        if why is None:
            runnable.append(cls)
        elif cls.name in names:
            raise ConfigError(why)
        elif "text" in cls.kinds and cls.family not in names:
            continue  # text attacks under "all" on a classifier: not worth a line in the report
        else:
            skipped.append({"attack": cls.name, "reason": why})
    if not runnable:
        reasons = "; ".join(s["reason"] for s in skipped)
        raise ConfigError(f"none of the selected attacks applies to this data: {reasons}")

    results: list[AttackResult] = []
    artifacts: dict[str, dict[str, Any]] = {}
    membership_scores: dict[str, np.ndarray] = {}
    for i, cls in enumerate(runnable):
        if progress is not None:
            progress(f"attack {cls.name}", i, len(runnable))
        attack = cls()
        oracle = protect(target.predictor, chain, access, budget=budget, seed=seed + i)
        t0 = time.perf_counter()
        try:
            guesses = attack.run(oracle, knowledge, progress)
        except PrivguardError as e:
            # An attack selected through a family or "all" that cannot run on this data
            # (too few auxiliary records, say) is skipped with the reason; one asked for by
            # name is an error.
            if cls.name in names:
                raise
            skipped.append({"attack": cls.name, "reason": str(e)})
            continue
        seconds = time.perf_counter() - t0
        metrics, curves, notes = truth.evaluate(cls, guesses)
        for counter in ("reference_models", "trained_models", "reused_models", "shared_models"):
            if getattr(guesses, counter, None) is not None:
                metrics[counter] = int(getattr(guesses, counter))
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
        if cls.family == "membership":
            membership_scores[cls.name] = np.asarray(guesses.scores, dtype=np.float64)
        if cls.family == "extraction":
            # the stolen model as a model directory: OUT/artifacts/stolen-<attack>/
            from privguard.audit.extraction_eval import stolen_target

            stolen = stolen_target(target, guesses, cls.name, metrics)
            for fname, blob in stolen.files().items():
                artifacts[f"stolen-{cls.name}/{fname}"] = blob
            results[-1].notes.append(
                f"the copy is saved as a model directory in artifacts/stolen-{cls.name}/: audit "
                "it with --model (e.g. white-box inversion through the copy)"
            )
        if cls.family == "inversion":
            artifacts[f"inversion-{cls.name}.npz"] = {
                "reconstructions": np.asarray(guesses.reconstructions, dtype=np.float32),
                "labels": np.asarray(guesses.labels, dtype=np.int64),
            }
    if progress is not None:
        progress("attacks done", len(runnable), len(runnable))

    summary = summarise(results)
    if skipped:
        summary["skipped"] = skipped
    if membership_scores:
        artifacts["membership-scores.npz"] = truth.score_table(membership_scores)
        summary["most_exposed"] = truth.most_exposed(results, membership_scores)
    return Report(
        privguard_version=__version__,
        target=target.describe(),
        data=_describe_data(ds, target, knowledge),
        attacks=results,
        summary=summary,
        plan={
            "attacks": [c.name for c in runnable],
            "access": access.label,
            "policy": chain.spec if chain.steps else None,
            "sensitive": knowledge.sensitive.name if knowledge.sensitive else None,
            "seed": seed,
            "budget": budget,
            "n_jobs": n_jobs,
            "scheduler": scheduler if isinstance(scheduler, str) else None,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "command": command,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        artifacts=artifacts,
    )


def _wants_attribute(chosen: list[type[Attack]]) -> bool:
    return any(c.family == "attribute" for c in chosen)


@dataclass
class _Truth:
    """What only the auditor knows, and the evaluators that use it."""

    ds: Dataset
    split: Split
    seed: int
    candidates: np.ndarray
    is_member: np.ndarray
    hidden_values: np.ndarray | None = None
    value_names: list[str] = field(default_factory=list)
    _evaluators: dict[str, Any] = field(default_factory=dict)
    target: Any = None

    @classmethod
    def build(cls, ds: Dataset, split: Split, seed: int) -> _Truth:
        rng = np.random.default_rng(seed)
        cand = np.concatenate([split.members, split.nonmembers])
        cand = cand[rng.permutation(len(cand))]
        return cls(ds, split, seed, cand, np.isin(cand, split.members))

    def knowledge(
        self, target: Target, ds: Dataset, sensitive: str | None, *, needs_sensitive: bool
    ) -> Knowledge:
        split, cand = self.split, self.candidates
        know = Knowledge(
            aux_x=ds.x[split.aux],
            aux_y=ds.y[split.aux],
            candidates_x=ds.x[cand],
            candidates_y=ds.y[cand],
            recipe=target.recipe,
            bounds=ds.bounds,
            seed=self.seed,
            kind=ds.kind,
            class_names=list(ds.classes),
        )
        if ds.kind == "tabular" and (needs_sensitive or sensitive):
            from privguard.audit.sensitive import default_sensitive, sensitive_attribute

            name = sensitive or default_sensitive(ds)
            if name is not None:
                attr = sensitive_attribute(ds, name)
                flat = ds.x[cand].reshape(len(cand), -1)
                self.hidden_values, self.value_names = attr.decode(flat), list(attr.values)
                partial = flat.copy()
                partial[:, attr.columns] = np.nan
                know.sensitive, know.partial_x, know.partial_y = attr, partial, ds.y[cand]
        elif sensitive:
            raise ConfigError("--sensitive applies to tabular data only")
        return know

    def score_table(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every candidate's score under every membership attack (OUT/artifacts)."""
        table = {
            "index": self.candidates,
            "label": self.ds.y[self.candidates],
            "is_member": self.is_member,
        }
        table.update({f"score_{name}": s for name, s in scores.items()})
        return table

    def most_exposed(
        self, results: list[AttackResult], scores: dict[str, np.ndarray], top: int = TOP_RECORDS
    ) -> dict[str, Any]:
        """The members the strongest membership attack singles out most confidently.

        Strongest = highest TPR at 1% FPR, then AUC. For each member, ``exposed_at_fpr`` is the
        share of non-members scoring at least as high: the false-positive rate an attacker must
        accept to flag that person (0 = flagged with no false positive at all)."""
        ranked = [r for r in results if r.name in scores]
        best = max(ranked, key=lambda r: (r.metrics["tpr_at_fpr_0.01"], r.metrics["auc"]))
        s = scores[best.name]
        non = np.sort(s[~self.is_member])
        members = np.flatnonzero(self.is_member)
        order = members[np.argsort(-s[members], kind="stable")][:top]
        records = []
        for i in order:
            at_least = len(non) - np.searchsorted(non, s[i], side="left")
            records.append(
                {
                    "index": int(self.candidates[i]),
                    "class": self.ds.classes[int(self.ds.y[self.candidates[i]])],
                    "score": float(s[i]),
                    "exposed_at_fpr": round(at_least / max(len(non), 1), 6),
                }
            )
        return {"attack": best.name, "records": records}

    def evaluate(self, cls: type[Attack], guesses: Any):
        if cls.family == "membership":
            return membership_metrics(
                guesses.scores, guesses.decisions, self.is_member, seed=self.seed
            )
        if cls.family == "inversion":
            if "inversion" not in self._evaluators:
                from privguard.audit.inversion_eval import InversionEvaluator

                self._evaluators["inversion"] = InversionEvaluator(self.ds, self.split, self.seed)
            return self._evaluators["inversion"].evaluate(guesses)
        if cls.family == "attribute":
            from privguard.audit.attribute_eval import attribute_metrics

            assert self.hidden_values is not None
            return attribute_metrics(guesses, self.hidden_values, self.is_member, self.value_names)
        if cls.family == "extraction":
            if "extraction" not in self._evaluators:
                from privguard.audit.extraction_eval import ExtractionEvaluator

                self._evaluators["extraction"] = ExtractionEvaluator(
                    self.target, self.ds, self.split, self.seed
                )
            return self._evaluators["extraction"].evaluate(guesses)
        raise ConfigError(f"no evaluator for the {cls.family} family yet")  # pragma: no cover


def cross_split_twins(x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray) -> int:
    """Non-members whose exact feature vector is also a member's (caps any membership attack)."""
    rows = x.reshape(len(x), -1)
    seen = {rows[i].tobytes() for i in members}
    return int(sum(rows[i].tobytes() in seen for i in nonmembers))


def _describe_data(ds: Dataset, target: Target, knowledge: Knowledge) -> dict[str, Any]:
    s = target.split
    d = ds.summary()
    d["split"] = {
        "seed": s.seed,
        "members": len(s.members),
        "nonmembers": len(s.nonmembers),
        "aux": len(s.aux),
        "validation": len(s.validation),
    }
    if knowledge.sensitive is not None:
        d["sensitive"] = {"name": knowledge.sensitive.name, "values": knowledge.sensitive.values}
    twins = cross_split_twins(ds.x, s.members, s.nonmembers)
    note = (
        f"{twins} non-member(s) have an exact twin among the members: no membership attack can "
        "tell those apart, which caps the measurable leak"
        if twins
        else "no non-member duplicates a member's features"
    )
    d["duplicates"] = {"cross_split_twins": twins, "note": note}
    return d
