"""The sweep's verdict: the Pareto frontier of accuracy against membership leakage, and the
recommended variant for a target risk level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privguard.audit.report import risk_rank
from privguard.errors import ConfigError

if TYPE_CHECKING:
    from privguard.sweep.run import SweepResult, SweepRow


def mark_pareto(rows: list[SweepRow]) -> None:
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
    # a model at or below the majority-class rate is useless, not a trade-off: never picked
    useful = [r for r in rows if not r.trivial]
    ok = [r for r in useful if risk_rank(r.data_risk) <= risk_rank(target_risk)]
    if not useful:
        rec0: dict[str, Any] = {
            "variant": None,
            "target_risk": target_risk,
            "reason": "every variant predicts the majority class (test accuracy at or below "
            "the majority-class rate): none is a usable model; train longer or with a larger "
            "model",
        }
        result.recommendation = rec0
        return rec0
    if not ok:
        closest = min(useful, key=lambda r: (risk_rank(r.data_risk), -r.test_accuracy))
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
    skipped = [r.name for r in rows if r.trivial]
    if skipped:
        why += (
            f"; not considered: {', '.join(skipped)} (at or below the majority-class rate: "
            "their low risk is not a trade-off)"
        )
    rec = {
        "variant": pick.name,
        "target_risk": target_risk,
        "test_accuracy": pick.test_accuracy,
        "accuracy_lost": round(best_acc - pick.test_accuracy, 6),
        "reason": why,
    }
    result.recommendation = rec
    return rec
