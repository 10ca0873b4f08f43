"""XGBoost and LightGBM: the scikit-learn API objects (clone recipe) and the native model files
(XGBoost .json / .ubj, LightGBM text) read by the libraries' own parsers, with reference models
built from the hyper-parameters the files record. Models are fitted here on small data.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

import privguard
from privguard.errors import ModelError
from privguard.models.adapters import adapt, load_model_file
from privguard.models.adapters.boosting import BoosterAdapter
from privguard.models.adapters.sklearn import SklearnAdapter

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

FAST = {"lira-offline": {"n_reference": 4}, "rmia": {"n_reference": 2}}


@pytest.fixture(scope="module")
def digits_split():
    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(4).permutation(len(y))
    m, n = idx[:400], idx[400:800]
    return (x[m], y[m]), (x[n], y[n])


@pytest.fixture(scope="module")
def cancer_split():
    x, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(5).permutation(len(y))
    m, n = idx[:280], idx[280:]
    return (x[m], y[m]), (x[n], y[n])


@pytest.fixture(scope="module")
def xgb_model(digits_split):
    (x, y), _ = digits_split
    return xgb.XGBClassifier(
        n_estimators=40, max_depth=4, learning_rate=0.3, random_state=0, n_jobs=1
    ).fit(x, y)


@pytest.fixture(scope="module")
def lgb_model(cancer_split):
    (x, y), _ = cancer_split
    return lgb.LGBMClassifier(
        n_estimators=60, num_leaves=15, min_child_samples=3, random_state=0, n_jobs=1, verbose=-1
    ).fit(x, y)


def test_xgboost_sklearn_api_is_cloned_and_never_touched(xgb_model, digits_split):
    members, nonmembers = digits_split
    before = pickle.dumps(xgb_model)
    adapter = adapt(xgb_model)
    assert isinstance(adapter, SklearnAdapter)
    fp = adapter.fingerprint()
    report = privguard.audit(
        xgb_model,
        members=members,
        nonmembers=nonmembers,
        attacks=["lira-offline", "loss-threshold"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert report.target["reference_recipe"]["kind"] == "clone"
    assert got["lira-offline"]["reference_models"] > 0
    assert got["lira-offline"]["auc"] > 0.55
    assert pickle.dumps(xgb_model) == before
    assert adapt(xgb_model).fingerprint() == fp


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_native_file_answers_like_the_model_and_records_its_recipe(
    xgb_model, digits_split, tmp_path, suffix
):
    members, nonmembers = digits_split
    path = tmp_path / f"model{suffix}"
    xgb_model.get_booster().save_model(str(path))
    adapter = load_model_file(path)
    assert isinstance(adapter, BoosterAdapter) and adapter.n_classes == 10
    x = members[0][:40]
    np.testing.assert_allclose(adapter.predict_proba(x), xgb_model.predict_proba(x), atol=1e-5)
    recipe = adapter.recipe()
    # rounds and depth come from the trees; the learning rate is not in XGBoost files
    assert recipe.params == {"n_estimators": 40, "max_depth": 4}
    assert "learning rate" in recipe.description
    if suffix == ".json":
        report = privguard.audit(
            adapter, members=members, nonmembers=nonmembers, attacks=["rmia"], settings=FAST
        )
        assert report.target["reference_recipe"]["kind"] == "clone"
        assert report.attacks[0].metrics["auc"] > 0.55


def test_lightgbm_native_text_file_and_booster(lgb_model, cancer_split, tmp_path):
    members, nonmembers = cancer_split
    path = tmp_path / "model.txt"
    lgb_model.booster_.save_model(str(path))
    adapter = load_model_file(path)
    assert isinstance(adapter, BoosterAdapter) and adapter.n_classes == 2
    x = members[0][:40]
    np.testing.assert_allclose(adapter.predict_proba(x), lgb_model.predict_proba(x), atol=1e-6)
    assert adapter.recipe().params["num_leaves"] == 15
    fp = adapter.fingerprint()
    report = privguard.audit(
        adapter,
        members=members,
        nonmembers=nonmembers,
        attacks=["lira-offline", "rmia"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert got["lira-offline"]["reference_models"] > 0
    assert got["lira-offline"]["auc"] > 0.5 and got["rmia"]["auc"] > 0.5
    assert adapter.fingerprint() == fp
    assert isinstance(adapt(lgb_model.booster_), BoosterAdapter)


def test_broken_native_files_are_one_line_errors(tmp_path):
    (tmp_path / "m.ubj").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="not a valid XGBoost model"):
        load_model_file(tmp_path / "m.ubj")
    (tmp_path / "m.txt").write_text("tree\nversion=v4\nnum_class=oops\n")
    with pytest.raises(ModelError, match="not a valid LightGBM model"):
        load_model_file(tmp_path / "m.txt")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ModelError, match="not a model file privguard can load"):
        load_model_file(tmp_path / "other.json")
