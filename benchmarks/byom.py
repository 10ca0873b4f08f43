"""Bring your own model: LiRA and RMIA on models the user fitted, beside the loss threshold.

Audits, on the user's own split (members / non-members / population), models a user would
bring, each fitted here the way a user would fit it:

- ``adult-gbm-pipeline``: a scikit-learn ``Pipeline`` on raw adult columns (text categoricals,
  missing values left in): one-hot encoding + ``HistGradientBoostingClassifier``; reference
  models are ``sklearn.base.clone``\\ s (recipe kind ``clone``);
- ``digits-torch-mlp (train_fn)``: a PyTorch MLP (2x256, Adam, 100 epochs) trained by the
  user's own loop, passed to privguard as ``train_fn`` (kind ``train_fn``);
- ``digits-torch-mlp (proxy)``: the same module without its recipe: the attacker's proxy;
- ``digits-onnx-mlp``: the same module exported with ``torch.onnx.export`` and audited as an
  ``.onnx`` file (proxy; an ONNX file carries no recipe).

For each it records LiRA (offline), RMIA and the loss threshold: AUC, TPR at 1% and 0.1% FPR,
the reference models trained, the seconds each attack took and the whole audit's time, and
whether the user's model was left byte-identical (adapter fingerprint). Run
``python benchmarks/byom.py --help``; results go to benchmarks/results/byom.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import privguard
from privguard.data.builtin import _read_shipped
from privguard.models.adapters import adapt, load_model_file

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish_run, run_header  # noqa: E402

ATTACKS = ["loss-threshold", "lira-offline", "rmia"]
OUT = Path(__file__).parent / "results" / "byom.json"


def adult_split(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    df = _read_shipped("adult.csv.gz", na_values=["?"], keep_default_na=False)
    df = df.drop_duplicates().reset_index(drop=True)
    idx = np.random.default_rng(seed).permutation(len(df))
    return df.iloc[idx[:n]], df.iloc[idx[n : 2 * n]], df.iloc[idx[2 * n : 3 * n]]


def fit_gbm_pipeline(members: pd.DataFrame, label: str) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = members.drop(columns=label)
    cats = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    pipe = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats)],
                    remainder="passthrough",
                ),
            ),
            (
                "gbm",
                HistGradientBoostingClassifier(
                    max_iter=300,
                    max_leaf_nodes=63,
                    min_samples_leaf=2,
                    early_stopping=False,
                    random_state=0,
                ),
            ),
        ]
    )
    return pipe.fit(x, members[label])


def make_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def user_train(model_factory, x, y, seed, epochs: int = 100):
    """The user's own training loop (what they pass as train_fn)."""
    model = model_factory()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def digits_split(n: int, seed: int):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(seed).permutation(len(y))
    parts = idx[:n], idx[n : 2 * n], idx[2 * n :]
    return [(x[p], y[p]) for p in parts]


