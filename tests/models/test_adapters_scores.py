"""Metrics only: a membership report from per-record scores and member flags, no queries.

The scores are real: the per-record loss and confidence of a scikit-learn MLP fitted here on
400 digits, for those members and 400 records it never saw.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier

import privguard
from privguard.cli import main
from privguard.errors import DataError


@pytest.fixture(scope="module")
def scores():
    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(6).permutation(len(y))
    m, n = idx[:400], idx[400:800]
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    model.fit(x[m] / 16, y[m])
    rows = np.concatenate([m, n])
    p = model.predict_proba(x[rows] / 16)[np.arange(len(rows)), y[rows]]
    return pd.DataFrame(
        {
            "loss": -np.log(np.clip(p, 1e-12, None)),
            "confidence": p,
            "is_member": np.r_[np.ones(len(m), bool), np.zeros(len(n), bool)],
        }
    )


def test_scores_become_a_membership_report_with_the_usual_metrics(scores, tmp_path):
    report = privguard.audit_scores(scores, lower_is_member=["loss"])
    got = {a.name: a for a in report.attacks}
    assert set(got) == {"loss", "confidence"}
    member = scores["is_member"].to_numpy()
    expected = roc_auc_score(member, -scores["loss"])
    assert got["loss"].metrics["auc"] == pytest.approx(expected, abs=1e-6)
    assert got["loss"].metrics["auc"] == pytest.approx(got["confidence"].metrics["auc"], abs=1e-3)
    assert got["loss"].metrics["n_members"] == 400 and got["loss"].queries == 0
    assert got["loss"].risk in ("low", "medium", "high")
    assert "roc" in got["loss"].curves
    assert any("median" in n for n in got["loss"].notes)
    files = privguard.write_report(report, tmp_path / "report")
    assert {p.name for p in files.values()} >= {"report.json", "report.html", "model-card.md"}
    back = json.loads((tmp_path / "report" / "report.json").read_text())
    assert back["target"]["kind"] == "scores" and back["plan"]["access"] == "scores"


def test_arrays_and_a_threshold(scores):
    member = scores["is_member"].to_numpy()
    report = privguard.audit_scores(
        scores["confidence"].to_numpy(), member, threshold={"score": 0.999}
    )
    m = report.attacks[0].metrics
    c = scores["confidence"].to_numpy()
    assert m["attacker_tpr"] == pytest.approx(float((c[member] >= 0.999).mean()), abs=1e-6)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "npz"])
def test_cli_scores_file_writes_the_report_without_a_model(scores, tmp_path, suffix, capsys):
    path = tmp_path / f"scores.{suffix}"
    if suffix == "csv":
        scores.to_csv(path, index=False)
    elif suffix == "parquet":
        scores.to_parquet(path, index=False)
    else:
        np.savez(path, **{c: scores[c].to_numpy() for c in scores.columns})
    out = tmp_path / "report"
    args = ["audit", "--scores", str(path), "--lower-is-member", "loss", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert {a["name"] for a in report["attacks"]} == {"loss", "confidence"}
    assert report["data"]["sha256"]


def test_bad_score_files_are_one_line_errors(scores, tmp_path, capsys):
    with pytest.raises(DataError, match="no member flag column 'member'"):
        privguard.audit_scores(scores, member_column="member")
    with pytest.raises(DataError, match="needs both"):
        privguard.audit_scores(scores.assign(is_member=True))
    with pytest.raises(DataError, match="true/false or 1/0"):
        privguard.audit_scores(scores.assign(is_member="maybe"))
    with pytest.raises(DataError, match="not score columns"):
        privguard.audit_scores(scores, lower_is_member=["nope"])
    (tmp_path / "s.json").write_text("{}")
    assert main(["audit", "--scores", str(tmp_path / "s.json"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the kind" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
