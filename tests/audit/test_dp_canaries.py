"""White-box Dirac gradient canaries (privguard.audit.dp_canaries) through privguard's real
Opacus DP-SGD trainer on digits: a planted bug is caught and correct DP-SGD passes; the rows
go in before the (bugged) clipping; a train function that never uses them is a one-line
error."""

import json
import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine

import privguard
from privguard.audit.dp_canaries import MAGNITUDE_SCALE, GradientCanaries
from privguard.audit.train_fn import takes_canaries
from privguard.cli import main
from privguard.data import load_dataset
from privguard.errors import ConfigError
from privguard.testing.dp_bugs import LinearSoftmax, opacus_trainer, plant
from privguard.training.dp import quiet_opacus

warnings.filterwarnings("ignore", module=r"opacus(\.|$)")

M = 200  # of digits' 650 softmax-regression coordinates


@pytest.fixture(scope="module")
def digits_xy():
    ds = load_dataset("digits")
    return ds.x, ds.y


def audit(train, x, y, seed, m=M):
    return privguard.dp_audit(
        train, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=m, seed=seed, canary="gradient"
    )


def test_no_clipping_is_flagged_and_correct_dp_is_not(digits_xy):
    """Measured on seeds 0-1 (m = 200, 5 epochs, batch 50): no-clipping's bound is about 5 (a
    canary of 1000 C passes unclipped); correct DP-SGD's is 0. The assertions leave a factor of
    two on the bug and 0.5 below the claim on correct DP-SGD."""
    x, y = digits_xy
    for seed in range(2):
        bug = audit(opacus_trainer(epochs=5, batch_size=50, bug="no-clipping"), x, y, seed)
        assert bug.violated and bug.epsilon_lower_bound > 2.5, bug.summary_line()
        assert bug.canary == "gradient" and bug.n_train == len(x) and bug.m == M
        assert bug.record_check is None and bug.gradient["steps"] > 0
        assert bug.gradient["magnitude"] == MAGNITUDE_SCALE * 1.0
        ok = audit(opacus_trainer(epochs=5, batch_size=50), x, y, seed)
        assert not ok.violated and ok.epsilon_lower_bound < 0.5, ok.summary_line()
        assert ok.n_included == bug.n_included  # the same coin for the same seed


def test_under_a_time_limit_the_scores_come_back_from_the_child(digits_xy):
    """The time limit runs the training in a forked child. A parent whose OpenMP pool has
    run (here one 2-thread matmul; in CI, any earlier test) once made that child hang until
    the limit: the child now runs torch on one thread."""
    x, y = digits_xy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = torch.randn(512, 512)
        (a @ a).sum().item()
    finally:
        torch.set_num_threads(before)
    train = opacus_trainer(epochs=5, batch_size=50, bug="no-clipping")
    res = privguard.dp_audit(
        train,
        x,
        y,
        claimed_epsilon=1.0,
        delta=1e-5,
        canaries=M,
        seed=0,
        canary="gradient",
        time_limit=120,
    )
    same = audit(train, x, y, 0)  # in-process: the same seed, the same audit
    assert res.violated and res.epsilon_lower_bound == same.epsilon_lower_bound
    assert res.gradient == same.gradient


def test_step_rows_are_dirac_rows_on_the_quietest_coordinates(digits_xy):
    x, y = digits_xy
    torch.manual_seed(0)
    model = LinearSoftmax(int(np.prod(x.shape[1:])), 10)
    included = np.zeros(50, bool)
    included[::2] = True
    c = GradientCanaries(50, included, n_records=len(x), seed=3)
    c.bind(list(model.parameters()), sample_rate=1.0, max_grad_norm=2.0)
    assert c.magnitude == MAGNITUDE_SCALE * 2.0
    # the real per-record gradients of a batch: (b, *p.shape) per parameter
    xb = torch.as_tensor(x[:40], dtype=torch.float32)
    yb = torch.as_tensor(y[:40])
    grads = [torch.zeros((40, *p.shape)) for p in model.parameters()]
    for i in range(40):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xb[i : i + 1]), yb[i : i + 1]).backward()
        for g, p in zip(grads, model.parameters(), strict=True):
            g[i] = p.grad
    rows = c.step_rows(grads)
    w, b = model.parameters()
    assert rows[0].shape == (25, *w.shape) and rows[1].shape == (25, *b.shape)
    flat = torch.cat([r.reshape(25, -1) for r in rows], dim=1)
    assert torch.all((flat != 0).sum(dim=1) == 1)  # one coordinate per row
    assert torch.all(flat.sum(dim=1) == c.magnitude)
    hit = flat.nonzero()[:, 1].numpy()
    assert sorted(hit) == sorted(c.coords[included])  # the included canaries, all at q = 1
    activity = torch.cat([g.abs().sum(dim=0).reshape(-1) for g in grads]).numpy()
    assert np.all(activity[c.coords] == 0) and (activity == 0).sum() >= 50
    assert c.active_coords == 0 and c.steps == 1 and c.rows_added == 25
    assert len(set(c.coords)) == 50  # each canary on its own coordinate
    with pytest.raises(ConfigError, match="per-record gradients for 2 bound"):
        c.step_rows(grads[:1])


