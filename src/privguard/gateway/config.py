"""The gateway's configuration: ``gateway.toml`` (tiers and server settings) and the settings
``privguard serve`` hands to its workers.

Example ``gateway.toml`` (see ``examples/gateway.toml`` and docs/gateway.md)::

    [server]
    db = "sqlite:///privguard-gateway.db"    # or postgresql+psycopg://user@host/db
    redis = ""                               # redis://host:6379/0 shares rate limits
    max_body_bytes = 1048576

    [tiers.label]
    access = "label"
    policy = "label"
    rate_limits = "10/second;1000/hour"      # the `limits` library's syntax
    daily_budget = 10000                     # records per key per UTC day
    max_batch = 64
    retain_inputs_days = 0                   # > 0 keeps raw inputs that long

A tier's answers are what its ``policy`` (the same output policies the audit measures) lets
through, capped by its ``access``: ``label`` < ``topk`` < ``probs`` < ``logits``. Gradients
(``whitebox``) are never served.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from privguard.defenses.output import Chain, parse_policy, policy_access
from privguard.errors import ConfigError
from privguard.gateway.text import check_text, printable
from privguard.oracle import Access

DEFAULT_DB = "sqlite:///privguard-gateway.db"
SETTINGS_ENV = "PRIVGUARD_GATEWAY_SETTINGS"
DB_ENV = "PRIVGUARD_DB"
REDIS_ENV = "PRIVGUARD_REDIS"
FINGERPRINT_KEY_ENV = "PRIVGUARD_FINGERPRINT_KEY"
SEAL_KEY_ENV = "PRIVGUARD_SEAL_KEY"

_TIER_KEYS = {"access", "policy", "rate_limits", "daily_budget", "max_batch", "retain_inputs_days"}
_TIER_KEYS |= {"topk"}


@dataclass(frozen=True)
class Tier:
    """What one class of client may do.

    Attributes:
        name: the tier's name (``[tiers.NAME]``), given to keys.
        access: the most an answer carries (``label``, ``topk``, ``probs``, ``logits``).
        policy: the output policy spec applied to every answer (``""`` = none).
        rate_limits: ``limits`` syntax, e.g. ``"10/second;1000/hour"``; requests, not records.
        daily_budget: records per key per UTC day (``None`` = unlimited).
        max_batch: the most records one request may carry.
        retain_inputs_days: keep raw inputs this long (0 = keep only HMAC fingerprints).
        topk: classes per answer for ``topk`` access when the policy does not say.
    """

    name: str
    access: Access = Access.LABEL
    policy: str = ""
    rate_limits: str = ""
    daily_budget: int | None = None
    max_batch: int = 64
    retain_inputs_days: float = 0.0
    topk: int = 3

    @cached_property
    def chain(self) -> Chain:
        return parse_policy(self.policy)

    @cached_property
    def exposure(self) -> Access:
        """What answers carry: the tier's access, capped by the policy, never gradients."""
        return min(policy_access(self.access, self.chain), Access.LOGITS)

    @property
    def k(self) -> int:
        return self.chain.k or self.topk

    def public(self) -> dict[str, Any]:
        return {
            "access": self.exposure.label,
            "policy": self.chain.spec,
            "max_batch": self.max_batch,
            "rate_limits": self.rate_limits,
            "daily_budget": self.daily_budget,
        }


@dataclass(frozen=True)
class ServerConfig:
    """Server-wide settings (``[server]``)."""

    db: str | None = None
    redis: str | None = None
    model_name: str | None = None
    max_body_bytes: int = 1_048_576
    key_cache_seconds: float = 5.0
    purge_interval_seconds: float = 3600.0
    log_retention_days: float | None = None
    fingerprint_key_file: str | None = None
    #: signs dashboard sessions; distinct from the fingerprint key (keyfiles.py)
    session_key_file: str | None = None
    #: encrypts retained raw inputs (keyfiles.py, store/crypto.py)
    inputs_key_file: str | None = None
    rate_limit_strategy: str = "moving-window"
    log_batch_max: int = 512


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    tiers: dict[str, Tier] = field(default_factory=dict)
    #: the ``[monitor]`` table, passed unchanged to the query monitor (issue 8)
    monitor: dict[str, Any] | None = None
    path: Path | None = None

    def tier(self, name: str | None) -> Tier | None:
        return self.tiers.get(name) if name else None

    @classmethod
    def from_toml(cls, path: str | Path) -> GatewayConfig:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no gateway config at {p}; see examples/gateway.toml") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"{p} is not a valid TOML file ({e}); fix it") from None
        return cls.from_dict(raw, path=p)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, path: Path | None = None) -> GatewayConfig:
        where = str(path) if path else "gateway config"
        unknown = set(raw) - {"server", "tiers", "monitor"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown section(s) {', '.join(sorted(unknown))}; "
                "use [server], [tiers.NAME] and [monitor]"
            )
        server = _server(raw.get("server", {}), where)
        tiers_raw = raw.get("tiers", {})
        if not isinstance(tiers_raw, dict) or not tiers_raw:
            raise ConfigError(f"{where}: define at least one tier, e.g. [tiers.label]")
        tiers = {name: _tier(name, t, where) for name, t in tiers_raw.items()}
        monitor = raw.get("monitor")
        if monitor is not None and not isinstance(monitor, dict):
            raise ConfigError(f"{where}: [monitor] must be a table")
        if monitor is not None and "runner" in monitor:
            from privguard.gateway.monitor_process import check_runner

            try:
                check_runner(monitor["runner"])
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        return cls(server=server, tiers=tiers, monitor=monitor, path=path)


