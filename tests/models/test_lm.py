"""Text targets: corpus and canaries, the character LM and its persistence, and Hugging Face
causal LMs through transformers (a tiny Llama built and saved here, loaded offline)."""

import json

import numpy as np
import pytest

from privguard.data.corpus import (
    CanaryFormat,
    Corpus,
    builtin_corpus,
    insert_canaries,
    load_corpus,
    parse_repeats,
)
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.text import (
    HFTuneConfig,
    LMConfig,
    finetune_hf,
    is_text_model,
    load_text_target,
    train_char_lm,
)


def test_canary_format_numbers_its_candidate_space():
    fmt = CanaryFormat("my pin is {digits:3}, colour {choice:red|blue}")
    assert fmt.space_size == 2000 and fmt.prefix == "my pin is "
    assert fmt.render(0) == "my pin is 000, colour red"
    assert fmt.render(1999) == "my pin is 999, colour blue"
    texts = fmt.render_many(range(fmt.space_size))
    assert len(set(texts)) == 2000
    assert CanaryFormat("{letters:20}").space_size == 26**20  # beyond int64: still exact
    idx = CanaryFormat("{letters:20}").sample(3, np.random.default_rng(0))
    assert len(set(idx)) == 3
    for bad in ("no slot", "{digits:x}", "{choice:a}", "{hex:4}"):
        with pytest.raises(ConfigError):
            CanaryFormat(bad)
    assert parse_repeats("1,10,50") == [1, 10, 50]
    with pytest.raises(ConfigError):
        parse_repeats("1,ten")


def test_canaries_are_inserted_as_often_as_asked():
    corpus = builtin_corpus("synthetic-records", n_records=50, seed=3)
    assert any("lives at" in line or "born" in line for line in corpus.lines)
    new, canaries = insert_canaries(corpus, ["pin {digits:4}"], [1, 5], per_count=2, seed=0)
    assert [c.repeats for c in canaries] == [1, 1, 5, 5]
    for c in canaries:
        assert new.lines.count(c.text) == c.repeats
        assert c.text == CanaryFormat(c.format).render(c.index)
    assert len(new.lines) == len(corpus.lines) + 12
    # the same seed gives the same corpus
    assert builtin_corpus("synthetic-records", n_records=50, seed=3).lines == corpus.lines


