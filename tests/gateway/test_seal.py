"""Models sealed at rest: round trip, tampering and wrong keys are refused with clear messages."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import privguard
from privguard.cli import main
from privguard.errors import ConfigError, ModelError
from privguard.gateway.seal import (
    is_sealed,
    load_model,
    new_key_file,
    read_key_file,
    seal,
    unseal,
)


@pytest.fixture(scope="module")
def sealed(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("seal")
    key_file = d / "seal.key"
    assert (
        main(["seal", str(model_dir), "--key-file", str(key_file), "--out", str(d / "m.sealed")])
        == 0
    )
    return d / "m.sealed", key_file


def test_sealed_model_serves_the_same_predictions(sealed, model_dir, tmp_path):
    path, key_file = sealed
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert is_sealed(path) and not is_sealed(model_dir)
    blob = path.read_bytes()
    assert b"model.json" not in blob and b"safetensors" not in blob  # encrypted
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    plain = privguard.load_target(model_dir)
    loaded = load_model(path, key_file)
    np.testing.assert_array_equal(loaded.predict_proba(x), plain.predict_proba(x))
    out = unseal(path, read_key_file(key_file), tmp_path / "open")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in model_dir.iterdir())


def test_tampered_or_wrongly_keyed_models_are_refused(sealed, tmp_path, monkeypatch):
    path, key_file = sealed
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    tampered = tmp_path / "tampered.sealed"
    tampered.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="altered or corrupted"):
        load_model(tampered, key_file)
    other = tmp_path / "other.key"
    new_key_file(other)
    with pytest.raises(ModelError, match="key id does not match"):
        load_model(path, other)
    monkeypatch.delenv("PRIVGUARD_SEAL_KEY", raising=False)
    with pytest.raises(ConfigError, match="sealed; give its key"):
        load_model(path)
    # the key may come from the environment instead of a file
    monkeypatch.setenv("PRIVGUARD_SEAL_KEY", key_file.read_text())
    assert load_model(path).n_classes == 10
    truncated = tmp_path / "short.sealed"
    truncated.write_bytes(bytes(blob[:20]))
    with pytest.raises(ModelError, match="truncated sealed file"):
        unseal(truncated, read_key_file(key_file), tmp_path / "x")


def test_serve_refuses_a_tampered_model_with_one_line(sealed, tmp_path, capsys):
    path, key_file = sealed
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x80
    bad = tmp_path / "bad.sealed"
    bad.write_bytes(bytes(blob))
    code = main(
        [
            "serve",
            "--model",
            str(bad),
            "--seal-key-file",
            str(key_file),
            "--db",
            f"sqlite:///{tmp_path / 'g.db'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "altered or corrupted" in err and "Traceback" not in err


def test_key_files_are_checked(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("too short")
    with pytest.raises(ConfigError, match="not URL-safe base64"):
        read_key_file(bad)
    with pytest.raises(ConfigError, match="already exists"):
        new_key_file(bad)
    with pytest.raises(ModelError, match="not a model directory"):
        seal(tmp_path, new_key_file(tmp_path / "k"), tmp_path / "o")