def one_step_change(x, y, bug):
    """One DP-SGD step without noise on a real batch of 50, all 20 canaries in it: how far
    each canary coordinate moves."""
    torch.manual_seed(0)
    model = LinearSoftmax(int(np.prod(x.shape[1:])), 10)
    data = torch.utils.data.TensorDataset(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=50)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with quiet_opacus():
        return _one_step(x, model, opt, loader, bug)


def _one_step(x, model, opt, loader, bug):
    module, opt, loader = PrivacyEngine().make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode="hooks",
    )
    if bug is not None:
        plant(opt, bug, 1.0, 0.0, len(loader))
    c = GradientCanaries(20, np.ones(20, bool), n_records=len(x), seed=0)
    c.attach(opt, sample_rate=1.0)
    xb, yb = next(iter(loader))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(module(xb), yb).backward()
    opt.step()
    assert c.rows_added == 20
    return c.scores() * opt.expected_batch_size  # lr 1: the summed clipped canary gradient


def test_canary_rows_go_in_before_the_clipping_bugged_or_not(digits_xy):
    x, y = digits_xy
    correct = one_step_change(x, y, None)
    np.testing.assert_allclose(correct, 1.0, rtol=1e-4)  # clipped to C = 1
    unclipped = one_step_change(x, y, "no-clipping")
    np.testing.assert_allclose(unclipped, MAGNITUDE_SCALE, rtol=1e-4)  # the whole 1000 C
    batch = one_step_change(x, y, "batch-clipping")  # the sum clipped to 50 C, not each row
    assert np.all(batch > 5.0) and np.all(batch < 50.0 / np.sqrt(20) + 1e-3)


def test_a_train_function_that_never_attaches_the_canaries(digits_xy):
    x, y = digits_xy
    plain = opacus_trainer(epochs=1, batch_size=50)

    def ignores(x, y, seed, canaries):
        return plain(x, y, seed)

    with pytest.raises(ConfigError, match="canaries never seen") as e:
        audit(ignores, x, y, 0)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="give the train function a canaries parameter"):
        audit(lambda x, y, seed: plain(x, y, seed), x, y, 0)
    assert takes_canaries(lambda x, y, seed, **kw: None)


def test_more_canaries_than_coordinates_is_one_line(digits_xy):
    x, y = digits_xy
    with pytest.raises(ConfigError, match="the model has 650: pass --canaries 650 or fewer"):
        audit(opacus_trainer(epochs=1, batch_size=50), x, y, 0, m=700)


def test_attach_refuses_a_plain_optimizer():
    c = GradientCanaries(2, np.ones(2, bool), n_records=10, seed=0)
    opt = torch.optim.SGD(LinearSoftmax(4, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="Opacus DPOptimizer"):
        c.attach(opt)


NEVER_SEEN = """
from privguard.testing.dp_bugs import opacus_trainer

plain = opacus_trainer(epochs=1, batch_size=50)
buggy = opacus_trainer(epochs=5, batch_size=50, bug="no-clipping")


def train(x, y, seed, canaries):
    return plain(x, y, seed)
"""


def test_cli_gradient_canaries_exit_1_on_a_bug_and_2_when_never_seen(tmp_path, monkeypatch, capsys):
    (tmp_path / "never_seen.py").write_text(NEVER_SEEN)
    monkeypatch.chdir(tmp_path)
    base = ["dp-audit", "--data", "digits", "--canary", "gradient", "--canaries", "200"]
    base += ["--claimed-epsilon", "1", "--delta", "1e-5"]
    code = main([*base, "--train-fn", "never_seen:buggy", "--out", "bug"])
    cap = capsys.readouterr()
    assert code == 1 and "claimed epsilon is violated" in cap.out, cap.err
    report = json.loads((tmp_path / "bug" / "dp-audit.json").read_text())["dp_audit"]
    assert report["canary"] == "gradient" and report["gradient"]["rows_added"] > 0
    code = main([*base, "--train-fn", "never_seen:train", "--out", "never"])
    err = capsys.readouterr().err
    assert code == 2 and "canaries never seen" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
