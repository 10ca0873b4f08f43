"""The sweep tells the truth: by default it runs the audit's strongest attacks (LiRA, RMIA with
fewer reference models, stated), so a variant's level in the sweep is the level a full audit
of the same model finds."""

from __future__ import annotations

import pytest

import privguard
from privguard.audit.report import risk_rank
from privguard.sweep import Variant, sweep
from privguard.sweep.report import panel_level

pytestmark = pytest.mark.slow

OVERFIT = {"epochs": 300, "lr": 3e-3}


@pytest.fixture(scope="module")
def overfit_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("agree")
    grid = [Variant("baseline"), Variant("early-stopping", {"early_stopping": True})]
    return sweep("diabetes", grid=grid, out=out, base=OVERFIT, n_jobs=1), out


def test_the_sweep_runs_the_strong_attacks_and_says_with_how_many_references(overfit_sweep):
    result, _ = overfit_sweep
    assert {"lira-online", "rmia"} <= set(result.attacks.split(","))
    assert "lira-online with n_reference = 8 (a full audit uses 16)" in result.note


def test_a_variant_the_sweep_grades_is_graded_no_lower_by_a_full_audit(overfit_sweep):
    result, out = overfit_sweep
    for row in result.rows:
        full = privguard.audit(str(out / "models" / row.name), attacks=["membership"], seed=0)
        mem = [a for a in full.attacks if a.family == "membership"]
        audit_level = max((a.risk for a in mem), key=risk_rank)
        # the sweep's level is the audit's (it may only err on the side of caution)
        assert risk_rank(row.data_risk) >= risk_rank(audit_level), (
            row.name,
            row.data_risk,
            audit_level,
            [(a.name, a.risk, a.risk_reason) for a in mem],
        )


def test_plot_colour_comes_from_the_plotted_measure():
    assert panel_level("membership_tpr_at_fpr_0_01", 0.003) == "low"
    assert panel_level("membership_tpr_at_fpr_0_01", 0.05) == "medium"
    assert panel_level("membership_tpr_at_fpr_0_01", 0.2) == "high"
    assert panel_level("extraction_queries_95", 500.0) is None
