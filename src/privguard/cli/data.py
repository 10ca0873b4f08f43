"""``privguard attacks`` and ``privguard datasets``: what privguard can run and on what."""

from __future__ import annotations

import typer

from privguard.cli._common import name_column, out, short_citation


def list_attacks(
    settings: bool = typer.Option(
        False,
        "--settings",
        help="List each attack's settings (set them with audit --set ATTACK.SETTING=VALUE).",
    ),
) -> None:
    """List every attack with its family, the access it needs and the paper it implements."""
    from rich.table import Column, Table

    from privguard.attacks import all_attacks

    if settings:
        table = Table(
            Column("setting", no_wrap=True),
            "type",
            "default",
            Column("range", no_wrap=True),
            "what it does",
        )
        table.columns.insert(0, name_column("attack"))
        for cls in all_attacks():
            for s in cls.settings:
                span = " | ".join(s.choices) if s.choices else s.span()
                table.add_row(cls.name, s.name, s.type.__name__, repr(s.default), span, s.help)
        out.print(table)
        return
    table = Table("family", "needs", "paper")
    table.columns.insert(0, name_column("attack"))
    for cls in all_attacks():
        table.add_row(cls.name, cls.family, cls.needs.label, short_citation(cls.paper))
    out.print(table)


def list_datasets() -> None:
    """List the built-in datasets with size, kind and licence."""
    from rich.table import Table

    from privguard.data import list_datasets as _list

    table = Table("kind", "records", "input", "classes", "licence")
    table.columns.insert(0, name_column("dataset"))
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
