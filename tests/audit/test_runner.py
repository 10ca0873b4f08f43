import json

import pytest

import privguard
from privguard import AccessError, ConfigError


def test_report_follows_the_contract(digits_mlp):
    report = privguard.audit(digits_mlp, attacks=["membership"], seed=0)
    d = report.to_dict()
    assert {"privguard_version", "target", "data", "attacks", "summary"} <= set(d)
    n = len(digits_mlp.split.members) + len(digits_mlp.split.nonmembers)
    for a in d["attacks"]:
        assert {"name", "family", "access", "queries", "seconds", "metrics", "risk"} <= set(a)
        assert a["family"] == "membership" and a["access"] in ("label", "probs")
        assert a["risk"] in ("low", "medium", "high")
        assert all(isinstance(v, int | float) for v in a["metrics"].values())
        for k in ("auc", "advantage", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"):
            assert 0.0 <= a["metrics"][k] <= 1.0
        assert a["metrics"]["n_members"] + a["metrics"]["n_nonmembers"] == n
        # at least one query per candidate; exactly one for the metric-threshold attacks
        assert a["queries"] == n if a["name"].endswith("-threshold") else a["queries"] >= n
    assert d["data"]["split"]["members"] == len(digits_mlp.split.members)
    assert d["summary"]["overall_risk"] in ("low", "medium", "high")
    json.dumps(d, allow_nan=False)


def test_same_seed_same_report_timings_aside(digits_mlp):
    def strip(r):
        d = r.to_dict()
        for a in d["attacks"]:
            a.pop("seconds")
        d["summary"].pop("total_seconds")
        d["plan"].pop("created")
        return d

    a = privguard.audit(digits_mlp, attacks=["loss-threshold"], seed=3)
    b = privguard.audit(digits_mlp, attacks=["loss-threshold"], seed=3)
    assert strip(a) == strip(b)


def test_access_below_what_an_attack_needs_is_refused(digits_mlp):
    with pytest.raises(AccessError, match="raise --access"):
        privguard.audit(digits_mlp, attacks=["loss-threshold"], access="label")
    with pytest.raises(ConfigError, match="unknown access level"):
        privguard.audit(digits_mlp, access="everything")


def test_budget_too_small_stops_the_attack(digits_mlp):
    with pytest.raises(privguard.BudgetExhaustedError):
        privguard.audit(digits_mlp, attacks=["loss-threshold"], budget=100)


def test_most_exposed_members_are_listed_and_all_scores_kept(diabetes_overfit):
    attacks = ["loss-threshold", "entropy-threshold"]
    report = privguard.audit(diabetes_overfit, attacks=attacks, seed=0)
    exposed = report.summary["most_exposed"]
    members = set(diabetes_overfit.split.members.tolist())
    assert len(exposed["records"]) == 20
    assert all(r["index"] in members for r in exposed["records"])
    scores = [r["score"] for r in exposed["records"]]
    assert scores == sorted(scores, reverse=True)
    table = report.artifacts["membership-scores.npz"]
    assert table["is_member"].sum() == len(members)
