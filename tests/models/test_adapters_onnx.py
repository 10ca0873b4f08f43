"""ONNX models: a scikit-learn MLP converted with skl2onnx (a probability tensor, and ZipMap
maps), a PyTorch MLP exported with torch.onnx.export (logits), as sessions and as files on the
CLI; LiRA and RMIA run with the attacker's proxy.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

import privguard
from privguard.cli import main
from privguard.errors import DataError, ModelError
from privguard.models.adapters import adapt, load_model_file
from privguard.models.adapters.onnx_model import OnnxAdapter

FAST = {"lira-offline": {"n_reference": 4}, "rmia": {"n_reference": 2}}


@pytest.fixture(scope="module")
def split():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(3).permutation(len(y))
    m, n = idx[:400], idx[400:900]
    return (x[m], y[m]), (x[n], y[n])


@pytest.fixture(scope="module")
def sk_mlp(split):
    (xm, ym), _ = split
    return MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(xm, ym)


@pytest.fixture(scope="module")
def onnx_files(sk_mlp, split, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    x = split[0][0]
    plain = to_onnx(sk_mlp, x[:1], options={"zipmap": False}, target_opset=17)
    (d / "mlp.onnx").write_bytes(plain.SerializeToString())
    zipped = to_onnx(sk_mlp, x[:1], target_opset=17)
    (d / "mlp-zipmap.onnx").write_bytes(zipped.SerializeToString())
    return d


def test_skl2onnx_session_answers_like_the_model_and_lira_rmia_run(sk_mlp, split, onnx_files):
    members, nonmembers = split
    session = ort.InferenceSession(str(onnx_files / "mlp.onnx"), providers=["CPUExecutionProvider"])
    adapter = adapt(session)
    assert isinstance(adapter, OnnxAdapter)
    assert adapter.n_classes == 10 and adapter.output == "probs"
    assert adapter.dtype == np.float32 and adapter.input_shape == (64,)
    x = members[0][:50]
    np.testing.assert_allclose(adapter.predict_proba(x), sk_mlp.predict_proba(x), atol=1e-5)
    fp = adapter.fingerprint()
    report = privguard.audit(
        session,
        members=members,
        nonmembers=nonmembers,
        attacks=["lira-offline", "rmia", "loss-threshold"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert set(got) == {"lira-offline", "rmia", "loss-threshold"}
    assert report.target["reference_recipe"]["kind"] == "proxy"
    assert got["lira-offline"]["reference_models"] > 0
    assert got["lira-offline"]["auc"] > 0.55 and got["rmia"]["auc"] > 0.55
    assert adapt(session).fingerprint() == fp


def test_zipmap_output_and_class_labels_from_the_maps(sk_mlp, split, onnx_files):
    adapter = load_model_file(onnx_files / "mlp-zipmap.onnx")
    assert adapter.zipmap and adapter.classes == list(range(10))
    x = split[0][0][:20]
    np.testing.assert_allclose(adapter.predict_proba(x), sk_mlp.predict_proba(x), atol=1e-5)


def test_torch_mlp_exported_to_onnx_answers_logits(split, tmp_path):
    (xm, ym), _ = split
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xm), torch.from_numpy(ym)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net,
        (xt[:1],),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    adapter = load_model_file(path)
    x = xm[:30]
    assert adapter.predict_logits(x).shape == (30, 10)
    assert adapter.output == "logits"  # detected: rows do not sum to 1
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)).double(), 1).numpy()
    np.testing.assert_allclose(adapter.predict_proba(x), expected, atol=1e-5)


def test_bad_onnx_files_and_inputs_are_one_line_errors(onnx_files, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model_file(tmp_path / "junk.onnx")
    adapter = load_model_file(onnx_files / "mlp.onnx")
    with pytest.raises(DataError, match="refused the records"):
        adapter.predict_proba(np.zeros((3, 5), dtype=np.float32))


def test_cli_audits_an_onnx_file_on_the_users_split(split, onnx_files, tmp_path):
    members, nonmembers = split
    np.savez(tmp_path / "members.npz", x=members[0], y=members[1])
    np.savez(tmp_path / "nonmembers.npz", x=nonmembers[0], y=nonmembers[1])
    out = tmp_path / "report"
    code = main(
        [
            "audit",
            "--model",
            str(onnx_files / "mlp.onnx"),
            "--members",
            str(tmp_path / "members.npz"),
            "--nonmembers",
            str(tmp_path / "nonmembers.npz"),
            "--attacks",
            "rmia,loss-threshold",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert {a["name"] for a in report["attacks"]} == {"rmia", "loss-threshold"}
    assert report["target"]["reference_recipe"]["kind"] == "proxy"
