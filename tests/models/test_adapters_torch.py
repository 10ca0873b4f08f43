"""A user's own PyTorch module: the object with a train_fn hook, safetensors weights with a
factory and a recipe file, the proxy when neither is given; never changed by an audit.

The user's code (an MLP factory and a training function) is written to a module on the Python
path, as a user's package would be; the MLP is trained here on digits.
"""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

import privguard
from privguard.cli import main
from privguard.errors import ConfigError, ModelError
from privguard.models.adapters import adapt, load_model_file
from privguard.models.adapters.pytorch import TorchAdapter

FAST = {"lira-offline": {"n_reference": 4}, "rmia": {"n_reference": 2}}

USER_CODE = textwrap.dedent(
    '''
    """A user's model code."""
    import torch


    def make_mlp(hidden=64):
        return torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )


    def train(model_factory, x, y, seed):
        model = model_factory()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(seed)
        for _ in range(80):
            for idx in torch.randperm(len(x), generator=g).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        return model.eval()
    '''
)

RECIPE = """
factory = "byom2_user_models:make_mlp"
optimizer = "adam"
lr = 0.01
epochs = 80
batch_size = 64
[factory_args]
hidden = 64
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    (root / "byom2_user_models.py").write_text(USER_CODE)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    import byom2_user_models

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(2).permutation(len(y))
    m, n = idx[:400], idx[400:900]
    torch.manual_seed(0)
    module = byom2_user_models.train(
        byom2_user_models.make_mlp, torch.from_numpy(x[m]), torch.from_numpy(y[m]), 0
    )
    module.zero_grad(set_to_none=True)
    yield byom2_user_models, module, (x[m], y[m]), (x[n], y[n]), root
    mp.undo()


def test_module_with_train_fn_runs_lira_and_rmia_and_is_never_changed(user):
    code, module, members, nonmembers, _ = user
    module.train()  # the user left it in training mode: it must stay so
    fp = adapt(module).fingerprint()
    adapter = adapt(module, train_fn=code.train)
    assert isinstance(adapter, TorchAdapter)
    assert adapter.n_classes == 10 and adapter.input_shape == (64,)
    report = privguard.audit(
        adapter,
        members=members,
        nonmembers=nonmembers,
        attacks=["lira-offline", "rmia", "loss-threshold"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert set(got) == {"lira-offline", "rmia", "loss-threshold"}
    assert report.target["reference_recipe"]["kind"] == "train_fn"
    assert got["lira-offline"]["reference_models"] > 0
    assert got["lira-offline"]["auc"] > 0.6 and got["rmia"]["auc"] > 0.6
    assert module.training  # mode restored
    assert all(p.grad is None for p in module.parameters())
    assert adapt(module).fingerprint() == fp
    module.eval()


def test_safetensors_with_a_recipe_file_loads_without_pickle_and_trains_references(user, tmp_path):
    _, module, members, nonmembers, _ = user
    save_file(module.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "recipe.toml").write_text(RECIPE)
    adapter = load_model_file(tmp_path / "model.safetensors", recipe=tmp_path / "recipe.toml")
    x = members[0][:20]
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)).double(), dim=1).numpy()
    np.testing.assert_allclose(adapter.predict_proba(x), expected, atol=1e-6)
    recipe = adapter.recipe()
    assert recipe.kind == "recipe-file" and "80 epochs" in recipe.description
    # recipes travel to worker processes (--jobs): they pickle, and the copy trains alike
    copy = pickle.loads(pickle.dumps(recipe))
    a = recipe.fit(members[0][:100], members[1][:100], seed=1).predict_proba(x)
    b = copy.fit(members[0][:100], members[1][:100], seed=1).predict_proba(x)
    np.testing.assert_array_equal(a, b)
    report = privguard.audit(
        adapter, members=members, nonmembers=nonmembers, attacks=["lira-offline"], settings=FAST
    )
    assert report.attacks[0].metrics["auc"] > 0.6
    assert report.target["reference_recipe"]["kind"] == "recipe-file"


def test_without_a_recipe_the_proxy_runs_and_the_report_says_so(user):
    _, module, members, nonmembers, _ = user
    report = privguard.audit(
        module, members=members, nonmembers=nonmembers, attacks=["rmia"], settings=FAST
    )
    assert report.target["reference_recipe"]["kind"] == "proxy"
    assert "proxy" in report.target["reference_recipe"]["note"]
    assert report.attacks[0].metrics["auc"] > 0.55


def test_unsafe_or_mismatched_files_are_refused(user, tmp_path):
    _, module, *_ = user
    for name in ("model.pt2", "model.pt"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 not loaded")
        with pytest.raises(ModelError, match="could run code"):
            load_model_file(tmp_path / name)
    save_file(module.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="--factory"):
        load_model_file(tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="do not match"):
        load_model_file(tmp_path / "w.safetensors", factory=lambda: torch.nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="module:function"):
        load_model_file(tmp_path / "w.safetensors", factory="make_mlp")
    (tmp_path / "bad.toml").write_text('factory = "byom2_user_models:make_mlp"\nepochs = 0\n')
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        adapt(module, recipe=tmp_path / "bad.toml")


def test_cli_audits_safetensors_with_factory(user, tmp_path, capsys):
    _, module, members, nonmembers, root = user
    save_file(module.state_dict(), tmp_path / "model.safetensors")
    np.savez(tmp_path / "members.npz", x=members[0], y=members[1])
    np.savez(tmp_path / "nonmembers.npz", x=nonmembers[0], y=nonmembers[1])
    (tmp_path / "recipe.toml").write_text(RECIPE)
    args = [
        "audit",
        "--model",
        str(tmp_path / "model.safetensors"),
        "--members",
        str(tmp_path / "members.npz"),
        "--nonmembers",
        str(tmp_path / "nonmembers.npz"),
        "--attacks",
        "loss-threshold",
        "--out",
        str(tmp_path / "report"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--factory" in err and "Traceback" not in err
    assert not (tmp_path / "report").exists()  # nothing half-written
    assert main([*args, "--factory", "byom2_user_models:make_mlp"]) == 0
    assert (tmp_path / "report" / "report.json").is_file()
