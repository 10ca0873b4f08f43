"""TabularPreprocessor: the encoding rule, its JSON record, and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from privguard.data import TabularPreprocessor
from privguard.errors import DataError


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 30.0, np.nan, 40.0],
            "const": [5, 5, 5, 5],
            "city": ["b", "a", None, "a"],
            "smoker": [True, False, True, False],
            "income": ["low", "high", "low", "high"],
        }
    )


def test_encoding_rule(df: pd.DataFrame) -> None:
    pre = TabularPreprocessor().fit(df, "income")
    assert pre.classes == ["high", "low"]
    assert pre.feature_names == [
        "age",
        "const",
        "city=a",
        "city=b",
        "city=missing",
        "smoker=False",
        "smoker=True",
        "smoker=missing",
    ]
    x, y = pre.transform(df)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(y, [1, 0, 1, 0])
    expected = [
        [0.0, 0, 0, 1, 0, 0, 1, 0],
        [0.5, 0, 1, 0, 0, 1, 0, 0],
        [0.5, 0, 0, 0, 1, 0, 1, 0],  # age imputed with the median 30; city missing
        [1.0, 0, 1, 0, 0, 1, 0, 0],
    ]
    assert np.array_equal(x, np.array(expected, dtype=np.float32))


def test_new_records_unseen_category_and_range(df: pd.DataFrame) -> None:
    pre = TabularPreprocessor().fit(df, "income")
    new = pd.DataFrame(
        # columns in another order, an extra column, unseen values
        {
            "income": ["low"],
            "extra": [1],
            "smoker": [True],
            "city": ["zurich"],
            "const": [9],
            "age": [100],
        }
    )
    x = pre.transform_features(new)
    assert x[0, 0] == 1.0  # clipped to the fit-time range
    assert x[0, 1] == 0.0  # constant at fit time
    assert x[0, 2:5].tolist() == [0, 0, 0]  # unseen city -> all zeros


def test_json_record_replays_exactly(df: pd.DataFrame) -> None:
    pre = TabularPreprocessor().fit(df, "income")
    record = json.loads(json.dumps(pre.to_dict()))
    again = TabularPreprocessor.from_dict(record)
    x1, y1 = pre.transform(df)
    x2, y2 = again.transform(df)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert again.to_dict() == pre.to_dict()


def test_numeric_labels_sort_by_value() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "grade": [10, 2, 1, 2]})
    pre = TabularPreprocessor().fit(df, "grade")
    assert pre.classes == ["1", "2", "10"]
    # the same labels read as floats map to the same classes
    _, y = pre.transform(df.assign(grade=[10.0, 2.0, 1.0, 2.0]))
    assert y.tolist() == [2, 1, 0, 1]


def test_error_messages(df: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"no column 'salary'; columns are: age, .*--label"):
        TabularPreprocessor().fit(df, "salary")
    with pytest.raises(DataError, match="single value"):
        TabularPreprocessor().fit(df.assign(income="low"), "income")
    with pytest.raises(DataError, match="empty in 1 record"):
        TabularPreprocessor().fit(df.assign(income=["low", None, "high", "low"]), "income")
    with pytest.raises(DataError, match=r"column 'age' .* 2 infinite value\(s\)"):
        TabularPreprocessor().fit(df.assign(age=[np.inf, 1.0, -np.inf, 2.0]), "income")

    pre = TabularPreprocessor().fit(df, "income")
    with pytest.raises(DataError, match=r"value\(s\) medium .* classes are: high, low"):
        pre.transform(df.assign(income=["low", "medium", "low", "high"]))
    with pytest.raises(DataError, match=r"lacks column\(s\) city"):
        pre.transform(df.drop(columns="city"))
    with pytest.raises(DataError, match="no label column 'income'"):
        pre.transform(df.drop(columns="income"))
    with pytest.raises(DataError, match=r"'age' .* non-numeric value\(s\) here \(e.g. 'old'\)"):
        pre.transform(df.assign(age=["old", "20", None, "30"]))
    ids = pd.DataFrame({"id": [f"p{i}" for i in range(1200)], "y": [0, 1] * 600})
    with pytest.raises(DataError, match="'id' .* 1200 distinct text values.*remove the column"):
        TabularPreprocessor().fit(ids, "y")
    with pytest.raises(DataError, match="malformed"):
        TabularPreprocessor.from_dict({"type": "tabular", "version": 1, "label": "y"})