def test_corpus_files_must_be_utf8_text(tmp_path):
    good = tmp_path / "ok.txt"
    good.write_text("first line\n\n  second   line \n")
    assert load_corpus(good).lines == ["first line", "second line"]
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(DataError, match="not a text file"):
        load_corpus(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes("na\xefve\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        load_corpus(tmp_path / "latin.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no text"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="no corpus"):
        load_corpus(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def tiny_lm():
    corpus = builtin_corpus("synthetic-records", n_records=120, seed=0)
    corpus = Corpus(corpus.name, corpus.lines[:300], corpus.source)
    corpus, canaries = insert_canaries(corpus, ["pin {digits:3}"], [1, 5], seed=0)
    config = LMConfig(epochs=2, window=12, embed=8, hidden=64, seed=0)
    return train_char_lm(corpus, config, canaries=canaries)


def test_char_lm_learns_and_reports_its_fit(tiny_lm):
    m = tiny_lm.metrics
    # after two epochs it is far better than uniform over ~90 characters (6.5 bits)
    assert m["train_bits_per_char"] < 5.0 and m["test_bits_per_char"] < 5.5
    assert tiny_lm.canaries and all(c.text in tiny_lm.corpus.lines for c in tiny_lm.canaries)
    oracle = tiny_lm.text_oracle(budget=5)
    samples = oracle.sample(3, max_len=40, seed=0)
    assert len(samples) == 3 and all(len(s) <= 40 for s in samples)
    lp = oracle.next_char_logprobs(["pin "], list("0123456789"))
    assert lp.shape == (1, 10) and np.all(lp < 0)
    with pytest.raises(Exception, match="budget"):
        oracle.log_likelihood(["a", "b"])


def test_char_lm_round_trips_and_refuses_tampering(tiny_lm, tmp_path):
    d = tiny_lm.save(tmp_path / "lm")
    assert is_text_model(d)
    back = load_text_target(d)
    texts = ["pin 123", tiny_lm.corpus.lines[0]]
    np.testing.assert_allclose(
        back.predictor.log_likelihood(texts), tiny_lm.predictor.log_likelihood(texts)
    )
    assert [c.to_dict() for c in back.canaries] == [c.to_dict() for c in tiny_lm.canaries]
    assert back.corpus.lines == tiny_lm.corpus.lines
    manifest = json.loads((d / "model.json").read_text())
    assert manifest["kind"] == "char-lm" and manifest["canaries"]["formats"] == ["pin {digits:3}"]
    (d / "corpus.txt").write_text("something else\n")
    with pytest.raises(ModelError, match="altered"):
        load_text_target(d)


def test_dp_char_lm_steps_on_every_poisson_batch_and_records_the_classifiers_privacy_record():
    """One line per expected batch over 12 lines: about a third of the Poisson batches are
    empty, and each still takes its noise step, as the accountant assumes."""
    corpus = Corpus("tiny", [f"line {i} of the corpus" for i in range(12)], {})
    config = LMConfig(
        epochs=4, window=4, embed=4, hidden=8, batch_size=1, holdout=0.0, dp_epsilon=8.0
    )
    target = train_char_lm(corpus, config)
    privacy = target.metrics["privacy"]
    assert "dp" not in target.metrics
    assert privacy["steps"] == privacy["planned_steps"] == 4 * 12
    assert privacy["unit"] == "corpus line" and privacy["n_records"] == 12
    assert privacy["accountant"] == "rdp" and privacy["delta"] == pytest.approx(1 / 120)
    assert 7.9 <= privacy["epsilon"] <= 8.0 and privacy["target_epsilon"] == 8.0
    assert privacy["sample_rate"] == pytest.approx(1 / 12, abs=1e-6)
    assert np.isfinite(target.metrics["final_train_loss"])
    # the same keys as a DP-trained classifier's record
    assert set(privacy) == {
        *("epsilon", "delta", "target_epsilon", "noise_multiplier", "sample_rate", "steps"),
        *("planned_steps", "max_grad_norm", "accountant", "n_records", "unit"),
    }
    # nothing of Opacus stays on the trained module
    assert not any(hasattr(p, "grad_sample") for p in target.predictor.module.parameters())
    with pytest.raises(ConfigError, match=r"1/n = 0\.0833 for the 12 training records"):
        train_char_lm(corpus, LMConfig(epochs=1, holdout=0.0, dp_epsilon=1.0, dp_delta=0.1))
    with pytest.raises(ConfigError, match="needs --dp-epsilon"):
        LMConfig(dp_delta=1e-5)
    with pytest.raises(ConfigError, match="positive epsilon"):
        LMConfig(dp_epsilon=0.0)


def test_a_text_model_saved_with_the_old_dp_record_loads_with_a_privacy_record(tiny_lm, tmp_path):
    old = {
        "epsilon_target": 1.0,
        "delta": 4e-5,
        "noise_multiplier": 0.95,
        "max_grad_norm": 1.0,
        "sample_rate": 0.013,
        "accountant": "rdp",
        "unit": "corpus line",
        "epsilon_spent": 0.9958,
    }
    tiny_lm.metrics["dp"] = old
    try:
        d = tiny_lm.save(tmp_path / "old")
    finally:
        del tiny_lm.metrics["dp"]
    assert json.loads((d / "model.json").read_text())["metrics"]["dp"] == old
    back = load_text_target(d)
    assert "dp" not in back.metrics
    assert back.metrics["privacy"] == {
        "epsilon": 0.9958,
        "target_epsilon": 1.0,
        "delta": 4e-5,
        "noise_multiplier": 0.95,
        "sample_rate": 0.013,
        "max_grad_norm": 1.0,
        "accountant": "rdp",
        "unit": "corpus line",
    }
    assert back.describe()["privacy"]["epsilon"] == 0.9958


def _tiny_hf(directory, lines):
    """A real (tiny, randomly initialised) Llama and a byte-level BPE tokenizer trained on
    ``lines``, saved the way Hugging Face models are distributed."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=400, min_frequency=1, special_tokens=["<s>", "</s>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


def test_hugging_face_model_loads_offline_fine_tunes_and_round_trips(tmp_path):
    corpus = builtin_corpus("synthetic-records", n_records=60, seed=0)
    corpus, canaries = insert_canaries(corpus, ["pin {digits:2}"], [1, 20], seed=0)
    hf = tmp_path / "hf"
    _tiny_hf(hf, corpus.lines)
    assert is_text_model(hf)
    plain = load_text_target(hf)  # a plain HF directory: no corpus, no canaries
    assert plain.kind == "hf-lm" and plain.corpus is None and not plain.canaries
    before = plain.predictor.log_likelihood(["pin 42"])
    config = HFTuneConfig(steps=30, lr=3e-3, batch_size=8, train_layers=1, seed=0)
    tuned = finetune_hf(hf, corpus, config, canaries=canaries)
    assert tuned.metrics["n_trained_parameters"] < tuned.metrics["n_parameters"]
    top = next(c for c in canaries if c.repeats == 20)
    after = tuned.predictor.log_likelihood([top.text])
    assert after[0] > before[0]  # fine-tuning raised the likelihood of the repeated canary
    d = tuned.save(tmp_path / "tuned")
    back = load_text_target(d)
    np.testing.assert_allclose(back.predictor.log_likelihood([top.text]), after, rtol=1e-6)
    samples = back.text_oracle().sample(2, max_len=8, seed=0)
    assert len(samples) == 2


def test_a_directory_transformers_cannot_load_is_a_model_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="transformers cannot load"):
        load_text_target(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_text_model(empty)
