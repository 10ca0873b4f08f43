"""The inversion evaluator on reconstructions whose answer is known: real records and noise."""

import numpy as np
import pytest

from privguard.attacks import InversionGuesses
from privguard.audit.inversion_eval import InversionEvaluator
from privguard.audit.risk import inversion_risk


@pytest.fixture(scope="module")
def evaluator(digits_mlp):
    return InversionEvaluator(digits_mlp.load_data(), digits_mlp.split, seed=0)


def _one_per_class(ds, idx):
    return np.stack([ds.x[idx[ds.y[idx] == c][0]] for c in range(10)])


def test_member_records_count_as_training_records_recovered(evaluator, digits_mlp):
    ds, s = evaluator.ds, digits_mlp.split
    m, curves, notes = evaluator.evaluate(
        InversionGuesses(_one_per_class(ds, s.members), np.arange(10))
    )
    assert m["attack_accuracy"] == 1.0 and m["attack_accuracy_top5"] == 1.0
    assert m["member_closeness"] > 0.7
    assert m["nearest_member_distance"] == 0.0
    assert inversion_risk(m) == "high" and "training records recovered" in notes[-1]
    assert len(curves["reconstructions"]["images"]) == 10


def test_non_member_records_are_class_representatives_not_training_records(evaluator, digits_mlp):
    ds, s = evaluator.ds, digits_mlp.split
    m, _, notes = evaluator.evaluate(
        InversionGuesses(_one_per_class(ds, s.nonmembers), np.arange(10))
    )
    assert m["attack_accuracy_consensus"] >= 0.9
    assert m["member_closeness"] < 0.2
    assert inversion_risk(m) == "medium" and "class representatives" in notes[-1]


def test_noise_is_not_recognised(evaluator):
    noise = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    m, _, _ = evaluator.evaluate(InversionGuesses(noise, np.arange(10)))
    assert m["attack_accuracy_consensus"] <= 0.3
    assert m["ssim_to_class_mean"] < 0.2
    assert inversion_risk(m) == "low"
