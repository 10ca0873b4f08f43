"""``privguard train``: train a target model (classifier or text model) on a seeded split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from privguard.cli._common import check_out, out, parse_hidden, progress


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
    device: str = typer.Option("cpu", help="cpu, cuda or auto: where the model trains."),
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
    lora_rank: int | None = typer.Option(
        None,
        help="Hugging Face document fine-tuning: LoRA rank on every block [default: 8]; 0 "
        "trains the last 2 blocks in full.",
    ),
    text_column: str | None = typer.Option(None, help="Text column of a CSV of documents."),
) -> None:
    """Train a target model on a seeded member split and save it (safetensors + model.json).

    Text models (char-lm, smollm2, hf:PATH) train on a corpus (--data CORPUS.txt or
    synthetic-records) with canaries inserted (--canary, --canary-repeats)."""
    import privguard
    from privguard.models.text import is_text_model_name
    from privguard.training.device import resolve_device

    resolve_device(device)  # a bad or unavailable device fails before any training
    if is_text_model_name(model):
        settings = dict(canaries=canary or [], per_count=canaries_per_count, steps=steps)
        settings.update(extrapolate=extrapolate, epochs=epochs, seed=seed, dp_epsilon=dp_epsilon)
        settings.update(dp_delta=dp_delta, max_grad_norm=max_grad_norm)
        if epochs is not None or lora_rank is not None:
            settings.update(lora_rank=lora_rank, text_column=text_column, lr=lr)
        _train_text(data, out_dir, model, canary_repeats, settings)
        return
    config = privguard.TrainConfig(
        model=model,
        epochs=epochs if epochs is not None else 100,
        hidden=parse_hidden(hidden),
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
    check_out(out_dir)
    t0 = time.perf_counter()
    with progress() as update:
        target = privguard.train(data, config, label=label, progress=update, device=device)
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
    _report_fit(target)


def _train_text(data: str, out_dir: Path, model: str, repeats: str, settings: dict) -> None:
    """``privguard train`` for text models (privguard.models.text)."""
    from privguard.data.corpus import parse_repeats
    from privguard.models.text import train_text_target

    check_out(out_dir)
    t0 = time.perf_counter()
    with progress() as update:
        target = train_text_target(
            data, model, repeats=parse_repeats(repeats), progress=update, **settings
        )
    target.save(out_dir)
    m = target.metrics
    dp = m.get("privacy")
    spent = f" with ({dp['epsilon']:.3g}, {dp['delta']:.2g})-DP" if dp else ""
    if target.documents is not None:
        docs = target.documents
        out.print(
            f"fine-tuned {model} on {len(docs['members'])} documents ({len(docs['nonmembers'])} "
            f"held out as non-members){spent} in {time.perf_counter() - t0:.1f}s: perplexity "
            f"{m['member_perplexity']:.2f} on members, {m['heldout_perplexity']:.2f} held out "
            f"-> {out_dir}"
        )
        return
    test = f", test {m['test_bits_per_char']:.3f}" if "test_bits_per_char" in m else ""
    out.print(
        f"trained {model} on {target.corpus.name}{spent} in {time.perf_counter() - t0:.1f}s: "
        f"{m['train_bits_per_char']:.3f} bits/char on training lines{test}; "
        f"{len(target.canaries)} canaries inserted -> {out_dir}"
    )


def _report_fit(target: Any) -> None:
    """What ``train`` filled in (column, records, value) and the utility guard's verdict."""
    pre = (target.dataset or {}).get("preprocessing") or {}
    for c in pre.get("numeric") or []:
        if c.get("imputed"):
            out.print(
                f"imputed {c['name']}: {c['imputed']} empty value(s) filled with the median "
                f"{c['median']:g}",
                markup=False,
                highlight=False,
            )
    for c in pre.get("categorical") or []:
        if c.get("imputed"):
            out.print(
                f"imputed {c['name']}: {c['imputed']} empty value(s) encoded as the level "
                '"missing"',
                markup=False,
                highlight=False,
            )
    u = target.metrics.get("utility") or {}
    if u.get("trivial"):
        out.print(f"[bold red]utility warning:[/] {u['note']}", highlight=False)
    elif u:
        out.print(f"utility: {u['note']}", markup=False, highlight=False)
