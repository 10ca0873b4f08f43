"""Attribute inference on user data: numeric sensitive fields binned, missing values excluded
and counted, bad --sensitive input refused in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import privguard
from privguard.audit.sensitive import (
    DEFAULT_BINS,
    parse_sensitive,
    sensitive_attribute,
)
from privguard.data import load_dataset
from privguard.errors import ConfigError


def test_a_numeric_field_is_binned_into_quantiles_that_fill_and_decode_agree_on():
    ds = load_dataset("diabetes")
    age = sensitive_attribute(ds, "age:bins=4")
    assert len(age.values) == 4 and all("–" in v for v in age.values)
    x = ds.x.reshape(len(ds), -1)
    share = np.bincount(age.decode(x), minlength=4) / len(ds)
    assert share.min() > 0.12 and share.max() < 0.4  # quantile bins: roughly even
    for v in range(4):
        assert (age.decode(age.fill(x, v)) == v).all()
    # a many-valued numeric field is binned by default instead of refused
    assert len(sensitive_attribute(ds, "age").values) == DEFAULT_BINS


@pytest.mark.parametrize("spec", ["age:bins=x", "age:bins=1", "age:width=3", ":bins=3"])
def test_bad_sensitive_specs_are_config_errors(spec):
    with pytest.raises(ConfigError, match="--sensitive"):
        parse_sensitive(spec)


def test_bins_on_a_categorical_field_are_refused():
    with pytest.raises(ConfigError, match="categorical field"):
        sensitive_attribute(load_dataset("heart-disease"), "thal:bins=3")


def test_binned_age_is_audited_end_to_end(diabetes_overfit):
    report = privguard.audit(diabetes_overfit, attacks=["attribute"], sensitive="age:bins=4")
    assert report.data["sensitive"]["name"] == "age"
    assert len(report.data["sensitive"]["values"]) == 4
    assert all(a.metrics["n_missing_excluded"] == 0 for a in report.attacks)
    assert all(a.risk_reason for a in report.attacks)


@pytest.fixture(scope="module")
def csv_with_missing(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 400
    smoker = rng.choice(["yes", "no"], n)
    age = rng.integers(20, 80, n).astype(float)
    risk = ((smoker == "yes") ^ (rng.random(n) < 0.1)).astype(int)
    df = pd.DataFrame({"age": age, "smoker": smoker, "bmi": rng.normal(25, 4, n), "y": risk})
    df.loc[rng.choice(n, 40, replace=False), "smoker"] = None
    path = tmp_path_factory.mktemp("csv") / "people.csv"
    df.to_csv(path, index=False)
    model = privguard.train(
        str(path), privguard.TrainConfig(model="logreg", epochs=20, lr=1e-2, seed=0), label="y"
    )
    return path, model.save(path.parent / "model"), df


def test_missing_sensitive_values_are_excluded_and_counted(csv_with_missing):
    path, model_dir, df = csv_with_missing
    report = privguard.audit(str(model_dir), attacks=["attribute"], sensitive="smoker")
    target = privguard.load_target(model_dir)
    cand = np.concatenate([target.split.members, target.split.nonmembers])
    expected = int(df["smoker"].isna().to_numpy()[cand].sum())
    assert expected > 0
    for a in report.attacks:
        assert a.metrics["n_missing_excluded"] == expected
        assert a.metrics["n_members"] + a.metrics["n_nonmembers"] == len(cand) - expected
        assert any("missing" in n for n in a.notes)


def test_unknown_sensitive_field_is_a_one_line_error(csv_with_missing, tmp_path):
    _, model_dir, _ = csv_with_missing
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privguard.cli",
            "audit",
            "--model",
            str(model_dir),
            "--attacks",
            "attribute",
            "--sensitive",
            "height",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "height" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
