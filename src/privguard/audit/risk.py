"""From metrics to a risk level (low / medium / high) and the reason for it, one rule per family.

Each family's record (:mod:`privguard.audit.families`) names its rule; the built-in rules are
here, side by side, so their thresholds can be read (and compared) in one place. Every rule is
written once as an *assessment* — ``(level, reason)``, the reason naming the metric and the
threshold that set the level, in words — and the level alone is read off it, so the level and
the sentence that explains it cannot disagree.

The thresholds are documented in docs/metrics.md ("How a risk level is set"). Every rule is
monotone: a result at least as strong on every metric a rule reads never gets a lower level.
Membership: chance is AUC 0.5 and TPR equal to the FPR; the rule looks at both the average case
(AUC, advantage) and the worst case for a few records (TPR at 1% FPR, only when the sample
resolves it).
"""

from __future__ import annotations

from collections.abc import Mapping

Assessment = tuple[str, str]  # (level, reason)

# membership thresholds: (high, medium)
MEMBERSHIP_AUC = (0.75, 0.6)
MEMBERSHIP_ADVANTAGE = (0.4, 0.15)
MEMBERSHIP_TPR_1PCT = (0.10, 0.03)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def membership_assessment(m: Mapping[str, float]) -> Assessment:
    resolved = m.get("fpr_0.01_false_positives_allowed", 0) >= 1
    tpr = m.get("tpr_at_fpr_0.01", 0.0) if resolved else 0.0
    auc, adv = m.get("auc", 0.5), m.get("advantage", 0.0)
    for i, level in enumerate(("high", "medium")):
        hits = []
        if tpr >= MEMBERSHIP_TPR_1PCT[i]:
            hits.append(
                f"TPR {_pct(tpr)} at 1% FPR ≥ {_pct(MEMBERSHIP_TPR_1PCT[i])}: individual "
                "members are exposed with few false alarms"
            )
        if auc >= MEMBERSHIP_AUC[i]:
            hits.append(
                f"AUC {auc:.2f} ≥ {MEMBERSHIP_AUC[i]:.2f}: members are distinguishable on average"
            )
        if adv >= MEMBERSHIP_ADVANTAGE[i]:
            hits.append(
                f"advantage {adv:.2f} ≥ {MEMBERSHIP_ADVANTAGE[i]:.2f}: at its best threshold "
                f"the attack flags {_pct(adv)} more members than non-members"
            )
        if hits:
            reason = "; ".join(hits)
            if level == "medium":
                reason += (
                    f" (below high: AUC < {MEMBERSHIP_AUC[0]}, advantage < "
                    f"{MEMBERSHIP_ADVANTAGE[0]}, TPR at 1% FPR < {_pct(MEMBERSHIP_TPR_1PCT[0])})"
                )
            return level, reason
    tpr_text = (
        f"TPR {_pct(tpr)} at 1% FPR < {_pct(MEMBERSHIP_TPR_1PCT[1])}"
        if resolved
        else "TPR at 1% FPR not resolved (fewer than 100 non-members)"
    )
    return "low", (
        f"AUC {auc:.2f} < {MEMBERSHIP_AUC[1]}, advantage {adv:.2f} < "
        f"{MEMBERSHIP_ADVANTAGE[1]}, {tpr_text}: this attack tells members from non-members "
        "little better than chance"
    )


def membership_risk(m: Mapping[str, float]) -> str:
    return membership_assessment(m)[0]


def inversion_assessment(m: Mapping[str, float]) -> Assessment:
    """High when training records themselves are recovered; medium when class representatives
    are (for a model whose classes are people, e.g. a face recogniser, that is a person's
    likeness: read medium as high there); low when the evaluators recognise little."""
    from privguard.audit.inversion_eval import MEMBER_SIGNAL, SIGNIFICANCE, member_signal

    consensus = m.get("attack_accuracy_consensus", 0.0)
    closeness = m.get("member_closeness", 0.5)
    p = m.get("member_closeness_pvalue", 1.0)
    if consensus < 0.5:
        return "low", (
            f"both independent evaluators recognise {_pct(consensus)} < 50% of the "
            "reconstructions as their class: little about the classes is recovered"
        )
    recognised = (
        f"both independent evaluators recognise {_pct(consensus)} ≥ 50% of the "
        "reconstructions as their class"
    )
    if member_signal(m):
        return "high", (
            f"{recognised}, and they lie nearer to training members than to non-members "
            f"(closeness {closeness:.2f} ≥ {MEMBER_SIGNAL}, p = {p:.3f} < {SIGNIFICANCE}): "
            "training records themselves are recovered"
        )
    return "medium", (
        f"{recognised}: class representatives are recovered (no member-specific signal: "
        f"closeness {closeness:.2f}, p = {p:.3f}); if a class is a person, read this as high"
    )


def inversion_risk(m: Mapping[str, float]) -> str:
    return inversion_assessment(m)[0]


