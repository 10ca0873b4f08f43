"""An audit plan: what to attack, how, and where to write — from CLI flags or a TOML file.

A plan file holds the same keys as ``privguard audit``'s flags::

    model = "model-dir"          # required here or on the command line
    data = "people.csv"          # optional: default is the data recorded in model.json
    label = "income"
    attacks = ["membership"]     # or "loss-threshold,entropy-threshold"
    access = "probs"
    policy = "topk:3,round:2"    # output policy the answers pass through (a deployment's)
    sensitive = "sex"            # the hidden field for attribute inference (tabular data)
    seed = 0
    budget = 10000
    jobs = 2                     # processes for shadow / reference models
    scheduler = "tcp://10.0.0.5:8786"   # or a Dask cluster instead
    cache-dir = ".privguard-cache"      # trained reference models, reused across runs
    out = "privguard-report"
    fail_on = "high"

Per-attack settings (what each attack declares; ``privguard attacks --settings`` lists them)
go in ``[attacks.NAME]`` tables. TOML then needs the selection inside the ``[attacks]`` table
too, as ``select``::

    [attacks]
    select = ["membership"]
    [attacks.lira-online]
    n_reference = 32

On the command line the same is ``--set lira-online.n_reference=32`` (repeatable; see
:func:`parse_set`), in Python ``privguard.audit(..., settings={"lira-online": {"n_reference":
32}})``. Flags given on the command line override the file (``--set`` per setting); relative
paths in the file are taken relative to the file's folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from privguard.errors import ConfigError

PATH_KEYS = ("model", "data", "out", "cache_dir")


@dataclass
class AuditPlan:
    model: str | None = None
    data: str | None = None
    label: str | None = None
    attacks: str = "all"
    access: str = "probs"
    policy: str | None = None
    sensitive: str | None = None
    seed: int = 0
    budget: int | None = None
    jobs: int = 1
    scheduler: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    out: str = "privguard-report"
    fail_on: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str | None = None
    text_column: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> AuditPlan:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no plan file at {p}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the plan file {p}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p} is not valid TOML: {e}") from None
        return cls().merged(_normalise(raw, p), base=p.parent)

    def merged(self, overrides: dict[str, Any], *, base: Path | None = None) -> AuditPlan:
        """A copy with the non-``None`` values of ``overrides`` applied."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"unknown plan key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in overrides.items():
            if v is None:
                continue
            if k == "settings":
                values[k] = merge_settings(values[k], v)
                continue
            if base is not None and k in PATH_KEYS and not _is_builtin_name(k, v):
                v = str(base / v)
            values[k] = v
        return AuditPlan(**values)

    def check(self) -> None:
        if not self.model:
            raise ConfigError("no model to audit: pass --model DIR (or set model in the plan)")
        if self.fail_on is not None and self.fail_on not in ("low", "medium", "high"):
            raise ConfigError(f"--fail-on takes low, medium or high, not {self.fail_on!r}")
        from privguard.audit.engine import check_settings
        from privguard.defenses.output import parse_policy

        parse_policy(self.policy)  # a policy that does not parse fails before any work
        check_settings(self.settings)  # and so does an unknown attack setting
        from privguard.training.device import resolve_device

        resolve_device(self.device)  # and cuda without a GPU


def parse_set(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``--set NAME.KEY=VALUE`` strings -> ``{NAME: {KEY: VALUE}}`` (values stay strings; the
    attack's declared settings convert and check them).

    Example:
        >>> parse_set(["lira-online.n_reference=32", "rmia.offline=false"])
        {'lira-online': {'n_reference': '32'}, 'rmia': {'offline': 'false'}}
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        name, dot, setting = key.strip().rpartition(".")
        if not eq or not dot or not name.strip() or not setting.strip() or not value.strip():
            raise ConfigError(
                f"--set takes ATTACK.SETTING=VALUE (e.g. lira-online.n_reference=32), not {item!r}"
            )
        out.setdefault(name.strip().lower(), {})[setting.strip()] = value.strip()
    return out


def merge_settings(
    base: Mapping[str, Mapping[str, Any]], override: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per-attack settings of ``base`` with those of ``override`` applied key by key."""
    out = {name: dict(values) for name, values in base.items()}
    for name, values in override.items():
        out.setdefault(name, {}).update(values)
    return out


def _normalise(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    out = {k.replace("-", "_"): v for k, v in raw.items()}
    if "settings" in out:
        raise ConfigError(f"{path}: attack settings go in [attacks.NAME] tables")
    attacks = out.get("attacks")
    if isinstance(attacks, dict):  # [attacks] select = [...] and [attacks.NAME] settings
        table = dict(attacks)
        select = table.pop("select", None)
        for name, values in table.items():
            if not isinstance(values, dict):
                raise ConfigError(
                    f"{path}: [attacks] holds select = [...] and [attacks.NAME] tables of "
                    f"settings; {name} = {values!r} is neither"
                )
        out["settings"] = {str(n).lower(): dict(v) for n, v in table.items()}
        if select is None:
            out.pop("attacks")
        else:
            out["attacks"] = attacks = select
    if isinstance(attacks, list):
        out["attacks"] = ",".join(map(str, attacks))
    expected = {"seed": int, "budget": int, "jobs": int}
    for key, typ in expected.items():
        if key in out and not isinstance(out[key], typ):
            raise ConfigError(f"{path}: {key} must be an integer")
    keys = ("model", "data", "label", "attacks", "access", "policy", "sensitive", "out", "fail_on")
    for key in (*keys, "scheduler", "cache_dir", "device"):
        if key in out and not isinstance(out[key], str):
            raise ConfigError(f"{path}: {key} must be a string")
    return out


def _is_builtin_name(key: str, value: str) -> bool:
    if key != "data":
        return False
    from privguard.data import BUILTIN

    return value in BUILTIN
