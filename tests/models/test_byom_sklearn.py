"""Auditing a scikit-learn model the user already trained, on the user's own split.

Small real models are fitted here: a HistGradientBoosting pipeline on raw heart-disease columns
(text categoricals, missing values) and a float64 LogisticRegression on digits.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import privguard
from privguard.data.builtin import _read_shipped
from privguard.data.user import FrameCodec, load_user_split
from privguard.models.adapters import adapt
from privguard.models.user import user_target


def heart_frame() -> pd.DataFrame:
    df = _read_shipped("heart-disease.csv.gz")
    df["disease"] = np.where(df.pop("num") > 0, "present", "absent")
    return df


@pytest.fixture(scope="module")
def heart_split():
    df = heart_frame()
    idx = np.random.default_rng(0).permutation(len(df))
    return df.iloc[idx[:400]], df.iloc[idx[400:660]], df.iloc[idx[660:]]


@pytest.fixture(scope="module")
def gbm_pipeline(heart_split):
    members = heart_split[0]
    x = members.drop(columns="disease")
    cats = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    pipe = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("cat", OneHotEncoder(handle_unknown="ignore"), cats)],
                    remainder="passthrough",
                ),
            ),
            (
                "gbm",
                HistGradientBoostingClassifier(
                    max_iter=100, min_samples_leaf=2, early_stopping=False, random_state=0
                ),
            ),
        ]
    )
    return pipe.fit(x, members["disease"])


@pytest.fixture(scope="module")
def digits_split():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # float64, as a user would have it
    idx = np.random.default_rng(0).permutation(len(y))
    return (x[idx[:700]], y[idx[:700]]), (x[idx[700:1200]], y[idx[700:1200]])


def test_pipeline_on_raw_columns_gets_lira_and_rmia_and_is_never_touched(gbm_pipeline, heart_split):
    members, nonmembers, population = heart_split
    assert members.isna().any().any()  # missing values reach the pipeline as they are
    before = pickle.dumps(gbm_pipeline)
    fingerprint = adapt(gbm_pipeline).fingerprint()
    report = privguard.audit(
        gbm_pipeline,
        members=members,
        nonmembers=nonmembers,
        population=population,
        label="disease",
        attacks=["lira-offline", "rmia", "loss-threshold"],
        access="probs",
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert set(got) == {"lira-offline", "rmia", "loss-threshold"}  # none skipped
    assert "skipped" not in report.summary
    # an overfit boosted model: the reference-model attacks find members the loss cannot
    # (measured: LiRA AUC 0.67, TPR@1%FPR 0.11; RMIA 0.71, 0.11; loss 0.70, 0.015)
    assert got["lira-offline"]["auc"] > 0.6
    assert got["rmia"]["auc"] > 0.65
    assert got["lira-offline"]["tpr_at_fpr_0.01"] > 0.05
    assert got["lira-offline"]["tpr_at_fpr_0.01"] > got["loss-threshold"]["tpr_at_fpr_0.01"]
    assert got["lira-offline"]["reference_models"] > 0
    assert report.target["reference_recipe"]["kind"] == "clone"
    assert report.data["user_split"]["population"]["source"] == "given"
    assert report.target["train_accuracy"] == 1.0
    # never refitted, mutated or re-encoded
    assert pickle.dumps(gbm_pipeline) == before
    assert adapt(gbm_pipeline).fingerprint() == fingerprint


def test_float64_logistic_regression_is_queried_in_float64(digits_split):
    (xm, ym), (xn, yn) = digits_split
    model = LogisticRegression(max_iter=2000).fit(xm, ym)
    before = pickle.dumps(model)
    target = user_target(model, members=(xm, ym), nonmembers=(xn, yn))
    assert target.predictor.dtype == np.float64
    # reference models may train in worker processes: the recipe travels by pickle
    recipe = pickle.loads(pickle.dumps(target.recipe))
    refit = recipe.fit(target.user.dataset.x[:300], target.user.dataset.y[:300], seed=1)
    assert refit.predict_proba(target.user.dataset.x[:4]).shape == (4, 10)
    assert target.oracle("probs")._spend(xm[:3].astype(np.float32)).dtype == np.float64
    # members reach the model bit for bit, though float32 cannot hold them (x / 16 * pi)
    odd = xm * np.pi
    twisted = user_target(
        LogisticRegression(max_iter=2000).fit(odd, ym), members=(odd, ym), nonmembers=(xn, yn)
    )
    ds = twisted.user.dataset
    assert not np.array_equal(ds.x[:50].astype(np.float64), odd[:50])
    np.testing.assert_array_equal(
        twisted.oracle("probs").proba(ds.x[:50]), twisted.adapter.estimator.predict_proba(odd[:50])
    )
    report = privguard.audit(
        model, members=(xm, ym), nonmembers=(xn, yn), attacks=["equation-solving", "lira-offline"]
    )
    got = {a.name: a.metrics for a in report.attacks}
    # the float64 model's parameters come back to float64 precision (measured: 1.8e-13)
    assert got["equation-solving"]["max_parameter_error"] < 1e-6
    assert got["lira-offline"]["reference_models"] > 0
    # no population given: half the non-members became the attacker's, and the report says so
    pop = report.data["user_split"]["population"]
    assert pop["records"] == pytest.approx(250, abs=5)
    assert "of the non-members" in pop["source"]
    assert report.data["split"]["nonmembers"] == 500 - pop["records"]
    assert pickle.dumps(model) == before


def test_user_records_reach_the_model_unchanged_and_new_ones_decode_to_its_columns(heart_split):
    members, nonmembers, _ = heart_split
    raw = pd.concat([members, nonmembers], ignore_index=True).drop(columns="disease")
    codec = FrameCodec(raw)
    x = codec.encode(raw)
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert x.min() >= 0 and x.max() <= 1
    codec.remember(raw, x)
    back = codec.decode(x.astype(np.float64))
    pd.testing.assert_frame_equal(back, raw.reset_index(drop=True))
    # a vector no user record has: decoded to the same columns and dtypes, categories and
    # missing cells restored, numbers back in their units
    fresh = codec.decode(x[:5] * 0.999 + 0.0005)
    assert list(fresh.columns) == list(raw.columns)
    assert dict(fresh.dtypes) == dict(raw.dtypes)
    for c in ("sex", "cp", "thal"):
        orig = raw[c].iloc[:5].astype(object).where(raw[c].iloc[:5].notna(), None)
        assert fresh[c].astype(object).where(fresh[c].notna(), None).tolist() == orig.tolist()
    np.testing.assert_allclose(fresh["age"], raw["age"].iloc[:5], atol=1.0)


def test_members_given_as_csv_files_record_their_content_hashes(heart_split, tmp_path):
    members, nonmembers, _ = heart_split
    members.to_csv(tmp_path / "train.csv", index=False)
    nonmembers.to_parquet(tmp_path / "holdout.parquet", index=False)
    data = load_user_split(
        tmp_path / "train.csv", tmp_path / "holdout.parquet", label="disease", seed=3
    )
    assert len(data.split.members) == len(members)
    assert len(data.split.nonmembers) + len(data.split.aux) == len(nonmembers)
    assert set(data.info["sha256"]) == {"members", "nonmembers"}
    assert data.classes == ["absent", "present"]


def test_from_sklearn_fits_a_clone_and_leaves_the_callers_estimator_alone(digits_split):
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    target = privguard.from_sklearn(forest, "digits")
    assert not hasattr(forest, "classes_")  # the caller's object was not fitted
    assert target.estimator is not forest
    fitted = RandomForestClassifier(n_estimators=5, random_state=0).fit(*digits_split[0])
    before = pickle.dumps(fitted)
    privguard.from_sklearn(fitted, "digits")
    assert pickle.dumps(fitted) == before


def test_category_bool_and_nullable_columns_keep_their_dtypes_through_the_codec():
    raw = pd.DataFrame(
        {
            "colour": pd.Categorical(["red", "blue", None, "red"] * 5),
            "flag": [True, False, True, False] * 5,
            "count": pd.array([1, None, 3, 4] * 5, dtype="Int64"),
            "score": [0.5, 1.5, np.nan, 2.0] * 5,
        }
    )
    codec = FrameCodec(raw)
    x = codec.encode(raw)
    assert codec.feature_names == [
        "colour=blue", "colour=red", "colour=missing", "flag=False", "flag=True",
        "count", "count?missing", "score", "score?missing",
    ]  # fmt: skip
    fresh = codec.decode(np.clip(x + 0.01, 0, 1))  # not a remembered record
    assert dict(fresh.dtypes) == dict(raw.dtypes)
    assert fresh["colour"].isna().tolist() == raw["colour"].isna().tolist()
    assert fresh["flag"].tolist() == raw["flag"].tolist()
    assert fresh["count"].isna().tolist() == raw["count"].isna().tolist()
    np.testing.assert_allclose(fresh["score"].fillna(-1), raw["score"].fillna(-1), atol=0.02)
