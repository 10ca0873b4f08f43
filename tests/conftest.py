"""Shared fixtures: small real models trained once per test session on bundled data."""

from __future__ import annotations

import pytest

import privguard
from privguard.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_logreg(digits):
    """Softmax regression on digits: quick to train, accurate."""
    return privguard.train(
        digits, privguard.TrainConfig(model="logreg", epochs=30, lr=1e-2, seed=0)
    )


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """An overfit 2x256 MLP on digits, the demo's target."""
    return privguard.train(digits, privguard.TrainConfig(model="mlp", epochs=60, seed=0))


@pytest.fixture(scope="session")
def saved_mlp(digits_mlp, tmp_path_factory):
    return digits_mlp.save(tmp_path_factory.mktemp("model") / "mlp")


@pytest.fixture(scope="session")
def diabetes_overfit():
    """A 2x256 MLP trained far past convergence on 177 patients: memorises them."""
    return privguard.train("diabetes", privguard.TrainConfig(epochs=500, lr=3e-3, seed=0))


@pytest.fixture(scope="session")
def diabetes_regularized():
    """The same MLP with dropout, weight decay and early stopping."""
    config = privguard.TrainConfig(
        epochs=200, dropout=0.5, weight_decay=1e-3, early_stopping=True, seed=0
    )
    return privguard.train("diabetes", config)
