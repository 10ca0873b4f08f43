"""``privguard attacks`` and ``privguard datasets``: what privguard can run and on what."""

from __future__ import annotations

from privguard.cli._common import name_column, out, short_citation


def list_attacks() -> None:
    """List every attack with its family, the access it needs and the paper it implements."""
    from rich.table import Table

    from privguard.attacks import all_attacks

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
