"""The sweep's variants: the default grid, grid files, and which attacks a policy leaves.

A variant is training changes (any :class:`~privguard.models.train.TrainConfig` field) and/or
an output policy on the undefended model; :func:`load_grid` reads them from a TOML file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privguard.errors import ConfigError

# TrainConfig fields a variant (or the sweep's shared base) may set.
TRAIN_KEYS = {
    "epochs",
    "hidden",
    "lr",
    "batch_size",
    "dropout",
    "weight_decay",
    "early_stopping",
    "patience",
    "label_smoothing",
    "dp_epsilon",
    "dp_delta",
    "max_grad_norm",
}


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: training changes (TrainConfig fields) and an output policy."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None

    @property
    def defence(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.train.items())]
        if self.policy:
            parts.append(f"policy {self.policy}")
        return ", ".join(parts) or "none (baseline)"


DEFAULT_GRID: tuple[Variant, ...] = (
    Variant("baseline"),
    Variant("dropout-0.5", {"dropout": 0.5}),
    Variant("weight-decay-0.01", {"weight_decay": 1e-2}),
    Variant("early-stopping", {"early_stopping": True}),
    Variant("dp-eps-8", {"dp_epsilon": 8.0}),
    Variant("dp-eps-1", {"dp_epsilon": 1.0}),
    Variant("policy-round-1", policy="round:1"),
    Variant("policy-label", policy="label"),
)

# Cheap, comparable attacks per data kind. label-only-augmentation runs in every variant, so
# even the `label` policy has a membership figure; knockoff measures extraction cost.
# The audit's strongest membership attacks (LiRA online, RMIA) are in by default, so a variant
# the sweep calls "low" is "low" in a full audit of the same model; with fewer reference models
# than an audit's default (SWEEP_SETTINGS), which the sweep report states.
DEFAULT_ATTACKS = {
    "image": (
        "loss-threshold,confidence-threshold,label-only-augmentation,lira-online,rmia,"
        "blackbox-inversion,knockoff"
    ),
    "tabular": (
        "loss-threshold,confidence-threshold,label-only-augmentation,lira-online,rmia,knockoff"
    ),
}
SWEEP_SETTINGS: dict[str, dict[str, int]] = {
    "lira-online": {"n_reference": 8},
    "rmia": {"n_reference": 4},
}


def load_grid(spec: str | Path | None) -> list[Variant]:
    """``None`` / ``"default"``: :data:`DEFAULT_GRID`; else a TOML file::

    [[variant]]
    name = "dp-eps-2"
    dp_epsilon = 2.0          # any TrainConfig field: dropout, weight_decay, ...

    [[variant]]
    name = "top1"
    policy = "topk:1"         # an output policy on the undefended model
    """
    if spec is None or str(spec) == "default":
        return list(DEFAULT_GRID)
    path = Path(spec)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no grid file at {path}; pass --grid default or a TOML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the grid file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    items = raw.get("variant")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: no [[variant]] tables; see `privguard sweep --help`")
    out: list[Variant] = []
    for i, item in enumerate(items):
        item = {k.replace("-", "_"): v for k, v in item.items()}
        name = item.pop("name", None)
        policy = item.pop("policy", None)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: variant {i + 1} needs a name")
        unknown = sorted(set(item) - TRAIN_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: variant {name!r} has unknown key(s) {', '.join(unknown)}; use "
                f"policy or training fields: {', '.join(sorted(TRAIN_KEYS))}"
            )
        out.append(Variant(name.strip(), item, policy))
    return check_grid(out)


def check_grid(grid: list[Variant]) -> list[Variant]:
    """``grid`` if its names are unique and every policy and training setting is valid."""
    from privguard.defenses.output import parse_policy
    from privguard.models.train import TrainConfig

    names = [v.name for v in grid]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"variant names must be unique; repeated: {', '.join(dupes)}")
    for v in grid:
        parse_policy(v.policy)
        try:
            TrainConfig(**v.train)
        except TypeError as e:
            raise ConfigError(f"variant {v.name!r}: {e}") from None
    return grid


def allowed_attacks(attacks: str, policy: str | None) -> str:
    """The named attacks a policy leaves applicable (a ``label`` policy rules out the
    confidence-based ones: they are not run, which is the policy's effect)."""
    from privguard.attacks.registry import ATTACKS, discover, normalise
    from privguard.defenses.output import policy_access
    from privguard.oracle import Access

    cap = policy_access(Access.PROBS, policy)
    discover()
    names = normalise(attacks)
    kept = [n for n in names if n not in ATTACKS or ATTACKS[n].needs <= cap]
    if not kept:
        raise ConfigError(
            f"none of the sweep's attacks ({attacks}) applies under the policy {policy!r}; "
            "add a label-only attack (e.g. label-only-augmentation)"
        )
    return ",".join(kept)