def _server(raw: Any, where: str) -> ServerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [server] must be a table")
    known = {f for f in ServerConfig.__dataclass_fields__}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(
            f"{where}: unknown [server] setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    try:
        cfg = ServerConfig(**{k: (v if v != "" else None) for k, v in raw.items()})
    except TypeError as e:
        raise ConfigError(f"{where}: [server]: {e}") from None
    checks = [
        (isinstance(cfg.max_body_bytes, int) and cfg.max_body_bytes >= 1024, "max_body_bytes"),
        (_num(cfg.key_cache_seconds) and cfg.key_cache_seconds >= 0, "key_cache_seconds"),
        (_num(cfg.purge_interval_seconds) and cfg.purge_interval_seconds > 0, "purge_interval"),
        (cfg.log_retention_days is None or _num(cfg.log_retention_days), "log_retention_days"),
        (cfg.rate_limit_strategy in ("moving-window", "fixed-window"), "rate_limit_strategy"),
        (isinstance(cfg.log_batch_max, int) and cfg.log_batch_max >= 1, "log_batch_max"),
    ]
    for ok, name in checks:
        if not ok:
            raise ConfigError(
                f"{where}: [server] {name} has an invalid value; see docs/gateway.md "
                "(rate_limit_strategy: moving-window or fixed-window; sizes and times positive)"
            )
    return cfg


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _tier(name: str, raw: Any, where: str) -> Tier:
    check_text(name, f"{where}: the tier name {printable(name)!r}", max_len=100)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [tiers.{name}] must be a table")
    unknown = set(raw) - _TIER_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: [tiers.{name}] has unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_TIER_KEYS))}"
        )
    access = Access.parse(raw.get("access", "label"))
    if access >= Access.WHITEBOX:
        raise ConfigError(
            f"{where}: [tiers.{name}] access 'whitebox' is not servable: the gateway never "
            "returns gradients; use 'logits' at most"
        )
    policy = str(raw.get("policy", "") or "")
    parse_policy(policy)  # raises ConfigError with the policy syntax
    rate_limits = str(raw.get("rate_limits", "") or "")
    parse_rate_limits(rate_limits, f"{where}: [tiers.{name}]")
    budget = raw.get("daily_budget")
    if budget is not None and not (isinstance(budget, int) and budget >= 1):
        raise ConfigError(f"{where}: [tiers.{name}] daily_budget must be a positive integer")
    max_batch = raw.get("max_batch", 64)
    if not (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 1):
        raise ConfigError(f"{where}: [tiers.{name}] max_batch must be a positive integer")
    retain = raw.get("retain_inputs_days", 0)
    if not (_num(retain) and retain >= 0):
        raise ConfigError(f"{where}: [tiers.{name}] retain_inputs_days must be a number >= 0")
    topk = raw.get("topk", 3)
    if not (isinstance(topk, int) and topk >= 1):
        raise ConfigError(f"{where}: [tiers.{name}] topk must be a positive integer")
    return Tier(
        name=name,
        access=access,
        policy=policy,
        rate_limits=rate_limits,
        daily_budget=budget,
        max_batch=max_batch,
        retain_inputs_days=float(retain),
        topk=topk,
    )


def parse_rate_limits(spec: str, where: str = "rate limit") -> list[Any]:
    """``"10/second;1000/hour"`` -> ``limits`` items (empty spec: no limit)."""
    from limits import parse_many

    if not spec.strip():
        return []
    try:
        return list(parse_many(spec))
    except ValueError:
        raise ConfigError(
            f"{where}: cannot parse rate_limits {spec!r}; write e.g. '10/second;1000/hour'"
        ) from None


@dataclass
class ServeSettings:
    """What one gateway process needs; ``privguard serve`` passes it to each worker through
    the environment (``PRIVGUARD_GATEWAY_SETTINGS``, JSON)."""

    model: str
    config: str | None = None
    db: str | None = None
    redis: str | None = None
    seal_key_file: str | None = None
    #: migrations already run by the parent process (several workers must not race)
    migrated: bool = False
    #: uvicorn workers on this machine (``[monitor] runner = "auto"`` compares it with the cores)
    workers: int = 1

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigError(
                f"{SETTINGS_ENV} is not set; start the gateway with `privguard serve`"
            )
        return cls(**json.loads(raw))

    def load_config(self) -> GatewayConfig:
        if self.config:
            return GatewayConfig.from_toml(self.config)
        return GatewayConfig.from_dict({"tiers": {"label": {"access": "label"}}})

    def resolve_db(self, config: GatewayConfig) -> str:
        return self.db or os.environ.get(DB_ENV) or config.server.db or DEFAULT_DB

    def resolve_redis(self, config: GatewayConfig) -> str | None:
        return self.redis or os.environ.get(REDIS_ENV) or config.server.redis or None
