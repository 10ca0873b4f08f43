"""Output policies: parsing, what each reveals, and that none adds information."""

from __future__ import annotations

import numpy as np
import pytest

from privguard.defenses import ABSTAIN, answer_labels, parse_policy, protect
from privguard.errors import AccessError, ConfigError
from privguard.oracle import Access

SPECS = [
    "label",
    "topk:3",
    "round:2",
    "noise:gaussian:0.05",
    "noise:laplace:0.05",
    "reverse-sigmoid:0.7:0.2",
    "threshold:0.6",
    "topk:3,round:2",
    "threshold:0.5,label",
]


@pytest.fixture(scope="module")
def probs(digits_mlp, digits):
    return digits_mlp.predict_proba(digits.x[:300])


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips(spec):
    assert parse_policy(parse_policy(spec).spec).spec == parse_policy(spec).spec


@pytest.mark.parametrize(
    "bad",
    ["topk", "topk:0", "round:x", "noise:uniform:1", "noise:gaussian:-1", "threshold:2", "magic"],
)
def test_bad_specs_say_what_to_write(bad):
    with pytest.raises(ConfigError, match="comma-separated steps"):
        parse_policy(bad)


@pytest.mark.parametrize("spec", SPECS)
def test_output_is_a_function_of_the_unprotected_output(spec, probs):
    """The policy sees only the probability vector (and, for noise, a stream independent of the
    input): two inputs with the same unprotected output get identically distributed answers, so
    a policy can never reveal more than the model's own output."""
    policy = parse_policy(spec)
    # Same probabilities twice, same noise stream -> same answers, whatever the inputs were.
    a = policy.apply(probs.copy(), np.random.default_rng(1))
    b = policy.apply(probs.copy(), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    # Rows are valid answers: non-negative, summing to at most 1 (top-k drops the rest,
    # rounding may add a little, an abstained row is all zeros).
    assert (a >= 0).all()
    slack = 0.05 if "round" in spec else 1e-9
    assert (a.sum(axis=1) <= 1 + slack).all()
    if spec.startswith(("noise", "reverse", "label")):
        np.testing.assert_allclose(a.sum(axis=1), 1.0)


@pytest.mark.parametrize("spec", ["label", "topk:3", "round:2", "reverse-sigmoid:0.7:0.2"])
def test_deterministic_policies_keep_the_served_label(spec, probs):
    out = parse_policy(spec).apply(probs, np.random.default_rng(0))
    agree = (answer_labels(out) == probs.argmax(axis=1)).mean()
    # Rounding can tie two classes at the same rounded value; argmax then picks the first.
    assert agree >= 0.99


def test_label_and_topk_reveal_no_more_than_they_say(probs):
    lab = parse_policy("label").apply(probs, np.random.default_rng(0))
    assert set(np.unique(lab)) <= {0.0, 1.0}
    top = parse_policy("topk:3").apply(probs, np.random.default_rng(0))
    assert ((top > 0).sum(axis=1) <= 3).all()


def test_threshold_abstains_below_confidence(probs):
    out = parse_policy("threshold:0.9").apply(probs, np.random.default_rng(0))
    low = probs.max(axis=1) < 0.9
    assert low.any() and (~low).any()
    assert (answer_labels(out)[low] == ABSTAIN).all()
    np.testing.assert_array_equal(out[~low], probs[~low])


def test_protected_oracle_caps_access(digits_mlp, digits):
    oracle = protect(digits_mlp.predictor, "topk:3,round:2", "whitebox")
    assert oracle.access == Access.TOPK and oracle.top_k == 3
    classes, scores = oracle.topk(digits.x[:5])
    assert classes.shape == (5, 3)
    np.testing.assert_array_equal(scores, np.round(scores, 2))
    with pytest.raises(AccessError):
        oracle.proba(digits.x[:5])
    with pytest.raises(AccessError):
        oracle.loss_gradient(digits.x[:5], digits.y[:5])
    assert oracle.queries == 5
    labelled = protect(digits_mlp.predictor, "label", "probs")
    assert labelled.access == Access.LABEL
    np.testing.assert_array_equal(
        labelled.labels(digits.x[:50]), digits_mlp.predict_proba(digits.x[:50]).argmax(axis=1)
    )


def test_no_policy_is_the_plain_oracle(digits_mlp, digits):
    oracle = protect(digits_mlp.predictor, None, "logits")
    assert oracle.access == Access.LOGITS
    np.testing.assert_allclose(oracle.proba(digits.x[:3]), digits_mlp.predict_proba(digits.x[:3]))


def test_noise_is_fresh_per_answer(digits_mlp, digits):
    oracle = protect(digits_mlp.predictor, "noise:gaussian:0.05", "probs", seed=3)
    a, b = oracle.proba(digits.x[:20]), oracle.proba(digits.x[:20])
    assert not np.allclose(a, b)
    # ... so averaging repeated answers recovers the model's ranking (clipping at 0 biases the
    # values towards uniform, so not the values themselves); the cost is queries.
    mean = np.mean([oracle.proba(digits.x[:20]) for _ in range(200)], axis=0)
    truth = digits_mlp.predict_proba(digits.x[:20])
    np.testing.assert_array_equal(mean.argmax(axis=1), truth.argmax(axis=1))
