"""Any object with predict_proba, or a callable returning probabilities or logits, audited on the
user's split with the attacker's proxy recipe (LiRA, RMIA and shadow models run, never skipped).

The models are fitted here: a scikit-learn MLP on digits, answered through a plain callable and
through a wrapper object that is not a scikit-learn estimator.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

import privguard
from privguard.errors import ConfigError, DataError
from privguard.models.adapters import adapt
from privguard.models.adapters.generic import CallableAdapter, ProbaAdapter

FAST = {
    "lira-offline": {"n_reference": 4},
    "rmia": {"n_reference": 2},
    "shadow-models": {"n_shadow": 2},
}


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(1).permutation(len(y))
    m, n = idx[:400], idx[400:900]
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(x[m], y[m])
    return model, (x[m], y[m]), (x[n], y[n])


class Served:
    """A model behind someone's own wrapper: predict_proba, not a scikit-learn estimator."""

    def __init__(self, model):
        self._model = model
        self.n_classes = 10

    def predict_proba(self, x):
        return self._model.predict_proba(np.asarray(x, dtype=np.float64))


def test_callable_returning_logits_runs_lira_rmia_and_shadow_with_a_proxy(digits):
    model, members, nonmembers = digits
    before = pickle.dumps(model)

    def logits(x):
        return np.log(model.predict_proba(x) + 1e-12) + 3.0  # logits up to a constant

    adapter = adapt(logits, n_classes=10, output="logits")
    assert isinstance(adapter, CallableAdapter)
    proxy = pickle.loads(pickle.dumps(adapter.recipe()))  # recipes travel to worker processes
    assert proxy.kind == "proxy" and proxy.classes == list(range(10))
    fp = adapter.fingerprint()
    report = privguard.audit(
        adapter,
        members=members,
        nonmembers=nonmembers,
        attacks=["lira-offline", "rmia", "shadow-models", "loss-threshold"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert set(got) == {"lira-offline", "rmia", "shadow-models", "loss-threshold"}
    assert "skipped" not in report.summary
    assert report.target["reference_recipe"]["kind"] == "proxy"
    assert "lower bound" in report.target["reference_recipe"]["note"]
    # the MLP memorised its 400 members: every attack separates them from non-members
    for name in got:
        assert got[name]["auc"] > 0.55, (name, got[name])
    assert got["lira-offline"]["reference_models"] > 0
    assert adapter.fingerprint() == fp
    assert pickle.dumps(model) == before


def test_object_with_predict_proba_is_used_as_is(digits):
    model, members, nonmembers = digits
    served = Served(model)
    adapter = adapt(served)
    assert isinstance(adapter, ProbaAdapter)
    assert adapter.classes == list(range(10))
    x = members[0][:5]
    np.testing.assert_allclose(adapter.predict_proba(x), model.predict_proba(x.astype(np.float64)))
    report = privguard.audit(
        served, members=members, nonmembers=nonmembers, attacks=["rmia"], settings=FAST
    )
    assert report.attacks[0].metrics["auc"] > 0.55


def test_logits_passed_as_probabilities_and_unknown_classes_are_one_line_errors(digits):
    model, members, nonmembers = digits
    wrong = adapt(lambda x: np.log(model.predict_proba(x) + 1e-12), n_classes=10)
    with pytest.raises(DataError, match="not probabilities.*output='logits'"):
        wrong.predict_proba(members[0][:4])
    with pytest.raises(ConfigError, match="classes="):
        adapt(lambda x: model.predict_proba(x))
    with pytest.raises(ConfigError, match="output="):
        adapt(lambda x: x, n_classes=2, output="scores")
    nan = adapt(lambda x: np.full((len(x), 10), np.nan), n_classes=10)
    with pytest.raises(DataError, match="NaN"):
        privguard.audit(nan, members=members, nonmembers=nonmembers, attacks=["loss-threshold"])


def test_a_callable_on_raw_columns_gets_the_table_proxy(tmp_path):
    """Raw heart-disease columns (text categoricals, missing values) reach the callable as a
    DataFrame; the proxy is a boosted pipeline trained on the same raw columns."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from privguard.data.builtin import _read_shipped

    df = _read_shipped("heart-disease.csv.gz").drop_duplicates().reset_index(drop=True)
    df["disease"] = np.where(df.pop("num") > 0, "present", "absent")
    idx = np.random.default_rng(0).permutation(len(df))
    members, nonmembers = df.iloc[idx[:400]], df.iloc[idx[400:]]
    x = members.drop(columns="disease")
    cats = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    pipe = Pipeline(
        [
            (
                "enc",
                ColumnTransformer(
                    [("c", OneHotEncoder(handle_unknown="ignore"), cats)], remainder="passthrough"
                ),
            ),
            (
                "gbm",
                HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0),
            ),
        ]
    ).fit(x, members["disease"])
    seen = []

    def served(frame):
        seen.append(type(frame))
        return pipe.predict_proba(frame)

    adapter = adapt(served, classes=["absent", "present"], columns=list(x.columns))
    report = privguard.audit(
        adapter,
        members=members,
        nonmembers=nonmembers,
        label="disease",
        attacks=["lira-offline", "rmia"],
        settings=FAST,
    )
    assert set(seen) == {pd.DataFrame}
    assert report.target["reference_recipe"]["kind"] == "proxy"
    got = {a.name: a.metrics for a in report.attacks}
    assert got["lira-offline"]["reference_models"] > 0
    assert got["lira-offline"]["auc"] > 0.55 and got["rmia"]["auc"] > 0.55
