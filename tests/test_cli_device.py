"""``--device cpu|cuda|auto`` for training and auditing (this machine has no GPU)."""

import json

import pytest
import torch

from privguard.cli import main

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present here")


def run(capsys, *args):
    code = main(list(map(str, args)))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


@no_gpu
@pytest.mark.parametrize("command", ["train --data digits --epochs 1", "audit --model nowhere"])
def test_cuda_without_a_gpu_is_a_one_line_error(command, tmp_path, capsys):
    code, text = run(capsys, *command.split(), "--out", tmp_path / "o", "--device", "cuda")
    assert code == 2
    assert "no CUDA GPU" in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1


def test_an_unknown_device_is_refused(tmp_path, capsys):
    code, text = run(
        capsys, "train", "--data", "digits", "--out", tmp_path / "o", "--device", "tpu"
    )
    assert code == 2 and "unknown --device" in text


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_train_and_audit(device, tmp_path, capsys):
    model = tmp_path / "m"
    args = ["train", "--data", "digits", "--out", model, "--epochs", "3", "--hidden", "16"]
    code, text = run(capsys, *args, "--device", device)
    assert code == 0, text
    code, text = run(
        capsys,
        "audit",
        "--model",
        model,
        "--attacks",
        "rmia",
        "--set",
        "rmia.n_reference=2",
        "--device",
        device,
        "--out",
        tmp_path / "r",
    )
    assert code == 0, text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (rmia,) = [a for a in report["attacks"] if a["name"] == "rmia"]
    assert any("trained stacked" in n for n in rmia["notes"])
