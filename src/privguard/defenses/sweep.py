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
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from privguard.audit.report import risk_rank
from privguard.errors import ConfigError

Progress = Callable[[str, int, int], None]

# Families whose success means training data leaks; extraction copies the model itself (its
# cost is reported beside, but it does not decide whether a variant protects the data).
DATA_FAMILIES = ("membership", "inversion", "attribute", "memorization")

# What "queries for 95% fidelity" reads when extraction never got there within its budget.
NOT_REACHED = math.inf

_TRAIN_KEYS = {
    "epochs",
    "hidden",
    "lr",
    "batch_size",
    "dropout",
    "weight_decay",
    "early_stopping",
    "patience",
    "label_smoothing",
    "dp_epsilon",
    "dp_delta",
    "max_grad_norm",
}


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: training changes (TrainConfig fields) and an output policy."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None

    @property
    def defence(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.train.items())]
        if self.policy:
            parts.append(f"policy {self.policy}")
        return ", ".join(parts) or "none (baseline)"


DEFAULT_GRID: tuple[Variant, ...] = (
    Variant("baseline"),
    Variant("dropout-0.5", {"dropout": 0.5}),
    Variant("weight-decay-0.01", {"weight_decay": 1e-2}),
    Variant("early-stopping", {"early_stopping": True}),
    Variant("dp-eps-8", {"dp_epsilon": 8.0}),
    Variant("dp-eps-1", {"dp_epsilon": 1.0}),
    Variant("policy-round-1", policy="round:1"),
    Variant("policy-label", policy="label"),
)

# Cheap, comparable attacks per data kind. label-only-augmentation runs in every variant, so
# even the `label` policy has a membership figure; knockoff measures extraction cost.
DEFAULT_ATTACKS = {
    "image": (
        "loss-threshold,confidence-threshold,label-only-augmentation,blackbox-inversion,knockoff"
    ),
    "tabular": "loss-threshold,confidence-threshold,label-only-augmentation,knockoff",
}


def load_grid(spec: str | Path | None) -> list[Variant]:
    """``None`` / ``"default"``: :data:`DEFAULT_GRID`; else a TOML file::

    [[variant]]
    name = "dp-eps-2"
    dp_epsilon = 2.0          # any TrainConfig field: dropout, weight_decay, ...

    [[variant]]
    name = "top1"
    policy = "topk:1"         # an output policy on the undefended model
    """
    if spec is None or str(spec) == "default":
        return list(DEFAULT_GRID)
    path = Path(spec)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no grid file at {path}; pass --grid default or a TOML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the grid file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    items = raw.get("variant")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: no [[variant]] tables; see `privguard sweep --help`")
    out: list[Variant] = []
    for i, item in enumerate(items):
        item = {k.replace("-", "_"): v for k, v in item.items()}
        name = item.pop("name", None)
        policy = item.pop("policy", None)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: variant {i + 1} needs a name")
        unknown = sorted(set(item) - _TRAIN_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: variant {name!r} has unknown key(s) {', '.join(unknown)}; use "
                f"policy or training fields: {', '.join(sorted(_TRAIN_KEYS))}"
            )
        out.append(Variant(name.strip(), item, policy))
    return _checked(out)


def _checked(grid: list[Variant]) -> list[Variant]:
    from privguard.defenses.output import parse_policy
    from privguard.models.train import TrainConfig

    names = [v.name for v in grid]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"variant names must be unique; repeated: {', '.join(dupes)}")
    for v in grid:
        parse_policy(v.policy)
        try:
            TrainConfig(**v.train)
        except TypeError as e:
            raise ConfigError(f"variant {v.name!r}: {e}") from None
    return grid


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


