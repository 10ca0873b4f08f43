"""Canary exposure (Carlini et al. 2019) and training-data extraction (Carlini et al. 2021) on a
small character-level LM trained here on synthetic records with canaries inserted."""

import json
import math

import numpy as np
import pytest

from privguard.attacks import resolve
from privguard.attacks.memorization import Exposure, Extract, TextKnowledge
from privguard.audit.memorization_eval import exposure_metrics, extraction_metrics
from privguard.audit.runner import text_audit
from privguard.cli import main
from privguard.data.corpus import CanaryFormat, Corpus, builtin_corpus, insert_canaries, public_text
from privguard.errors import ConfigError
from privguard.models.text import LMConfig, train_char_lm
from privguard.oracle import Access

FORMAT = "my pin is {digits:6}"
REPEATS = [1, 10, 50]
MAX_BITS = math.log2(10**6)
# A small, quickly memorising setting: ~68 KB of text, 91k parameters, 8 epochs.
SMALL = dict(window=16, embed=16, hidden=256)


def _corpus():
    c = builtin_corpus("synthetic-records", n_records=400, seed=0)
    keep = set(public_text()[:300])
    public = set(public_text())
    lines = [line for line in c.lines if line not in public or line in keep]
    return insert_canaries(Corpus(c.name, lines, c.source), [FORMAT], REPEATS, per_count=2, seed=0)


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


@pytest.fixture(scope="module")
def lm(corpus):
    text, canaries = corpus
    return train_char_lm(text, LMConfig(epochs=8, seed=0, **SMALL), canaries=canaries)


@pytest.fixture(scope="module")
def exposure(lm):
    oracle = lm.text_oracle()
    guesses = Exposure().run(oracle, TextKnowledge(lm.formats, seed=0))
    metrics, curves, _ = exposure_metrics(guesses, lm.canaries, seed=0)
    return guesses, metrics, curves, oracle.queries


def test_family_and_alias_resolve_to_the_text_attacks():
    names = [c.name for c in resolve(["memorization"], Access.PROBS)]
    assert {"exposure", "extract"} <= set(names)


def test_canaries_inserted_ten_times_or_more_approach_the_maximum_exposure(exposure):
    _, m, curves, queries = exposure
    assert m["exposure_bits_max"] == pytest.approx(MAX_BITS, abs=1e-3)
    # measured 19.4 (50 copies) and 16.7 (10 copies) of 19.93 bits; chance is ~1.44
    assert m["exposure_bits_top_repeats"] >= 0.85 * MAX_BITS
    assert m["exposure_bits_repeats_10"] >= 0.7 * MAX_BITS
    assert m["exposure_bits_repeats_1"] < m["exposure_bits_repeats_10"]
    # exact ranking by the prefix tree: 1 + 10 + ... + 10^5 contexts for 10^6 candidates
    assert queries == sum(10**i for i in range(6)) + 1
    assert curves["exposure_vs_repeats"]["x"] == REPEATS
    assert len(curves["canary_table"]["rows"]) == 6


def test_non_inserted_candidates_average_one_over_ln2_bits(exposure):
    _, m, _, _ = exposure
    assert m["n_reference"] == 1000
    # a uniformly random rank gives E[exposure] ≈ 1/ln 2 = 1.443 (s.e. 0.046 over 1000)
    assert m["exposure_bits_reference_mean"] == pytest.approx(1 / math.log(2), abs=0.25)


def test_tree_enumeration_equals_scoring_each_candidate(lm):
    fmt = CanaryFormat("code {digits:2}-{choice:red|green|blue}")
    oracle = lm.text_oracle()
    tree = Exposure().run(oracle, TextKnowledge([fmt])).rankings[0].log_perplexity
    whole = oracle.log_perplexity(fmt.render_many(range(fmt.space_size)))
    np.testing.assert_allclose(tree, whole, rtol=0, atol=1e-4)  # float32 logits


def test_skew_normal_extrapolation_is_opt_in_and_agrees_with_the_exact_rank(lm, exposure):
    exact, m_exact, _, _ = exposure
    with pytest.raises(ConfigError, match="extrapolat"):
        Exposure(exact_limit=1000).run(lm.text_oracle(), TextKnowledge(lm.formats))
    guesses = Exposure(exact_limit=1000, n_fit=2000).run(
        lm.text_oracle(), TextKnowledge(lm.formats, extrapolate=True)
    )
    ranking = guesses.rankings[0]
    assert ranking.mode == "extrapolated" and ranking.fit is not None
    m, _, _ = exposure_metrics(guesses, lm.canaries, seed=0)
    # the fit follows the bulk of the space: reference candidates still average ~1.44 bits
    assert m["exposure_bits_reference_mean"] == pytest.approx(1 / math.log(2), abs=0.5)
    # and flags the memorised canaries far above it (the tail of a fit is approximate)
    assert m["exposure_bits_top_repeats"] >= 0.6 * MAX_BITS
    assert m_exact["exposure_bits_top_repeats"] >= m["exposure_bits_top_repeats"] - 6


