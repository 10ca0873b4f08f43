"""Document fine-tuning of a Hugging Face causal LM: hand-written LoRA adapters, DP-SGD through
Opacus (per-sample gradients for exactly the adapters, weights that move: opacus #820), and the
bad input of a document audit, each a one-line privguard error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from tests.models.test_lm import _tiny_hf

import privguard
from privguard.data.corpus import synthetic_records
from privguard.data.documents import check_split, load_documents
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.text.doc_tune import DocTuneConfig, _loss, _windows, finetune_documents
from privguard.models.text.hf import HFPredictor, load_hf, pad_batch
from privguard.models.text.lora import add_lora

DOCS = list(dict.fromkeys(synthetic_records(40, seed=5)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm") / "base"
    _tiny_hf(d, DOCS)
    return d


def test_fresh_lora_adapters_leave_the_model_unchanged_and_only_they_train(base):
    model, tok, _ = load_hf(base)
    pred = HFPredictor(model, tok)
    before = pred.log_likelihood(DOCS[:4])
    names = add_lora(model, rank=4, alpha=8.0)
    np.testing.assert_allclose(pred.log_likelihood(DOCS[:4]), before, rtol=1e-6)
    n_linear = sum(1 for n, _ in model.named_modules() if n.endswith("lora_a"))
    assert n_linear == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 blocks
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="lora-rank"):
        add_lora(model, rank=0, alpha=1.0)


def test_opacus_gives_per_sample_gradients_of_exactly_the_adapters(base):
    from privguard.training.dp import make_private, quiet_opacus

    model, tok, _ = load_hf(base)
    trainable = add_lora(model, rank=4, alpha=8.0)
    pred = HFPredictor(model, tok)
    ids, mask = pad_batch(_windows(pred, DOCS[:16], 32), pred.pad)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, mask), batch_size=4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with quiet_opacus():
        private = make_private(
            model, opt, loader, epsilon=8.0, delta=1e-3, epochs=1, grad_sample_mode="hooks"
        )
        batch = next(b for b in private.batches if len(b[0]))
        private.optimizer.zero_grad()
        _loss(private.module, batch).backward()
        named = dict(private.inner.named_parameters())
        for name in trainable:
            gs = named[name].grad_sample
            assert gs.shape == (len(batch[0]), *named[name].shape), name
        frozen = [n for n, p in named.items() if n not in trainable]
        assert frozen and all(getattr(named[n], "grad_sample", None) is None for n in frozen)
        private.release()


def test_dp_fine_tuning_moves_the_adapters_and_records_its_epsilon(base, tmp_path):
    config = DocTuneConfig(epochs=2, lora_rank=4, lr=5e-3, max_tokens=32, dp_epsilon=8.0)
    target = finetune_documents(base, DOCS, config)
    model = target.predictor.model
    moved = [
        float(p.detach().abs().max())
        for n, p in model.named_parameters()
        if n.endswith("lora_b.weight")
    ]
    assert moved and min(moved) > 0  # B starts at zero: every adapter was updated
    frozen = dict(model.named_parameters())
    fresh, _, _ = load_hf(base)
    for n, p in fresh.named_parameters():  # the base weights did not move
        key = n.replace(".weight", ".base.weight") if n not in frozen else n
        torch.testing.assert_close(frozen[key], p)
    privacy = target.metrics["privacy"]
    assert privacy["epsilon"] <= 8.0 + 1e-6 and privacy["steps"] >= 1
    back = privguard.models.text.load_text_target(target.save(tmp_path / "dp"))
    assert back.metrics["privacy"]["epsilon"] == privacy["epsilon"]


def test_document_files_load_one_record_each_and_bad_ones_are_data_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nsecond doc\n")
    assert load_documents(tmp_path / "a.txt") == ["first doc", "second doc"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "line one\nline two"}) + "\n")
    assert load_documents(tmp_path / "b.jsonl") == ["line one\nline two"]
    (tmp_path / "c.csv").write_text('id,body\n1,"hello, world"\n2,bye\n')
    assert load_documents(tmp_path / "c.csv", text_column="body") == ["hello, world", "bye"]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "1.txt").write_text("a note\nover two lines\n")
    (folder / "2.txt").write_text("another")
    assert load_documents(folder) == ["a note\nover two lines", "another"]
    cases = [
        ("e.txt", b"one\n\nthree\n", "empty document"),
        ("l.txt", b"caf\xe9\n", "not UTF-8"),
        ("j.jsonl", b'{"body": "x"}\n', "'text' field"),
    ]
    for name, content, match in cases:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=match):
            load_documents(tmp_path / name)
    with pytest.raises(DataError, match="--text-column"):
        load_documents(tmp_path / "c.csv")
    with pytest.raises(DataError, match="same documents"):
        check_split(["a", "b"], ["b", "a"])
    with pytest.raises(DataError, match="2 document"):
        check_split(["a", "b", "c"], ["b", "c", "d"])


def test_a_reference_or_tokenizer_that_does_not_fit_the_model_is_refused(base, tmp_path):
    other = tmp_path / "other"
    _tiny_hf(other, ["completely different words " * 3, "zebra quartz"])
    with pytest.raises(ConfigError, match="another vocabulary"):
        privguard.audit(str(base), members=DOCS[:10], nonmembers=DOCS[10:20], reference=str(other))
    # the other model's (smaller) tokenizer beside this model's weights is fine; a larger one
    # names tokens the model cannot embed
    big = tmp_path / "big"
    _tiny_hf(big, DOCS)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens([f"extra{i}" for i in range(50)])
    tok.save_pretrained(big)
    with pytest.raises(ModelError, match="not this model's tokenizer"):
        privguard.audit(str(big), members=DOCS[:10], nonmembers=DOCS[10:20])


def permuted_tokenizer(tok, seed=0):
    """``tok`` with the ids of its ordinary tokens shuffled: the same vocabulary size and merges,
    another token -> id mapping (what a wrong tokenizer of the same size looks like)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    special = {a["content"] for a in spec.get("added_tokens", [])}
    names = [k for k in vocab if k not in special]
    ids = np.random.default_rng(seed).permutation([vocab[k] for k in names])
    vocab.update({k: int(i) for k, i in zip(names, ids, strict=True)})
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=tok.bos_token,
        eos_token=tok.eos_token,
    )


