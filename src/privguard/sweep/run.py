"""The privacy–utility picture: train defended variants, attack each the same way, compare.

A defence is worth what it measurably removes. :func:`sweep` trains one model per training
variant (differential privacy at several ε, dropout, weight decay, early stopping, label
smoothing), derives the output-policy variants from the undefended model (a policy needs no
retraining), audits every variant with the same attacks and seed, and returns one row per
variant: test accuracy beside membership TPR at 1% FPR, inversion attack accuracy and the
queries extraction needed for 95% fidelity. :func:`recommend` picks, for a target risk level,
the variant that meets it with the least accuracy lost, and says why.

Training fans out like the reference models: local processes through joblib, or a Dask cluster
(``scheduler``), each worker training with one thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from privguard.attacks.registry import normalise
from privguard.audit.families import family
from privguard.audit.report import risk_rank
from privguard.compute import fan_out
from privguard.errors import ConfigError
from privguard.sweep.frontier import mark_pareto
from privguard.sweep.grid import (
    DEFAULT_ATTACKS,
    SWEEP_SETTINGS,
    TRAIN_KEYS,
    Variant,
    allowed_attacks,
    check_grid,
    load_grid,
)

Progress = Callable[[str, int, int], None]

# What "queries for 95% fidelity" reads when extraction never got there within its budget.
NOT_REACHED = math.inf


@dataclass
class SweepRow:
    """One variant's measured trade-off."""

    name: str
    defence: str
    test_accuracy: float
    train_accuracy: float
    epsilon: float | None
    membership_tpr_at_fpr_0_01: float
    membership_auc: float
    inversion_attack_accuracy: float | None
    extraction_queries_95: float | None
    overall_risk: str
    worst_attack: str | None
    data_risk: str
    data_worst_attack: str | None
    report_dir: str
    pareto: bool = False
    # at or below the majority-class rate (privguard.audit.advice.utility): never recommended
    trivial: bool = False
    utility_note: str = ""


@dataclass
class SweepResult:
    data: str
    model: str
    seed: int
    attacks: str
    rows: list[SweepRow]
    recommendation: dict[str, Any] | None = None
    # how the sweep's attacks differ from a full audit's (fewer reference models), in words
    note: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            if r["extraction_queries_95"] == NOT_REACHED:
                r["extraction_queries_95"] = None
                r["extraction_not_reached"] = True
        return d


def _train_one(data: str, label: str | None, config_kw: dict[str, Any], out: str) -> str:
    """Worker: train one variant with one thread and save it (joblib / Dask job)."""
    import privguard
    from privguard.models.threads import single_thread

    with single_thread():
        target = privguard.train(data, privguard.TrainConfig(**config_kw), label=label)
    target.save(out)
    return out