def attribute_assessment(m: Mapping[str, float]) -> Assessment:
    from privguard.audit.attribute_eval import HIGH_ADVANTAGE, MEDIUM_ADVANTAGE

    adv = m.get("advantage_members", m.get("advantage", 0.0))
    gap = m.get("member_advantage_gap", 0.0)
    what = (
        f"the model lets an attacker guess the hidden field of {_pct(adv)} more training "
        "members than population data alone"
    )
    if adv >= HIGH_ADVANTAGE:
        return "high", f"members' advantage {adv:.2f} ≥ {HIGH_ADVANTAGE:.2f}: {what}"
    if adv >= HIGH_ADVANTAGE / 2 and gap >= HIGH_ADVANTAGE / 2:
        return "high", (
            f"members' advantage {adv:.2f} ≥ {HIGH_ADVANTAGE / 2:.2f} with a member gap "
            f"{gap:.2f} ≥ {HIGH_ADVANTAGE / 2:.2f}: {what}, distinctly more than for others"
        )
    if adv >= MEDIUM_ADVANTAGE:
        return "medium", (
            f"members' advantage {adv:.2f} ≥ {MEDIUM_ADVANTAGE:.2f} (below high: "
            f"< {HIGH_ADVANTAGE:.2f}): {what}"
        )
    return "low", (
        f"members' advantage {adv:.2f} < {MEDIUM_ADVANTAGE:.2f}: the model adds little to what "
        "population data already reveals about the hidden field"
    )


def attribute_risk(m: Mapping[str, float]) -> str:
    return attribute_assessment(m)[0]


def extraction_assessment(m: Mapping[str, float]) -> Assessment:
    """High when the copy agrees with the target on 95% of held-out records, medium at 80%;
    either only when the copy beats a constant guess by a wide margin (half, resp. a third, of
    the disagreement a constant guess leaves), so a near-constant model is not called copied."""
    fidelity = m.get("fidelity", 0.0)
    base = m.get("fidelity_baseline", 0.0)
    gain = (fidelity - base) / (1.0 - base) if base < 1.0 else 0.0
    beyond = f"(a constant guess agrees on {_pct(base)}; the copy closes {_pct(gain)} of the rest)"
    if fidelity >= 0.95 and gain >= 0.5:
        return "high", (
            f"the copy agrees with the model on {_pct(fidelity)} ≥ 95% of held-out records "
            f"{beyond}: the model can be stolen"
        )
    if fidelity >= 0.8 and gain >= 1 / 3:
        return "medium", (
            f"the copy agrees with the model on {_pct(fidelity)} ≥ 80% of held-out records "
            f"{beyond} (below high: < 95% or < half of the rest)"
        )
    return "low", (
        f"the copy agrees with the model on {_pct(fidelity)} of held-out records {beyond}: "
        "below 80%, or little beyond a constant guess"
    )


def extraction_risk(m: Mapping[str, float]) -> str:
    return extraction_assessment(m)[0]


def memorization_assessment(m: Mapping[str, float]) -> Assessment:
    """Exposure: high when the canaries inserted most often reach 75% of the maximum exposure
    log2|R| (a search over a few candidates finds them), medium at 25% and at least 2 bits above
    the reference mean. Extraction: high when a canary is generated verbatim or half the
    submitted samples are memorized training text, medium at 10%."""
    if "exposure_bits_top_repeats" in m:
        top, bits = m["exposure_bits_top_repeats"], m.get("exposure_bits_max", 0.0)
        above = top - m.get("exposure_bits_reference_mean", 0.0)
        share = top / bits if bits else 0.0
        if bits and top >= 0.75 * bits:
            return "high", (
                f"the most repeated canaries reach {top:.1f} of {bits:.1f} bits of exposure "
                f"({_pct(share)} ≥ 75%): a search over a few candidates finds them"
            )
        if bits and top >= 0.25 * bits and above >= 2.0:
            return "medium", (
                f"the most repeated canaries reach {top:.1f} of {bits:.1f} bits "
                f"({_pct(share)} ≥ 25%, {above:.1f} ≥ 2 bits above random candidates; below "
                "high: < 75%)"
            )
        return "low", (
            f"the most repeated canaries reach {top:.1f} of {bits:.1f} bits ({_pct(share)}, "
            f"{above:.1f} bits above random candidates): below 25% or within 2 bits of chance"
        )
    if "precision_at_100" in m:
        p, n = m["precision_at_100"], int(m.get("canaries_extracted", 0))
        if n >= 1:
            return "high", f"{n} inserted canar{'y' if n == 1 else 'ies'} generated verbatim"
        if p >= 0.5:
            return "high", f"{_pct(p)} ≥ 50% of the samples are verbatim training text"
        if p >= 0.1:
            return "medium", (
                f"{_pct(p)} ≥ 10% of the samples are verbatim training text (below high: < 50%, "
                "no canary extracted)"
            )
        return "low", f"{_pct(p)} < 10% of the samples are verbatim training text, no canary"
    return "low", "no memorization metric measured"


def memorization_risk(m: Mapping[str, float]) -> str:
    return memorization_assessment(m)[0]


def assess(family: str, metrics: Mapping[str, float]) -> str:
    """The risk level of an attack of ``family`` with ``metrics`` (the family record's rule)."""
    return explain(family, metrics)[0]


def explain(family: str, metrics: Mapping[str, float]) -> Assessment:
    """``(level, reason)`` of an attack of ``family``: the family record's assessment, or its
    level alone with a generic reason for a family that declares no assessment."""
    from privguard.audit.families import family as family_record

    fam = family_record(family)
    if fam.assessment is not None:
        return fam.assessment(metrics)
    return fam.risk(metrics), f"the {family} family's rule (docs/metrics.md)"
