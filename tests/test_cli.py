"""The CLI end to end, in-process through ``privguard.cli.main`` (the console script's body)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from privguard.cli import main


def run(capsys, *args):
    code = main(list(map(str, args)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_version_through_the_installed_script():
    out = subprocess.run(
        [sys.executable, "-m", "privguard.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("privguard 0.")


def test_importing_the_cli_loads_neither_torch_nor_the_gateway():
    # `privguard --help` stays fast only while the commands import their heavy parts lazily
    heavy = ["torch", "fastapi", "sqlalchemy", "matplotlib", "opacus", "transformers", "sklearn"]
    code = (
        "import sys, privguard.cli, privguard\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_lazy_package_still_exports_the_api():
    import privguard
    import privguard.audit.plan  # importing the subpackage must not shadow the function

    assert callable(privguard.audit) and privguard.audit.__name__ == "audit"
    assert privguard.TrainConfig(model="mlp").model == "mlp"
    assert "load_target" in dir(privguard)
    with pytest.raises(AttributeError):
        privguard.no_such_name  # noqa: B018


def test_help_text_keeps_brackets(capsys):
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0 and "[server]" in out and "--model" in out
    code, out, _ = run(capsys, "keys", "create", "--help")
    assert code == 0 and "[tiers.NAME]" in out


def test_listing_commands(capsys):
    code, out, _ = run(capsys, "attacks")
    assert code == 0 and "modified-entropy-threshold" in out and "Song" in out
    code, out, _ = run(capsys, "datasets")
    assert code == 0
    for name in ("digits", "mnist-5k", "breast-cancer", "diabetes", "adult", "heart-disease"):
        assert name in out


def test_train_then_audit_writes_the_three_files(capsys, tmp_path):
    model = tmp_path / "model"
    code, out, err = run(
        capsys,
        "train",
        "--data",
        "diabetes",
        "--model",
        "mlp",
        "--epochs",
        "300",
        "--lr",
        "0.003",
        "--out",
        model,
    )
    assert code == 0, err
    assert "train accuracy" in out and (model / "model.safetensors").is_file()

    report = tmp_path / "report"
    code, out, err = run(capsys, "audit", "--model", model, "--out", report, "--fail-on", "high")
    files = sorted(p.name for p in report.iterdir())
    assert files == ["artifacts", "model-card.md", "report.html", "report.json"]
    scores = np.load(report / "artifacts" / "membership-scores.npz")
    assert len(scores["index"]) == len(scores["score_loss-threshold"])
    d = json.loads((report / "report.json").read_text())
    # by default every attack that probs access allows and tabular data suits
    families = {a["name"]: a["family"] for a in d["attacks"]}
    assert {
        "confidence-threshold",
        "entropy-threshold",
        "loss-threshold",
        "modified-entropy-threshold",
        "label-only-augmentation",
    } <= {n for n, f in families.items() if f == "membership"}
    assert {"fredrikson-map", "confidence-inference"} <= set(families)
    assert "inversion" not in families.values()  # image attacks are skipped on tabular data
    assert d["plan"]["sensitive"] == "sex"
    assert any(s["attack"] == "label-only-inversion" for s in d["summary"]["skipped"])
    # the overfit target leaks: --fail-on trips exactly when some attack reached high
    worst = d["summary"]["overall_risk"]
    assert code == (1 if worst == "high" else 0)
    assert "overall risk" in out

    code, _, err = run(
        capsys,
        "audit",
        "--model",
        model,
        "--out",
        tmp_path / "r2",
        "--attacks",
        "loss-threshold",
        "--fail-on",
        "low",
    )
    assert code == 1 and "--fail-on low" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "nosuchdata", "--out", "{tmp}/m"], "nosuchdata"),
        (["train", "--data", "digits", "--model", "resnet", "--out", "{tmp}/m"], "resnet"),
        (
            ["train", "--data", "{tmp}/missing.csv", "--label", "y", "--out", "{tmp}/m"],
            "missing.csv",
        ),
        (["audit", "--model", "{tmp}/nomodel", "--out", "{tmp}/r"], "no model directory"),
        (
            ["audit", "--model", "{model}", "--attacks", "loss-threshold", "--access", "label"]
            + ["--out", "{tmp}/r"],
            "access",
        ),
        (
            ["audit", "--model", "{model}", "--attacks", "fredrikson-map", "--out", "{tmp}/r"],
            "tabular",
        ),
        (["audit", "--model", "{model}", "--attacks", "bogus", "--out", "{tmp}/r"], "bogus"),
        (["audit", "--model", "{model}", "--fail-on", "severe", "--out", "{tmp}/r"], "severe"),
        (["audit", "--model", "{model}", "--data", "digits", "--out", "{tmp}/r"], "differs"),
        (
            ["audit", "--model", "{model}", "--set", "loss-threshold.n_reference=32"]
            + ["--out", "{tmp}/r"],
            "shadow_fraction",
        ),
        (
            ["audit", "--model", "{model}", "--set", "bogus.k=1", "--out", "{tmp}/r"],
            "lira-online",
        ),
        (
            ["audit", "--model", "{model}", "--set", "loss-threshold.shadow_fraction=2"]
            + ["--out", "{tmp}/r"],
            "shadow_fraction",
        ),
        (["audit", "--model", "{model}", "--set", "n_reference", "--out", "{tmp}/r"], "--set"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    capsys, tmp_path, saved_mlp, args, message
):
    # saved_mlp was trained on digits; "--data digits" above is replaced by another dataset
    args = [a.format(tmp=tmp_path, model=saved_mlp) for a in args]
    if message == "differs":
        args[args.index("digits")] = "breast-cancer"
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_csv_with_nan_and_wrong_label_column(capsys, tmp_path):
    rng = np.random.default_rng(0)
    rows = ["a,b,y"] + [f"{rng.random()},{rng.random()},{i % 2}" for i in range(60)]
    rows[5] = "nan,0.3,1"
    (tmp_path / "d.csv").write_text("\n".join(rows))
    code, _, err = run(
        capsys, "train", "--data", tmp_path / "d.csv", "--label", "target", "--out", tmp_path / "m"
    )
    assert code == 2 and "target" in err and "columns" in err
    assert not (tmp_path / "m").exists()


def test_audit_from_a_plan_file(capsys, tmp_path, saved_mlp):
    plan = tmp_path / "plan.toml"
    plan.write_text(f'model = "{saved_mlp}"\nattacks = "loss-threshold"\nout = "rep"\nseed = 1\n')
    code, _, err = run(capsys, "audit", "--plan", plan, "--seed", "2")
    assert code == 0, err
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [a["name"] for a in d["attacks"]] == ["loss-threshold"]
    assert d["plan"]["seed"] == 2  # the flag overrides the file


def test_attack_settings_from_set_override_the_plan_file(capsys, tmp_path, saved_mlp):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'model = "{saved_mlp}"\nout = "rep"\n[attacks]\nselect = ["loss-threshold"]\n'
        "[attacks.loss-threshold]\nshadow_fraction = 0.7\n"
    )
    code, _, err = run(capsys, "audit", "--plan", plan)
    assert code == 0, err
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["plan"]["settings"] == {"loss-threshold": {"shadow_fraction": 0.7}}
    out = tmp_path / "rep2"
    code, _, err = run(
        capsys, "audit", "--plan", plan, "--set", "loss-threshold.shadow_fraction=0.3", "--out", out
    )
    assert code == 0, err
    d = json.loads((out / "report.json").read_text())
    assert d["plan"]["settings"] == {"loss-threshold": {"shadow_fraction": 0.3}}
    assert [a["name"] for a in d["attacks"]] == ["loss-threshold"]


def test_every_plan_key_is_an_audit_flag():
    from dataclasses import fields

    import typer.main

    from privguard.audit.plan import AuditPlan
    from privguard.cli import app

    audit = typer.main.get_command(app).commands["audit"]
    flags = {opt for p in audit.params for opt in p.opts}
    for f in fields(AuditPlan):
        flag = "--set" if f.name == "settings" else "--" + f.name.replace("_", "-")
        assert flag in flags, f"plan key {f.name} has no {flag} flag"


def test_attack_list_read_from_source_matches_the_registry():
    from privguard.cli._catalog import registry_catalog, static_catalog

    static = static_catalog()
    assert static is not None  # the attack modules stay readable without importing them
    assert static == registry_catalog()


def test_attack_settings_listing(capsys):
    code, out, _ = run(capsys, "attacks", "--settings")
    assert code == 0 and "lira-online.n_reference" in out and "[attacks.ATTACK]" in out


def test_image_folder_trains_a_cnn_and_audits(capsys, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    for c in range(3):
        base = rng.random((16, 12)) * 255
        (root / f"s{c + 1}").mkdir(parents=True)
        for i in range(30):
            img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / f"s{c + 1}" / f"{i + 1}.pgm")
    code, out, err = run(
        capsys,
        "train",
        "--data",
        root,
        "--model",
        "cnn",
        "--epochs",
        "30",
        "--hidden",
        "32",
        "--out",
        tmp_path / "m",
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["architecture"]["input_shape"] == [1, 16, 12]
    assert meta["metrics"]["test_accuracy"] > 0.9
    code, _, err = run(capsys, "audit", "--model", tmp_path / "m", "--out", tmp_path / "r")
    assert code == 0, err

    # a folder with an image of another size is refused before anything is written
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(root / "s1" / "odd.png")
    code, _, err = run(capsys, "train", "--data", root, "--out", tmp_path / "m2")
    assert code == 2 and "size" in err and not (tmp_path / "m2").exists()


def test_demo_writes_both_reports(capsys, tmp_path):
    code, out, err = run(
        capsys, "demo", "--out", tmp_path / "report", "--model-out", tmp_path / "models"
    )
    assert code == 0, err
    for d in (tmp_path / "report", tmp_path / "report" / "digits"):
        assert (d / "report.json").is_file() and (d / "model-card.md").is_file()
    image = json.loads((tmp_path / "report" / "digits" / "report.json").read_text())
    families = {a["family"] for a in image["attacks"]}
    assert families == {"membership", "inversion", "extraction"}
    white = next(a for a in image["attacks"] if a["name"] == "prior-inversion")
    assert white["metrics"]["attack_accuracy_consensus"] >= 0.9
    npz = np.load(tmp_path / "report" / "digits" / "artifacts" / "inversion-prior-inversion.npz")
    assert npz["reconstructions"].shape == (10, 1, 8, 8)
    tabular = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {a["family"] for a in tabular["attacks"]} == {"membership", "attribute", "extraction"}
    # ... and the defended variants beside the undefended patient model
    sweep = json.loads((tmp_path / "report" / "defences" / "sweep.json").read_text())
    rows = {r["name"]: r for r in sweep["rows"]}
    assert set(rows) == {"undefended", "dp-eps-1", "policy-label"}
    assert rows["dp-eps-1"]["epsilon"] <= 1.0
    # measured (seed 0): membership AUC 0.61 undefended, 0.51 with DP-SGD at epsilon 1
    assert rows["dp-eps-1"]["membership_auc"] < rows["undefended"]["membership_auc"] - 0.05
    assert (tmp_path / "report" / "defences" / "sweep.html").is_file()
    assert "demo finished" in out
