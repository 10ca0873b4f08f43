"""Shared pieces of the ``privguard`` commands: the consoles, the progress display, option
parsers, output-path checks and the result tables (audit summary, sweep).

Nothing here imports torch, the gateway or matplotlib: the commands import what they need
inside their functions, so ``privguard --help`` starts fast.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from privguard.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Column

    from privguard.audit.report import Report

out = Console()
err = Console(stderr=True)
RISK_STYLE = {"low": "green", "medium": "yellow", "high": "bold red"}
DB_HELP = (
    "Audit database URL [default: $PRIVGUARD_DB, the config's [server] db, or "
    "sqlite:///privguard-gateway.db]."
)


@contextmanager
def progress() -> Iterator[Callable[[str, int, int], None]]:
    """The library's progress callback on stderr: rich bars on a terminal; otherwise (CI,
    pipes, logs) timestamped lines, one per step (each attack) and one per 10% of a step's
    total (reference models, epochs)."""
    if not err.is_terminal:
        from privguard._progress import progress_lines

        yield progress_lines(sys.stderr)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(step: str, done: int, total: int) -> None:
            is_attack = step.startswith("attack")
            key = step.split(" ")[0] if is_attack else step
            if is_attack:
                # a new attack: the previous attack's sub-steps are over (no bar stays stuck)
                for k in [k for k in tasks if k != key]:
                    bar.remove_task(tasks.pop(k))
            if key not in tasks:
                tasks[key] = bar.add_task(step, total=total)
            bar.update(tasks[key], description=step, completed=done, total=total)

        yield update


def parse_hidden(value: str) -> list[int]:
    """``--hidden 256,256`` -> [256, 256]; anything else is a ConfigError."""
    try:
        widths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--hidden takes comma-separated widths such as 256,256, not {value!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise ConfigError("--hidden takes positive widths such as 256,256")
    return widths


def check_out(path: Path) -> None:
    """Refuse an output path that exists and is not a directory."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory; choose another output path")


def command_line() -> str:
    """The command as typed, recorded in report.json."""
    return "privguard " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def name_column(header: str) -> Column:
    """A table's first column: names never wrap."""
    from rich.table import Column

    return Column(header, no_wrap=True)


def short_citation(paper: str) -> str:
    """'Authors, Title, Venue Year (more)' -> 'Authors, Venue Year'."""
    import re

    parts = [p.strip() for p in re.sub(r"\s*\(.*?\)", "", paper).split(";")[0].split(",")]
    return f"{parts[0]}, {parts[-1]}" if len(parts) >= 3 else paper


def print_summary(report: Report, out_dir: Path) -> None:
    """One table per attack family, with that family's key metrics as columns (the family
    record's :attr:`~privguard.audit.families.Family.key_metrics` present in its attacks)."""
    from rich.box import SIMPLE_HEAD
    from rich.table import Column, Table

    from privguard.audit.families import FAMILIES, all_families

    all_families()  # loads the records
    families = list(dict.fromkeys(a.family for a in report.attacks))
    for family in families:
        attacks = [a for a in report.attacks if a.family == family]
        record = FAMILIES.get(family)
        if record is not None:
            keys = record.columns([a.metrics for a in attacks])
        else:
            keys = [(k, k) for k in list(attacks[0].metrics)[:3]]
        cols = [Column(label, min_width=len(label)) for _, label in keys]
        title = f"{family}: {record.note}" if record is not None and record.note else family
        tail = [Column(h, min_width=len(h)) for h in ("risk", "queries", "s")]
        table = Table(*cols, *tail, title=title, box=SIMPLE_HEAD)
        table.columns.insert(0, name_column("attack"))
        for a in attacks:
            style = RISK_STYLE[a.risk]
            values = [f"{a.metrics.get(k, float('nan')):.3f}" for k, _ in keys]
            table.add_row(
                a.name,
                *values,
                f"[{style}]{a.risk}[/]",
                str(a.queries),
                f"{a.seconds:.1f}",
            )
        out.print(table)
        for a in attacks:  # why each level (the table stays narrow enough for 80 columns)
            if a.risk_reason:
                from rich.markup import escape

                out.print(
                    f"  {escape(a.name)} [{RISK_STYLE[a.risk]}]{a.risk}[/]: "
                    f"{escape(a.risk_reason)}",
                    highlight=False,
                )
    risk = report.summary["overall_risk"]
    out.print(
        f"overall risk: [{RISK_STYLE[risk]}]{risk}[/] (worst: {report.summary.get('worst_attack')})"
    )
    summary = report.summary
    if summary.get("utility_warning"):
        out.print(f"[bold red]utility warning:[/] {summary['utility_warning']}", highlight=False)
    if summary.get("headline"):
        out.print(summary["headline"], markup=False, highlight=False)
    for i, action in enumerate(summary.get("actions") or [], 1):
        out.print(f"  {i}. {action}", markup=False, highlight=False)
    for line in skipped_lines(summary.get("skipped") or []):
        out.print(line, markup=False, highlight=False)
    out.print(f"report written to {out_dir}/: report.json, report.html, model-card.md")


def skipped_lines(skipped: list[dict[str, str]]) -> list[str]:
    """One line per reason: attacks skipped for the same reason (no sensitive field, say) are
    named together."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        reason = s["reason"].replace(f"the {s['attack']} attack", "it")
        groups.setdefault(reason, []).append(s["attack"])
    lines = []
    for reason, names in groups.items():
        if "sensitive field" in reason:
            reason = (
                "attribute inference needs a sensitive field (a column a person would not want "
                "guessed); pass --sensitive FIELD, e.g. --sensitive age:bins=5"
            )
        lines.append(f"skipped {', '.join(names)}: {reason}")
    return lines


def print_sweep(result: Any, out_dir: Path) -> None:
    """The sweep's variants: accuracy against attack success, Pareto frontier in bold."""
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

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
            r.data_risk + (" [bold red](majority class only)[/]" if r.trivial else ""),
        )
    out.print(table)
    if getattr(result, "note", ""):
        out.print(f"attacks: {result.note}", markup=False, highlight=False)
    for r in result.rows:
        if r.trivial:
            out.print(f"[bold red]{r.name}:[/] {r.utility_note}", highlight=False)
    if result.recommendation:
        out.print(f"recommendation: {result.recommendation['reason']}")
    out.print(f"sweep written to {out_dir}/: sweep.html, sweep.json, reports/, models/")


def maybe_fail(report: Report, fail_on: str | None) -> None:
    """``--fail-on LEVEL``: exit 1 when any attack's risk reaches LEVEL."""
    from privguard.audit.report import risk_rank

    if fail_on is None:
        return
    tripped = [a.name for a in report.attacks if risk_rank(a.risk) >= risk_rank(fail_on)]
    if tripped:
        err.print(f"--fail-on {fail_on}: risk reached by {', '.join(tripped)}")
        raise typer.Exit(1)
