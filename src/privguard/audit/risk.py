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


RULES = {"membership": membership_risk}


def assess(family: str, metrics: dict[str, float]) -> str:
    return RULES[family](metrics)
