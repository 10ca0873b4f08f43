"""From metrics to a risk level (low / medium / high), one rule per attack family.

Each family's record (:mod:`privguard.audit.families`) names its rule; the built-in rules are
here, side by side, so their thresholds can be read (and compared) in one place.

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


def extraction_risk(m: dict[str, float]) -> str:
    """High when the copy agrees with the target on 95% of held-out records, medium at 80%;
    either only when the copy beats a constant guess by a wide margin (half, resp. a third, of
    the disagreement a constant guess leaves), so a near-constant model is not called copied."""
    fidelity = m.get("fidelity", 0.0)
    base = m.get("fidelity_baseline", 0.0)
    gain = (fidelity - base) / (1.0 - base) if base < 1.0 else 0.0
    if fidelity >= 0.95 and gain >= 0.5:
        return "high"
    if fidelity >= 0.8 and gain >= 1 / 3:
        return "medium"
    return "low"


def memorization_risk(m: dict[str, float]) -> str:
    """Exposure: high when the canaries inserted most often reach 75% of the maximum exposure
    log2|R| (a search over a few candidates finds them), medium at 25% and at least 2 bits above
    the reference mean. Extraction: high when a canary is generated verbatim or half the
    submitted samples are memorized training text, medium at 10%."""
    if "exposure_bits_top_repeats" in m:
        top, bits = m["exposure_bits_top_repeats"], m.get("exposure_bits_max", 0.0)
        above = top - m.get("exposure_bits_reference_mean", 0.0)
        if bits and top >= 0.75 * bits:
            return "high"
        if bits and top >= 0.25 * bits and above >= 2.0:
            return "medium"
        return "low"
    if "precision_at_100" in m:
        if m.get("canaries_extracted", 0) >= 1 or m["precision_at_100"] >= 0.5:
            return "high"
        return "medium" if m["precision_at_100"] >= 0.1 else "low"
    return "low"


def assess(family: str, metrics: dict[str, float]) -> str:
    """The risk level of an attack of ``family`` with ``metrics`` (the family record's rule)."""
    from privguard.audit.families import family as family_record

    return family_record(family).risk(metrics)
