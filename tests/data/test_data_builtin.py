"""Built-in datasets load with the documented shapes, classes and bounds, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from privguard.data import BUILTIN, list_datasets, load_dataset
from privguard.errors import DataError


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_loads_as_registered(name: str) -> None:
    info = BUILTIN[name]
    ds = load_dataset(name)
    assert ds.name == name
    assert ds.kind == info.kind
    assert len(ds) == info.n
    assert ds.input_shape == info.input_shape
    assert ds.n_classes == info.n_classes
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert ds.bounds == (0.0, 1.0)
    assert set(np.unique(ds.y)) == set(range(info.n_classes))  # every class is present
    assert ds.licence and ds.source
    for col in info.sensitive:
        assert len(ds.extra[col]) == len(ds)
    # deterministic: loading again gives exactly the same data
    assert load_dataset(name).content_hash() == ds.content_hash()
    if ds.kind == "tabular":
        assert len(ds.feature_names) == ds.input_shape[0]
        # the recorded preprocessing is plain JSON and replays to the same data
        record = json.loads(json.dumps(ds.preprocessing))
        assert load_dataset(name, preprocessing=record).content_hash() == ds.content_hash()
    else:
        assert ds.preprocessing is None


def test_list_datasets_matches_registry() -> None:
    infos = list_datasets()
    assert [i.name for i in infos] == [
        "digits",
        "mnist-5k",
        "breast-cancer",
        "diabetes",
        "adult",
        "heart-disease",
    ]
    assert all(i.n_features == int(np.prod(i.input_shape)) for i in infos)


def test_digits_scaling() -> None:
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 1, 8, 8)
    assert ds.x.max() == 1.0  # grey level 16 / 16
    assert np.allclose(ds.x * 16, np.round(ds.x * 16))  # grey levels 0..16


def test_mnist_5k_is_real_mnist() -> None:
    ds = load_dataset("mnist-5k")
    assert ds.x.shape == (5000, 1, 28, 28)
    counts = np.bincount(ds.y, minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    assert np.allclose(ds.x * 255, np.round(ds.x * 255))  # 8-bit grey levels
    assert 0.1 < ds.x.mean() < 0.15  # MNIST's mean intensity is about 0.13
    assert ds.x[:, :, 0, :].max() == 0.0  # MNIST digits are centred: the top row is blank


def test_diabetes_label_and_sensitive_column() -> None:
    ds = load_dataset("diabetes")
    assert ds.classes == ["<=median", ">median"]
    assert int(ds.y.sum()) == 221  # above the median of 140.5
    assert set(np.unique(ds.extra["sex"])) == {1.0, 2.0}
    sex = ds.x[:, ds.feature_names.index("sex")]
    assert np.array_equal(sex, (ds.extra["sex"] == 2.0).astype(np.float32))


def test_adult_contents() -> None:
    ds = load_dataset("adult")
    assert ds.classes == ["<=50K", ">50K"]
    assert int(ds.y.sum()) == 11687
    assert set(ds.extra["sex"]) == {"Female", "Male"}
    assert len(set(ds.extra["race"])) == 5
    # "?" in the original files is the explicit missing category
    assert int(ds.x[:, ds.feature_names.index("workclass=missing")].sum()) == 2799
    assert "workclass=?" not in ds.feature_names
    assert ds.preprocessing is not None and ds.preprocessing["label"] == "income"


def test_heart_disease_contents() -> None:
    ds = load_dataset("heart-disease")
    assert ds.classes == ["absent", "present"]
    assert int(ds.y.sum()) == 920 - 411  # num > 0
    assert set(ds.extra["sex"]) == {"Female", "Male"}
    assert "num" not in ds.feature_names and "id" not in ds.feature_names
    assert "ca" in ds.feature_names and "ca=missing" not in ds.feature_names  # numeric
    assert int(ds.x[:, ds.feature_names.index("thal=missing")].sum()) == 486
    chol = ds.preprocessing["numeric"][ds.feature_names.index("chol")]
    assert chol["min"] > 0  # cholesterol 0 means "not measured" and is imputed


def test_unknown_name_and_fixed_labels() -> None:
    with pytest.raises(DataError, match="unknown dataset 'digitz'.*digits"):
        load_dataset("digitz")
    with pytest.raises(DataError, match="fixed label"):
        load_dataset("adult", label="sex")
    with pytest.raises(DataError, match="fixed label"):
        load_dataset("digits", label="y")
    assert load_dataset("diabetes", label="progression").n_classes == 2
    with pytest.raises(DataError, match="takes no preprocessing"):
        load_dataset("digits", preprocessing={"type": "tabular"})
    with pytest.raises(DataError, match="not a tabular record"):
        load_dataset("adult", preprocessing={"type": "npz", "classes": ["0"]})
