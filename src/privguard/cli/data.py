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
    from rich.table import Table

    from privguard.cli._catalog import registry_catalog, static_catalog

    if settings:  # one line each: a table of six columns is unreadable at 80 columns
        from privguard.attacks import all_attacks

        out.print(
            "privguard audit --set ATTACK.SETTING=VALUE, or [attacks.ATTACK] in a plan:",
            markup=False,
        )
        for cls in all_attacks():
            for s in cls.settings:
                line = f"  {cls.name}.{s.describe()}"
                out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    # reading the attack modules' source answers at once; importing them loads torch
    rows = static_catalog()
    table = Table("family", "needs", "paper")
    table.columns.insert(0, name_column("attack"))
    for name, family, needs, paper in rows or registry_catalog():
        table.add_row(name, family, needs, short_citation(paper))
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
