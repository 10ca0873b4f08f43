import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from privguard import Access, AccessError, BudgetExhaustedError, DataError, Oracle, as_predictor


def test_access_levels_are_ordered_and_parsed():
    assert Access.LABEL < Access.TOPK < Access.PROBS < Access.LOGITS < Access.WHITEBOX
    assert Access.parse("Probs") is Access.PROBS


def test_label_oracle_refuses_probabilities_and_names_the_access_needed(digits_logreg, digits):
    oracle = digits_logreg.oracle("label")
    labels = oracle.labels(digits.x[:5])
    assert labels.shape == (5,) and labels.dtype == np.int64
    with pytest.raises(AccessError, match="needs 'probs' access"):
        oracle.proba(digits.x[:5])
    with pytest.raises(AccessError, match="'whitebox'"):
        oracle.loss_gradient(digits.x[:5], digits.y[:5])


def test_queries_are_counted_per_record_and_budget_enforced(digits_logreg, digits):
    oracle = digits_logreg.oracle("probs", budget=10)
    oracle.proba(digits.x[:6])
    assert oracle.queries == 6 and oracle.remaining == 4
    with pytest.raises(BudgetExhaustedError, match="budget of 10"):
        oracle.proba(digits.x[:5])
    assert oracle.queries == 6  # a refused query is not charged
    oracle.labels(digits.x[:4])
    assert oracle.remaining == 0


def test_topk_agrees_with_full_probabilities(digits_logreg, digits):
    p = digits_logreg.oracle("probs").proba(digits.x[:20])
    idx, top = digits_logreg.oracle("topk").topk(digits.x[:20], k=3)
    assert idx.shape == (20, 3)
    np.testing.assert_allclose(top, np.sort(p, axis=1)[:, ::-1][:, :3])
    assert (idx[:, 0] == p.argmax(axis=1)).all()


def test_wrong_query_shape_is_a_clear_error(digits_logreg):
    with pytest.raises(DataError, match=r"shape \(n, 1, 8, 8\)"):
        digits_logreg.oracle("probs").proba(np.zeros((3, 64), dtype=np.float32))


def test_whitebox_gradient_matches_finite_differences(digits_logreg, digits):
    oracle = digits_logreg.oracle("whitebox")
    x, y = digits.x[:1].astype(np.float64), digits.y[:1]
    g = oracle.loss_gradient(x, y).ravel()

    def loss(z):
        p = digits_logreg.predict_proba(z.astype(np.float32))
        return -np.log(p[0, y[0]])

    i = int(np.argmax(np.abs(g)))
    e = np.zeros_like(x).ravel()
    e[i] = 1e-2
    fd = (loss(x + e.reshape(x.shape)) - loss(x - e.reshape(x.shape))) / 2e-2
    assert fd == pytest.approx(g[i], rel=0.05)


def test_sklearn_and_callable_adapters(digits):
    x = digits.x.reshape(len(digits), -1)
    clf = LogisticRegression(max_iter=500).fit(x[:1000], digits.y[:1000])
    oracle = Oracle(as_predictor(clf, input_shape=(1, 8, 8)), "logits")
    p = oracle.proba(digits.x[1000:1100])
    # queried in float64, the dtype scikit-learn computes in
    np.testing.assert_allclose(p, clf.predict_proba(x[1000:1100].astype(np.float64)))
    z = oracle.logits(digits.x[1000:1100])
    np.testing.assert_allclose(np.exp(z), p, rtol=1e-6)
    assert (oracle.labels(digits.x[1000:1100]) == clf.predict(x[1000:1100])).mean() == 1.0

    bad = Oracle(as_predictor(lambda q: np.ones((len(q), 3)), input_shape=(64,), n_classes=10))
    with pytest.raises(DataError, match="expected"):
        bad.proba(np.zeros((2, 64), dtype=np.float32))
