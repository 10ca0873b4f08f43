"""``privguard sweep`` and ``dp-audit``: audit defended variants, and audit DP training itself."""

from __future__ import annotations

from pathlib import Path

import typer

from privguard.cli._common import (
    check_out,
    out,
    parse_hidden,
    print_sweep,
    progress,
)
from privguard.errors import ConfigError


def sweep(
    data: str = typer.Option(..., help="Built-in dataset name or data file."),
    model: str = typer.Option("mlp", help="Architecture of every variant: mlp, cnn or logreg."),
    grid: str = typer.Option(
        "default", help="'default' or a TOML file of [[variant]] tables (docs/defences.md)."
    ),
    out_dir: Path = typer.Option(Path("privguard-sweep"), "--out", help="Output directory."),
    target_risk: str | None = typer.Option(
        None, help="Recommend the most accurate variant whose data risk is at most this."
    ),
    attacks: str | None = typer.Option(
        None, help="Attacks every variant faces [default: a cheap set per data kind]."
    ),
    epochs: int | None = typer.Option(None, help="Training epochs of every variant."),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    seed: int = typer.Option(0, help="Seeds split, training and attacks."),
    jobs: int = typer.Option(1, help="Processes training variants in parallel."),
    scheduler: str | None = typer.Option(None, help="Dask scheduler address to train on."),
) -> None:
    """Train defended variants (DP, regularization, output policies), audit each with the same
    attacks, and write sweep.html: attack success against accuracy, Pareto frontier marked."""
    from privguard.sweep import load_grid, recommend
    from privguard.sweep import sweep as run_sweep
    from privguard.sweep.report import write_sweep

    if target_risk is not None and target_risk not in ("low", "medium", "high"):
        raise ConfigError(f"--target-risk takes low, medium or high, not {target_risk!r}")
    variants = load_grid(grid)
    check_out(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: choose a new --out directory for the sweep")
    with progress() as update:
        result = run_sweep(
            data,
            model=model,
            grid=variants,
            out=out_dir,
            base={"epochs": epochs} if epochs else None,
            attacks=attacks,
            label=label,
            seed=seed,
            n_jobs=jobs,
            scheduler=scheduler,
            progress=update,
        )
    if target_risk:
        recommend(result, target_risk)
    write_sweep(result, out_dir)
    print_sweep(result, out_dir)


def dp_audit(
    data: str = typer.Option(..., help="Built-in dataset name or a CSV/Parquet/NPZ/image folder."),
    out_dir: Path = typer.Option(
        Path("privguard-dp-audit"), "--out", help="Directory for dp-audit.json."
    ),
    train_fn: str | None = typer.Option(
        None,
        "--train-fn",
        help="Audit YOUR DP training function, module:function with train(x, y, seed) -> "
        "model. privguard imports and runs this code (the one place it runs code you name); "
        "exit 1 when the claimed epsilon is violated.",
    ),
    claimed_epsilon: float | None = typer.Option(
        None, help="With --train-fn: the epsilon your training claims."
    ),
    delta: float | None = typer.Option(None, help="With --train-fn: the delta it claims."),
    time_limit: float | None = typer.Option(
        None, help="With --train-fn: seconds one training run may take [default: no limit]."
    ),
    record_check: bool = typer.Option(
        True,
        "--record-check/--no-record-check",
        help="With --train-fn: a second, smaller run with permuted labels checks that the "
        "function trains on the records it is given. Turn it off for training that starts "
        "from a model already fitted to these labels.",
    ),
    model: str = typer.Option("mlp", help="logreg, mlp or cnn."),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    epochs: int = typer.Option(100, help="Training epochs."),
    hidden: str = typer.Option("256,256", help="Hidden layer widths, comma-separated."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(64, help="Records per step (expected size under DP)."),
    dp_epsilon: float | None = typer.Option(
        None, help="Audit DP-SGD at this epsilon [default: non-private training]."
    ),
    dp_delta: float | None = typer.Option(None, help="Delta, below 1/n [default: 1/(10 n)]."),
    max_grad_norm: float = typer.Option(1.0, help="DP-SGD per-record gradient clipping norm."),
    canaries: int = typer.Option(
        1000, help="Canaries m (records or gradient canaries), each included with prob. 1/2."
    ),
    canary: str | None = typer.Option(
        None,
        help="flipped (records with a wrong label; the default for privguard's recipes), "
        "natural, or with --train-fn quiet (inputs along the data's quietest directions; "
        "its default), flipped, or gradient (white-box: calls train(x, y, seed, canaries=c); "
        "c.attach(optimizer) puts m Dirac gradient canaries into the Opacus DPOptimizer's "
        "per-record gradients before clipping; see docs/dp.md).",
    ),
    seed: int = typer.Option(0, help="Seeds the split, the canaries and the training run."),
) -> None:
    """One-run DP audit: an epsilon lower bound at 95% confidence from one training run.

    Without --train-fn it audits privguard's own training recipe (Steinke, Nasr & Jagielski,
    NeurIPS 2023) beside the accountant's epsilon. With --train-fn module:function it audits
    your DP training code against --claimed-epsilon/--delta with the Steinke and the f-DP bound
    (Mahloujifar, Melis & Chaudhuri, ICML 2025) and exits 1 when the claim is violated.
    """
    import privguard
    from privguard.audit.dp_audit import one_run_audit, write_dp_audit
    from privguard.data import load_dataset

    if train_fn is not None:
        _dp_audit_train_fn(
            data,
            label,
            out_dir,
            train_fn,
            claimed_epsilon,
            delta,
            time_limit,
            canaries,
            canary or "quiet",
            record_check,
            seed,
            dp_epsilon,
        )
        return
    for flag, value in (
        ("--claimed-epsilon", claimed_epsilon),
        ("--delta", delta),
        ("--time-limit", time_limit),
    ):
        if value is not None:
            raise ConfigError(f"{flag} needs --train-fn (the training function to audit)")
    config = privguard.TrainConfig(
        model=model,
        epochs=epochs,
        hidden=parse_hidden(hidden),
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        max_grad_norm=max_grad_norm,
    )
    check_out(out_dir)
    ds = load_dataset(data, label=label)
    with progress() as update:
        result = one_run_audit(
            ds, config, canaries=canaries, canary=canary or "flipped", progress=update
        )
    path = write_dp_audit(result, out_dir)
    out.print(result.summary_line(), markup=False, highlight=False)
    out.print(f"written to {path}")


def _dp_audit_train_fn(
    data: str,
    label: str | None,
    out_dir: Path,
    spec: str,
    claimed_epsilon: float | None,
    delta: float | None,
    time_limit: float | None,
    canaries: int,
    canary: str,
    record_check: bool,
    seed: int,
    dp_epsilon: float | None,
) -> None:
    from privguard.audit.dp_audit import write_dp_audit
    from privguard.audit.dp_user import dp_audit as audit_fn
    from privguard.audit.train_fn import load_train_fn
    from privguard.data import load_dataset

    if dp_epsilon is not None:
        raise ConfigError(
            "--dp-epsilon sets privguard's own recipe; with --train-fn pass the claim of your "
            "function as --claimed-epsilon and --delta"
        )
    if claimed_epsilon is None or delta is None:
        raise ConfigError("--train-fn needs the claim to test: pass --claimed-epsilon and --delta")
    check_out(out_dir)
    fn = load_train_fn(spec)
    ds = load_dataset(data, label=label)
    result = audit_fn(
        fn,
        ds.x,
        ds.y,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        canaries=canaries,
        canary=canary,
        seed=seed,
        time_limit=time_limit,
        data_name=ds.name,
        check_records=record_check,
    )
    result.train_fn = spec
    path = write_dp_audit(result, out_dir)  # type: ignore[arg-type]
    out.print(result.summary_line(), markup=False, highlight=False)
    out.print(f"written to {path}")
    if result.violated:
        raise typer.Exit(1)
