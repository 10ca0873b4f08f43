"""Auditing a user's own DP training function (privguard.dp_audit / dp-audit --train-fn):
a planted bug is caught and correct DP-SGD passes, through the CLI's exit codes; every way a
train function can go wrong is a one-line error (exit 2)."""

import json
import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import privguard
from privguard.audit.dp_user import derangement, dp_audit, label_log_odds
from privguard.audit.train_fn import load_train_fn
from privguard.cli import main
from privguard.data import load_dataset
from privguard.errors import ConfigError
from privguard.testing.dp_bugs import dp_trainer, opacus_trainer


@pytest.fixture(scope="module")
def digits_xy():
    ds = load_dataset("digits")
    return ds.x, ds.y


def fit_logreg(x, y, seed):
    return LogisticRegression(C=100.0, max_iter=300).fit(x.reshape(len(x), -1), y)


class Flat:
    """predict_proba on the flattened inputs, as a user's wrapper would."""

    def __init__(self, clf):
        self.clf = clf

    def predict_proba(self, x):
        return self.clf.predict_proba(x.reshape(len(x), -1))


@pytest.mark.parametrize("canary", ["quiet", "flipped"])
def test_non_private_training_violates_a_claim_of_epsilon_1(digits_xy, canary):
    x, y = digits_xy
    res = privguard.dp_audit(
        lambda x, y, seed: Flat(fit_logreg(x, y, seed)),
        x,
        y,
        claimed_epsilon=1.0,
        delta=1e-5,
        canaries=600,
        seed=0,
        canary=canary,
    )
    assert res.violated and res.epsilon_lower_bound > 1.0
    assert res.fdp.epsilon_lower_bound >= res.steinke.epsilon_lower_bound
    assert res.epsilon_lower_bound == res.fdp.epsilon_lower_bound and res.bound == "fdp"
    assert "claimed epsilon is violated" in res.summary_line()
    assert res.canary == canary and res.n_train == len(x) - 600 + res.n_included
    check = res.record_check  # the relabelled run followed its labels
    assert check["n"] == (len(x) - 600) // 2 and check["accuracy_given_labels"] > 0.9


def test_a_torch_module_is_scored_from_its_logits(digits_xy):
    x, y = digits_xy

    def train(x, y, seed):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
        return net

    res = dp_audit(train, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600, seed=1)
    assert res.violated  # non-private training is no (1, 1e-5)-DP


def test_label_log_odds_from_probabilities_and_logits_agree():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 30.0, 0.0]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([0, 2])
    a = label_log_odds(probs, labels, logits=False)
    b = label_log_odds(logits, labels, logits=True)
    assert np.allclose(a, b, atol=1e-9)
    assert a[0] == pytest.approx(2.0 - np.log(1 + np.exp(-1.0)))


def boom(x, y, seed):
    raise ValueError("out of memory on the GPU")


