"""Loading a model never runs code from its files (issue 14 "Security", issue 16 item 12)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

import privguard
from privguard import ConfigError, ModelError
from privguard.models.adapters import load_model_file
from privguard.models.adapters.sklearn import TRUSTED_TYPES
from privguard.models.target import manifest_hash

SRC = Path(privguard.__file__).parent
EXEC_HELPER = "numpy.testing._private.utils.runstring"  # exec(astr, dict): a string runs


def _str_node(value, i):
    return {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
        "__id__": i,
    }


def crafted_skops(marker: Path) -> bytes:
    """A real LogisticRegression whose .skops file also asks skops to call a NumPy test helper
    that exec()s a string, which would create ``marker``."""
    model = LogisticRegression().fit(np.eye(4)[:, :2], [0, 1, 0, 1])
    model.note_ = "placeholder"
    blob = sio.dumps(model)
    src = zipfile.ZipFile(io.BytesIO(blob))
    schema = json.loads(src.read("schema.json"))
    empty = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode"}
    schema["content"]["content"]["note_"] = {
        "__class__": "runstring",
        "__module__": "numpy.testing._private.utils",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                _str_node(f"open({str(marker)!r}, 'w').write('ran')", 9001),
                {
                    "__class__": "dict",
                    "__module__": "builtins",
                    "__loader__": "DictNode",
                    "content": {},
                    "key_types": {**empty, "content": [], "__id__": 9002},
                    "__id__": 9003,
                },
            ],
            "__id__": 9004,
        },
        "__id__": 9005,
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            z.writestr(name, json.dumps(schema) if name == "schema.json" else src.read(name))
    return out.getvalue()


def test_a_skops_file_that_would_run_code_is_refused_naming_the_type(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.skops"
    path.write_bytes(crafted_skops(marker))
    with pytest.raises(ModelError, match=re.escape(EXEC_HELPER) + ".*--trust"):
        load_model_file(path)
    assert not marker.exists()
    # the file is a real exploit: trusting everything skops reports (what trusting whole
    # packages such as numpy amounted to) runs it
    blob = path.read_bytes()
    assert sio.get_untrusted_types(data=blob) == [EXEC_HELPER]
    sio.loads(blob, trusted=[EXEC_HELPER])
    assert marker.read_text() == "ran"


def test_the_same_file_in_a_model_directory_is_refused(saved_mlp, tmp_path):
    marker = tmp_path / "ran"
    d = tmp_path / "sk"
    d.mkdir()
    blob = crafted_skops(marker)
    manifest = json.loads((saved_mlp / "model.json").read_text())
    manifest.pop("integrity")
    manifest.update(kind="sklearn", weights="model.skops")
    _write_dir(d, manifest, "model.skops", blob)
    with pytest.raises(ModelError, match=re.escape(EXEC_HELPER)):
        privguard.load_target(d)
    assert not marker.exists()


def test_trust_adds_one_exact_type_and_never_a_package(tmp_path):
    model = FunctionTransformer(np.sort).fit(np.ones((3, 2)))
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(model, LogisticRegression()).fit(np.eye(4)[:, :2], [0, 1, 0, 1])
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    (foreign,) = sio.get_untrusted_types(file=path)
    assert foreign not in TRUSTED_TYPES
    with pytest.raises(ModelError, match=re.escape(foreign)):
        load_model_file(path)
    loaded = load_model_file(path, trusted=[foreign])
    assert loaded.n_classes == 2
    for pattern in ("numpy", "numpy.*", "numpy."):
        with pytest.raises(ConfigError, match="exact type"):
            load_model_file(path, trusted=[pattern])


def test_supported_estimators_load_with_the_built_in_allowlist(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = pd.DataFrame({"a": [1.0, 2, np.nan, 4] * 10, "b": ["x", "y", None, "x"] * 10})
    y = [0, 1, 1, 0] * 10
    models = [
        Pipeline(
            [
                ("ct", ColumnTransformer([("c", OneHotEncoder(), ["b"])], remainder="passthrough")),
                ("m", HistGradientBoostingClassifier(max_iter=3)),
            ]
        ).fit(df, y),
        RandomForestClassifier(n_estimators=2).fit(np.eye(40)[:, :3], y),
        MLPClassifier(max_iter=3).fit(np.eye(40)[:, :3], y),
    ]
    for i, model in enumerate(models):
        sio.dump(model, tmp_path / f"{i}.skops")
        assert load_model_file(tmp_path / f"{i}.skops").n_classes == 2


def _write_dir(d: Path, manifest: dict, weights_name: str, blob: bytes) -> None:
    """A model directory whose checksums are consistent (anyone can recompute them)."""
    manifest["integrity"] = {
        weights_name: hashlib.sha256(blob).hexdigest(),
        "manifest": manifest_hash({k: v for k, v in manifest.items() if k != "integrity"}),
    }
    if not (d / weights_name).parent.exists():
        (d / weights_name).parent.mkdir(parents=True)
    (d / weights_name).write_bytes(blob)
    (d / "model.json").write_text(json.dumps(manifest))


def _manifest(saved_mlp: Path) -> dict:
    manifest = json.loads((saved_mlp / "model.json").read_text())
    manifest.pop("integrity")
    return manifest


def test_model_json_cannot_point_weights_outside_its_directory(saved_mlp, tmp_path):
    d = tmp_path / "inner" / "model"
    d.mkdir(parents=True)
    blob = (saved_mlp / "model.safetensors").read_bytes()
    (tmp_path / "inner" / "elsewhere.safetensors").write_bytes(blob)
    for name in ("../elsewhere.safetensors", str(tmp_path / "inner" / "elsewhere.safetensors")):
        manifest = _manifest(saved_mlp)
        manifest["weights"] = name
        manifest["integrity"] = {
            name: hashlib.sha256(blob).hexdigest(),
            "manifest": manifest_hash(manifest),
        }
        (d / "model.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelError, match="outside the model directory"):
            privguard.load_target(d)


def test_weights_that_are_not_safetensors_are_a_model_error(saved_mlp, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    _write_dir(d, _manifest(saved_mlp), "model.safetensors", b"\x80\x04K\x01." * 8)
    with pytest.raises(ModelError, match="not a safetensors file"):
        privguard.load_target(d)


def test_a_huge_architecture_is_refused_without_allocating_it(saved_mlp, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    manifest = _manifest(saved_mlp)
    manifest["architecture"]["hidden"] = [10**6, 10**6]  # 10^12 parameters: 4 TB
    _write_dir(d, manifest, "model.safetensors", (saved_mlp / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="does not match the weights"):
        privguard.load_target(d)


def test_nothing_is_ever_unpickled():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"\btorch\.load\(", text):
            assert "weights_only=True" in text[m.end() : m.end() + 160], f"{path}: {m.start()}"
        for m in re.finditer(r"\bnp\.load\(", text):
            assert "allow_pickle=False" in text[m.end() : m.end() + 160], f"{path}: {m.start()}"
        assert not re.search(r"^\s*import pickle|pickle\.loads?\(", text, re.M), path