def test_extraction_ranks_memorised_text_first(lm):
    oracle = lm.text_oracle()
    know = TextKnowledge(lm.formats, public_lines=public_text()[:400], seed=0)
    guesses = Extract(n_samples=600).run(oracle, know)
    m, curves, _ = extraction_metrics(guesses, lm.corpus.lines, lm.canaries)
    assert set(guesses.rankings) == {"perplexity", "zlib", "lowercase", "reference"}
    assert m["n_submitted"] == min(100, m["n_samples"])
    # canaries inserted 50 times come out verbatim, and the submitted samples are richer in
    # memorised text than the samples overall
    assert m["canaries_extracted_top_repeats"] >= 1
    assert m["precision_at_100"] > m["memorized_share_all"]
    assert m["precision_at_100"] >= 0.02
    assert oracle.queries >= 600 + 2 * m["n_samples"]
    assert curves["precision_at_k"]["x"][0] == 1


@pytest.mark.slow
def test_dp_sgd_pulls_inserted_canaries_back_to_the_reference_range(corpus, exposure):
    text, canaries = corpus
    dp = train_char_lm(text, LMConfig(epochs=5, seed=0, dp_epsilon=1.0, **SMALL), canaries=canaries)
    assert dp.metrics["privacy"]["epsilon"] <= 1.0 + 1e-6
    guesses = Exposure().run(dp.text_oracle(), TextKnowledge(dp.formats))
    m, _, _ = exposure_metrics(guesses, dp.canaries, seed=0)
    _, plain, _, _ = exposure
    # ε = 1 per line: canaries inserted 10 times fall into the reference range (measured
    # ~0.7 bits vs 16.7 without DP); 50 copies are a group of 50 lines, so their guarantee is
    # weak (50ε) — they are pulled down (8.4 vs 19.4 bits) but not to chance.
    assert m["exposure_bits_repeats_10"] <= m["exposure_bits_reference_p95"]
    assert m["exposure_bits_repeats_10"] <= plain["exposure_bits_repeats_10"] - 10
    assert m["exposure_bits_top_repeats"] <= 0.6 * MAX_BITS


def test_text_audit_report_and_html(lm, tmp_path):
    import privguard

    lm.save(tmp_path / "lm")
    report = privguard.audit(tmp_path / "lm", attacks="exposure")
    (a,) = report.attacks
    assert a.name == "exposure" and a.family == "memorization" and a.risk == "high"
    for key in ("exposure_bits_max", "exposure_bits_top_repeats", "exposure_bits_reference_mean"):
        assert key in a.metrics
    assert report.data["kind"] == "text" and report.data["canaries"]["repeats"] == REPEATS
    paths = privguard.write_report(report, tmp_path / "report")
    html = paths["html"].read_text()
    assert "Exposure of every inserted canary" in html and "my pin is" in html
    assert "data:image/png;base64" in html  # exposure-vs-repeats and reference plots
    assert json.loads(paths["json"].read_text())["attacks"][0]["name"] == "exposure"
    # only text attacks apply to a text model
    with pytest.raises(ConfigError, match="text model"):
        text_audit(tmp_path / "lm", attacks="loss-threshold")


def _run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.slow
def test_cli_train_and_audit_a_text_model(capsys, tmp_path):
    c = builtin_corpus("synthetic-records", n_records=150, seed=1)
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(c.lines[:400]) + "\n")
    code, out, err = _run(
        capsys, "train", "--data", data, "--model", "char-lm", "--canary",
        "my pin is {digits:4}", "--canary-repeats", "1,20", "--epochs", "3",
        "--out", tmp_path / "lm",
    )  # fmt: skip
    assert code == 0, err
    assert "2 canaries inserted" in out
    manifest = json.loads((tmp_path / "lm" / "model.json").read_text())
    assert [c["repeats"] for c in manifest["canaries"]["inserted"]] == [1, 20]
    code, out, err = _run(
        capsys, "audit", "--model", tmp_path / "lm", "--attacks", "exposure,extraction",
        "--out", tmp_path / "report",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    by_name = {a["name"]: a for a in report["attacks"]}
    assert by_name["exposure"]["metrics"]["exposure_bits_max"] == pytest.approx(math.log2(1e4))
    assert by_name["exposure"]["metrics"]["exposure_bits_top_repeats"] >= 0.7 * math.log2(1e4)
    assert "precision_at_100" in by_name["extract"]["metrics"]


def test_cli_bad_text_inputs_exit_2(capsys, tmp_path):
    binary = tmp_path / "corpus.txt"
    binary.write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    code, _, err = _run(
        capsys, "train", "--data", binary, "--model", "char-lm", "--canary", "pin {digits:4}",
        "--out", tmp_path / "m",
    )  # fmt: skip
    assert code == 2 and "not a text file" in err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    code, _, err = _run(capsys, "train", "--data", latin, "--model", "char-lm", "--out", tmp_path)
    assert code == 2 and "UTF-8" in err
    code, _, err = _run(
        capsys, "train", "--data", "synthetic-records", "--model", "char-lm", "--canary",
        "my key is {letters:10}", "--out", tmp_path / "m",
    )  # fmt: skip
    assert code == 2 and "--extrapolate" in err
    bad = tmp_path / "hf"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no-such-architecture"}')
    code, _, err = _run(capsys, "audit", "--model-dir", bad, "--out", tmp_path / "r")
    assert code == 2 and "transformers cannot load" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()
