"""Document membership and discoverable extraction against a tiny, randomly initialised Llama
fine-tuned here on a seeded half of synthetic records (privguard.models.text.doc_tune), with
the untuned model as the reference; the Min-K% and Min-K%++ scores are checked against a direct
implementation of the papers' formulas."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from tests.models.test_lm import _tiny_hf

import privguard
from privguard.attacks.membership.documents import DocumentKnowledge
from privguard.attacks.memorization.oracle import TextOracle
from privguard.attacks.registry import ATTACKS, discover
from privguard.data.corpus import synthetic_records
from privguard.models.text import load_text_target
from privguard.models.text.doc_tune import DocTuneConfig, finetune_documents

DOCS = list(dict.fromkeys(synthetic_records(80, seed=3)))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs") / "base"
    _tiny_hf(base, DOCS)
    config = DocTuneConfig(epochs=12, lora_rank=0, train_layers=2, lr=3e-3, max_tokens=48)
    target = finetune_documents(base, DOCS, config)
    return base, target


def _direct(model, tok, text, k):
    """Min-K% and Min-K%++ of one text computed plainly: one unpadded forward pass, then a loop
    over positions and the whole vocabulary (Shi et al. 2024; Zhang et al. 2025)."""
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    lps, zs = [], []
    for t in range(1, len(ids)):
        row = logits[t - 1] - logits[t - 1].max()
        logp = row - np.log(np.exp(row).sum())
        p = np.exp(logp)
        mu = float(np.sum(p * logp))
        sigma = float(np.sqrt(np.sum(p * (logp - mu) ** 2)))
        lps.append(logp[ids[t]])
        zs.append((logp[ids[t]] - mu) / sigma)
    n = max(1, int(len(lps) * k))
    return float(np.mean(sorted(lps)[:n])), float(np.mean(sorted(zs)[:n])), float(np.mean(lps))


def test_min_k_and_min_k_plus_plus_equal_the_papers_formulas(tuned):
    discover()
    _, target = tuned
    docs = DOCS[:12]
    for k in (0.2, 0.5):
        know = DocumentKnowledge(docs, max_tokens=256)
        oracle = TextOracle(target.predictor)
        got_k = ATTACKS["min-k"](k=k).run(oracle, know).scores
        got_pp = ATTACKS["min-k-plus-plus"](k=k).run(oracle, know).scores
        loss = ATTACKS["text-loss"]().run(oracle, know).scores
        zl = ATTACKS["text-zlib"]().run(oracle, know).scores
        want = [_direct(target.predictor.model, target.predictor.tok, d, k) for d in docs]
        np.testing.assert_allclose(got_k, [w[0] for w in want], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got_pp, [w[1] for w in want], rtol=0, atol=1e-6)
        np.testing.assert_allclose(loss, [w[2] for w in want], rtol=0, atol=1e-6)
        zbytes = [len(zlib.compress(d.encode())) for d in docs]
        np.testing.assert_allclose(zl, np.array([w[2] for w in want]) / zbytes, atol=1e-9)
        assert oracle.queries == len(docs)  # one shared pass for the four attacks


def test_long_documents_are_windowed_and_stay_one_record(tuned):
    _, target = tuned
    long = " ".join(DOCS[:6])
    whole = target.predictor.token_stats([long], max_tokens=512)[0]
    windowed = target.predictor.token_stats([long], max_tokens=16)[0]
    assert windowed.shape == whole.shape  # every token scored once
    np.testing.assert_allclose(windowed[:, :16], whole[:, :16], atol=1e-9)  # first window same


def test_fine_tuned_documents_are_told_apart_and_the_split_is_sound(tuned):
    base, target = tuned
    steps = []
    report = privguard.audit(
        target,
        reference=str(base),
        settings={"discoverable-extraction": {"prefix": 6, "suffix": 6}},
        progress=lambda step, done, total: steps.append((step, done, total)),
    )
    m = {a.name: a.metrics for a in report.attacks}
    # progress inside each scoring pass, per batch of documents, up to all of them
    for label in (
        "scoring documents: target model",
        "scoring documents: target model, lowercased",
        "scoring documents: reference model",
        "greedy decoding",
    ):
        seen = [(d, t) for s, d, t in steps if s == label]
        assert len(seen) >= 3 and seen[0][0] == 0 and seen[-1][0] == seen[-1][1], label
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), label
    assert set(m) >= {
        "text-loss", "text-zlib", "text-lowercase", "min-k", "min-k-plus-plus",
        "text-reference", "blind-baseline", "discoverable-extraction",
    }  # fmt: skip
    # measured (41 members, 39 non-members): loss 0.98, reference 0.99, lowercase 0.95,
    # min-k 0.95, min-k++ 0.95, zlib 0.74
    assert m["text-loss"]["auc"] >= 0.85
    assert m["text-reference"]["auc"] >= 0.85
    assert m["min-k"]["auc"] >= 0.8 and m["min-k-plus-plus"]["auc"] >= 0.8
    # a random half of one source: the blind classifier's interval holds chance (measured
    # 0.64, interval from 0.51: on 80 documents a point estimate above 0.6 happens by chance)
    assert m["blind-baseline"]["auc_ci_low"] <= 0.5 + 0.05 and m["blind-baseline"]["auc"] < 0.8
    d = m["discoverable-extraction"]
    # this 2-layer, 32-wide model reproduces no 6-token suffix exactly; members' matching runs
    # are longer (measured 0.27 vs 0.10 tokens)
    assert d["documents_tested_members"] + d["documents_tested_nonmembers"] >= 70  # of 85
    assert d["longest_run_mean_members"] >= 1.5 * d["longest_run_mean_nonmembers"]
    assert report.data["members"] + report.data["nonmembers"] == len(DOCS)
    assert report.target["reference"]["directory"] == str(base)
    top = report.summary["most_exposed"]["records"]
    members = target.documents["members"]
    assert top and all(0 <= r["member_document"] < len(members) for r in top)
    assert report.summary["most_exposed"]["attack"] in m


def test_blind_baseline_warns_in_the_headline_when_the_sets_differ(tuned, tmp_path):
    base, _ = tuned
    members = tmp_path / "m.txt"
    nonmembers = tmp_path / "n.jsonl"
    members.write_text("\n".join(DOCS[:40]) + "\n")
    other = [f"Ticket {i}: the printer on floor {i % 7} jams again." for i in range(40)]
    nonmembers.write_text("\n".join(json.dumps({"text": t}) for t in other) + "\n")
    report = privguard.audit(
        str(base), members=str(members), nonmembers=str(nonmembers), attacks="blind-baseline"
    )
    blind = report.attacks[0]
    assert blind.queries == 0 and blind.metrics["auc"] >= 0.9
    assert "not evidence of memorization" in report.summary["headline"]


def test_the_tuned_target_round_trips_with_its_split_and_lora_adapters(tuned, tmp_path):
    base, _ = tuned
    config = DocTuneConfig(epochs=1, lora_rank=4, lr=1e-2, max_tokens=32)
    target = finetune_documents(base, DOCS[:20], config)
    names = target.architecture["trained_parameters"]
    assert names and all("lora_" in n for n in names)
    assert target.metrics["n_trained_parameters"] < target.metrics["n_parameters"] / 2
    d = target.save(tmp_path / "lm")
    back = load_text_target(d)
    assert back.documents == target.documents and len(back.documents["members"]) == 10
    np.testing.assert_allclose(
        back.predictor.log_likelihood(DOCS[:3]), target.predictor.log_likelihood(DOCS[:3]),
        rtol=1e-6,
    )  # fmt: skip
    (d / "documents.json").write_text("{}")
    with pytest.raises(privguard.errors.ModelError, match="altered"):
        load_text_target(d)
