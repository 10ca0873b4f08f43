"""Risk with its reason, the utility guard, headline/actions, progress lines, record fields."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import privguard
from privguard._progress import progress_lines
from privguard.audit import risk
from privguard.audit.advice import utility
from privguard.audit.families import all_families
from privguard.audit.report import RISK_LEVELS, risk_rank
from privguard.audit.report.view import md_escape
from privguard.sweep.frontier import recommend
from privguard.sweep.run import SweepResult, SweepRow

# per family: (metric, low, high, stronger direction) the rule reads
SPACE = {
    "membership": {
        "auc": (0.45, 0.85, 1),
        "advantage": (0.0, 0.5, 1),
        "tpr_at_fpr_0.01": (0.0, 0.15, 1),
        "fpr_0.01_false_positives_allowed": (1, 1, 1),
    },
    "attribute": {"advantage_members": (-0.05, 0.3, 1), "member_advantage_gap": (-0.1, 0.2, 1)},
    "extraction": {"fidelity": (0.3, 1.0, 1), "fidelity_baseline": (0.3, 0.3, 1)},
    "inversion": {
        "attack_accuracy_consensus": (0.0, 1.0, 1),
        "member_closeness": (0.3, 1.0, 1),
        "member_closeness_pvalue": (0.0, 0.5, -1),
    },
    "memorization": {
        "exposure_bits_top_repeats": (0.0, 20.0, 1),
        "exposure_bits_max": (20.0, 20.0, 1),
        "exposure_bits_reference_mean": (1.4, 1.4, 1),
    },
}


def _draw(rng, space):
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi, _) in space.items()}


@pytest.mark.parametrize("name", sorted(SPACE))
def test_every_family_explains_its_level_and_never_ranks_a_stronger_result_lower(name):
    fam = {f.name: f for f in all_families()}[name]
    assert fam.assessment is not None, f"{name} has no assessment"
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        a = _draw(rng, SPACE[name])
        b = dict(a)  # b is at least as strong as a on every metric the rule reads
        for k, (lo, hi, sign) in SPACE[name].items():
            step = float(rng.uniform(0, (hi - lo) / 3))
            b[k] = min(hi, a[k] + step) if sign > 0 else max(lo, a[k] - step)
        (la, ra), (lb, rb) = fam.assessment(a), fam.assessment(b)
        assert la in RISK_LEVELS and ra and rb
        assert la == fam.risk(a), "the level and its reason come from one rule"
        assert risk_rank(lb) >= risk_rank(la), (name, a, la, ra, b, lb, rb)
        seen.add(la)
    assert seen == set(RISK_LEVELS), f"{name}: random metrics should reach every level"


def test_membership_reason_names_the_metric_and_threshold_that_set_the_level():
    m = {"auc": 0.70, "advantage": 0.1, "tpr_at_fpr_0.01": 0.02}
    m["fpr_0.01_false_positives_allowed"] = 5
    level, why = risk.membership_assessment(m)
    assert level == "medium" and "AUC 0.70 ≥ 0.60" in why and "below high" in why
    m.update(auc=0.62, **{"tpr_at_fpr_0.01": 0.12})
    level, why = risk.membership_assessment(m)
    assert level == "high" and "TPR 12.0% at 1% FPR ≥ 10.0%" in why
    # an unresolved TPR never sets the level, and the reason says so
    level, why = risk.membership_assessment({"auc": 0.55, "advantage": 0.05, "tpr_at_fpr_0.01": 1})
    assert level == "low" and "not resolved" in why


def test_utility_flags_a_constant_model_and_passes_a_real_one():
    y_train = np.array([0] * 70 + [1] * 30)
    y_test = np.array([0] * 70 + [1] * 30)
    const = utility(np.zeros(100, dtype=int), y_test, y_train, 2)
    assert const["trivial"] and const["majority_class_rate"] == pytest.approx(0.7)
    assert const["balanced_accuracy"] == pytest.approx(0.5) and "majority class" in const["note"]
    # worse than the majority rate (the hospital case) is flagged too
    worse = utility(np.r_[np.ones(40, int), np.zeros(60, int)], y_test, y_train, 2)
    assert worse["test_accuracy"] < 0.7 and worse["trivial"]
    good = utility(
        np.r_[np.zeros(68, int), np.ones(2, int), np.ones(28, int), np.zeros(2, int)],
        y_test,
        y_train,
        2,
    )
    assert good["test_accuracy"] == pytest.approx(0.96) and not good["trivial"]


def _row(name, acc, risk_level, trivial=False):
    return SweepRow(
        name,
        name,
        acc,
        acc,
        None,
        0.0,
        0.5,
        None,
        None,
        risk_level,
        None,
        risk_level,
        None,
        "",
        trivial=trivial,
    )


def test_the_sweep_never_recommends_a_majority_class_model():
    rows = [
        _row("baseline", 0.85, "high"),
        _row("dp-eps1", 0.70, "low", trivial=True),
        _row("l2", 0.80, "medium"),
    ]
    result = SweepResult(data="credit", model="mlp", seed=0, attacks="", rows=rows)
    rec = recommend(result, "low")
    assert rec["variant"] is None and "dp-eps1" not in rec["reason"].split(":")[1]
    rec = recommend(result, "medium")
    assert rec["variant"] == "l2" and "not considered: dp-eps1" in rec["reason"]


def test_progress_lines_are_timestamped_and_one_per_tenth():
    buf = io.StringIO()
    update = progress_lines(buf)
    update("attack lira-online", 0, 2)
    for i in range(101):
        update("reference models", i, 100)
    update("attack rmia", 1, 2)
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("attack lira-online 0/2") and lines[-1].endswith("attack rmia 1/2")
    refs = [x for x in lines if "reference models" in x]
    assert 10 <= len(refs) <= 12
    assert all(x[2] == ":" and x[5] == ":" for x in lines)


def test_audit_from_a_pipe_prints_progress_headline_actions(saved_mlp, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privguard.cli",
            "audit",
            "--model",
            str(saved_mlp),
            "--attacks",
            "loss-threshold,confidence-threshold",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    steps = [x for x in out.stderr.splitlines() if " attack " in x]
    assert any("attack loss-threshold" in x for x in steps) and any(
        "attack confidence-threshold" in x for x in steps
    )
    d = json.loads((tmp_path / "r" / "report.json").read_text())
    assert d["summary"]["headline"] and d["summary"]["actions"]
    assert all(a["risk_reason"] for a in d["attacks"])
    assert "utility" in d["target"] and not d["target"]["utility"]["trivial"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert d["summary"]["headline"].split(":")[0] in html and "What to do next" in html
    assert "<details" in html and 'class="why"' in html
    card = (tmp_path / "r" / "model-card.md").read_text()
    assert md_escape(d["summary"]["actions"][0])[:40] in card


def test_most_exposed_records_show_field_values_unless_redacted(diabetes_overfit):
    shown = privguard.audit(diabetes_overfit, attacks=["loss-threshold"])
    rec = shown.summary["most_exposed"]["records"][0]
    assert rec["fields"] and "age" in rec["fields"]
    hidden = privguard.audit(diabetes_overfit, attacks=["loss-threshold"], redact=True)
    assert "fields" not in hidden.summary["most_exposed"]["records"][0]


def test_redact_on_images_is_a_one_line_error(saved_mlp, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privguard.cli",
            "audit",
            "--model",
            str(saved_mlp),
            "--attacks",
            "loss-threshold",
            "--redact",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "--redact" in out.stderr and "Traceback" not in out.stderr


def test_the_api_logs_each_attack_and_prints_lines_with_progress_true(
    digits_logreg, caplog, capsys
):
    import logging

    with caplog.at_level(logging.INFO, logger="privguard.audit"):
        report = privguard.audit(digits_logreg, attacks=["loss-threshold"], progress=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "privguard.audit"]
    assert any(m.startswith("attack loss-threshold") for m in logged)
    assert any(m.startswith(f"loss-threshold: {report.attacks[0].risk} risk") for m in logged)
    err = capsys.readouterr().err
    assert "attack loss-threshold 0/1" in err and "attacks done 1/1" in err


def test_attacks_skipped_for_want_of_a_sensitive_field_make_one_line_that_says_how():
    from privguard.cli._common import skipped_lines

    skipped = [
        {"attack": a, "reason": f"the {a} attack needs a sensitive field: pass --sensitive NAME"}
        for a in ("fredrikson-map", "label-only-inference")
    ] + [{"attack": "knockoff", "reason": "too few auxiliary records"}]
    lines = skipped_lines(skipped)
    assert len(lines) == 2
    assert lines[0].startswith("skipped fredrikson-map, label-only-inference: attribute")
    assert "--sensitive FIELD" in lines[0] and lines[1].endswith("too few auxiliary records")


def test_train_reports_what_it_imputed_and_the_utility_verdict(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 200
    df = pd.DataFrame(
        {
            "bmi": rng.normal(25, 4, n),
            "smoker": rng.choice(["yes", "no"], n),
            "y": rng.integers(0, 2, n),
        }
    )
    df.loc[:6, "bmi"] = None
    df.loc[10:12, "smoker"] = None
    df.to_csv(tmp_path / "p.csv", index=False)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privguard.cli",
            "train",
            "--data",
            str(tmp_path / "p.csv"),
            "--label",
            "y",
            "--model",
            "logreg",
            "--epochs",
            "5",
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert out.returncode == 0, out.stderr
    median = float(np.median(df["bmi"].dropna()))
    assert f"imputed bmi: 7 empty value(s) filled with the median {median:g}" in out.stdout
    assert 'imputed smoker: 3 empty value(s) encoded as the level "missing"' in out.stdout
    # random labels: the model cannot beat the majority class, and train says so
    assert "utility warning:" in out.stdout and "majority class" in out.stdout
