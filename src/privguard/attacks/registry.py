"""Short names -> attack classes, as the CLI and plan files use them.

Adding an attack is one module plus the ``@register`` decorator on its class.
"""

from __future__ import annotations

from privguard.attacks.base import Attack
from privguard.errors import AccessError, ConfigError
from privguard.oracle import Access

ATTACKS: dict[str, type[Attack]] = {}
FAMILIES = ("inversion", "attribute", "membership", "extraction", "memorization")


def register(cls: type[Attack]) -> type[Attack]:
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}: unknown family {cls.family!r}")
    ATTACKS[cls.name] = cls
    return cls


def _load_all() -> None:
    # Importing the attack packages runs their @register decorators.
    import privguard.attacks.extraction  # noqa: F401
    import privguard.attacks.inversion  # noqa: F401
    import privguard.attacks.membership  # noqa: F401
    import privguard.attacks.memorization  # noqa: F401


def all_attacks() -> list[type[Attack]]:
    _load_all()
    return sorted(ATTACKS.values(), key=lambda c: (FAMILIES.index(c.family), c.name))


def resolve(names: list[str] | str, access: Access) -> list[type[Attack]]:
    """Expand attack and family names into attack classes.

    A family selects those of its attacks that ``access`` allows; an attack named explicitly
    that needs more access is an :class:`AccessError`.
    """
    _load_all()
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    chosen: list[type[Attack]] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name == "all":
            picked = [c for c in all_attacks() if c.needs <= access]
        elif name in FAMILIES:
            members = [c for c in all_attacks() if c.family == name]
            if not members:
                raise ConfigError(
                    f"no {name} attacks are available in this version; "
                    "run `privguard attacks` to list what is"
                )
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
            known = ", ".join(sorted(ATTACKS) + list(FAMILIES))
            raise ConfigError(f"unknown attack or family {raw.strip()!r}; known: {known}")
        chosen += [c for c in picked if c not in chosen]
    if not chosen:
        raise ConfigError("no attacks selected; pass --attacks with attack or family names")
    return chosen
