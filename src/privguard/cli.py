"""The ``privguard`` command: a thin layer over the Python API.

Exit codes: 0 done; 1 ``--fail-on LEVEL`` tripped; 2 bad input (one line on stderr, nothing
written); 3 an internal error (a bug: one line, ``PRIVGUARD_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

import privguard
from privguard.errors import ConfigError, PrivguardError

app = typer.Typer(
    help="Audit ML models for training-data leakage, and defend them.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
# The demo: overfit MLPs on 920 patients of the UCI heart-disease study (an API that returns
# probabilities) and on the digits images (an attacker holding the model itself).
DEMO_JOBS = 2  # processes for the reference models of LiRA and RMIA
DEMO_TARGETS = [("heart-disease", 300, "probs", ""), ("digits", 100, "whitebox", "digits")]
DEMO_STORIES = {
    "heart-disease": "who was in the study, and what is their sex?",
    "digits": "what did the training images look like?",
}
RISK_STYLE = {"low": "green", "medium": "yellow", "high": "bold red"}


def _version(value: bool) -> None:
    if value:
        out.print(f"privguard {privguard.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """privguard: does this model leak its training data, and how do we stop it?"""


@contextmanager
def _progress():
    """A rich progress display (on stderr) behind the library's progress callback."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(step: str, done: int, total: int) -> None:
            key = step.split(" ")[0] if step.startswith("attack") else step
            if key not in tasks:
                tasks[key] = bar.add_task(step, total=total)
            bar.update(tasks[key], description=step, completed=done, total=total)

        yield update


