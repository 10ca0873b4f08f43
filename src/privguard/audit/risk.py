"""From metrics to a risk level (low / medium / high), one rule per attack family.

The thresholds are documented in docs/metrics.md. Membership: chance is AUC 0.5 and TPR equal to
the FPR; the rule looks at both the average case (AUC, advantage) and the worst case for a few
records (TPR at 1% FPR, only when the sample resolves it).
"""

from __future__ import annotations


def membership_risk(m: dict[str, float]) -> str:
    resolved = m.get("fpr_0.01_false_positives_allowed", 0) >= 1
    low_fpr = m.get("tpr_at_fpr_0.01", 0.0) if resolved else 0.0
    if m["auc"] >= 0.75 or m["advantage"] >= 0.4 or low_fpr >= 0.10:
        return "high"
    if m["auc"] >= 0.6 or m["advantage"] >= 0.15 or low_fpr >= 0.03:
        return "medium"
    return "low"


def inversion_risk(m: dict[str, float]) -> str:
    """High when training records themselves are recovered; medium when class representatives
    are (for a model whose classes are people, e.g. a face recogniser, that is a person's
    likeness: read medium as high there); low when the evaluators recognise little."""
    from privguard.audit.inversion_eval import member_signal

    recovered = m.get("attack_accuracy_consensus", 0.0) >= 0.5
    if recovered and member_signal(m):
        return "high"
    return "medium" if recovered else "low"


def attribute_risk(m: dict[str, float]) -> str:
    from privguard.audit.attribute_eval import risk_attribute

    return risk_attribute(m)


RULES = {"membership": membership_risk, "inversion": inversion_risk, "attribute": attribute_risk}


def assess(family: str, metrics: dict[str, float]) -> str:
    return RULES[family](metrics)
