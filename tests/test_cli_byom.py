"""``privguard audit --model FILE --members F --nonmembers F``: a user's own model on the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from privguard.cli import main

sys.path.insert(0, str(Path(__file__).parent / "models"))
from test_byom_security import crafted_skops  # noqa: E402


def run(capsys, *args):
    code = main(list(map(str, args)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A boosted pipeline fitted on raw heart-disease columns, saved with skops, and the
    user's member / non-member files."""
    from privguard.data.builtin import _read_shipped

    d = tmp_path_factory.mktemp("byom")
    df = _read_shipped("heart-disease.csv.gz")
    df["disease"] = np.where(df.pop("num") > 0, "present", "absent")
    df = df.drop_duplicates().reset_index(drop=True)  # one record, one role
    idx = np.random.default_rng(1).permutation(len(df))
    members, nonmembers = df.iloc[idx[:450]], df.iloc[idx[450:]]
    x = members.drop(columns="disease")
    cats = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), cats)], remainder="passthrough"
    )
    gbm = HistGradientBoostingClassifier(max_iter=60, min_samples_leaf=2, random_state=0)
    model = Pipeline([("encode", encode), ("gbm", gbm)]).fit(x, members["disease"])
    sio.dump(model, d / "model.skops")
    members.to_csv(d / "train.csv", index=False)
    nonmembers.to_csv(d / "holdout.csv", index=False)
    return d


def test_audit_a_skops_pipeline_on_the_users_split(capsys, user_files, tmp_path):
    d = user_files
    out = tmp_path / "report"
    code, _, err = run(
        capsys,
        "audit",
        "--model", d / "model.skops",
        "--members", d / "train.csv",
        "--nonmembers", d / "holdout.csv",
        "--label", "disease",
        "--access", "probs",
        "--attacks", "rmia,loss-threshold",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    got = {a["name"]: a for a in report["attacks"]}
    assert set(got) == {"rmia", "loss-threshold"}
    assert got["rmia"]["metrics"]["auc"] > 0.6
    assert report["target"]["reference_recipe"]["kind"] == "clone"
    assert "of the non-members" in report["data"]["user_split"]["population"]["source"]
    assert set(report["data"]["user_split"]["sha256"]) == {"members", "nonmembers"}
    assert (out / "report.html").is_file() and (out / "model-card.md").is_file()


def test_a_skops_file_that_would_run_code_exits_2_naming_the_type(capsys, user_files, tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.skops"
    bad.write_bytes(crafted_skops(marker))
    out = tmp_path / "report"
    code, _, err = run(
        capsys,
        "audit",
        "--model", bad,
        "--members", user_files / "train.csv",
        "--nonmembers", user_files / "holdout.csv",
        "--label", "disease",
        "--out", out,
    )  # fmt: skip
    assert code == 2
    assert "numpy.testing._private.utils.runstring" in err and "--trust" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--label": "nope"}, "no label column 'nope'"),
        ({"--members": "train.xlsx"}, "cannot tell the kind"),
        ({"--nonmembers": None}, "--members and --nonmembers go together"),
        ({"--model": "model.onnx-missing"}, "no model at"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    capsys, user_files, tmp_path, change, message
):
    d = user_files
    (d / "train.xlsx").write_bytes(b"not a table")
    opts = {
        "--model": "model.skops",
        "--members": "train.csv",
        "--nonmembers": "holdout.csv",
        "--label": "disease",
    }
    opts.update(change)
    args = ["audit", "--out", tmp_path / "report"]
    for k, v in opts.items():
        if v is not None:
            args += [k, v if k == "--label" else d / v]
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_a_model_file_without_a_split_says_to_give_one(capsys, user_files, tmp_path):
    code, _, err = run(capsys, "audit", "--model", user_files / "model.skops", "--out", tmp_path)
    assert code == 2 and "--members FILE --nonmembers FILE" in err


def test_import_records_the_split_as_hashes_and_later_audits_check_it(capsys, user_files, tmp_path):
    d = user_files
    model_dir = tmp_path / "imported"
    code, _, err = run(
        capsys,
        "import",
        "--model", d / "model.skops",
        "--members", d / "train.csv",
        "--nonmembers", d / "holdout.csv",
        "--label", "disease",
        "--out", model_dir,
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.skops"]
    manifest = json.loads((model_dir / "model.json").read_text())
    assert manifest["kind"] == "user"
    assert set(manifest["user_split"]["content_sha256"]) == {"members", "nonmembers"}
    assert "train.csv" not in (model_dir / "model.json").read_text().split("content_sha256")[1]

    out = tmp_path / "report"
    common = ["--model", model_dir, "--label", "disease", "--attacks", "loss-threshold"]
    code, _, err = run(
        capsys, "audit", *common,
        "--members", d / "train.csv", "--nonmembers", d / "holdout.csv", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["attacks"][0]["name"] == "loss-threshold"

    # other records than those recorded: refused, nothing written
    fewer = tmp_path / "fewer.csv"
    pd.read_csv(d / "holdout.csv").iloc[:-1].to_csv(fewer, index=False)
    code, _, err = run(
        capsys, "audit", *common,
        "--members", d / "train.csv", "--nonmembers", fewer, "--out", tmp_path / "r2",
    )  # fmt: skip
    assert code == 2 and "nonmembers differ from those recorded" in err
    assert not (tmp_path / "r2").exists()

    code, _, err = run(capsys, "audit", "--model", model_dir, "--out", tmp_path / "r3")
    assert code == 2 and "content hashes" in err

    # the same checks from Python: the CSV's records as a DataFrame hash alike
    import privguard

    with pytest.raises(privguard.ModelError, match="records its split as hashes"):
        privguard.load_target(model_dir)
    report = privguard.audit(
        model_dir,
        members=pd.read_csv(d / "train.csv"),
        nonmembers=pd.read_csv(d / "holdout.csv"),
        label="disease",
        attacks=["loss-threshold"],
    )
    assert report.target["kind"] == "user"
