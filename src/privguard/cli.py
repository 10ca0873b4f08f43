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
    model: str = typer.Option(
        "mlp", help="logreg, mlp or cnn; for text: char-lm, smollm2 or hf:PATH (fine-tune)."
    ),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    epochs: int | None = typer.Option(
        None, help="Training epochs (upper bound with early stopping) [default: 100; char-lm 20]."
    ),
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
    dp_epsilon: float | None = typer.Option(
        None, help="Train with DP-SGD (Opacus) to this epsilon over the planned epochs."
    ),
    dp_delta: float | None = typer.Option(
        None, help="Delta of the DP guarantee, below 1/n [default: 1/(10 n)]."
    ),
    max_grad_norm: float = typer.Option(1.0, help="DP-SGD per-record gradient clipping norm."),
    canary: list[str] | None = typer.Option(
        None, help='Text models: canary format to insert, e.g. "my pin is {digits:6}" (repeatable).'
    ),
    canary_repeats: str = typer.Option(
        "1,10,50", help="Text models: times each canary is inserted."
    ),
    canaries_per_count: int = typer.Option(1, help="Text models: canaries per repetition count."),
    extrapolate: bool = typer.Option(
        False, help="Text models: allow skew-normal exposure for spaces too large to rank exactly."
    ),
    steps: int | None = typer.Option(None, help="Hugging Face fine-tuning steps [default: 60]."),
) -> None:
    """Train a target model on a seeded member split and save it (safetensors + model.json).

    Text models (char-lm, smollm2, hf:PATH) train on a corpus (--data CORPUS.txt or
    synthetic-records) with canaries inserted (--canary, --canary-repeats)."""
    from privguard.models.text import is_text_model_name

    if is_text_model_name(model):
        settings = dict(canaries=canary or [], per_count=canaries_per_count, steps=steps)
        settings.update(extrapolate=extrapolate, epochs=epochs, seed=seed, dp_epsilon=dp_epsilon)
        settings.update(dp_delta=dp_delta, max_grad_norm=max_grad_norm)
        _train_text(data, out_dir, model, canary_repeats, settings)
        return
    config = privguard.TrainConfig(
        model=model,
        epochs=epochs if epochs is not None else 100,
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
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        max_grad_norm=max_grad_norm,
    )
    _check_out(out_dir)
    t0 = time.perf_counter()
    with _progress() as update:
        target = privguard.train(data, config, label=label, progress=update)
    target.save(out_dir)
    m = target.metrics
    dp = m.get("privacy")
    spent = (
        f" with ({dp['epsilon']:.3g}, {dp['delta']:.2g})-DP ({dp['accountant']} accountant, "
        f"noise multiplier {dp['noise_multiplier']:.3g}, {dp['steps']} steps)"
        if dp
        else ""
    )
    out.print(
        f"trained {model} on {target.dataset['name']}{spent} in "
        f"{time.perf_counter() - t0:.1f}s: train accuracy {m['train_accuracy']:.3f}, test "
        f"accuracy {m['test_accuracy']:.3f} -> {out_dir}"
    )


def _train_text(data: str, out_dir: Path, model: str, repeats: str, settings: dict) -> None:
    """``privguard train`` for text models (privguard.models.text)."""
    from privguard.data.corpus import parse_repeats
    from privguard.models.text import train_text_target

    _check_out(out_dir)
    t0 = time.perf_counter()
    with _progress() as update:
        target = train_text_target(
            data, model, repeats=parse_repeats(repeats), progress=update, **settings
        )
    target.save(out_dir)
    m = target.metrics
    dp = m.get("privacy")
    spent = f" with ({dp['epsilon']:.3g}, {dp['delta']:.2g})-DP" if dp else ""
    test = f", test {m['test_bits_per_char']:.3f}" if "test_bits_per_char" in m else ""
    out.print(
        f"trained {model} on {target.corpus.name}{spent} in {time.perf_counter() - t0:.1f}s: "
        f"{m['train_bits_per_char']:.3f} bits/char on training lines{test}; "
        f"{len(target.canaries)} canaries inserted -> {out_dir}"
    )