def _hidden(value: str) -> list[int]:
    try:
        widths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--hidden takes comma-separated widths such as 256,256, not {value!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise ConfigError("--hidden takes positive widths such as 256,256")
    return widths


@app.command()
def train(
    data: str = typer.Option(..., help="Built-in dataset name or a CSV/Parquet/NPZ/image folder."),
    out_dir: Path = typer.Option(..., "--out", help="Directory to write the model into."),
    model: str = typer.Option("mlp", help="logreg, mlp or cnn."),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    epochs: int = typer.Option(100, help="Training epochs (upper bound with early stopping)."),
    hidden: str = typer.Option("256,256", help="Hidden layer widths, comma-separated."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(64, help="Records per step."),
    dropout: float = typer.Option(0.0, help="Dropout probability."),
    weight_decay: float = typer.Option(0.0, help="L2 penalty."),
    early_stopping: bool = typer.Option(False, help="Stop on validation loss (carved from train)."),
    patience: int = typer.Option(10, help="Epochs without improvement before stopping."),
    label_smoothing: float = typer.Option(0.0, help="Cross-entropy label smoothing."),
    train_fraction: float = typer.Option(0.4, help="Share of the data trained on (members)."),
    seed: int = typer.Option(0, help="Seeds the split, initialisation and batch order."),
) -> None:
    """Train a target model on a seeded member split and save it (safetensors + model.json)."""
    config = privguard.TrainConfig(
        model=model,
        epochs=epochs,
        hidden=_hidden(hidden),
        lr=lr,
        batch_size=batch_size,
        dropout=dropout,
        weight_decay=weight_decay,
        early_stopping=early_stopping,
        patience=patience,
        label_smoothing=label_smoothing,
        train_fraction=train_fraction,
        seed=seed,
    )
    _check_out(out_dir)
    t0 = time.perf_counter()
    with _progress() as update:
        target = privguard.train(data, config, label=label, progress=update)
    target.save(out_dir)
    m = target.metrics
    out.print(
        f"trained {model} on {target.dataset['name']} in {time.perf_counter() - t0:.1f}s: "
        f"train accuracy {m['train_accuracy']:.3f}, test accuracy {m['test_accuracy']:.3f} "
        f"-> {out_dir}"
    )


@app.command()
def audit(
    model: Path | None = typer.Option(None, help="Model directory written by `privguard train`."),
    data: str | None = typer.Option(
        None, help="The training data (default: as recorded in model.json, hash-checked)."
    ),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    attacks: str | None = typer.Option(
        None, help="Attack or family names, comma-separated [default: all that apply]."
    ),
    access: str | None = typer.Option(
        None, help="label, topk, probs, logits or whitebox [default: probs]."
    ),
    sensitive: str | None = typer.Option(
        None, help="Hidden field for attribute inference (tabular; default: e.g. sex)."
    ),
    seed: int | None = typer.Option(None, help="Seeds the attacks; same seed, same report."),
    budget: int | None = typer.Option(None, help="Query budget per attack."),
    jobs: int | None = typer.Option(
        None, help="Processes for shadow / reference models [default: 1]."
    ),
    scheduler: str | None = typer.Option(
        None, help="Dask scheduler address: train shadow / reference models on that cluster."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Keep trained reference models here and reuse them on reruns."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report directory [default: privguard-report]."
    ),
    fail_on: str | None = typer.Option(
        None, help="Exit 1 when any attack's risk reaches low, medium or high."
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="TOML file with these options; flags given here override it."
    ),
) -> None:
    """Run attacks against a model and write report.json, report.html and model-card.md."""
    from privguard.audit.plan import AuditPlan

    plan = AuditPlan.from_toml(plan_file) if plan_file else AuditPlan()
    plan = plan.merged(
        {
            "model": str(model) if model else None,
            "data": data,
            "label": label,
            "attacks": attacks,
            "access": access,
            "sensitive": sensitive,
            "seed": seed,
            "budget": budget,
            "jobs": jobs,
            "scheduler": scheduler,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "out": str(out_dir) if out_dir else None,
            "fail_on": fail_on,
        }
    )
    plan.check()
    out_path = Path(plan.out)
    _check_out(out_path)
    with _progress() as update:
        report = privguard.audit(
            plan.model,
            data=plan.data,
            label=plan.label,
            attacks=plan.attacks,
            access=plan.access,
            sensitive=plan.sensitive,
            seed=plan.seed,
            budget=plan.budget,
            n_jobs=plan.jobs,
            scheduler=plan.scheduler,
            cache_dir=plan.cache_dir,
            progress=update,
            command=_command_line(),
        )
    privguard.write_report(report, out_path)
    _print_summary(report, out_path)
    _maybe_fail(report, plan.fail_on)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("privguard-report"), "--out", help="Report directory."),
    model_dir: Path = typer.Option(
        Path("privguard-demo"), "--model-out", help="Where to save the demo models."
    ),
    seed: int = typer.Option(0, help="Seed for the splits, training and attacks."),
) -> None:
    """Audit two overfit MLPs: patient records (membership and attribute inference; report in
    OUT) and digit images (membership and inversion with white-box access; report in
    OUT/digits)."""
    _check_out(out_dir)
    _check_out(model_dir)
    t0 = time.perf_counter()
    for data, epochs, access, sub in DEMO_TARGETS:
        config = privguard.TrainConfig(model="mlp", epochs=epochs, seed=seed)
        with _progress() as update:
            target = privguard.train(data, config, progress=update)
            target.save(model_dir / data)
            report = privguard.audit(
                target,
                access=access,
                seed=seed,
                n_jobs=DEMO_JOBS,
                progress=update,
                command=_command_line(),
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
        _print_summary(report, report_dir)
    out.print(f"demo finished in {time.perf_counter() - t0:.1f}s")


@app.command("attacks")
def list_attacks() -> None:
    """List every attack with its family, the access it needs and the paper it implements."""
    from privguard.attacks import all_attacks

    table = Table("family", "needs", "paper")
    table.columns.insert(0, _name_column("attack"))
    for cls in all_attacks():
        table.add_row(cls.name, cls.family, cls.needs.label, _short_citation(cls.paper))
    out.print(table)


@app.command("datasets")
def list_datasets() -> None:
    """List the built-in datasets with size, kind and licence."""
    from privguard.data import list_datasets as _list

    table = Table("kind", "records", "input", "classes", "licence")
    table.columns.insert(0, _name_column("dataset"))
    for info in _list():
        table.add_row(
            info.name,
            info.kind,
            str(info.n),
            "x".join(map(str, info.input_shape)),
            str(info.n_classes),
            info.licence,
        )
    out.print(table)


# -- helpers ---------------------------------------------------------------------------------


def _short_citation(paper: str) -> str:
    """'Authors, Title, Venue Year (more)' -> 'Authors, Venue Year'."""
    import re

    parts = [p.strip() for p in re.sub(r"\s*\(.*?\)", "", paper).split(";")[0].split(",")]
    return f"{parts[0]}, {parts[-1]}" if len(parts) >= 3 else paper


def _name_column(header: str) -> Column:
    return Column(header, no_wrap=True)


def _check_out(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory; choose another output path")


def _command_line() -> str:
    return "privguard " + " ".join(shlex.quote(a) for a in sys.argv[1:])


KEY_METRICS = {
    "membership": [("auc", "AUC"), ("advantage", "adv."), ("tpr_at_fpr_0.01", "TPR@1%")],
    "inversion": [
        ("attack_accuracy", "acc"),
        ("attack_accuracy_consensus", "both"),
        ("member_closeness", "closeness"),
    ],
    "attribute": [
        ("accuracy_members", "acc. members"),
        ("advantage_members", "adv. members"),
        ("member_advantage_gap", "member gap"),
    ],
}


KEY_NOTES = {
    "inversion": "attack accuracy by an SVM / by both evaluators; member closeness (0.5 = none)",
    "attribute": "advantage = accuracy beyond the no-model baseline",
}


def _print_summary(report: privguard.Report, out_dir: Path) -> None:
    """One table per attack family, with that family's key metrics as columns."""
    families = list(dict.fromkeys(a.family for a in report.attacks))
    for family in families:
        attacks = [a for a in report.attacks if a.family == family]
        keys = KEY_METRICS.get(family) or [(k, k) for k in list(attacks[0].metrics)[:3]]
        cols = [Column(label, min_width=len(label)) for _, label in keys]
        title = f"{family}: {KEY_NOTES[family]}" if family in KEY_NOTES else family
        tail = [Column(h, min_width=len(h)) for h in ("risk", "queries", "s")]
        table = Table(*cols, *tail, title=title, box=SIMPLE_HEAD)
        table.columns.insert(0, _name_column("attack"))
        for a in attacks:
            style = RISK_STYLE[a.risk]
            values = [f"{a.metrics.get(k, float('nan')):.3f}" for k, _ in keys]
            table.add_row(
                a.name, *values, f"[{style}]{a.risk}[/]", str(a.queries), f"{a.seconds:.1f}"
            )
        out.print(table)
    risk = report.summary["overall_risk"]
    out.print(
        f"overall risk: [{RISK_STYLE[risk]}]{risk}[/] (worst: {report.summary.get('worst_attack')})"
    )
    out.print(f"report written to {out_dir}/: report.json, report.html, model-card.md")


def _maybe_fail(report: privguard.Report, fail_on: str | None) -> None:
    from privguard.audit.report import risk_rank

    if fail_on is None:
        return
    tripped = [a.name for a in report.attacks if risk_rank(a.risk) >= risk_rank(fail_on)]
    if tripped:
        err.print(f"--fail-on {fail_on}: risk reached by {', '.join(tripped)}")
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: privguard errors become one line on stderr and
    exit code 2, never a traceback; usage errors are typer's (exit 2)."""
    try:
        app(args=argv, prog_name="privguard")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except PrivguardError as e:
        err.print(f"privguard: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("privguard: interrupted; nothing was written")
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback
        if os.environ.get("PRIVGUARD_DEBUG"):
            raise
        err.print(
            f"privguard: internal error: {type(e).__name__}: {e} (set PRIVGUARD_DEBUG=1 for the "
            "traceback, and please report it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 3
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