def test_a_same_size_tokenizer_with_other_ids_is_refused(base, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    # BOS/EOS swapped: config.json declares other special ids than the tokenizer's
    swapped = tmp_path / "swapped"
    shutil.copytree(base, swapped)
    AutoTokenizer.from_pretrained(base, bos_token="</s>", eos_token="<s>").save_pretrained(swapped)
    with pytest.raises(ModelError, match="BOS token id 0 but its tokenizer has 1"):
        privguard.audit(str(swapped), members=DOCS[:10], nonmembers=DOCS[10:20])
    # a reference with the same vocabulary size but another mapping
    other = tmp_path / "other"
    shutil.copytree(base, other)
    bad = permuted_tokenizer(tok)
    assert len(bad) == len(tok) and bad(DOCS[0])["input_ids"] != tok(DOCS[0])["input_ids"]
    bad.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"another vocabulary .* mapped differently"):
        privguard.audit(str(base), members=DOCS[:10], nonmembers=DOCS[10:20], reference=str(other))
    # a privguard fine-tune records its base tokenizer's fingerprint: swapping the base's
    # tokenizer files afterwards is refused when the fine-tune is loaded
    copy = tmp_path / "base-copy"
    shutil.copytree(base, copy)
    config = DocTuneConfig(epochs=1, lora_rank=2, max_tokens=32)
    saved = finetune_documents(copy, DOCS[:12], config).save(tmp_path / "tuned")
    bad.save_pretrained(copy)
    with pytest.raises(ModelError, match="tokenizer of the base model"):
        privguard.models.text.load_text_target(saved)


def test_a_tokenizer_with_other_ids_is_refused_by_how_surprised_the_model_is(base, tmp_path):
    from privguard.models.text.tokenizer_fit import GAP_NATS, surprise_gap
    from privguard.models.threads import single_thread

    model, tok, _ = load_hf(base)  # a model that has learnt something (a random one is uniform)
    pred = HFPredictor(model, tok)
    ids, mask = pad_batch(_windows(pred, DOCS[:20], 64), pred.pad)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with single_thread():
        for _ in range(30):
            _loss(model, (ids, mask)).backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    d = tmp_path / "hf"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    privguard.audit(str(d), members=DOCS[20:26], nonmembers=DOCS[26:32], attacks="text-loss")
    bad = permuted_tokenizer(tok)
    bad.save_pretrained(d)
    with pytest.raises(ModelError, match="other ids than the model was trained with"):
        privguard.audit(str(d), members=DOCS[20:26], nonmembers=DOCS[26:32], attacks="text-loss")
    own = surprise_gap(pred, DOCS[24:32])[0]
    wrong = surprise_gap(HFPredictor(model, bad), DOCS[24:32])[0]
    # measured (40 steps): own tokenizer 1.2 nats on unseen documents, permuted 7.4
    assert own < GAP_NATS / 2 and wrong > 1.5 * GAP_NATS, (own, wrong)