def sweep(
    data: str,
    *,
    model: str = "mlp",
    grid: Sequence[Variant] | str | Path | None = None,
    out: str | Path,
    base: dict[str, Any] | None = None,
    attacks: str | None = None,
    label: str | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    scheduler: Any = None,
    progress: Progress | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> SweepResult:
    """Train, audit and compare every variant of ``grid`` (see :func:`load_grid`).

    Args:
        data: a built-in dataset name or a data file.
        model: architecture of every variant (``mlp``, ``cnn``, ``logreg``).
        grid: the variants; ``None`` or ``"default"`` for :data:`DEFAULT_GRID`.
        out: directory for the variants' models (``models/``) and reports (``reports/``).
        base: TrainConfig fields shared by all variants (e.g. ``{"epochs": 60}``).
        attacks: the attacks every variant faces (default: per data kind,
            :data:`DEFAULT_ATTACKS`).
        seed: seeds the split, training and attacks; every variant gets the same split.
        n_jobs / scheduler: where the variants train (joblib processes / Dask cluster).
        settings: per-attack settings (default: :data:`SWEEP_SETTINGS`, fewer reference
            models for LiRA and RMIA than an audit's default, when they run).

    Example:
        >>> result = sweep("digits", out="sweep-out")
        >>> recommend(result, "medium")["variant"]
    """
    import privguard
    from privguard.audit.report.write import write_report
    from privguard.data import load_dataset
    from privguard.models.train import TrainConfig

    variants = list(grid) if isinstance(grid, Sequence) and not isinstance(grid, str) else None
    variants = check_grid(variants) if variants is not None else load_grid(grid)
    base = dict(base or {})
    unknown = sorted(set(base) - TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown training option(s) for the sweep: {', '.join(unknown)}")
    ds = load_dataset(data, label=label)  # fails fast on a bad name, before any training
    attacks = attacks or DEFAULT_ATTACKS.get(ds.kind, DEFAULT_ATTACKS["tabular"])
    names = set(normalise(attacks))
    if settings is None:
        settings = {k: dict(v) for k, v in SWEEP_SETTINGS.items() if k in names or "all" in names}
    note = _settings_note(settings)
    if n_jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    out = Path(out)
    models_dir, reports_dir = out / "models", out / "reports"

    # One training run per distinct training configuration; policy variants share theirs.
    configs: dict[str, dict[str, Any]] = {}
    model_of: dict[str, str] = {}
    for v in variants:
        kw = {**base, **v.train, "model": model, "seed": seed}
        TrainConfig(**kw)  # validates (ε, δ, dropout ranges...) before any work
        key = repr(sorted(kw.items()))
        name = next((n for n, c in configs.items() if repr(sorted(c.items())) == key), None)
        if name is None:
            name = v.name if not v.policy else f"{v.name}-model"
            configs[name] = kw
        model_of[v.name] = name

    jobs = [(data, label, kw, str(models_dir / name)) for name, kw in configs.items()]
    if progress is not None:
        progress("training variants", 0, len(jobs))
    for _ in fan_out(_train_one, jobs, n_jobs=n_jobs if len(jobs) > 1 else 1, scheduler=scheduler):
        pass  # each job writes its model directory
    if progress is not None:
        progress("training variants", len(jobs), len(jobs))

    rows: list[SweepRow] = []
    for i, v in enumerate(variants):
        if progress is not None:
            progress(f"auditing {v.name}", i, len(variants))
        target = privguard.load_target(models_dir / model_of[v.name])
        chosen = allowed_attacks(attacks, v.policy)
        run_names = _names(chosen)
        report = privguard.audit(
            target,
            attacks=chosen,
            policy=v.policy,
            seed=seed,
            n_jobs=n_jobs,
            settings={k: x for k, x in settings.items() if k in run_names} or None,
            progress=progress,  # each variant's attacks and reference models, as in an audit
        )
        write_report(report, reports_dir / v.name)
        rows.append(_row(v, target, report, str(reports_dir / v.name)))
    mark_pareto(rows)
    return SweepResult(
        data=data,
        model=model,
        seed=seed,
        attacks=attacks,
        rows=rows,
        note=note,
        settings=settings,
    )


def _names(attacks: str) -> set[str]:
    from privguard.attacks.registry import ATTACKS, discover, resolve
    from privguard.oracle import Access

    discover()
    named = set(normalise(attacks))
    return {c.name for c in resolve(list(named), Access.WHITEBOX)} | (named & set(ATTACKS))


def _settings_note(settings: dict[str, dict[str, Any]]) -> str:
    """The sweep's departures from a full audit, in words (empty when none)."""
    from privguard.attacks.registry import ATTACKS, discover

    discover()
    parts = []
    for name, values in settings.items():
        cls = ATTACKS.get(name)
        for key, value in values.items():
            default = next(
                (s.default for s in (cls.settings if cls else ()) if s.name == key), None
            )
            was = f" (a full audit uses {default})" if default is not None else ""
            parts.append(f"{name} with {key} = {value}{was}")
    if not parts:
        return ""
    return (
        "run for time with " + "; ".join(parts) + ": fewer reference models make these attacks "
        "somewhat weaker, so confirm the chosen variant with a full `privguard audit`"
    )


def _row(v: Variant, target: Any, report: Any, report_dir: str) -> SweepRow:
    fam = {}
    for a in report.attacks:
        fam.setdefault(a.family, []).append(a.metrics)
    mem = fam.get("membership", [])
    inv = fam.get("inversion", [])
    ext = fam.get("extraction", [])
    privacy = target.metrics.get("privacy") or {}
    # Only families whose success means training data leaks decide a variant's risk;
    # extraction copies the model itself (its cost is reported beside).
    leaks = [a for a in report.attacks if family(a.family).leaks_training_data]
    worst = max(leaks, key=lambda a: risk_rank(a.risk), default=None)
    utility = report.target.get("utility") or target.metrics.get("utility") or {}
    q95 = [m.get("queries_to_95_fidelity") for m in ext]
    q95 = [q if q is not None and math.isfinite(q) else NOT_REACHED for q in q95]
    return SweepRow(
        name=v.name,
        defence=v.defence,
        test_accuracy=float(target.metrics["test_accuracy"]),
        train_accuracy=float(target.metrics["train_accuracy"]),
        epsilon=privacy.get("epsilon"),
        membership_tpr_at_fpr_0_01=max((m["tpr_at_fpr_0.01"] for m in mem), default=0.0),
        membership_auc=max((m["auc"] for m in mem), default=0.5),
        inversion_attack_accuracy=(
            max(m.get("attack_accuracy_consensus", m.get("attack_accuracy", 0.0)) for m in inv)
            if inv
            else None
        ),
        extraction_queries_95=min(q95) if q95 else None,
        overall_risk=report.summary.get("overall_risk", "low"),
        worst_attack=report.summary.get("worst_attack"),
        data_risk=worst.risk if worst else "low",
        data_worst_attack=worst.name if worst else None,
        report_dir=report_dir,
        trivial=bool(utility.get("trivial")),
        utility_note=str(utility.get("note", "")),
    )


def row_fields() -> list[str]:
    return [f.name for f in fields(SweepRow)]
