"""The attack list of ``privguard attacks`` read from the attack modules' source, without
importing them (they import torch, which takes seconds).

Each module under :mod:`privguard.attacks` is parsed (``ast``), as the registry's discovery
would import it; a class decorated with ``@register`` gives its ``name``, ``family``,
``needs`` and ``paper``, looked up through its base classes (in the same module or imported
from another attack module) and module-level string constants. When anything is not a plain
literal that this reading can follow, :func:`static_catalog` returns ``None`` and the caller
imports the registry instead: the listing is never wrong, only slower. tests/test_cli.py checks
that both give the same rows.
"""

from __future__ import annotations

import ast
from pathlib import Path

FIELDS = ("name", "family", "needs", "paper")
Row = tuple[str, str, str, str]  # name, family, needs (access label), paper


class _Unreadable(Exception):
    """Something the static reading cannot follow."""


class _Module:
    def __init__(self, dotted: str, tree: ast.Module) -> None:
        self.dotted = dotted
        self.constants: dict[str, ast.expr] = {}
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        self.classes: dict[str, ast.ClassDef] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                if isinstance(node.targets[0], ast.Name):
                    self.constants[node.targets[0].id] = node.value
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node


class _Reader:
    """The modules of a package, parsed on first use: those that register attacks, and those
    their classes and constants come from."""

    def __init__(self, root: Path, package: str) -> None:
        self.sources: dict[str, str] = {}
        self._parsed: dict[str, _Module] = {}
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            try:
                self.sources[".".join((package, *parts))] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise _Unreadable(str(path)) from None

    def module(self, dotted: str) -> _Module | None:
        if dotted not in self._parsed and dotted in self.sources:
            try:
                tree = ast.parse(self.sources[dotted], dotted)
            except SyntaxError:
                raise _Unreadable(dotted) from None
            self._parsed[dotted] = _Module(dotted, tree)
        return self._parsed.get(dotted)

    def rows(self) -> list[Row]:
        rows = []
        for dotted, text in self.sources.items():
            if "@register" not in text:
                continue
            mod = self.module(dotted)
            assert mod is not None
            for cls in mod.classes.values():
                if any(_is_register(d) for d in cls.decorator_list):
                    rows.append(tuple(self._attr(mod, cls, f) for f in FIELDS))
        return rows  # type: ignore[return-value]

    def _attr(self, mod: _Module, cls: ast.ClassDef, field: str) -> str:
        for node in cls.body:
            target, value = _assigned(node)
            if target == field and value is not None:
                return self._value(mod, value, field)
        for base in cls.bases:
            if not isinstance(base, ast.Name):
                raise _Unreadable(f"{cls.name}: base {ast.dump(base)}")
            if base.id == "Attack":
                continue
            found = self._class(mod, base.id)
            try:
                return self._attr(*found, field)
            except _Missing:
                continue
        raise _Missing(field)

    def _class(self, mod: _Module, name: str) -> tuple[_Module, ast.ClassDef]:
        if name in mod.classes:
            return mod, mod.classes[name]
        if name in mod.imports:
            home, original = mod.imports[name]
            other = self.module(home)
            if other is not None and original in other.classes:
                return other, other.classes[original]
        raise _Unreadable(f"{mod.dotted}: class {name}")

    def _value(self, mod: _Module, node: ast.expr, field: str) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._value(mod, node.left, field) + self._value(mod, node.right, field)
        if (
            field == "needs"
            and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Access"
        ):
            return node.attr.lower()
        if isinstance(node, ast.Name):
            if node.id in mod.constants:
                return self._value(mod, mod.constants[node.id], field)
            if node.id in mod.imports:
                home, original = mod.imports[node.id]
                other = self.module(home)
                if other is not None and original in other.constants:
                    return self._value(other, other.constants[original], field)
        raise _Unreadable(f"{mod.dotted}: {field} = {ast.dump(node)}")


class _Missing(Exception):
    """The attribute is not set on this class or its bases."""


def _assigned(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
    ):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _is_register(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "register") or (
        isinstance(node, ast.Attribute) and node.attr == "register"
    )


def static_catalog() -> list[Row] | None:
    """Every registered attack as (name, family, needs, paper), read from source; ``None``
    when the source holds something this reading cannot follow (then import the registry)."""
    import importlib.util

    spec = importlib.util.find_spec("privguard.attacks")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        reader = _Reader(root, "privguard.attacks")
        rows = reader.rows()
        # the registry's display order of families, read from it like the rest
        registry = reader.module("privguard.attacks.registry")
        order = ast.literal_eval(registry.constants["FAMILY_ORDER"]) if registry else ()
    except (_Unreadable, _Missing, RecursionError, KeyError, ValueError):
        return None
    if len({r[0] for r in rows}) != len(rows):
        return None  # a duplicated name: let the registry say so
    return sorted(rows, key=lambda r: (_family_key(order, r[1]), r[0]))


def _family_key(order: tuple[str, ...], family: str) -> tuple[int, str]:
    return (order.index(family) if family in order else len(order)), family


def registry_catalog() -> list[Row]:
    """The same rows from the imported registry (slow: the attack modules import torch)."""
    from privguard.attacks import all_attacks

    return [(c.name, c.family, c.needs.label, c.paper) for c in all_attacks()]
