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

Flags given on the command line override the file; relative paths in the file are taken
relative to the file's folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
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
    out: str = "privguard-report"
    fail_on: str | None = None

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
            if base is not None and k in PATH_KEYS and not _is_builtin_name(k, v):
                v = str(base / v)
            values[k] = v
        return AuditPlan(**values)

    def check(self) -> None:
        if not self.model:
            raise ConfigError("no model to audit: pass --model DIR (or set model in the plan)")
        if self.fail_on is not None and self.fail_on not in ("low", "medium", "high"):
            raise ConfigError(f"--fail-on takes low, medium or high, not {self.fail_on!r}")
        from privguard.defenses.output import parse_policy

        parse_policy(self.policy)  # a policy that does not parse fails before any work


def _normalise(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    out = {k.replace("-", "_"): v for k, v in raw.items()}
    attacks = out.get("attacks")
    if isinstance(attacks, list):
        out["attacks"] = ",".join(map(str, attacks))
    expected = {"seed": int, "budget": int, "jobs": int}
    for key, typ in expected.items():
        if key in out and not isinstance(out[key], typ):
            raise ConfigError(f"{path}: {key} must be an integer")
    keys = ("model", "data", "label", "attacks", "access", "policy", "sensitive", "out", "fail_on")
    for key in (*keys, "scheduler", "cache_dir"):
        if key in out and not isinstance(out[key], str):
            raise ConfigError(f"{path}: {key} must be a string")
    return out


def _is_builtin_name(key: str, value: str) -> bool:
    if key != "data":
        return False
    from privguard.data import BUILTIN

    return value in BUILTIN
