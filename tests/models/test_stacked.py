"""Stacked training of K small models (privguard.models.stacked) against the sequential path.

Real digits data and real (small) models: a 32-unit MLP for 8-15 epochs keeps each sequential
model at ~0.1 s.
"""

import numpy as np
import pytest
import torch

import privguard
from privguard.attacks import Knowledge
from privguard.attacks.base import Compute
from privguard.attacks.membership.lira import LiraOnline
from privguard.attacks.membership.reference_training import stacked_reason
from privguard.attacks.membership.rmia import RMIA
from privguard.errors import ConfigError
from privguard.models.stacked import stackable, train_stacked
from privguard.models.train import TrainConfig, TrainingRecipe, accuracy
from privguard.training.device import resolve_device


@pytest.fixture(scope="module")
def data(digits):
    ds = digits
    x = np.asarray(ds.x, dtype=np.float32)
    y = np.asarray(ds.y, dtype=np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    test = order[:400]
    rest = order[400:]
    # copies train on subsets of different sizes (so their epochs have different batch counts)
    rows = [np.sort(rng.choice(rest, size=n, replace=False)) for n in (500, 520, 480, 500)]
    return x, y, rows, test


def _sequential(config, x, y, rows, seeds):
    recipe = TrainingRecipe(config, 10)
    return [recipe.fit(x[r], y[r], seed=s) for r, s in zip(rows, seeds, strict=True)]


def test_stacked_copies_match_sequentially_trained_models(data):
    x, y, rows, test = data
    config = TrainConfig(model="mlp", hidden=[32], epochs=8, lr=1e-2)
    seeds = [11, 12, 13, 14]
    stacked = train_stacked(config, x, y, 10, rows, seeds)
    seq = _sequential(config, x, y, rows, seeds)
    z = stacked.logits(x[test])
    for k, model in enumerate(seq):
        zs = model.predict_logits(x[test])
        # same init, same batches, same Adam: equal up to summation order
        assert np.median(np.abs(z[k] - zs)) < 1e-3
        acc_stacked = float((z[k].argmax(1) == y[test]).mean())
        assert abs(acc_stacked - accuracy(model, x[test], y[test])) <= 0.01
        assert acc_stacked > 0.85  # it did learn
    # and the copies differ from each other (own rows and seeds)
    assert np.abs(z[0] - z[1]).max() > 0.1


def test_hand_written_gradients_cover_label_smoothing_and_weight_decay(data):
    # the dense stack's backward pass is written out by hand: label smoothing and L2 weight
    # decay (in the fused Adam step) must give what autograd + torch.optim.Adam give
    x, y, rows, test = data
    config = TrainConfig(
        model="mlp", hidden=[32, 16], epochs=4, lr=1e-2, label_smoothing=0.1, weight_decay=1e-3
    )
    stacked = train_stacked(config, x, y, 10, rows[:2], [5, 6])
    z = stacked.logits(x[test])
    for k, model in enumerate(_sequential(config, x, y, rows[:2], [5, 6])):
        assert np.median(np.abs(z[k] - model.predict_logits(x[test]))) < 1e-3


def test_early_stopping_and_dropout_agree_in_distribution(data):
    x, y, rows, test = data
    config = TrainConfig(
        model="mlp", hidden=[32], epochs=15, lr=1e-2, dropout=0.2, early_stopping=True, patience=2
    )
    seeds = [1, 2, 3, 4]
    val = [r[:60] for r in rows]
    fit = [r[60:] for r in rows]
    stacked = train_stacked(config, x, y, 10, fit, seeds, val_rows=val)
    assert all(1 <= e <= 15 for e in stacked.epochs_run)
    z = stacked.logits(x[test])
    acc = [(z[k].argmax(1) == y[test]).mean() for k in range(4)]
    seq = _sequential(config, x, y, rows, seeds)
    acc_seq = [accuracy(m, x[test], y[test]) for m in seq]
    assert abs(np.mean(acc) - np.mean(acc_seq)) < 0.04, (acc, acc_seq)
    # a copy's weights load into the plain architecture and give the same logits
    m = stacked.module(2)
    with torch.no_grad():
        z2 = m(torch.from_numpy(x[test])).double().numpy()
    np.testing.assert_allclose(z2, z[2], atol=1e-4)


def test_cnn_copies_train_stacked(tiny_images):
    x, y = tiny_images
    config = TrainConfig(model="cnn", hidden=[16], epochs=3, batch_size=32)
    rows = [np.arange(0, 200), np.arange(100, 300)]
    stacked = train_stacked(config, x, y, int(y.max()) + 1, rows, [0, 1])
    seq = _sequential(config, x, y, rows, [0, 1])
    z = stacked.logits(x)
    for k in range(2):
        assert np.median(np.abs(z[k] - seq[k].predict_logits(x))) < 1e-3


@pytest.fixture(scope="module")
def tiny_images(digits):
    ds = digits
    x = np.asarray(ds.x[:300], dtype=np.float32)
    return x, np.asarray(ds.y[:300], dtype=np.int64)


@pytest.fixture(scope="module")
def small(digits):
    return privguard.train(
        digits, privguard.TrainConfig(model="mlp", hidden=[32], epochs=10, seed=0)
    )


def _knowledge(target, **compute):
    ds, s = target.load_data(), target.split
    cand = np.concatenate([s.members, s.nonmembers])
    return Knowledge(
        ds.x[s.aux],
        ds.y[s.aux],
        ds.x[cand],
        ds.y[cand],
        recipe=target.recipe,
        bounds=ds.bounds,
        kind=ds.kind,
        seed=0,
        compute=Compute(**compute),
    )


def test_lira_and_rmia_scores_agree_with_sequential_references(small):
    for attack in (LiraOnline(n_reference=8), RMIA(n_reference=4)):
        fast = attack.run(small.oracle("probs"), _knowledge(small))
        slow = attack.run(small.oracle("probs"), _knowledge(small, stacked=False))
        assert "trained stacked" in fast.notes[0]
        assert "one at a time (stacked training switched off)" in slow.notes[0]
        r = np.corrcoef(fast.scores, slow.scores)[0, 1]
        assert r > 0.98, (type(attack).__name__, r)


def test_dp_recipes_fall_back_with_a_reason():
    assert stackable(TrainingRecipe(TrainConfig(), 10)) is None
    reason = stackable(TrainingRecipe(TrainConfig(dp_epsilon=8.0), 10))
    assert reason is not None and "DP-SGD" in reason
    assert stackable(object()) is not None


def test_cnn_references_train_one_at_a_time_on_a_cpu_only():
    # stacked (vmap'd) convolutions were slower than one model after another on a CPU
    # (benchmarks/stacked_cnn.py); MLPs stack everywhere, the CNN on a GPU
    cnn = TrainingRecipe(TrainConfig(model="cnn", hidden=[16]), 10)
    reason = stacked_reason(cnn, Compute(device="cpu"))
    assert reason is not None and "one model at a time on a CPU" in reason
    assert stacked_reason(cnn, Compute(device="cuda")) is None
    assert stacked_reason(TrainingRecipe(TrainConfig(), 10), Compute(device="cpu")) is None


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown --device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
