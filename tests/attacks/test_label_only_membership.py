"""Label-only membership inference (Choquette-Choo et al., ICML 2021) on real small targets.

The margins below come from measured runs (seed 0; seeds 0-4 where stated) of the same
targets on a 2-core machine.
"""

import numpy as np
import pytest

import privguard
from privguard.attacks import Knowledge
from privguard.attacks.membership.label_only_augmentation import (
    LabelOnlyAugmentation,
    shift,
    translations,
)
from privguard.attacks.membership.label_only_boundary import LabelOnlyBoundary
from privguard.attacks.membership.threshold import LossThreshold
from privguard.audit.metrics import membership_metrics
from privguard.errors import ConfigError

LABEL_ATTACKS = ["label-only-augmentation", "label-only-boundary"]


class OneHot:
    """A confidence-masking defence: the model's label as a one-hot 'probability' vector."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.n_classes = predictor.n_classes
        self.input_shape = predictor.input_shape

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predictor.predict_proba(x)
        out = np.zeros_like(p)
        out[np.arange(len(p)), p.argmax(axis=1)] = 1.0
        return out

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(x), 1e-300, None))


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
        bounds=ds.bounds,
        seed=seed,
        kind=ds.kind,
    )
    return know, truth


@pytest.fixture(scope="module")
def digits_small_train():
    """A 2x256 MLP on 269 digits (15% of the set), 100 epochs: confidences leak beyond the
    train/test gap (loss-threshold AUC 0.58 against 0.52 for "member iff correct")."""
    config = privguard.TrainConfig(model="mlp", epochs=100, train_fraction=0.15, seed=0)
    return privguard.train("digits", config)


def test_translations_are_the_papers_shifts():
    assert sorted(translations((1,))) == [(-1, 0), (0, -1), (0, 1), (1, 0)]
    two = translations((1, 2))
    assert len(two) == 12 and len(set(two)) == 12
    assert all(abs(i) + abs(j) in (1, 2) for i, j in two)
    img = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    down = shift(img, 1, 0)[0, 0]
    np.testing.assert_array_equal(down[1:], img[0, 0, :2])  # moved one row down
    np.testing.assert_array_equal(down[0], img[0, 0, 0])  # the gap repeats the edge row
    np.testing.assert_array_equal(shift(img, 0, -1)[0, 0, :, :2], img[0, 0, :, 1:])


def _box_distance(a: np.ndarray, need: float, x: np.ndarray) -> float:
    """min ||d|| subject to a.d >= need and 0 <= x + d <= 1: by the KKT conditions
    d = clip(lam * a, -x, 1 - x) for the smallest lam >= 0 that reaches ``need``."""
    reach = lambda lam: float(a @ np.clip(lam * a, -x, 1 - x))  # noqa: E731
    if need <= 0:
        return 0.0
    hi = 1.0
    while reach(hi) < need:
        hi *= 2
        if hi > 1e6:
            return np.inf
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) < need else (lo, mid)
    return float(np.linalg.norm(np.clip(hi * a, -x, 1 - x)))


def test_boundary_search_finds_the_distance_to_a_linear_boundary(digits_logreg):
    # For softmax regression the nearest input with another label inside the [0, 1] box has a
    # closed form per rival class (_box_distance). Every point the search reports is labelled
    # otherwise, so it never beats that distance; in 64 dimensions it overestimates it
    # (measured median 1.47x at 200 queries, 1.08x at 2000) but ranks records as the true
    # distance does (correlation 0.96 at either budget), which is what membership needs.
    ds, s = digits_logreg.load_data(), digits_logreg.split
    linear = digits_logreg.predictor.module[1]
    w = linear.weight.detach().double().numpy()
    b = linear.bias.detach().double().numpy()
    x, y = ds.x[s.members][:60], ds.y[s.members][:60]
    flat = x.reshape(len(x), -1).astype(np.float64)
    z = flat @ w.T + b
    keep = z.argmax(axis=1) == y
    x, y, flat, z = x[keep], y[keep], flat[keep], z[keep]
    true = np.array(
        [
            min(_box_distance(w[j] - w[c], z[i, c] - z[i, j], flat[i]) for j in range(10) if j != c)
            for i, c in enumerate(y)
        ]
    )
    know = Knowledge(ds.x[s.aux], ds.y[s.aux], kind="image")
    for budget, median_ratio in ((200, 1.7), (2000, 1.15)):
        oracle = digits_logreg.oracle("label")
        got = LabelOnlyBoundary(queries_per_candidate=budget).measure(
            oracle, x, y, know, np.random.default_rng(0), None, None
        )
        assert oracle.queries <= budget * len(y)
        ratio = got.scores / true
        assert ratio.min() > 0.999
        assert np.median(ratio) < median_ratio
        assert np.corrcoef(got.scores, true)[0, 1] > 0.9


def test_label_only_attacks_beat_chance_on_an_overfit_tabular_target(diabetes_overfit):
    report = privguard.audit(diabetes_overfit, attacks=LABEL_ATTACKS, access="label")
    got = {a.name: a for a in report.attacks}
    n = len(diabetes_overfit.split.members) + len(diabetes_overfit.split.nonmembers)
    # measured over audit seeds 0-4: augmentation AUC 0.64-0.71 (0.705 at seed 0),
    # boundary 0.625-0.638 (0.632); the loss-threshold attack with full probabilities: 0.645
    assert got["label-only-augmentation"].metrics["auc"] > 0.62
    assert got["label-only-boundary"].metrics["auc"] > 0.59
    for a in got.values():
        assert a.metrics["attacker_advantage"] > 0.2  # the shadow's threshold works (0.38, 0.41)
        assert any("shadow model" in note for note in a.notes)
    # augmentation: 31 queries per candidate when noise is chosen; boundary: at most 200
    assert got["label-only-augmentation"].queries == 31 * n
    assert n < got["label-only-boundary"].queries <= 200 * n


def test_confidence_masking_stops_the_loss_attack_but_not_label_only(digits_small_train):
    target = digits_small_train
    know, truth = _knowledge(target)
    masked = privguard.Oracle(OneHot(target.predictor), "probs")

    def auc(guesses):
        return membership_metrics(guesses.scores, guesses.decisions, truth)[0]["auc"]

    loss_plain = auc(LossThreshold().run(target.oracle("probs"), know))
    loss_masked = auc(LossThreshold().run(masked, know))
    # measured: 0.579 with probabilities, 0.519 under one-hot output ("member iff correct")
    assert loss_plain > 0.56
    assert loss_masked < 0.53
    for attack in (LabelOnlyAugmentation(), LabelOnlyBoundary()):
        plain = attack.run(target.oracle("label"), know)
        under_mask = attack.run(masked, know)
        # the label is all these attacks use: masking the confidences changes nothing
        np.testing.assert_array_equal(plain.scores, under_mask.scores)
        # measured over seeds 0-3: augmentation 0.564-0.573, boundary 0.576-0.582
        assert auc(under_mask) > 0.55
        assert auc(under_mask) > loss_masked + 0.03


def test_augmentation_costs_n_plus_one_queries_per_candidate(diabetes_overfit, digits_small_train):
    know, truth = _knowledge(diabetes_overfit)
    oracle = diabetes_overfit.oracle("label")
    g = LabelOnlyAugmentation(perturbation="noise", sigma=0.02, copies=10).run(oracle, know)
    assert oracle.queries == 11 * len(truth)  # the shadow costs the target nothing
    assert set(np.unique(g.scores)) <= set(range(12))
    know, truth = _knowledge(digits_small_train)
    oracle = digits_small_train.oracle("label")
    LabelOnlyAugmentation(perturbation="translate", shifts=(1,)).run(oracle, know)
    assert oracle.queries == 5 * len(truth)


@pytest.mark.parametrize("name", LABEL_ATTACKS)
def test_a_spent_budget_ends_the_attack_with_a_note(diabetes_overfit, name):
    n = len(diabetes_overfit.split.members) + len(diabetes_overfit.split.nonmembers)
    budget = 31 * n // 2 if name == "label-only-augmentation" else n + 40 * 199
    report = privguard.audit(diabetes_overfit, attacks=[name], access="label", budget=budget)
    (result,) = report.attacks
    assert result.queries <= budget
    note = next(note for note in result.notes if "query budget spent" in note)
    left = int(note.split(":")[1].split()[0])
    assert 0 < left < n
    assert result.metrics["auc"] > 0.5  # what was measured still separates


@pytest.mark.parametrize("name", LABEL_ATTACKS)
def test_a_budget_below_one_query_per_candidate_is_refused(diabetes_overfit, name):
    n = len(diabetes_overfit.split.members) + len(diabetes_overfit.split.nonmembers)
    with pytest.raises(ConfigError, match=rf"raise --budget to at least {n} "):
        privguard.audit(diabetes_overfit, attacks=[name], access="label", budget=n - 1)


def test_same_seed_same_scores(diabetes_overfit):
    runs = []
    for seed in (0, 0, 1):
        know, _ = _knowledge(diabetes_overfit, seed=seed)
        oracle = diabetes_overfit.oracle("label")
        runs.append([cls().run(oracle, know) for cls in (LabelOnlyAugmentation, LabelOnlyBoundary)])
    for first, again, other in zip(*runs, strict=True):
        np.testing.assert_array_equal(first.scores, again.scores)
        np.testing.assert_array_equal(first.decisions, again.decisions)
        assert not np.array_equal(first.scores, other.scores)


def test_without_a_recipe_the_threshold_comes_from_the_population(diabetes_overfit):
    know, truth = _knowledge(diabetes_overfit, recipe=False)
    oracle = diabetes_overfit.oracle("label")
    g = LabelOnlyAugmentation().run(oracle, know)
    assert "5% false-positive rate" in g.notes[-1]
    # untuned noise (sigma 0.02): 31 queries per candidate and per auxiliary record measured
    assert oracle.queries == 31 * (len(truth) + len(know.aux_y))
    fpr = g.decisions[~truth].mean()
    assert fpr < 0.15
