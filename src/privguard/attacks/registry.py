"""Short names -> attack classes, as the CLI and plan files use them.

Adding an attack is one module in ``attacks/<family>/`` with the ``@register`` decorator on its
class: :func:`discover` imports every module under :mod:`privguard.attacks` (a ``pkgutil``
walk), so no ``__init__.py`` lists them. Attack names given by a user (CLI, plan file,
``privguard.audit``) are normalised here and nowhere else (:func:`normalise`).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from privguard.attacks.base import Attack
from privguard.errors import AccessError, ConfigError
from privguard.oracle import Access

ATTACKS: dict[str, type[Attack[Any, Any]]] = {}
# Display order of the built-in families (the order of `privguard attacks` and of a report's
# attacks under "all"); a family not listed here sorts after them by name.
FAMILY_ORDER = ("inversion", "attribute", "membership", "extraction", "memorization")
_discovered = False


def register(cls: type[Attack[Any, Any]]) -> type[Attack[Any, Any]]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    for attr in ("name", "family", "needs", "paper"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__}: an attack must set {attr}")
    fam = cls.family
    if not fam or fam != fam.strip().lower() or "," in fam:
        raise ValueError(f"{cls.__name__}: family {fam!r} must be a lower-case name")
    if cls.name in ATTACKS and ATTACKS[cls.name] is not cls:
        other = ATTACKS[cls.name]
        raise ValueError(
            f"{cls.__module__}.{cls.__name__}: the name {cls.name!r} is taken by "
            f"{other.__module__}.{other.__name__}"
        )
    ATTACKS[cls.name] = cls
    return cls


def discover() -> None:
    """Import every module under :mod:`privguard.attacks` once (running their ``@register``)."""
    global _discovered
    if _discovered:
        return
    package = __name__.rpartition(".")[0]  # privguard.attacks, without importing it here
    path = sys.modules[package].__path__ if package in sys.modules else [str(Path(__file__).parent)]
    for info in pkgutil.walk_packages(path, prefix=f"{package}."):
        importlib.import_module(info.name)
    _discovered = True


def families() -> list[str]:
    """The family names of the registered attacks, in display order."""
    discover()
    return sorted({c.family for c in ATTACKS.values()}, key=_family_key)


def _family_key(family: str) -> tuple[int, str]:
    known = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    return known, family


def all_attacks() -> list[type[Attack[Any, Any]]]:
    discover()
    return sorted(ATTACKS.values(), key=lambda c: (_family_key(c.family), c.name))


def normalise(attacks: Sequence[str] | str, kind: str | None = None) -> list[str]:
    """Attack and family names as given (a list, or comma-separated strings) -> the lower-case
    names :func:`resolve` takes. On data of ``kind``, an attack's ``alias`` becomes its name
    (``extraction`` on a text model is the ``extract`` attack)."""
    raw = [attacks] if isinstance(attacks, str) else list(attacks)
    names = [n.strip().lower() for r in raw for n in str(r).split(",") if n.strip()]
    if kind is None:
        return names
    aliases = {c.alias: c.name for c in all_attacks() if c.alias and kind in c.kinds}
    return [aliases.get(n, n) for n in names]


def resolve(names: Sequence[str] | str, access: Access) -> list[type[Attack[Any, Any]]]:
    """Expand attack and family names into attack classes.

    A family selects those of its attacks that ``access`` allows; an attack named explicitly
    that needs more access is an :class:`AccessError`.
    """
    discover()
    fams = families()
    chosen: list[type[Attack[Any, Any]]] = []
    for name in normalise(names):
        if name == "all":
            picked = [c for c in all_attacks() if c.needs <= access]
        elif name in fams:
            members = [c for c in all_attacks() if c.family == name]
            picked = [c for c in members if c.needs <= access]
            if not picked:
                least = min(c.needs for c in members)
                raise AccessError(
                    f"every {name} attack needs at least '{least.label}' access, but "
                    f"--access is '{access.label}'; raise --access"
                )
        elif name in ATTACKS:
            cls = ATTACKS[name]
            if cls.needs > access:
                raise AccessError(
                    f"the {name} attack needs '{cls.needs.label}' access but --access is "
                    f"'{access.label}'; raise --access to {cls.needs.label} or drop {name}"
                )
            picked = [cls]
        else:
            known = ", ".join(sorted(ATTACKS) + fams)
            raise ConfigError(f"unknown attack or family {name!r}; known: {known}")
        chosen += [c for c in picked if c not in chosen]
    if not chosen:
        raise ConfigError("no attacks selected; pass --attacks with attack or family names")
    return chosen