@pytest.mark.parametrize(
    "fn, needle",
    [
        (boom, "the train function raised ValueError at test_dp_user.py:"),
        (lambda x, y, s: None, "returned None"),
        (lambda x, y, s: "model.pt", "returned str, not a model"),
        (lambda x, y, s: lambda z: np.ones((len(z), 3)) / 3, "shape (600, 3)"),
        (lambda x, y, s: lambda z: np.full((len(z), 10), np.nan), "NaN"),
        (lambda x, y, s: lambda z: np.ones((len(z), 10)), "not probabilities"),
    ],
)
def test_a_broken_train_function_is_one_line(digits_xy, fn, needle):
    x, y = digits_xy
    with pytest.raises(ConfigError) as info:
        dp_audit(fn, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_train_function_that_ignores_its_records_is_detected(digits_xy):
    x, y = digits_xy
    own = fit_logreg(x, y, 0)  # trained once on the data it was NOT given

    with pytest.raises(ConfigError, match="ignores the records it is given") as info:
        dp_audit(lambda a, b, s: Flat(own), x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600)
    assert "\n" not in str(info.value)


def test_the_record_check_passes_dp_training_that_learns_little_or_nothing(digits_xy):
    """Correct DP-SGD at epsilon 0.2 for one epoch barely learns, and a model that learns
    nothing at all predicts one class: neither is evidence of ignoring the records, and
    neither fires."""
    x, y = digits_xy
    for fn in (
        dp_trainer(epsilon=0.2, delta=1e-5, epochs=1),
        lambda a, b, s: lambda z: np.eye(10)[np.full(len(z), np.bincount(b).argmax())],
    ):
        res = dp_audit(fn, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600, seed=2)
        check = res.record_check
        assert check["accuracy_original_labels"] < check["best_constant_accuracy"] + 0.05
        assert not res.violated


def test_derangement_moves_every_class():
    rng = np.random.default_rng(0)
    for k in (2, 3, 10):
        for _ in range(20):
            pi = derangement(k, rng)
            assert sorted(pi) == list(range(k)) and np.all(pi != np.arange(k))


def test_the_time_limit_stops_a_slow_run(digits_xy):
    x, y = digits_xy

    def slow(a, b, s):
        time.sleep(30)

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="ran past the 1 s time limit"):
        dp_audit(slow, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600, time_limit=1)
    assert time.perf_counter() - t0 < 10
    # within the limit the forked run returns its scores as usual, errors as one line
    res = dp_audit(
        lambda a, b, s: Flat(fit_logreg(a, b, s)),
        x,
        y,
        claimed_epsilon=1.0,
        delta=1e-5,
        canaries=600,
        time_limit=120,
    )
    assert res.violated
    with pytest.raises(ConfigError, match="the train function raised ValueError"):
        dp_audit(boom, x, y, claimed_epsilon=1.0, delta=1e-5, canaries=600, time_limit=60)


