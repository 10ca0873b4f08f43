"""Attribute-inference metrics, computed in one place from the guesses and the hidden truth.

An attribute attack returns, for each partial record, its guess of the hidden sensitive value
and the no-model baseline's guess (from the attacker's auxiliary data alone). What the *model*
leaks is the difference, and what it leaks about the people it was trained on is the difference
on members compared with non-members. All figures are fractions in [0, 1] (advantages in
[-1, 1]):

- ``accuracy``, ``baseline_accuracy``: share of records whose value is guessed right;
  ``advantage`` = accuracy - baseline_accuracy (negative: the model-based guess is worse than
  the population's).
- the same three suffixed ``_members`` / ``_nonmembers``, and ``member_advantage_gap`` =
  advantage_members - advantage_nonmembers: leakage specific to the training members.
- ``balanced_accuracy``, ``baseline_balanced_accuracy``: the mean over values of the recall (the
  majority value often dominates: guessing "White" for race is right for 85% of adult).
- ``recall_<value>``, ``baseline_recall_<value>``: share of the records holding that value whose
  value is guessed right (value names lower-cased, other characters than letters and digits
  replaced by ``_``); values no evaluated record holds are left out (and said so in the notes).
- ``n_members``, ``n_nonmembers``: records behind the figures.

Sampling error: the notes give the standard error of each advantage (paired: the attack and the
baseline guess the same records), so a reader can tell a leak from noise on a few hundred
records.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from privguard.attacks.base import AttributeGuesses

HIGH_ADVANTAGE = 0.10
MEDIUM_ADVANTAGE = 0.03


def attribute_metrics(
    guesses: AttributeGuesses,
    truth: np.ndarray,
    is_member: np.ndarray,
    value_names: list[str],
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """Score the guesses against the true value indices.

    Args:
        guesses: the attack's ``values`` and ``baseline`` (value indices, partial-record order).
        truth: the true value index per record ``(n,)``.
        is_member: ``(n,)`` bool, the record was in the training set.
        value_names: the sensitive field's value names, index = value.

    Returns:
        (flat metrics, curves for plots, notes).

    Example:
        >>> metrics, curves, notes = attribute_metrics(guesses, truth, is_member, sex.values)
        >>> metrics["advantage_members"], metrics["member_advantage_gap"]
    """
    truth = np.asarray(truth, dtype=np.int64)
    attack = np.asarray(guesses.values, dtype=np.int64)
    base = np.asarray(guesses.baseline, dtype=np.int64)
    is_member = np.asarray(is_member, dtype=bool)
    if not (len(attack) == len(base) == len(truth) == len(is_member)):
        raise ValueError(
            f"guesses ({len(attack)}), baseline ({len(base)}), truth ({len(truth)}) and "
            f"membership ({len(is_member)}) must cover the same records"
        )
    hit, base_hit = attack == truth, base == truth
    metrics: dict[str, float] = {}
    notes: list[str] = []
    groups = {"": np.ones(len(truth), bool), "_members": is_member, "_nonmembers": ~is_member}
    for suffix, mask in groups.items():
        if not mask.any():
            notes.append(f"no{suffix.replace('_', ' ')} records: their figures are left out")
            continue
        acc, b_acc = float(hit[mask].mean()), float(base_hit[mask].mean())
        metrics[f"accuracy{suffix}"] = round(acc, 6)
        metrics[f"baseline_accuracy{suffix}"] = round(b_acc, 6)
        metrics[f"advantage{suffix}"] = round(acc - b_acc, 6)
        se = _paired_se(hit[mask], base_hit[mask])
        notes.append(
            f"advantage{suffix or ' (all records)'}: {acc - b_acc:+.3f} "
            f"(standard error {se:.3f}, {int(mask.sum())} records)"
        )
    if "advantage_members" in metrics and "advantage_nonmembers" in metrics:
        gap = metrics["advantage_members"] - metrics["advantage_nonmembers"]
        metrics["member_advantage_gap"] = round(gap, 6)

    names = metric_names(value_names)
    recalls, base_recalls, shown = [], [], []
    for v, safe in enumerate(names):
        held = truth == v
        if not held.any():
            notes.append(f"no evaluated record holds {value_names[v]!r}: no recall for it")
            continue
        r, br = float(hit[held].mean()), float(base_hit[held].mean())
        metrics[f"recall_{safe}"] = round(r, 6)
        metrics[f"baseline_recall_{safe}"] = round(br, 6)
        recalls.append(r)
        base_recalls.append(br)
        shown.append(value_names[v])
    metrics["balanced_accuracy"] = round(float(np.mean(recalls)), 6)
    metrics["baseline_balanced_accuracy"] = round(float(np.mean(base_recalls)), 6)
    metrics["n_members"] = int(is_member.sum())
    metrics["n_nonmembers"] = int((~is_member).sum())

    top = int(np.bincount(truth, minlength=len(value_names)).argmax())
    share = float((truth == top).mean())
    if share >= 0.6:
        notes.append(
            f"{value_names[top]!r} is {share:.0%} of the evaluated records: always guessing it "
            "scores that accuracy; compare balanced_accuracy and the per-value recalls"
        )
    curves = {
        "recall_by_value": {"values": shown, "attack": recalls, "baseline": base_recalls},
        "confusion": {
            "values": list(value_names),
            "attack": _confusion(truth, attack, len(value_names)),
            "baseline": _confusion(truth, base, len(value_names)),
        },
    }
    return metrics, curves, notes


def risk_attribute(metrics: dict[str, float]) -> str:
    """``high`` / ``medium`` / ``low`` from what the model adds about its training members.

    The harm to a person in the training set is ``advantage_members``: the share of members
    whose hidden value the model lets an attacker get right beyond the best guess from
    population data. High when it reaches 0.10 (one member in ten exposed by the model), or 0.05
    with a member gap of 0.05 (the model exposes its members distinctly more than other people);
    medium from 0.03 (around two standard errors on a few hundred members); low below.
    """
    from privguard.audit.risk import attribute_assessment

    return attribute_assessment(metrics)[0]


def metric_names(value_names: list[str]) -> list[str]:
    """Metric-name-safe, unique versions of value names: ``Married-civ-spouse`` ->
    ``married_civ_spouse``; collisions get ``_2``, ``_3``..."""
    out: list[str] = []
    for name in value_names:
        safe = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "value"
        candidate, k = safe, 2
        while candidate in out:
            candidate, k = f"{safe}_{k}", k + 1
        out.append(candidate)
    return out


def _paired_se(hit: np.ndarray, base_hit: np.ndarray) -> float:
    d = hit.astype(np.float64) - base_hit.astype(np.float64)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def _confusion(truth: np.ndarray, guess: np.ndarray, k: int) -> list[list[int]]:
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (truth, guess), 1)
    return m.tolist()
