import pytest

from privguard.audit.plan import AuditPlan
from privguard.errors import ConfigError


def test_plan_file_paths_are_relative_to_the_file_and_flags_override(tmp_path):
    f = tmp_path / "plan.toml"
    f.write_text(
        'model = "m"\ndata = "digits"\nattacks = ["loss-threshold", "entropy-threshold"]\n'
        'seed = 4\nout = "rep"\nfail-on = "medium"\n'
    )
    plan = AuditPlan.from_toml(f)
    assert plan.model == str(tmp_path / "m") and plan.out == str(tmp_path / "rep")
    assert plan.data == "digits"  # a built-in name is not a path
    assert plan.attacks == "loss-threshold,entropy-threshold" and plan.fail_on == "medium"
    plan = plan.merged({"seed": 9, "access": None})
    assert plan.seed == 9 and plan.access == "probs"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("modle = 'x'", "unknown plan key"),
        ("seed = 'zero'", "seed must be an integer"),
        ("model = [", "not valid TOML"),
    ],
)
def test_bad_plan_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "plan.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        AuditPlan.from_toml(f)
    with pytest.raises(ConfigError, match="no plan file"):
        AuditPlan.from_toml(tmp_path / "none.toml")


def test_a_plan_needs_a_model():
    with pytest.raises(ConfigError, match="--model"):
        AuditPlan().check()