def test_bad_arguments(digits_xy):
    x, y = digits_xy
    fn = lambda a, b, s: None  # noqa: E731
    for kwargs, needle in [
        ({"claimed_epsilon": 0.0}, "--claimed-epsilon must be a positive"),
        ({"delta": 1.5}, "--delta must lie strictly between 0 and 1"),
        ({"canaries": 5000}, "--canaries must lie between 2 and"),
        ({"canary": "odd"}, "unknown canary kind"),
    ]:
        args = {"claimed_epsilon": 1.0, "delta": 1e-5, "canaries": 600, **kwargs}
        with pytest.raises(ConfigError, match=needle):
            dp_audit(fn, x, y, **args)
    with pytest.raises(ConfigError, match="same n"):
        dp_audit(fn, x, y[:-1], claimed_epsilon=1.0, delta=1e-5)
    for spec, needle in [
        ("nocolon", "module:function"),
        ("no_such_module_w20:train", "importing 'no_such_module_w20' failed"),
        ("json:no_such_fn", "has no attribute"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            load_train_fn(spec)


TRAINERS = """
from privguard.testing.dp_bugs import dp_trainer, opacus_trainer

correct = dp_trainer(epsilon=1.0, delta=1e-5)
buggy = dp_trainer(epsilon=1.0, delta=1e-5, bug="batch-clipping")
"""


@pytest.mark.slow
def test_cli_exits_1_on_a_planted_bug_and_0_on_correct_dp(tmp_path, monkeypatch, capsys):
    (tmp_path / "w20_trainers.py").write_text(TRAINERS)
    monkeypatch.chdir(tmp_path)
    base = ["dp-audit", "--data", "mnist-5k", "--claimed-epsilon", "1", "--delta", "1e-5"]
    code = main([*base, "--train-fn", "w20_trainers:buggy", "--out", "bug"])
    cap = capsys.readouterr()
    assert code == 1, cap.err
    assert "claimed epsilon is violated" in cap.out
    report = json.loads((tmp_path / "bug" / "dp-audit.json").read_text())["dp_audit"]
    assert report["violated"] and report["fdp"]["epsilon_lower_bound"] > 1.0
    assert report["train_fn"] == "w20_trainers:buggy" and report["canary"] == "quiet"
    code = main([*base, "--train-fn", "w20_trainers:correct", "--out", "ok"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "no violation of the claimed epsilon found" in cap.out
    # usage mistakes: one line, exit 2, nothing written
    for extra, needle in [
        (["--train-fn", "w20_trainers:correct", "--dp-epsilon", "1"], "--claimed-epsilon"),
        (["--train-fn", "w20_trainers:nope"], "has no attribute"),
    ]:
        code = main([*base, *extra, "--out", "bad"])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and not (tmp_path / "bad").exists()
    code = main(["dp-audit", "--data", "digits", "--claimed-epsilon", "1", "--out", "bad"])
    assert code == 2 and "needs --train-fn" in capsys.readouterr().err


SKLEARN = """
from sklearn.linear_model import LogisticRegression


def train(x, y, seed):
    clf = LogisticRegression(C=100.0, max_iter=300).fit(x.reshape(len(x), -1), y)
    return lambda z: clf.predict_proba(z.reshape(len(z), -1))
"""


def test_cli_gate_on_a_non_private_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "w20_plain.py").write_text(SKLEARN)
    monkeypatch.chdir(tmp_path)
    args = ["dp-audit", "--data", "digits", "--train-fn", "w20_plain:train", "--delta", "1e-5"]
    code = main([*args, "--claimed-epsilon", "1", "--canaries", "600", "--out", "out"])
    cap = capsys.readouterr()
    assert code == 1 and "claimed epsilon is violated" in cap.out, cap.err
    assert json.loads((tmp_path / "out" / "dp-audit.json").read_text())["dp_audit"]["violated"]
    # a claim above what 600 canaries can rule out passes: a lower bound, not a certificate
    code = main([*args, "--claimed-epsilon", "20", "--canaries", "600", "--out", "loose"])
    cap = capsys.readouterr()
    assert code == 0 and "no violation of the claimed epsilon found" in cap.out, cap.err
    code = main([*args, "--claimed-epsilon", "1", "--no-record-check", "--out", "nocheck"])
    assert code == 1 and "relabelled" not in capsys.readouterr().out
    report = json.loads((tmp_path / "nocheck" / "dp-audit.json").read_text())["dp_audit"]
    assert report["record_check"] is None
    code = main([*args, "--out", "bad2"])
    assert code == 2 and "--claimed-epsilon and --delta" in capsys.readouterr().err


def opacus_weights(bug, x, y, epsilon=1.0, clip=1.0):
    train = opacus_trainer(
        epsilon=epsilon, delta=1e-4, bug=bug, epochs=4, batch_size=20, lr=1.0, max_grad_norm=clip
    )
    return train(x, y, 0).linear.weight.detach().numpy().astype(np.float64)


def test_the_opacus_corpus_plants_what_it_says():
    """Blank inputs give the weights no gradient, so they end as the summed noise alone:
    lr / B * sigma * C * sqrt(noisy steps) per weight (40 steps, 4 of them noisy when noise
    comes once per epoch). A single record of norm 100 moves the weights at most lr * C per
    step when clipped, about 100 times as far when not."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    blank = np.zeros((200, 1, 5), dtype=np.float32)
    sd = {bug: opacus_weights(bug, blank, y).std() for bug in (None, "small-noise")}
    sd["once"] = opacus_weights("noise-once-per-epoch", blank, y).std()
    assert 7 < sd[None] / sd["small-noise"] < 14
    assert 2 < sd[None] / sd["once"] < 5  # sqrt(40 / 4) = 3.2
    loud = np.zeros((200, 1, 5), dtype=np.float32)
    loud[:, 0, 0] = 100.0
    ones = np.ones(200, dtype=np.int64)  # two classes, every record in class 1
    moved = {
        bug: np.abs(opacus_weights(bug, loud, ones, epsilon=50.0)[:, 0]).max()
        for bug in (None, "no-clipping")
    }
    assert moved[None] <= 40 * 1.0 * 1.05 and moved["no-clipping"] > 5 * moved[None]