@dataclass
class SweepResult:
    data: str
    model: str
    seed: int
    attacks: str
    rows: list[SweepRow]
    recommendation: dict[str, Any] | None = None

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

    Example:
        >>> result = sweep("digits", out="sweep-out")
        >>> recommend(result, "medium")["variant"]
    """
    import privguard
    from privguard.audit.report.write import write_report
    from privguard.data import load_dataset
    from privguard.models.train import TrainConfig

    variants = list(grid) if isinstance(grid, Sequence) and not isinstance(grid, str) else None
    variants = _checked(variants) if variants is not None else load_grid(grid)
    base = dict(base or {})
    unknown = sorted(set(base) - _TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown training option(s) for the sweep: {', '.join(unknown)}")
    ds = load_dataset(data, label=label)  # fails fast on a bad name, before any training
    attacks = attacks or DEFAULT_ATTACKS.get(ds.kind, DEFAULT_ATTACKS["tabular"])
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
    _fan_out(jobs, n_jobs, scheduler)
    if progress is not None:
        progress("training variants", len(jobs), len(jobs))

    rows: list[SweepRow] = []
    for i, v in enumerate(variants):
        if progress is not None:
            progress(f"auditing {v.name}", i, len(variants))
        target = privguard.load_target(models_dir / model_of[v.name])
        report = privguard.audit(
            target, attacks=_allowed(attacks, v.policy), policy=v.policy, seed=seed, n_jobs=n_jobs
        )
        write_report(report, reports_dir / v.name)
        rows.append(_row(v, target, report, str(reports_dir / v.name)))
    _mark_pareto(rows)
    return SweepResult(data=data, model=model, seed=seed, attacks=attacks, rows=rows)


def _allowed(attacks: str, policy: str | None) -> str:
    """The named attacks a policy leaves applicable (a ``label`` policy rules out the
    confidence-based ones: they are not run, which is the policy's effect)."""
    from privguard.attacks.registry import ATTACKS, all_attacks
    from privguard.defenses.output import parse_policy
    from privguard.oracle import Access

    cap = min(parse_policy(policy).max_access, Access.PROBS)
    all_attacks()  # loads the registry
    names = [n.strip() for n in attacks.split(",") if n.strip()]
    kept = [n for n in names if n not in ATTACKS or ATTACKS[n].needs <= cap]
    if not kept:
        raise ConfigError(
            f"none of the sweep's attacks ({attacks}) applies under the policy {policy!r}; "
            "add a label-only attack (e.g. label-only-augmentation)"
        )
    return ",".join(kept)


def _fan_out(jobs: list[tuple], n_jobs: int, scheduler: Any) -> None:
    from joblib import Parallel, delayed, parallel_config

    if scheduler is not None:
        from distributed import Client

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            with parallel_config(backend="dask", wait_for_workers_timeout=60):
                Parallel()(delayed(_train_one)(*j) for j in jobs)
        finally:
            if client is not scheduler:
                client.close()
        return
    if n_jobs == 1 or len(jobs) == 1:
        for j in jobs:
            _train_one(*j)
        return
    Parallel(n_jobs=min(n_jobs, len(jobs)), backend="loky")(delayed(_train_one)(*j) for j in jobs)


def _row(v: Variant, target: Any, report: Any, report_dir: str) -> SweepRow:
    fam = {}
    for a in report.attacks:
        fam.setdefault(a.family, []).append(a.metrics)
    mem = fam.get("membership", [])
    inv = fam.get("inversion", [])
    ext = fam.get("extraction", [])
    privacy = target.metrics.get("privacy") or {}
    leaks = [a for a in report.attacks if a.family in DATA_FAMILIES]
    worst = max(leaks, key=lambda a: risk_rank(a.risk), default=None)
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
    )


def _mark_pareto(rows: list[SweepRow]) -> None:
    """A variant is on the frontier when no other has at least its accuracy and at most its
    membership TPR at 1% FPR, and is strictly better in one of the two."""
    for r in rows:
        r.pareto = not any(
            o is not r
            and o.test_accuracy >= r.test_accuracy
            and o.membership_tpr_at_fpr_0_01 <= r.membership_tpr_at_fpr_0_01
            and (
                o.test_accuracy > r.test_accuracy
                or o.membership_tpr_at_fpr_0_01 < r.membership_tpr_at_fpr_0_01
            )
            for o in rows
        )


def recommend(result: SweepResult, target_risk: str) -> dict[str, Any]:
    """The variant whose training-data risk (membership, inversion, attribute inference) is at
    most ``target_risk`` with the highest test accuracy — the least accuracy lost — and the
    reason in words. Extraction cost is shown beside but does not decide: it measures how cheaply
    the model itself is copied, which DP and regularization do not change."""
    if target_risk not in ("low", "medium", "high"):
        raise ConfigError(f"--target-risk takes low, medium or high, not {target_risk!r}")
    rows = result.rows
    best_acc = max(r.test_accuracy for r in rows)
    ok = [r for r in rows if risk_rank(r.data_risk) <= risk_rank(target_risk)]
    if not ok:
        closest = min(rows, key=lambda r: (risk_rank(r.data_risk), -r.test_accuracy))
        why = (
            f"no variant meets '{target_risk}': the least risky, {closest.name} "
            f"({closest.defence}), is still '{closest.data_risk}' through "
            f"{closest.data_worst_attack}; add stronger variants (e.g. a smaller dp_epsilon) to "
            "the grid"
        )
        rec: dict[str, Any] = {"variant": None, "target_risk": target_risk, "reason": why}
        result.recommendation = rec
        return rec
    pick = max(ok, key=lambda r: (r.test_accuracy, -r.membership_tpr_at_fpr_0_01))
    why = (
        f"{pick.name} ({pick.defence}) meets '{target_risk}' (training-data risk "
        f"'{pick.data_risk}') with test accuracy {pick.test_accuracy:.3f}, "
        f"{best_acc - pick.test_accuracy:.3f} below the most accurate variant"
    )
    better = [r for r in rows if r.test_accuracy > pick.test_accuracy]
    if better:
        worse = ", ".join(f"{r.name} ({r.data_risk} via {r.data_worst_attack})" for r in better)
        why += f"; every more accurate variant misses the target: {worse}"
    rec = {
        "variant": pick.name,
        "target_risk": target_risk,
        "test_accuracy": pick.test_accuracy,
        "accuracy_lost": round(best_acc - pick.test_accuracy, 6),
        "reason": why,
    }
    result.recommendation = rec
    return rec


def row_fields() -> list[str]:
    return [f.name for f in fields(SweepRow)]