def audit_one(name: str, model: Any, split: dict[str, Any], settings: dict, seed: int) -> dict:
    adapter = (
        adapt(model) if not isinstance(model, privguard.models.adapters.ModelAdapter) else model
    )
    before = adapter.fingerprint()
    t0 = time.perf_counter()
    report = privguard.audit(adapter, attacks=ATTACKS, settings=settings, seed=seed, **split)
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {
        "model": name,
        "framework": report.target["architecture"].get("framework"),
        "recipe": report.target["reference_recipe"]["kind"],
        "recipe_description": report.target["reference_recipe"]["description"],
        "train_accuracy": report.target.get("train_accuracy"),
        "test_accuracy": report.target.get("test_accuracy"),
        "members": report.data["split"]["members"],
        "nonmembers": report.data["split"]["nonmembers"],
        "audit_seconds": round(seconds, 1),
        "unchanged": adapter.fingerprint() == before,
        "attacks": {},
    }
    for a in report.attacks:
        m = a.metrics
        row["attacks"][a.name] = {
            "auc": m.get("auc"),
            "tpr_at_fpr_0.01": m.get("tpr_at_fpr_0.01"),
            "tpr_at_fpr_0.001": m.get("tpr_at_fpr_0.001"),
            "reference_models": m.get("reference_models"),
            "seconds": round(a.seconds, 1),
            "risk": a.risk,
        }
    print(f"  {name}: {seconds:.0f} s", flush=True)
    return row


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = {
        "lira-offline": {"n_reference": args.references},
        "rmia": {"n_reference": max(2, args.references // 2)},
    }
    rows = []
    # 1. gradient-boosting pipeline on raw adult columns (categoricals, missing values)
    members, nonmembers, population = adult_split(args.adult_records, args.seed)
    pipe = fit_gbm_pipeline(members, "income")
    rows.append(
        audit_one(
            "adult-gbm-pipeline",
            pipe,
            dict(members=members, nonmembers=nonmembers, population=population, label="income"),
            settings,
            args.seed,
        )
    )
    # 2. a user-trained PyTorch MLP, with and without its training recipe, and as ONNX
    (xm, ym), (xn, yn), (xp, yp) = digits_split(args.digits_records, args.seed)
    torch.manual_seed(args.seed)
    module = user_train(make_mlp, torch.from_numpy(xm), torch.from_numpy(ym), args.seed)
    module.zero_grad(set_to_none=True)
    split = dict(members=(xm, ym), nonmembers=(xn, yn), population=(xp, yp))
    rows.append(
        audit_one(
            "digits-torch-mlp (train_fn)",
            adapt(module, train_fn=user_train),
            split,
            settings,
            args.seed,
        )
    )
    rows.append(audit_one("digits-torch-mlp (proxy)", module, split, settings, args.seed))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mlp.onnx"
        torch.onnx.export(
            module,
            (torch.from_numpy(xm[:1]),),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            dynamo=False,
        )
        rows.append(audit_one("digits-onnx-mlp", load_model_file(path), split, settings, args.seed))
    return rows


def print_tables(results: dict[str, Any]) -> None:
    print(
        f"\n{'model':30} {'recipe':10} {'attack':15} {'AUC':>6} {'TPR@1%':>7} {'TPR@.1%':>8} "
        f"{'refs':>5} {'s':>6}"
    )
    for row in results["rows"]:
        for name, a in row["attacks"].items():
            print(
                f"{row['model']:30} {row['recipe']:10} {name:15} {a['auc']:6.3f} "
                f"{a['tpr_at_fpr_0.01']:7.3f} {a['tpr_at_fpr_0.001']:8.3f} "
                f"{a['reference_models'] or 0:5d} {a['seconds']:6.1f}"
            )
        print(f"{'':30} audit {row['audit_seconds']} s, model unchanged: {row['unchanged']}")


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | recipe | attack | AUC | TPR@1%FPR | TPR@0.1%FPR | reference models | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        for name, a in row["attacks"].items():
            lines.append(
                f"| {row['model']} | {row['recipe']} | {name} | {a['auc']:.3f} | "
                f"{a['tpr_at_fpr_0.01']:.3f} | {a['tpr_at_fpr_0.001']:.3f} | "
                f"{a['reference_models'] or 0} | {a['seconds']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--references", type=int, default=16, help="LiRA reference models (16)")
    parser.add_argument("--adult-records", type=int, default=2000, help="adult records per part")
    parser.add_argument("--digits-records", type=int, default=600, help="digits per part (600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = run_header("byom", argv)
    results["settings"] = {
        "references": args.references,
        "adult_records": args.adult_records,
        "digits_records": args.digits_records,
        "seed": args.seed,
        "attacks": ATTACKS,
    }
    if args.note:
        results["note"] = args.note
    results["rows"] = run(args)
    finish_run(results, args.out, start, print_tables=print_tables, markdown=markdown)


if __name__ == "__main__":
    main()
