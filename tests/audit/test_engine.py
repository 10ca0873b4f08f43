"""The engine's extension points: family records, attack discovery, per-attack settings, and
the shared oracle pieces (QueryMeter, top-k, the policy access cap)."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import privguard
from privguard.attacks import all_attacks, registry
from privguard.attacks.memorization import TextOracle
from privguard.audit.engine import check_settings, select
from privguard.audit.families import all_families, family
from privguard.audit.plan import AuditPlan, parse_set
from privguard.audit.risk import assess
from privguard.defenses.output import parse_policy, policy_access
from privguard.errors import BudgetExhaustedError, ConfigError
from privguard.oracle import Access, Oracle, QueryMeter, top_k

ATTACKS_DIR = Path(registry.__file__).parent


# -- families ------------------------------------------------------------------------------------


def test_every_attack_family_has_a_record_whose_rule_assess_uses():
    names = {f.name for f in all_families()}
    assert {c.family for c in all_attacks()} <= names
    fam = family("membership")
    weak, strong = {"auc": 0.5, "advantage": 0.0}, {"auc": 0.9, "advantage": 0.6}
    assert assess("membership", weak) == fam.risk(weak) == "low"
    assert assess("membership", strong) == fam.risk(strong) == "high"
    assert not family("extraction").leaks_training_data and family("inversion").leaks_training_data
    assert family("membership").needs_member_truth and not family("inversion").needs_member_truth
    with pytest.raises(ConfigError, match="no evaluator for the nosuch family"):
        family("nosuch")


def test_key_metric_columns_are_the_ones_present():
    fam = family("memorization")
    cols = fam.columns([{"exposure_bits_top_repeats": 3.0, "exposure_bits_max": 19.9}])
    assert [m for m, _ in cols] == ["exposure_bits_top_repeats", "exposure_bits_max"]
    # a family whose key metrics are all absent falls back to the first metrics
    assert family("extraction").columns([{"x": 1.0, "y": 2.0}]) == [("x", "x"), ("y", "y")]


def test_without_member_truth_only_families_that_need_none_are_selected():
    chosen = select(["all"], Access.PROBS, members_known=False)
    assert chosen and all(not family(c.family).needs_member_truth for c in chosen)
    with pytest.raises(ConfigError, match="pass --model DIR"):
        select(["loss-threshold"], Access.PROBS, members_known=False)


# -- discovery -----------------------------------------------------------------------------------


def _registered_in(path: Path) -> list[str]:
    """Names of the classes a module decorates with @register (read from its source)."""
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(getattr(d, "id", None) == "register" for d in node.decorator_list)
    ]


def test_every_register_in_the_attack_packages_is_discovered():
    found = {c.__name__ for c in all_attacks()}
    declared = [
        (path.name, cls) for path in ATTACKS_DIR.rglob("*.py") for cls in _registered_in(path)
    ]
    assert len(declared) >= 20
    assert [d for d in declared if d[1] not in found] == []


NEW_ATTACK = textwrap.dedent(
    '''
    """A test attack: scores every candidate by the target's confidence in its label."""
    import numpy as np

    from privguard.attacks.base import Attack, MembershipGuesses, Setting
    from privguard.attacks.registry import register
    from privguard.oracle import Access


    @register
    class PlainConfidence(Attack):
        name = "plain-confidence-test"
        family = "membership"
        needs = Access.PROBS
        paper = "none (a test)"
        settings = (Setting("power", float, 1.0, "exponent applied to the confidence", 0.1, 10),)

        def __init__(self, *, power: float = 1.0) -> None:
            self.power = power

        def run(self, oracle, knowledge, progress=None):
            p = oracle.proba(knowledge.candidates_x)
            conf = p[np.arange(len(p)), knowledge.candidates_y] ** self.power
            return MembershipGuesses(conf, conf > np.median(conf))
    '''
)


@pytest.fixture
def one_new_attack_file(tmp_path, monkeypatch):
    """A new attack as one file in a folder on the membership package's path (as if dropped
    into attacks/membership/), nothing else edited."""
    (tmp_path / "plain_confidence_test.py").write_text(NEW_ATTACK)
    import privguard.attacks.membership as pkg

    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_discovered", False)
    yield
    registry.ATTACKS.pop("plain-confidence-test", None)
    sys.modules.pop("privguard.attacks.membership.plain_confidence_test", None)


def test_a_new_attack_is_one_file_and_runs_with_its_settings(one_new_attack_file, digits_logreg):
    assert "plain-confidence-test" in {c.name for c in all_attacks()}
    report = privguard.audit(
        digits_logreg,
        attacks="plain-confidence-test",
        settings={"plain-confidence-test": {"power": "2"}},
    )
    (a,) = report.attacks
    assert a.family == "membership" and 0.0 <= a.metrics["auc"] <= 1.0
    assert a.risk in ("low", "medium", "high") and a.queries == len(
        digits_logreg.split.members
    ) + len(digits_logreg.split.nonmembers)
    assert report.plan["settings"] == {"plain-confidence-test": {"power": 2.0}}
    assert "most_exposed" in report.summary  # the family's artifacts come with it


# -- settings ------------------------------------------------------------------------------------


def _default_in_constructor(cls, name):
    for klass in cls.__mro__:
        param = inspect.signature(klass.__init__).parameters.get(name)
        if param is not None:
            return param.default
    raise AssertionError(f"{cls.name}: no constructor takes {name}")


def test_declared_settings_match_the_constructors():
    declared = [(c, s) for c in all_attacks() for s in c.settings]
    assert any(c.name == "lira-online" and s.name == "n_reference" for c, s in declared)
    for cls, setting in declared:
        assert _default_in_constructor(cls, setting.name) == setting.default, (cls, setting)
        cls.create({setting.name: setting.default} if setting.default is not None else {})


def test_settings_are_checked_against_what_attacks_declare():
    assert check_settings({"lira-online": {"n_reference": "32"}}) == {
        "lira-online": {"n_reference": 32}
    }
    assert check_settings({"rmia": {"offline": "false"}}) == {"rmia": {"offline": False}}
    cases = [
        ({"lira-onlin": {"n_reference": 8}}, "unknown attack 'lira-onlin'.*lira-online"),
        ({"lira-online": {"n_refs": 8}}, "no setting 'n_refs'.*n_reference \\(int, 4..1024"),
        ({"lira-online": {"n_reference": "many"}}, "n_reference takes an integer"),
        ({"lira-online": {"n_reference": 2}}, "n_reference must be in 4..1024"),
        ({"lira-online": {"variance": "wild"}}, "variance is one of auto, fixed, per-example"),
        ({"lira-online": {"augment": 3}}, "augment takes true or false"),
    ]
    for given, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_settings(given)


def test_settings_reach_the_attack_and_the_report(digits_logreg):
    report = privguard.audit(
        digits_logreg, attacks="lira-offline", settings={"lira-offline": {"n_reference": 2}}
    )
    (a,) = report.attacks
    assert a.metrics["reference_models"] == 2
    assert report.plan["settings"] == {"lira-offline": {"n_reference": 2}}
    plain = privguard.audit(digits_logreg, attacks="loss-threshold")
    assert "settings" not in plain.plan  # reports without settings keep their keys


def test_parse_set_and_plan_tables(tmp_path):
    assert parse_set(["lira-online.n_reference=32", "LIRA-online.variance = fixed"]) == {
        "lira-online": {"n_reference": "32", "variance": "fixed"}
    }
    for bad in ("lira-online.n_reference", "n_reference=3", ".x=1", "lira-online.x="):
        with pytest.raises(ConfigError, match="--set takes ATTACK.SETTING=VALUE"):
            parse_set([bad])
    f = tmp_path / "plan.toml"
    f.write_text(
        'model = "m"\n[attacks]\nselect = ["membership"]\n'
        "[attacks.lira-online]\nn_reference = 32\nvariance = 'fixed'\n"
    )
    plan = AuditPlan.from_toml(f)
    assert plan.attacks == "membership"
    assert plan.settings == {"lira-online": {"n_reference": 32, "variance": "fixed"}}
    # --set overrides the file key by key
    plan = plan.merged({"settings": parse_set(["lira-online.n_reference=64"])})
    assert plan.settings == {"lira-online": {"n_reference": "64", "variance": "fixed"}}
    plan.check()
    with pytest.raises(ConfigError, match="no setting 'nref'"):
        plan.merged({"settings": {"lira-online": {"nref": 1}}}).check()
    f.write_text('model = "m"\n[attacks]\nlira-online = 3\n')
    with pytest.raises(ConfigError, match=r"\[attacks.NAME\] tables"):
        AuditPlan.from_toml(f)


# -- the shared oracle pieces --------------------------------------------------------------------


def test_both_oracles_share_one_query_meter():
    assert issubclass(Oracle, QueryMeter) and issubclass(TextOracle, QueryMeter)

    class Model:
        granularity = "char"

        def sample(self, n, **kw):
            return ["x"] * n

    oracle = TextOracle(Model(), budget=3)
    oracle.sample(2, max_len=5, seed=0)
    assert oracle.queries == 2 and oracle.remaining == 1
    with pytest.raises(BudgetExhaustedError, match="budget of 3 spent"):
        oracle.sample(2, max_len=5, seed=0)
    assert oracle.queries == 2


def test_top_k_and_the_policy_access_cap():
    p = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    idx, scores = top_k(p, 2)
    assert idx.tolist() == [[1, 2], [2, 0]] and scores.tolist() == [[0.5, 0.4], [0.4, 0.3]]
    assert policy_access("whitebox", None) == Access.WHITEBOX
    assert policy_access("logits", "round:2") == Access.PROBS
    assert policy_access("logits", "topk:2") == Access.TOPK
    assert policy_access(Access.LABEL, parse_policy("topk:2")) == Access.LABEL


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_set_reaches_the_report_and_bad_settings_exit_2(capsys, tmp_path, saved_mlp):
    import json

    from privguard.cli import main

    out = tmp_path / "rep"
    args = ["audit", "--model", saved_mlp, "--attacks", "loss-threshold", "--out", out]
    code = main([*map(str, args), "--set", "loss-threshold.shadow_fraction=0.3"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["settings"] == {"loss-threshold": {"shadow_fraction": 0.3}}
    assert "TPR@1%" in capsys.readouterr().out  # the family record's key metrics as columns
    code = main([*map(str, args), "--set", "loss-threshold.shadow=0.3"])
    err = capsys.readouterr().err
    assert code == 2 and "no setting 'shadow'" in err and "shadow_fraction" in err
    assert "Traceback" not in err
    assert main(["attacks", "--settings"]) == 0
    assert "n_reference" in capsys.readouterr().out