def test_the_reference_attack_scores_zero_when_the_target_is_its_reference(base):
    from privguard.attacks.membership.documents import DocumentKnowledge
    from privguard.attacks.membership.text_reference import TextReference
    from privguard.attacks.memorization.oracle import TextOracle

    # the same weights, tokenization and windowing on both sides: every score is exactly 0
    model, tok, _ = load_hf(base)
    ref_model, ref_tok, _ = load_hf(base)
    long = " ".join(DOCS[:5])  # windowed at 16 tokens on both sides
    knowledge = DocumentKnowledge(
        DOCS[:6] + [long], reference=HFPredictor(ref_model, ref_tok), max_tokens=16
    )
    scores = TextReference().scores(TextOracle(HFPredictor(model, tok)), knowledge)
    assert np.array_equal(scores, np.zeros(7))


def _cli(capsys, *args):
    from privguard.cli import main

    code = main(list(map(str, args)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_train_on_documents_then_audit_them_from_the_cli(capsys, base, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    lm = tmp_path / "lm"
    args = ["train", "--model", f"hf:{base}", "--data", docs, "--epochs", "1", "--out", lm]
    code, out, err = _cli(capsys, *args, "--lora-rank", "2")
    assert code == 0, err
    assert f"on {len(DOCS) // 2} documents" in out
    r = tmp_path / "r"
    code, out, err = _cli(
        capsys, "audit", "--model", lm, "--attacks", "text-loss,min-k", "--out", r
    )
    assert code == 0, err
    # progress lines on stderr from inside the shared scoring pass
    assert "scoring documents: target model 0/" in err
    assert re.search(r"scoring documents: target model (\d+)/\1\n", err), err
    report = json.loads((r / "report.json").read_text())
    assert [a["name"] for a in report["attacks"]] == ["text-loss", "min-k"]
    assert report["data"]["members"] == len(DOCS) // 2
    assert "windows of 128 tokens" in report["data"]["windowing"]
    # bad input: one line, exit 2, nothing written
    same = ["--members", docs, "--nonmembers", docs]
    bad = [
        (["audit", "--model", base, *same, "--out", tmp_path / "x"], "same documents"),
        (["audit", "--model", lm, "--attacks", "text-reference", "--out", tmp_path / "x"],
         "--reference"),
        (["train", "--model", f"hf:{base}", "--data", docs, "--epochs", "1", "--canary",
          "pin {digits:2}", "--out", tmp_path / "x"], "--steps"),
    ]  # fmt: skip
    for args, message in bad:
        code, out, err = _cli(capsys, *args)
        assert code == 2 and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "x").exists()


def test_scoring_threads_run_the_forward_passes_on_n_threads_with_the_same_scores(base):
    from privguard.models.text.hf import scoring_threads

    model, tok, _ = load_hf(base)
    pred = HFPredictor(model, tok)
    seen: list[int] = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    one = pred.token_stats(DOCS[:10], max_tokens=16)
    assert set(seen) == {1}  # privguard's default on a shared machine
    seen.clear()
    with scoring_threads(2):
        two = pred.token_stats(DOCS[:10], max_tokens=16)
        pred.greedy([pred.tokens(DOCS[0])[:4]], 3)
    assert set(seen) == {2}
    assert torch.get_num_threads() == before
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="at least 1"), scoring_threads(0):
        pass


def test_token_stats_equal_the_log_softmax_formulas_and_moments_false_keeps_the_first_row(base):
    model, tok, _ = load_hf(base)
    pred = HFPredictor(model, tok)
    docs = DOCS[:6] + [" ".join(DOCS[:5])]  # the last one windowed at 16 tokens
    full = pred.token_stats(docs, max_tokens=16)
    lp_only = pred.token_stats(docs, max_tokens=16, moments=False)
    for d, s, one in zip(docs, full, lp_only, strict=True):
        ids = pred.tokens(d)
        rows = []
        for w in range(0, len(ids), 16):
            seq = torch.tensor([[pred.start, *ids[w : w + 16]]])
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=seq).logits.double()[0, :-1], dim=-1)
            p = lp.exp()
            mu = (p * lp).sum(-1)
            sigma = (p * (lp - mu[:, None]) ** 2).sum(-1).sqrt()
            rows.append(torch.stack([lp.gather(1, seq[0, 1:, None])[:, 0], mu, sigma]).numpy())
        np.testing.assert_allclose(s, np.concatenate(rows, axis=1), rtol=0, atol=1e-6)
        assert one.shape == (1, len(ids))
        np.testing.assert_allclose(one[0], s[0], rtol=0, atol=1e-12)
