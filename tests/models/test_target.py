import json

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import privguard
from privguard import ConfigError, DataError, ModelError, TrainConfig


def test_logreg_learns_digits_and_records_the_split(digits_logreg, digits):
    m = digits_logreg.metrics
    assert m["test_accuracy"] > 0.9
    s = digits_logreg.split
    assert len(set(s.members) & set(s.nonmembers)) == 0
    assert len(s.members) == pytest.approx(0.4 * len(digits), abs=10)


def test_overfit_mlp_memorises_its_members(digits_mlp):
    m = digits_mlp.metrics
    assert m["train_accuracy"] == 1.0
    assert m["generalization_gap"] > 0.01


def test_save_load_round_trip_is_exact(digits_mlp, saved_mlp, digits):
    loaded = privguard.load_target(saved_mlp)
    np.testing.assert_array_equal(
        loaded.predict_proba(digits.x[:50]), digits_mlp.predict_proba(digits.x[:50])
    )
    np.testing.assert_array_equal(loaded.split.members, digits_mlp.split.members)
    assert loaded.config == digits_mlp.config
    assert sorted(p.name for p in saved_mlp.iterdir()) == ["model.json", "model.safetensors"]


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_altered_or_missing_files_are_refused(saved_mlp, tmp_path):
    d = _copy(saved_mlp, tmp_path / "weights")
    blob = bytearray((d / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="altered"):
        privguard.load_target(d)

    d = _copy(saved_mlp, tmp_path / "manifest")
    m = json.loads((d / "model.json").read_text())
    m["metrics"]["test_accuracy"] = 1.0
    (d / "model.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="altered"):
        privguard.load_target(d)

    d = _copy(saved_mlp, tmp_path / "missing")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing model.safetensors"):
        privguard.load_target(d)

    with pytest.raises(ModelError, match="no model directory"):
        privguard.load_target(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model.json"):
        privguard.load_target(tmp_path / "empty")


def test_same_seed_same_model(digits):
    cfg = TrainConfig(model="logreg", epochs=3, seed=7)
    a, b = privguard.train(digits, cfg), privguard.train(digits, cfg)
    np.testing.assert_array_equal(a.predict_proba(digits.x[:20]), b.predict_proba(digits.x[:20]))
    c = privguard.train(digits, TrainConfig(model="logreg", epochs=3, seed=8))
    assert not np.array_equal(c.split.members, a.split.members)


def test_early_stopping_holds_out_validation_and_stops(digits):
    cfg = TrainConfig(model="mlp", hidden=[64], epochs=300, early_stopping=True, patience=3)
    t = privguard.train(digits, cfg)
    assert t.metrics["stopped_early"] and t.metrics["epochs_run"] < 300
    s = t.split
    assert len(s.validation) > 0
    assert not set(s.validation) & (set(s.members) | set(s.nonmembers) | set(s.aux))


def test_cnn_trains_on_images_and_refuses_tabular(digits):
    t = privguard.train(digits, TrainConfig(model="cnn", hidden=[32], epochs=8))
    assert t.metrics["test_accuracy"] > 0.8
    with pytest.raises(ConfigError, match="image data"):
        privguard.train("breast-cancer", TrainConfig(model="cnn", epochs=1))


def test_bad_training_options_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model kind"):
        TrainConfig(model="resnet")
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="no auxiliary data"):
        privguard.train("digits", TrainConfig(train_fraction=0.8))


def test_sklearn_target_persists_through_skops(digits, tmp_path):
    t = privguard.from_sklearn(RandomForestClassifier(n_estimators=20, random_state=0), digits)
    assert t.metrics["test_accuracy"] > 0.85
    t.save(tmp_path / "rf")
    assert (tmp_path / "rf" / "model.skops").is_file()
    loaded = privguard.load_target(tmp_path / "rf")
    np.testing.assert_array_equal(
        loaded.predict_proba(digits.x[:30]), t.predict_proba(digits.x[:30])
    )
    assert loaded.recipe is not None


def test_audit_data_must_match_the_recorded_hash(saved_mlp):
    t = privguard.load_target(saved_mlp)
    with pytest.raises(DataError, match="differs from what this model was trained on"):
        t.load_data("breast-cancer")
