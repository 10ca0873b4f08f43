"""A Hugging Face sequence classifier on text records: a tiny randomly initialised BERT built
from a config (no downloads), fine-tuned here until it memorises its members, audited as objects
and as a saved directory with the text proxy for LiRA / RMIA.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import privguard
from privguard.errors import ConfigError, ModelError
from privguard.models.adapters import adapt, load_model_file
from privguard.models.adapters.huggingface import HFClassifierAdapter

transformers = pytest.importorskip("transformers")

FAST = {"lira-offline": {"n_reference": 4}, "rmia": {"n_reference": 2}}
WORDS = [f"w{i}" for i in range(60)]


def texts(rng, n):
    """Random 8-word texts; the label depends weakly on the words, plus noise to memorise."""
    rows = []
    for _ in range(n):
        words = rng.choice(WORDS, size=8)
        signal = sum(int(w[1:]) < 30 for w in words) >= 4
        label = "pos" if signal ^ (rng.random() < 0.3) else "neg"
        rows.append((" ".join(words), label))
    return pd.DataFrame(rows, columns=["text", "sentiment"]).drop_duplicates("text")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("hf")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]"
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    rng = np.random.default_rng(7)
    members, nonmembers = texts(rng, 160), texts(rng, 160)
    enc = tok(members["text"].tolist(), padding=True, return_tensors="pt")
    y = torch.tensor((members["sentiment"] == "pos").to_numpy(dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        for idx in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            out = model(**{k: v[idx] for k, v in enc.items()}, labels=y[idx])
            out.loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    return model, tok, members, nonmembers, d


def test_model_and_tokenizer_objects_run_lira_and_rmia_with_the_text_proxy(classifier):
    model, tok, members, nonmembers, _ = classifier
    adapter = adapt(model, tokenizer=tok)
    assert isinstance(adapter, HFClassifierAdapter)
    assert adapter.classes == ["neg", "pos"]
    fp = adapter.fingerprint()
    report = privguard.audit(
        adapter,
        members=members,
        nonmembers=nonmembers,
        label="sentiment",
        attacks=["lira-offline", "rmia", "loss-threshold"],
        settings=FAST,
    )
    got = {a.name: a.metrics for a in report.attacks}
    assert set(got) == {"lira-offline", "rmia", "loss-threshold"}
    assert report.target["reference_recipe"]["kind"] == "proxy"
    assert "TF-IDF" in report.target["reference_recipe"]["description"]
    assert report.target["train_accuracy"] > 0.9  # it memorised its noisy labels
    assert got["loss-threshold"]["auc"] > 0.6
    assert got["lira-offline"]["reference_models"] > 0
    assert np.isfinite(got["lira-offline"]["auc"]) and np.isfinite(got["rmia"]["auc"])
    assert adapter.fingerprint() == fp
    assert not model.training


def test_saved_directory_loads_without_code_or_pickle(classifier, tmp_path):
    model, tok, members, _, _ = classifier
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    adapter = load_model_file(tmp_path / "clf")
    x = members.drop(columns="sentiment").iloc[:10]
    np.testing.assert_allclose(
        adapter.predict_proba(x), adapt(model, tokenizer=tok).predict_proba(x), atol=1e-6
    )
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Model"}
    (tmp_path / "clf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="custom model code"):
        load_model_file(tmp_path / "clf")
    for f in (tmp_path / "clf").glob("*.safetensors"):
        f.unlink()
    config.pop("auto_map")
    (tmp_path / "clf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no .safetensors"):
        load_model_file(tmp_path / "clf")


def test_a_model_without_its_tokenizer_is_a_one_line_error(classifier):
    with pytest.raises(ConfigError, match="tokenizer"):
        adapt(classifier[0])


def test_attacks_that_need_numeric_inputs_are_skipped_with_the_reason(classifier):
    model, tok, members, nonmembers, _ = classifier
    report = privguard.audit(
        adapt(model, tokenizer=tok),
        members=members,
        nonmembers=nonmembers,
        label="sentiment",
        attacks=["loss-threshold", "extraction"],
    )
    assert [a.name for a in report.attacks] == ["loss-threshold"]
    skipped = {s["attack"]: s["reason"] for s in report.summary["skipped"]}
    assert "this model reads text" in skipped["knockoff"]
    with pytest.raises(ConfigError, match="reads text"):
        privguard.audit(
            adapt(model, tokenizer=tok),
            members=members,
            nonmembers=nonmembers,
            label="sentiment",
            attacks=["label-only-boundary"],
        )