@app.command()
def audit(
    model: Path | None = typer.Option(
        None,
        "--model",
        "--model-dir",
        help="Model directory written by `privguard train`, or a local Hugging Face model.",
    ),
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
    policy: str | None = typer.Option(
        None,
        help="Output policy the answers pass through, e.g. 'label', 'topk:3,round:2', "
        "'noise:gaussian:0.05', 'reverse-sigmoid:0.7:0.2', 'threshold:0.6'.",
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
    endpoint: str | None = typer.Option(
        None,
        help="Attack a live endpoint over HTTP instead (a gateway's base URL, or a mapped API's "
        "prediction URL); --model then only tells the evaluator who the members are.",
    ),
    api_key_file: Path | None = typer.Option(
        None, help="File holding the endpoint's API key (with --endpoint)."
    ),
    endpoint_map: Path | None = typer.Option(
        None, help="TOML/JSON request/response mapping of a non-privguard JSON API."
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
            "policy": policy,
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
    if endpoint is not None:
        _audit_endpoint(plan, endpoint, api_key_file, endpoint_map, access)
        return
    if api_key_file or endpoint_map:
        raise ConfigError("--api-key-file and --endpoint-map go with --endpoint URL")
    plan.check()
    out_path = Path(plan.out)
    _check_out(out_path)
    with _progress() as update:
        report = privguard.audit(plan.model, access=plan.access, **_audit_options(plan, update))
    privguard.write_report(report, out_path)
    _print_summary(report, out_path)
    _maybe_fail(report, plan.fail_on)


def _audit_options(plan, progress) -> dict:
    """The plan's options as ``privguard.audit`` (and ``audit_endpoint``) keywords."""
    return dict(
        data=plan.data,
        label=plan.label,
        attacks=plan.attacks,
        policy=plan.policy,
        sensitive=plan.sensitive,
        seed=plan.seed,
        budget=plan.budget,
        n_jobs=plan.jobs,
        scheduler=plan.scheduler,
        cache_dir=plan.cache_dir,
        progress=progress,
        command=_command_line(),
    )


def _audit_endpoint(plan, url: str, key_file, map_file, access: str | None) -> None:
    """``audit --endpoint``: the attacks talk HTTP only (docs/endpoint-audit.md)."""
    from dataclasses import replace

    from privguard.endpoint import EndpointMap, audit_endpoint, read_api_key

    replace(plan, model=plan.model or url).check()
    mapping = EndpointMap.load(map_file) if map_file else None
    api_key = read_api_key(key_file) if key_file else None
    out_path = Path(plan.out)
    _check_out(out_path)
    with _progress() as update:
        report = audit_endpoint(
            url,
            api_key=api_key,
            mapping=mapping,
            model=plan.model,
            access=access,
            **_audit_options(plan, update),
        )
    privguard.write_report(report, out_path)
    _print_summary(report, out_path)
    e = report.target["endpoint"]
    out.print(
        f"endpoint {e['endpoint']}: {e['records_answered']} records answered in "
        f"{e['http_requests']} requests, {e['rate_limited_429']} rate-limited (429), "
        f"{e['seconds_waiting_on_429']} s waiting"
    )
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
    OUT/digits); then the patient model beside two defended variants, DP-SGD at ε = 1 and a
    label-only output policy (sweep report in OUT/defences)."""
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
    with _progress() as update:
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
    _print_sweep(result, sweep_dir)


@app.command()
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
    _check_out(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: choose a new --out directory for the sweep")
    with _progress() as update:
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
    _print_sweep(result, out_dir)


def _print_sweep(result, out_dir: Path) -> None:
    table = Table(box=SIMPLE_HEAD)
    for col in ("variant", "test acc.", "ε", "TPR@1%FPR", "AUC", "data risk"):
        table.add_column(col)
    for r in result.rows:
        eps = f"{r.epsilon:.3g}" if r.epsilon is not None else "—"
        name = f"[bold]{r.name}[/bold]" if r.pareto else r.name
        table.add_row(
            name,
            f"{r.test_accuracy:.3f}",
            eps,
            f"{r.membership_tpr_at_fpr_0_01:.3f}",
            f"{r.membership_auc:.3f}",
            r.data_risk,
        )
    out.print(table)
    if result.recommendation:
        out.print(f"recommendation: {result.recommendation['reason']}")
    out.print(f"sweep written to {out_dir}/: sweep.html, sweep.json, reports/, models/")


@app.command("dp-audit")
def dp_audit(
    data: str = typer.Option(..., help="Built-in dataset name or a CSV/Parquet/NPZ/image folder."),
    out_dir: Path = typer.Option(
        Path("privguard-dp-audit"), "--out", help="Directory for dp-audit.json."
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
    canaries: int = typer.Option(1000, help="Canary records m, each included with prob. 1/2."),
    canary: str = typer.Option(
        "flipped", help="flipped (records with a wrong label: most memorised) or natural."
    ),
    seed: int = typer.Option(0, help="Seeds the split, the canaries and the training run."),
) -> None:
    """One-run DP audit (Steinke, Nasr & Jagielski, NeurIPS 2023): an epsilon lower bound at
    95% confidence from one training run, beside the accountant's epsilon."""
    from privguard.audit.dp_audit import one_run_audit, write_dp_audit
    from privguard.data import load_dataset

    config = privguard.TrainConfig(
        model=model,
        epochs=epochs,
        hidden=_hidden(hidden),
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        max_grad_norm=max_grad_norm,
    )
    _check_out(out_dir)
    ds = load_dataset(data, label=label)
    with _progress() as update:
        result = one_run_audit(ds, config, canaries=canaries, canary=canary, progress=update)
    path = write_dp_audit(result, out_dir)
    out.print(result.summary_line(), markup=False, highlight=False)
    out.print(f"written to {path}")


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


# -- the serving gateway (docs/gateway.md) ---------------------------------------------------

keys_app = typer.Typer(
    help="API keys of the gateway: create (prints the secret once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
monitor_app = typer.Typer(
    help="The gateway's query monitor (attack detectors, docs/monitoring.md).",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("fit")
def monitor_fit(
    model: Path = typer.Option(..., help="Model directory the gateway serves."),
    out_dir: Path = typer.Option(..., "--out", help="Where to save the monitor."),
    target_fpr: float = typer.Option(
        0.01, help="Share of benign clients each detector may flag (calibration target)."
    ),
    seed: int = typer.Option(0, help="Seeds the calibration shuffles and the PCA."),
) -> None:
    """Calibrate the attack detectors on the model's own data (its members as natural
    traffic, its held-out records as benign clients) and save them for `[monitor] path`."""
    from privguard.gateway.monitor import Monitor

    if not 0 < target_fpr < 1:
        raise ConfigError("--target-fpr must be between 0 and 1, e.g. 0.01")
    _check_out(out_dir)
    target = privguard.load_target(model)
    ds = target.load_data()
    split = target.split
    with _progress() as update:
        monitor = Monitor(target_fpr=target_fpr).fit(
            ds.x[split.members],
            ds.x[split.nonmembers],
            target.predict_proba,
            seed=seed,
            progress=update,
        )
    monitor.save(out_dir)
    out.print(
        f"monitor calibrated on {len(split.members)} training and {len(split.nonmembers)} "
        f"held-out records (target false-positive rate {target_fpr:g} per detector); saved to "
        f'{out_dir}/ — point the gateway at it with \\[monitor] path = "{out_dir}"'
    )


DB_HELP = (
    "Audit database URL [default: $PRIVGUARD_DB, the config's [server] db, or "
    "sqlite:///privguard-gateway.db]."
)


def _gateway_db(db: str | None, config: Path | None):
    """(GatewayConfig, Store) for the key and purge commands."""
    from privguard.gateway.config import ServeSettings
    from privguard.gateway.store import Store

    settings = ServeSettings(model="", config=str(config) if config else None, db=db)
    cfg = settings.load_config()
    store = Store(settings.resolve_db(cfg))
    store.migrate()
    return cfg, store


@app.command()
def serve(
    model: Path = typer.Option(..., help="Model directory, or a file sealed by `privguard seal`."),
    config: Path | None = typer.Option(None, help="gateway.toml: tiers and server settings."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    db: str | None = typer.Option(None, help=DB_HELP),
    redis: str | None = typer.Option(
        None, help="redis://HOST:6379/0: rate limits shared by workers and replicas."
    ),
    workers: int = typer.Option(1, help="Worker processes."),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, help="PEM private key of --tls-cert."),
    seal_key_file: Path | None = typer.Option(
        None, help="Key of a sealed --model [default: $PRIVGUARD_SEAL_KEY]."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve a model behind the gateway: keys, tiers, rate limits, output policies, audit log."""
    from privguard.gateway.config import ServeSettings
    from privguard.gateway.serve import serve as _serve

    settings = ServeSettings(
        model=str(model),
        config=str(config) if config else None,
        db=db,
        redis=redis,
        seal_key_file=str(seal_key_file) if seal_key_file else None,
    )
    _serve(
        settings,
        host=host,
        port=port,
        workers=workers,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        log_level=log_level,
        on_ready=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
    )


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., help="The client's name (recorded in the query log)."),
    role: str = typer.Option("client", help="client or admin."),
    tier: str | None = typer.Option(None, help="The key's tier, a [tiers.NAME] of the config."),
    expires: float | None = typer.Option(None, help="Days until the key expires."),
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml, to check --tier against."),
) -> None:
    """Create a key and print its secret (shown this once; only a hash is stored)."""
    from privguard.gateway.keys import create_key

    cfg, store = _gateway_db(db, config)
    if config and tier and tier not in cfg.tiers:
        raise ConfigError(f"no tier {tier!r} in {config}; use one of: {', '.join(cfg.tiers)}")
    info, secret = create_key(store, name, role, tier, expires_days=expires)
    store.close()
    err.print(
        f"created {info.role} key {info.id} for {info.name!r} (tier {info.tier}); "
        "its secret follows, shown this once:",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    print(secret)


@keys_app.command("list")
def keys_list(
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml (for its [server] db)."),
) -> None:
    """List the keys (never their secrets)."""
    from privguard.gateway.keys import list_keys

    _, store = _gateway_db(db, config)
    table = Table("name", "role", "tier", "created", "expires", "status")
    table.columns.insert(0, _name_column("id"))
    for k in list_keys(store):
        d = k.to_dict()
        status = "revoked" if k.revoked else "expired" if k.expired() else "active"
        table.add_row(k.id, k.name, k.role, str(k.tier), d["created"], str(d["expires"]), status)
    store.close()
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key's id (see `privguard keys list`)."),
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml (for its [server] db)."),
) -> None:
    """Revoke a key (running gateways refuse it within their key cache time, 5 s by default)."""
    from privguard.gateway.keys import revoke_key

    _, store = _gateway_db(db, config)
    info = revoke_key(store, key_id)
    store.close()
    if info is None:
        raise ConfigError(f"no key {key_id!r}; see `privguard keys list`")
    out.print(f"revoked {info.id} ({info.name})")


@app.command()
def seal(
    directory: Path = typer.Argument(..., help="Model directory to encrypt."),
    key_file: Path = typer.Option(..., help="Key file (created, mode 0600, if it does not exist)."),
    out_file: Path | None = typer.Option(
        None, "--out", help="Sealed file to write [default: DIRECTORY.sealed]."
    ),
) -> None:
    """Encrypt a model directory at rest (AES-256-GCM); `serve` loads it with the key."""
    from privguard.gateway.seal import new_key_file, read_key_file
    from privguard.gateway.seal import seal as _seal

    if key_file.exists():
        key = read_key_file(key_file)
    else:
        key = new_key_file(key_file)
        err.print(f"created a new key in {key_file} (mode 0600): keep it apart from the model")
    target = out_file or directory.with_name(directory.name + ".sealed")
    written = _seal(directory, key, target)
    out.print(f"sealed {directory} -> {written}")


@app.command()
def purge(
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(
        None, help="gateway.toml: its [server] log_retention_days also ages out log rows."
    ),
) -> None:
    """Delete retained inputs past their retention (and log rows past log_retention_days)."""
    cfg, store = _gateway_db(db, config)
    removed = store.purge(log_retention_days=cfg.server.log_retention_days)
    store.close()
    out.print(
        f"purged {removed['query_inputs']} retained input row(s) and "
        f"{removed['query_log']} log row(s)"
    )


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
    "memorization": [
        ("exposure_bits_top_repeats", "exposure"),
        ("exposure_bits_max", "max"),
        ("exposure_bits_reference_mean", "reference"),
        ("precision_at_100", "prec@100"),
        ("canaries_extracted", "canaries"),
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
