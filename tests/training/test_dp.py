"""DP-SGD through Opacus: the accountant, the training, the guarantee against real attacks."""

import json
import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from torch import nn

import privguard
from privguard.cli import main
from privguard.errors import ConfigError
from privguard.models.train import train_module
from privguard.training.dp import (
    check_private_module,
    default_delta,
    epsilon_for,
    noise_for,
    resolve_delta,
)

THRESHOLD_ATTACKS = [
    "loss-threshold",
    "confidence-threshold",
    "entropy-threshold",
    "modified-entropy-threshold",
]
# digits MLP at epsilon = 1: few epochs and a larger step keep the noise (sigma ~4) affordable
DP_RECIPE = dict(model="mlp", epochs=15, lr=1e-2, seed=0)


def google(q: float, sigma: float, steps: int, delta: float, kind: str = "rdp") -> float:
    """Epsilon from Google's dp-accounting (RDP or PLD) for the same Poisson-sampled
    Gaussian mechanism."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )
    if kind == "rdp":
        accountant = rdp_privacy_accountant.RdpAccountant()
    else:
        accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.fixture(scope="module")
def dp_digits():
    """A 2x256 MLP trained on 719 digits with DP-SGD at epsilon = 1 (RDP accountant)."""
    return privguard.train("digits", privguard.TrainConfig(**DP_RECIPE, dp_epsilon=1.0))


@pytest.mark.parametrize(
    "q, sigma, steps, delta",
    [
        (1 / 12, 4.02, 180, 1.4e-4),  # the digits recipe below
        (0.01, 1.1, 10_000, 1e-5),  # a long run at a small sampling rate
        (1 / 32, 0.8, 3_000, 1e-5),  # weak noise, large epsilon
    ],
)
def test_opacus_rdp_epsilon_agrees_with_google_dp_accounting(q, sigma, steps, delta):
    ours = epsilon_for(sigma, q, steps, delta)
    rdp, pld = google(q, sigma, steps, delta), google(q, sigma, steps, delta, "pld")
    # Same analysis, different order grids: measured within 0.3% (0 to 0.27%)
    assert ours == pytest.approx(rdp, rel=0.01)
    # RDP is an upper bound; the exact PLD accounting is 8-12% below it here
    assert pld <= ours <= 1.25 * pld


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_noise_multiplier_reaches_the_target_epsilon(target):
    q, steps, delta = 1 / 12, 180, 1e-5
    sigma = noise_for(target, delta, q, steps)
    achieved = epsilon_for(sigma, q, steps, delta)
    assert target - 0.02 <= achieved <= target
    assert google(q, sigma, steps, delta) == pytest.approx(achieved, rel=0.01)
    # less noise would overspend: the multiplier is (to Opacus' tolerance) the smallest one
    assert epsilon_for(0.97 * sigma, q, steps, delta) > target


def test_dp_training_records_the_guarantee_it_achieved(dp_digits, tmp_path):
    dp = dp_digits.privacy
    n = len(dp_digits.split.members)
    assert dp["accountant"] == "rdp" and dp["n_records"] == n == 719
    assert dp["delta"] == pytest.approx(default_delta(n))
    assert dp["sample_rate"] == pytest.approx(1 / 12, abs=1e-6)  # 12 batches of 64 expected
    assert dp["steps"] == dp["planned_steps"] == 15 * 12
    assert 0.97 <= dp["epsilon"] <= 1.0 and dp["target_epsilon"] == 1.0
    rdp = google(1 / 12, dp["noise_multiplier"], dp["steps"], dp["delta"])
    assert dp["epsilon"] == pytest.approx(rdp, rel=0.01)
    # a sensible model still: measured 0.70 test accuracy (non-private: 0.96; chance 0.10)
    assert dp_digits.metrics["test_accuracy"] > 0.6
    # model.json keeps it, and the report's target description shows it
    saved = privguard.load_target(dp_digits.save(tmp_path / "dp"))
    assert saved.privacy == dp and saved.describe()["privacy"]["epsilon"] == dp["epsilon"]
    assert saved.config.dp_epsilon == 1.0 and saved.config.max_grad_norm == 1.0
    manifest = json.loads((tmp_path / "dp" / "model.json").read_text())
    assert manifest["metrics"]["privacy"]["noise_multiplier"] == dp["noise_multiplier"]


def test_membership_attacks_stay_under_the_dp_bound(dp_digits):
    """TPR <= e^eps FPR + delta at every threshold (Kairouz et al. 2015's test view of DP)."""
    report = privguard.audit(
        dp_digits, attacks=[*THRESHOLD_ATTACKS, "label-only-augmentation"], seed=0
    )
    eps, delta = dp_digits.privacy["epsilon"], dp_digits.privacy["delta"]
    assert len(report.attacks) == 5
    for a in report.attacks:
        m = a.metrics
        for f in (0.01, 0.001):
            assert m[f"tpr_at_fpr_{f:g}_ci_low"] <= math.exp(eps) * f + delta, a.name
        # the ROC-wide bound (Clopper-Pearson on both rates, every threshold): measured 0.0
        assert m["epsilon_lower_bound"] <= eps, a.name
        assert m["auc_ci_low"] <= 0.5 + 0.05, a.name  # measured AUC 0.50-0.51


@pytest.mark.slow
def test_reference_model_attacks_stay_under_the_dp_bound_where_plain_training_breaks_it(
    dp_digits, digits_mlp
):
    """LiRA offline and RMIA (4 DP-trained reference models, shared) on the DP target; the
    same attacks break the epsilon = 1 bound on the non-private MLP (so the check has power)."""
    from privguard.attacks import Compute
    from privguard.attacks.membership.lira import LiraOffline
    from privguard.attacks.membership.rmia import RMIA
    from privguard.audit.metrics import membership_metrics
    from privguard.audit.runner import _Truth

    def attack(target):
        ds = target.load_data()
        truth = _Truth.build(ds, target.split, 0)
        know = truth.knowledge(target, ds, None, needs_sensitive=False)
        know.compute = Compute(n_jobs=1)
        out = {}
        for cls in (LiraOffline, RMIA):
            g = cls(n_reference=4).run(target.oracle("probs"), know)
            out[cls.name] = membership_metrics(g.scores, g.decisions, truth.is_member)[0]
        return out

    eps, delta = dp_digits.privacy["epsilon"], dp_digits.privacy["delta"]
    for name, m in attack(dp_digits).items():
        assert m["tpr_at_fpr_0.01_ci_low"] <= math.exp(eps) * 0.01 + delta, name
        assert m["epsilon_lower_bound"] <= eps, name
    plain = attack(digits_mlp)
    assert max(m["epsilon_lower_bound"] for m in plain.values()) > 1.0


def test_bad_privacy_targets_are_config_errors():
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="positive epsilon"):
            privguard.TrainConfig(dp_epsilon=eps)
    with pytest.raises(ConfigError, match="needs --dp-epsilon"):
        privguard.TrainConfig(dp_delta=1e-5)
    with pytest.raises(ConfigError, match="--max-grad-norm"):
        privguard.TrainConfig(dp_epsilon=1.0, max_grad_norm=0.0)
    with pytest.raises(ConfigError, match=r"1/n = 0\.01 .*omit it for the default"):
        resolve_delta(0.01, 100)
    assert resolve_delta(None, 100) == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match=r"1/n = 0\.00139 for the 719 training records"):
        privguard.train("digits", privguard.TrainConfig(**DP_RECIPE, dp_epsilon=1.0, dp_delta=0.01))


