"""The audit report object: what ``privguard.audit`` returns and the writers serialise.

``Report.to_dict()`` is the ``report.json`` contract of DESIGN.md: ``privguard_version``,
``target``, ``data``, ``attacks`` (a list of :class:`AttackResult` entries, each with ``name``,
``family``, ``access``, ``queries``, ``seconds``, ``metrics`` and ``risk``) and ``summary``.
Metric names are documented in docs/metrics.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RISK_LEVELS = ("low", "medium", "high")


def risk_rank(level: str) -> int:
    return RISK_LEVELS.index(level)


@dataclass
class AttackResult:
    """One attack's outcome as scored by its evaluator.

    ``metrics`` is flat (name -> number). ``curves`` holds plot data such as the ROC
    (``{"roc": {"fpr": [...], "tpr": [...]}}``), ``notes`` plain-language caveats (resolution
    limits, fallbacks the attack took).
    """

    name: str
    family: str
    access: str
    queries: int
    seconds: float
    metrics: dict[str, float]
    risk: str
    paper: str = ""
    description: str = ""
    notes: list[str] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)
    # the metric and threshold that set ``risk``, in words (privguard.audit.risk)
    risk_reason: str = ""


@dataclass
class Report:
    privguard_version: str
    target: dict[str, Any]
    data: dict[str, Any]
    attacks: list[AttackResult]
    summary: dict[str, Any]
    plan: dict[str, Any] = field(default_factory=dict)
    # Arrays written beside the report as OUT/artifacts/<name> (.npz), not into report.json:
    # e.g. "inversion-mi-face.npz" -> {"reconstructions": ..., "labels": ...}.
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def overall_risk(self) -> str:
        return self.summary.get("overall_risk", "low")

    def to_dict(self) -> dict[str, Any]:
        return {
            "privguard_version": self.privguard_version,
            "target": self.target,
            "data": self.data,
            "attacks": [asdict(a) for a in self.attacks],
            "summary": self.summary,
            "plan": self.plan,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        return cls(
            privguard_version=d["privguard_version"],
            target=d["target"],
            data=d["data"],
            attacks=[
                AttackResult(**{k: a[k] for k in _ATTACK_FIELDS if k in a}) for a in d["attacks"]
            ],
            summary=d["summary"],
            plan=d.get("plan", {}),
        )


_ATTACK_FIELDS = [f.name for f in fields(AttackResult)]


def _finite(v: object) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0


def summarise(attacks: list[AttackResult]) -> dict[str, Any]:
    """Overall risk = the highest attack risk; the attack behind it is named."""
    if not attacks:
        return {
            "overall_risk": "low",
            "n_attacks": 0,
            "by_risk": {r: 0 for r in RISK_LEVELS},
            "worst_attack": None,
            "total_queries": 0,
            "total_seconds": 0.0,
        }
    worst = max(attacks, key=lambda a: (risk_rank(a.risk), _finite(a.metrics.get("auc"))))
    return {
        "overall_risk": worst.risk,
        "n_attacks": len(attacks),
        "by_risk": {r: sum(a.risk == r for a in attacks) for r in RISK_LEVELS},
        "worst_attack": worst.name,
        "total_queries": int(sum(a.queries for a in attacks)),
        "total_seconds": round(sum(a.seconds for a in attacks), 3),
    }
