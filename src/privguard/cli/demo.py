"""``privguard demo``: train, attack and defend two small real models in one command.

The demo: overfit MLPs on 920 patients of the UCI heart-disease study (an API that returns
probabilities) and on the digits images (an attacker holding the model itself).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from privguard.cli._common import (
    check_out,
    command_line,
    out,
    print_summary,
    print_sweep,
    progress,
)

DEMO_JOBS = 2  # processes for the reference models of LiRA and RMIA
DEMO_TARGETS = [("heart-disease", 300, "probs", ""), ("digits", 100, "whitebox", "digits")]
DEMO_STORIES = {
    "heart-disease": "who was in the study, and what is their sex?",
    "digits": "what did the training images look like?",
}


def demo(
    out_dir: Path = typer.Option(Path("privguard-report"), "--out", help="Report directory."),
    model_dir: Path = typer.Option(
        Path("privguard-demo"), "--model-out", help="Where to save the demo models."
    ),
    seed: int = typer.Option(0, help="Seed for the splits, training and attacks."),
) -> None:
    """Audit two overfit MLPs: patient records (membership and attribute inference; report in
    OUT) and digit images (membership and inversion with white-box access; report in
    OUT/digits); then the patient model beside two defended variants, DP-SGD at ε = 1 and a
    label-only output policy (sweep report in OUT/defences)."""
    import privguard

    check_out(out_dir)
    check_out(model_dir)
    t0 = time.perf_counter()
    for data, epochs, access, sub in DEMO_TARGETS:
        config = privguard.TrainConfig(model="mlp", epochs=epochs, seed=seed)
        with progress() as update:
            target = privguard.train(data, config, progress=update)
            target.save(model_dir / data)
            report = privguard.audit(
                target,
                access=access,
                seed=seed,
                n_jobs=DEMO_JOBS,
                progress=update,
                command=command_line(),
            )
        m = target.metrics
        out.rule(f"{data}: {DEMO_STORIES[data]}")
        out.print(
            f"target: mlp trained on {len(target.split.members)} {data} records; train accuracy "
            f"{m['train_accuracy']:.3f}, test accuracy {m['test_accuracy']:.3f}; attacker access: "
            f"{access}; model saved to {model_dir / data}"
        )
        report_dir = out_dir / sub if sub else out_dir
        privguard.write_report(report, report_dir)
        print_summary(report, report_dir)
    _demo_defences(out_dir / "defences", seed)
    out.print(f"demo finished in {time.perf_counter() - t0:.1f}s")


def _demo_defences(sweep_dir: Path, seed: int) -> None:
    """The patient-records model beside two defended variants (DP at ε = 1, a label-only
    output policy), audited alike; the sweep report goes to OUT/defences."""
    from privguard.sweep import Variant, recommend
    from privguard.sweep import sweep as run_sweep
    from privguard.sweep.report import write_sweep

    grid = [
        Variant("undefended"),
        Variant("dp-eps-1", {"dp_epsilon": 1.0, "epochs": 30, "lr": 1e-2}),
        Variant("policy-label", policy="label"),
    ]
    with progress() as update:
        result = run_sweep(
            "heart-disease",
            grid=grid,
            out=sweep_dir,
            base={"epochs": 300},
            attacks="loss-threshold,confidence-threshold,label-only-augmentation",
            seed=seed,
            n_jobs=DEMO_JOBS,
            progress=update,
        )
    recommend(result, "low")
    write_sweep(result, sweep_dir)
    out.rule("heart-disease: does a defence close the membership leak?")
    print_sweep(result, sweep_dir)