def test_a_batchnorm_model_is_refused_naming_the_layer_and_the_fix():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"layer '1' \(BatchNorm1d\): use GroupNorm or drop it"):
        check_private_module(model)

    with pytest.raises(ConfigError, match=r"layer 'rnn' \(LSTM\): replace it with the DP layer"):
        check_private_module(nn.ModuleDict({"rnn": nn.LSTM(4, 8), "head": nn.Linear(8, 2)}))
    check_private_module(nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.Linear(8, 2)))


def test_empty_poisson_batches_still_take_their_noise_step():
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 4), dtype=np.float32), np.array([0, 1] * 3)
    config = privguard.TrainConfig(model="logreg", epochs=10, batch_size=1, dp_epsilon=2.0)
    _, log = train_module(config, x, y, 2)
    # q = 1/6 over 6 records: a third of the batches are empty, every one is accounted
    assert log["privacy"]["steps"] == 10 * 6 and log["privacy"]["epsilon"] <= 2.0


def run(capsys, *args):
    code = main(list(map(str, args)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_trains_privately_and_rejects_bad_targets(capsys, tmp_path):
    out_dir = tmp_path / "m"
    code, out, err = run(
        capsys,
        *("train", "--data", "digits", "--model", "logreg", "--epochs", "10", "--lr", "3e-2"),
        *("--dp-epsilon", "2", "--out", out_dir),
    )
    assert code == 0, err
    assert "-DP (rdp accountant" in out.replace("\n", " ")
    dp = json.loads((out_dir / "model.json").read_text())["metrics"]["privacy"]
    assert 1.95 <= dp["epsilon"] <= 2.0
    for flags, needle in [
        (("--dp-epsilon", "0"), "positive epsilon"),
        (("--dp-epsilon", "-3"), "positive epsilon"),
        (("--dp-epsilon", "1", "--dp-delta", "0.01"), "1/n"),
    ]:
        bad = tmp_path / "bad"
        code, _, err = run(capsys, "train", "--data", "digits", *flags, "--out", bad)
        assert code == 2 and needle in err and "Traceback" not in err
        assert not bad.exists()
