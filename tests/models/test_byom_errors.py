"""Bad input on the bring-your-own-model path: each a one-line privguard error, not a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import privguard
from privguard import ConfigError, DataError


@pytest.fixture(scope="module")
def iris_frame():
    x, y = load_iris(return_X_y=True, as_frame=True)
    df = x.assign(species=y.map({0: "setosa", 1: "versicolor", 2: "virginica"}))
    df = df.drop_duplicates(subset=list(x.columns)).reset_index(drop=True)
    idx = np.random.default_rng(0).permutation(len(df))
    return df.iloc[idx[:70]].reset_index(drop=True), df.iloc[idx[70:]].reset_index(drop=True)


@pytest.fixture(scope="module")
def iris_model(iris_frame):
    members = iris_frame[0]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return model.fit(members.drop(columns="species"), members["species"])


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_fitted_model_without_a_split_says_to_pass_members(iris_model):
    with pytest.raises(ConfigError, match="members=.*nonmembers=") as e:
        privguard.audit(iris_model)
    _one_line(e)


def test_members_that_are_also_non_members_are_counted(iris_model, iris_frame):
    members, nonmembers = iris_frame
    overlapping = pd.concat([nonmembers, members.iloc[:3]], ignore_index=True)
    with pytest.raises(DataError, match="^3 non-member record") as e:
        privguard.audit(iris_model, members=members, nonmembers=overlapping, label="species")
    _one_line(e)


def test_labels_the_model_does_not_predict_are_an_output_width_mismatch(iris_frame):
    members, nonmembers = iris_frame
    two = members[members["species"] != "virginica"]
    model = LogisticRegression(max_iter=500).fit(two.drop(columns="species"), two["species"])
    with pytest.raises(DataError, match="2 output.*3 classes") as e:
        privguard.audit(model, members=two, nonmembers=nonmembers, label="species")
    _one_line(e)


def test_a_label_column_absent_from_one_file_names_that_file(iris_model, iris_frame, tmp_path):
    members, nonmembers = iris_frame
    members.to_csv(tmp_path / "train.csv", index=False)
    nonmembers.drop(columns="species").to_csv(tmp_path / "holdout.csv", index=False)
    with pytest.raises(DataError, match="nonmembers .*holdout.csv.* no label column 'species'"):
        privguard.audit(
            iris_model,
            members=tmp_path / "train.csv",
            nonmembers=tmp_path / "holdout.csv",
            label="species",
        )


def test_columns_the_model_was_not_fitted_on_are_named(iris_model, iris_frame):
    members, nonmembers = iris_frame
    extra = nonmembers.assign(zip_code=12345)
    with pytest.raises(DataError, match="zip_code that the model was not fitted on") as e:
        privguard.audit(iris_model, members=members, nonmembers=extra, label="species")
    _one_line(e)


def test_a_model_that_answers_nan_is_refused(iris_frame):
    members, nonmembers = iris_frame
    x = members.drop(columns="species")
    model = LogisticRegression(max_iter=500).fit(x, members["species"])
    model.intercept_ = model.intercept_.copy()
    model.intercept_[0] = np.nan  # a broken model: every answer is NaN
    with pytest.raises(DataError, match="NaN") as e:
        privguard.audit(model, members=members, nonmembers=nonmembers, label="species")
    _one_line(e)


def test_a_file_of_unknown_kind_is_refused(iris_model, iris_frame, tmp_path):
    (tmp_path / "train.xlsx").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="cannot tell the kind of .*train.xlsx"):
        privguard.audit(
            iris_model, members=tmp_path / "train.xlsx", nonmembers=iris_frame[1], label="species"
        )


def test_an_object_privguard_cannot_adapt_is_a_config_error(iris_frame):
    with pytest.raises(ConfigError, match="cannot audit a builtins.dict"):
        privguard.audit({"not": "a model"}, members=iris_frame[0], nonmembers=iris_frame[1])


def test_npz_parts_are_read_without_pickles(iris_frame, tmp_path):
    members, nonmembers = iris_frame
    model = LogisticRegression(max_iter=500).fit(
        members.drop(columns="species").to_numpy(), members["species"]
    )
    for name, part in (("m", members), ("n", nonmembers)):
        np.savez(
            tmp_path / f"{name}.npz",
            x=part.drop(columns="species").to_numpy(),
            y=part["species"].to_numpy().astype(str),
        )
    report = privguard.audit(
        model, members=tmp_path / "m.npz", nonmembers=tmp_path / "n.npz", attacks=["loss-threshold"]
    )
    assert report.attacks[0].metrics["auc"] > 0.3
    np.savez(tmp_path / "obj.npz", x=np.array([[1, "a"]], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="never unpickled"):
        privguard.audit(model, members=tmp_path / "obj.npz", nonmembers=tmp_path / "n.npz")
