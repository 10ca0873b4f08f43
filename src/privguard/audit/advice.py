"""What a result means and what to do next, in plain language; and the utility guard.

:func:`utility` compares a classifier's test accuracy with the majority-class rate (the
accuracy of always answering the most frequent training class) and reports its balanced
accuracy (mean recall over classes, Brodersen et al., ICPR 2010): a model at or below the
majority-class rate has learned nothing usable, so its low privacy risk is not a trade-off.

:func:`advise` writes ``summary.headline`` (one sentence: who is exposed, how much, from which
access) and ``summary.actions`` (next steps, most urgent first, each chosen from and quoting the
measured numbers). Both go to the top of report.html and the model card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privguard.audit.report import AttackResult, risk_rank

# A model whose balanced accuracy is within this of 1/classes answers (nearly) one class.
BALANCED_MARGIN = 0.02
# ... and whose accuracy is within this of the majority-class rate does no better than it.
ACCURACY_MARGIN = 0.005
TRIVIAL_NOTE = "this model predicts the majority class; its low risk is not a trade-off"


def utility(
    predicted: np.ndarray, y_test: np.ndarray, y_train: np.ndarray, n_classes: int
) -> dict[str, Any]:
    """Test accuracy against the majority-class rate, and balanced accuracy.

    Args:
        predicted: the model's predicted class per test record.
        y_test: the true classes of the test records.
        y_train: the training records' classes (the majority class is theirs).
        n_classes: number of classes.

    Returns ``{"test_accuracy", "majority_class", "majority_class_rate", "balanced_accuracy",
    "chance_balanced_accuracy", "trivial", "note"}``; ``trivial`` is true when the accuracy is
    at or below the majority-class rate (within 0.5 points) or the balanced accuracy within 2
    points of chance (1/classes).
    """
    predicted, y_test = np.asarray(predicted), np.asarray(y_test)
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes)
    majority = int(np.argmax(counts))
    acc = float((predicted == y_test).mean()) if len(y_test) else float("nan")
    rate = float((y_test == majority).mean()) if len(y_test) else float("nan")
    recalls = [float((predicted[y_test == c] == c).mean()) for c in np.unique(y_test)]
    balanced = float(np.mean(recalls)) if recalls else float("nan")
    chance = 1.0 / max(n_classes, 1)
    trivial = bool(acc <= rate + ACCURACY_MARGIN or balanced <= chance + BALANCED_MARGIN)
    if trivial:
        note = (
            f"test accuracy {acc:.3f} vs majority-class rate {rate:.3f}, balanced accuracy "
            f"{balanced:.3f} (chance {chance:.3f}): {TRIVIAL_NOTE}"
        )
    else:
        note = (
            f"test accuracy {acc:.3f} is above the majority-class rate {rate:.3f}; balanced "
            f"accuracy {balanced:.3f} (chance {chance:.3f})"
        )
    return {
        "test_accuracy": round(acc, 6),
        "majority_class": majority,
        "majority_class_rate": round(rate, 6),
        "balanced_accuracy": round(balanced, 6),
        "chance_balanced_accuracy": round(chance, 6),
        "trivial": trivial,
        "note": note,
    }


def predictor_utility(predictor: Any, x_test, y_test, y_train, n_classes: int) -> dict[str, Any]:
    """:func:`utility` of a predictor (``predict_proba``) on the test records."""
    probs = predictor.predict_proba(x_test) if len(x_test) else np.zeros((0, n_classes))
    return utility(np.argmax(probs, axis=1), y_test, y_train, n_classes)


def is_trivial(target: Mapping[str, Any]) -> bool:
    u = target.get("utility")
    return bool(isinstance(u, Mapping) and u.get("trivial"))


# --- headline and actions ---------------------------------------------------------------------


def _pct(v: Any) -> str:
    return f"{100 * float(v):.1f}%"


def _num(m: Mapping[str, Any], k: str, default: float = 0.0) -> float:
    v = m.get(k, default)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def _strongest(attacks: Sequence[AttackResult], family: str) -> AttackResult | None:
    mine = [a for a in attacks if a.family == family]
    if not mine:
        return None
    if family == "membership":
        key = ("tpr_at_fpr_0.01", "auc")
    elif family == "attribute":
        key = ("advantage_members", "advantage")
    elif family == "extraction":
        key = ("fidelity", "fidelity")
    elif family == "inversion":
        key = ("attack_accuracy_consensus", "attack_accuracy")
    else:
        key = ("exposure_bits_top_repeats", "precision_at_100")
    return max(
        mine, key=lambda a: (risk_rank(a.risk), _num(a.metrics, key[0]), _num(a.metrics, key[1]))
    )


def _exposure(a: AttackResult, data: Mapping[str, Any]) -> str:
    """What attack ``a`` shows, as a clause: who is exposed and how much."""
    m = a.metrics
    if a.family == "membership":
        n = int(_num(m, "n_members"))
        found = round(_num(m, "tpr_at_fpr_0.01") * n)
        who = f"{found} of the {n:,} training records" if n else "training records"
        if m.get("fpr_0.01_false_positives_allowed", 0) >= 1 and found:
            return (
                f"tell who was in the training data: {a.name} singles out {who} "
                f"({_pct(_num(m, 'tpr_at_fpr_0.01'))}) while wrongly flagging only 1% of "
                f"outsiders (AUC {_num(m, 'auc', 0.5):.2f})"
            )
        return (
            f"tell who was in the training data better than a coin flip: {a.name} reaches AUC "
            f"{_num(m, 'auc', 0.5):.2f} (0.5 = chance)"
        )
    if a.family == "attribute":
        field = (data.get("sensitive") or {}).get("name", "the hidden field")
        return (
            f"guess the {field} of {_pct(_num(m, 'advantage_members', _num(m, 'advantage')))} "
            f"more training members than population data alone allows ({a.name})"
        )
    if a.family == "extraction":
        return (
            f"copy the model: {a.name}'s copy agrees with it on {_pct(_num(m, 'fidelity'))} "
            f"of held-out records after {a.queries:,} queries"
        )
    if a.family == "inversion":
        return (
            f"reconstruct what each class looks like: {_pct(_num(m, 'attack_accuracy_consensus'))}"
            f" of {a.name}'s reconstructions are recognised as their class"
        )
    if a.family == "memorization":
        if "exposure_bits_top_repeats" in m:
            return (
                f"recover inserted secrets: the most repeated canaries reach "
                f"{_num(m, 'exposure_bits_top_repeats'):.1f} of "
                f"{_num(m, 'exposure_bits_max'):.1f} bits of exposure ({a.name})"
            )
        return (
            f"make the model repeat its training text: {_pct(_num(m, 'precision_at_100'))} of "
            f"{a.name}'s samples are verbatim training text"
        )
    return f"succeed with {a.name}"


def headline(
    attacks: Sequence[AttackResult],
    target: Mapping[str, Any],
    data: Mapping[str, Any],
    access: str,
    worst_name: str | None = None,
) -> str:
    """One sentence: who is exposed, how much, from which access (through ``worst_name``, the
    summary's worst attack, when given)."""
    trivial = is_trivial(target)
    prefix = (
        "This model predicts the majority class, so it is useless as well as " if trivial else ""
    )
    if not attacks:
        return "No attack ran: nothing was measured."
    worst = max(attacks, key=lambda a: risk_rank(a.risk))
    level = worst.risk.upper()
    via = f"with {access} access" if access else "with the access given"
    if worst.risk == "low":
        best = _strongest(attacks, worst.family) or worst
        s = (
            f"LOW risk: {via}, none of the {len(attacks)} attacks found a meaningful leak (the "
            f"strongest, {best.name}: {best.risk_reason or 'low'}). An audit is a lower bound: "
            "stronger attacks or more access may find more."
        )
        if trivial:
            s = (
                "LOW risk, but not a trade-off: this model predicts the majority class "
                f"({target['utility']['note']}). " + s
            )
        return s
    named = next((a for a in attacks if a.name == worst_name and a.risk == worst.risk), None)
    best = named or _strongest(attacks, worst.family) or worst
    s = f"{level} risk: {via}, an attacker can {_exposure(best, data)}."
    return (prefix + s[0].lower() + s[1:]) if trivial else s


def actions(
    attacks: Sequence[AttackResult],
    target: Mapping[str, Any],
    data: Mapping[str, Any],
    summary: Mapping[str, Any],
    access: str,
) -> list[str]:
    """Next steps, most urgent first, each chosen from (and quoting) the measured numbers."""
    todo: list[str] = []
    u = target.get("utility") if isinstance(target.get("utility"), Mapping) else None
    if u and u.get("trivial"):
        todo.append(
            f"Fix the model before anything else: {u['note']}. Retrain (more epochs, a larger "
            "model, class weights) and audit again."
        )
    by_family: dict[str, AttackResult] = {}
    for fam in {a.family for a in attacks}:
        best = _strongest(attacks, fam)
        if best is not None:
            by_family[fam] = best
    mem = by_family.get("membership")
    if mem is not None and risk_rank(mem.risk) >= 1:
        tr, te = target.get("train_accuracy"), target.get("test_accuracy")
        if isinstance(tr, int | float) and isinstance(te, int | float) and tr - te >= 0.05:
            todo.append(
                f"Reduce overfitting: training accuracy {tr:.3f} vs test {te:.3f} (gap "
                f"{tr - te:.3f}) is what membership attacks exploit; try early stopping, weight "
                "decay or more data, and compare them with `privguard sweep`."
            )
        label_only = [a for a in attacks if a.family == "membership" and a.access == "label"]
        if label_only:
            lo = max(label_only, key=lambda a: _num(a.metrics, "auc", 0.5))
            auc = _num(lo.metrics, "auc", 0.5)
            if risk_rank(lo.risk) >= 1:
                todo.append(
                    f"Serving labels only is not enough on its own: the label-only attack "
                    f"{lo.name} still reaches AUC {auc:.2f} ({lo.risk} risk)."
                )
            else:
                todo.append(
                    f"Serve labels only (no scores): the label-only attack {lo.name} reaches "
                    f"only AUC {auc:.2f} ({lo.risk} risk) against {mem.name}'s "
                    f"{_num(mem.metrics, 'auc', 0.5):.2f} with {mem.access} access."
                )
        elif access not in ("label", "scores"):
            todo.append(
                "Consider serving labels only (`--policy label`) and audit again with "
                "`--access label` to measure what that alone buys."
            )
        eps = (
            (target.get("privacy") or {}).get("epsilon")
            if isinstance(target.get("privacy"), Mapping)
            else None
        )
        if eps is None:
            todo.append(
                "Train with DP-SGD (`privguard train --dp-epsilon 1` to `8`): it bounds every "
                "record's influence; `privguard sweep` measures the accuracy it costs on this data."
            )
        else:
            todo.append(
                f"The model is trained with DP at ε = {eps:.3g} and the attacks still measure "
                f"{mem.risk} risk: lower ε, or check the DP setup with `privguard dp-audit`."
            )
    att = by_family.get("attribute")
    if att is not None and risk_rank(att.risk) >= 1:
        field = (data.get("sensitive") or {}).get("name", "the sensitive field")
        todo.append(
            f"Protect {field}: {att.risk_reason or att.risk}. Coarsen or drop features that "
            "predict it, or train with DP."
        )
    ext = by_family.get("extraction")
    if ext is not None and risk_rank(ext.risk) >= 1:
        todo.append(
            f"Make copying dearer: {ext.name}'s copy reached fidelity "
            f"{_num(ext.metrics, 'fidelity'):.3f} in {ext.queries:,} queries; rate-limit "
            "per client (`privguard serve`'s quotas) and return labels or top-k only."
        )
    inv = by_family.get("inversion")
    if inv is not None and risk_rank(inv.risk) >= 1:
        todo.append(
            f"Limit reconstruction: {inv.risk_reason}. Round or drop scores "
            "(`--policy round:1`, `label`) and rate-limit queries."
        )
    memo = by_family.get("memorization")
    if memo is not None and risk_rank(memo.risk) >= 1:
        todo.append(
            f"Reduce memorisation: {memo.risk_reason}. Deduplicate the training text, "
            "remove secrets from it, or train with DP."
        )
    skipped = summary.get("skipped") or []
    if any(
        s.get("attack") == "attribute" or "sensitive" in str(s.get("reason", "")) for s in skipped
    ):
        todo.append(
            "Attribute inference did not run: pass `--sensitive FIELD` (a column a person "
            "would not want guessed, e.g. age or sex) to measure it."
        )
    names = {a.name for a in attacks}
    scored = access == "scores"  # the user's own scores: no attack of ours ran
    if (
        "membership" in by_family
        and not scored
        and not names & {"lira-online", "lira-offline", "rmia"}
    ):
        todo.append(
            "Run the reference-model attacks (`--attacks lira-online,rmia`) before relying on "
            "this result: they are the strongest membership attacks and did not run here."
        )
    if not todo or all(risk_rank(a.risk) == 0 for a in attacks):
        todo.append(
            "Keep auditing: add `privguard audit --fail-on medium` to CI so a retrained model "
            "that leaks more fails the build."
        )
    return todo


def advise(
    attacks: Sequence[AttackResult],
    target: Mapping[str, Any],
    data: Mapping[str, Any],
    summary: Mapping[str, Any],
    access: str,
) -> dict[str, Any]:
    """``{"headline": ..., "actions": [...]}`` for the report's summary."""
    return {
        "headline": headline(attacks, target, data, access, summary.get("worst_attack")),
        "actions": actions(attacks, target, data, summary, access),
    }
