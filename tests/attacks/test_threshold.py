import numpy as np
import pytest

from privguard.attacks import Knowledge, resolve
from privguard.attacks.membership.threshold import (
    LossThreshold,
    best_threshold,
    confidence,
    neg_entropy,
    neg_loss,
    neg_modified_entropy,
)
from privguard.audit.metrics import membership_metrics
from privguard.errors import AccessError, ConfigError
from privguard.oracle import Access


def test_statistics_match_their_definitions():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1])
    np.testing.assert_allclose(-neg_loss(p, y), -np.log([0.7, 0.1]))
    ent = -(p * np.log(p)).sum(axis=1)
    np.testing.assert_allclose(-neg_entropy(p, y), ent)
    m0 = -(0.3 * np.log(0.7)) - (0.2 * np.log(0.8) + 0.1 * np.log(0.9))
    m1 = -(0.9 * np.log(0.1)) - (0.1 * np.log(0.9) + 0.8 * np.log(0.2))
    np.testing.assert_allclose(-neg_modified_entropy(p, y), [m0, m1])
    # confidence is ranked like p_y
    assert np.argsort(confidence(p, y)).tolist() == np.argsort(p[[0, 1], y]).tolist()


def test_statistics_keep_resolution_when_the_model_is_sure():
    # p_y rounds to 1.0 in float64 for both records, yet the losses still differ.
    p = np.array([[1.0, 1e-20], [1.0, 1e-18]])
    y = np.array([0, 0])
    loss = -neg_loss(p, y)
    assert loss[0] < loss[1] and loss[0] > 0
    assert confidence(p, y)[0] > confidence(p, y)[1]
    assert neg_modified_entropy(p, y)[0] > neg_modified_entropy(p, y)[1]


def test_best_threshold_separates_balanced_scores():
    assert best_threshold(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0])) == 5.0
    # t=6 (TPR 2/3, FPR 0) and t=5 (TPR 1, FPR 1/3) tie: the higher threshold is kept
    assert best_threshold(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 5.5])) == 6.0
    # nothing separates: nobody is called a member
    t = best_threshold(np.array([1.0]), np.array([2.0]))
    assert t > 2.0


def _knowledge(target, seed=0, recipe=True):
    ds, s = target.load_data(), target.split
    cand = np.concatenate([s.members, s.nonmembers])
    truth = np.r_[np.ones(len(s.members), bool), np.zeros(len(s.nonmembers), bool)]
    know = Knowledge(
        ds.x[s.aux],
        ds.y[s.aux],
        ds.x[cand],
        ds.y[cand],
        recipe=target.recipe if recipe else None,
        seed=seed,
    )
    return know, truth


def test_loss_attack_separates_members_of_an_overfit_tabular_mlp(
    diabetes_overfit, diabetes_regularized
):
    aucs = {}
    for name, target in [("overfit", diabetes_overfit), ("regularized", diabetes_regularized)]:
        know, truth = _knowledge(target)
        oracle = target.oracle("probs")
        guesses = LossThreshold().run(oracle, know)
        metrics, curves, _ = membership_metrics(guesses.scores, guesses.decisions, truth)
        assert oracle.queries == len(truth)  # the shadow model costs the target no queries
        aucs[name] = metrics["auc"]
        if name == "overfit":
            # measured 0.61-0.65 over seeds; the attacker's own threshold beats chance
            assert metrics["auc"] > 0.58
            assert metrics["attacker_advantage"] > 0.15
            assert curves["roc"]["fpr"][0] == 0.0 and curves["roc"]["tpr"][-1] == 1.0
    # regularization removes most of the signal (measured about 0.46)
    assert aucs["regularized"] < 0.56
    assert aucs["overfit"] - aucs["regularized"] > 0.08


def test_without_a_recipe_the_threshold_comes_from_the_population(digits_mlp):
    s = digits_mlp.split
    know, _ = _knowledge(digits_mlp, recipe=False)
    oracle = digits_mlp.oracle("probs")
    g = LossThreshold().run(oracle, know)
    assert "5% false-positive rate" in g.notes[0]
    assert oracle.queries == len(s.members) + len(s.nonmembers) + len(s.aux)
    # about 5% of non-members are called members, as the attacker intended
    fpr = g.decisions[len(s.members) :].mean()
    assert 0.0 < fpr < 0.15


def test_resolve_expands_families_and_checks_access():
    at_probs = [c.name for c in resolve("membership", Access.PROBS)]
    thresholds = [
        "confidence-threshold",
        "entropy-threshold",
        "loss-threshold",
        "modified-entropy-threshold",
    ]
    assert set(thresholds) <= set(at_probs)
    at_label = resolve(["membership"], Access.LABEL)
    assert at_label and all(c.needs == Access.LABEL for c in at_label)
    assert not set(thresholds) & {c.name for c in at_label}
    with pytest.raises(AccessError, match="needs 'probs' access but --access is 'label'"):
        resolve(["loss-threshold"], Access.LABEL)
    with pytest.raises(ConfigError, match="unknown attack or family 'lira-x'"):
        resolve(["lira-x"], Access.PROBS)
