"""The gateway's state and its predict path: one :class:`Gateway` per process holds the model,
tiers, store, limiter, log writer and monitor; :meth:`Gateway.predict` takes an authenticated
key and a request body through rate limit, validation, budget, answer, monitor and log (the
order in ``app.py``'s docstring). HTTP stays in ``routers/``; this module sees bytes and keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import numpy as np
import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from privguard.defenses.output import answer_labels
from privguard.errors import ConfigError
from privguard.gateway import keys as keystore
from privguard.gateway.auth import FailedAuth, auth_error, unknown_key
from privguard.gateway.config import GatewayConfig, Tier
from privguard.gateway.errors import GatewayError
from privguard.gateway.inputs import Fingerprinter, parse_inputs
from privguard.gateway.keys import KeyInfo
from privguard.gateway.limits import Limiter
from privguard.gateway.metrics import Metrics
from privguard.gateway.monitor_process import (
    PROCESS_LINGER,
    MonitorProcess,
    json_plain,
    runner_of,
)
from privguard.gateway.store import InputCipher, LogWriter, Store, utcnow
from privguard.gateway.watch import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_STATE_TTL,
    DROP_ALERT_SECONDS,
    Holds,
    Observations,
    SharedStates,
    account_hold_id,
    drop_alert_row,
)
from privguard.gateway.webhook import AlertWebhook, alert_payload
from privguard.oracle import Access, top_k

log = logging.getLogger("privguard.gateway")

#: bodies of at least this many bytes are parsed, and batches of at least this many numbers
#: answered, in a worker thread (issue 16, item 11)
OFFLOAD_BYTES = 64 * 1024
OFFLOAD_ELEMENTS = 8192


class Gateway:
    """Everything one gateway process holds: model, tiers, store, limiter, writer, monitor."""

    def __init__(
        self,
        target: Any,
        config: GatewayConfig,
        store: Store,
        limiter: Limiter,
        fingerprint_key: bytes,
        *,
        name: str,
        monitor: Any = None,
        session_key: bytes | None = None,
        inputs_key: bytes | None = None,
        workers: int = 1,
    ) -> None:
        self.target = target
        self.config = config
        self.store = store
        self.limiter = limiter
        self.fingerprint_key = fingerprint_key
        #: signs dashboard sessions; never the fingerprint key (keyfiles.py)
        self.session_key = session_key
        self.name = name
        self.monitor = monitor
        if monitor is not None and hasattr(monitor, "use_fingerprint_key"):
            monitor.use_fingerprint_key(fingerprint_key)  # alert evidence: keyed, as the log
        # retained raw inputs are stored encrypted, under a key kept outside the database
        self.inputs_cipher = InputCipher(inputs_key) if inputs_key else None
        if self.inputs_cipher is None and any(
            t.retain_inputs_days > 0 for t in config.tiers.values()
        ):
            raise ConfigError("a tier retains inputs: the gateway needs an inputs key")
        self.metrics = Metrics()
        # alerts also go to [monitor] webhook, from a background thread (webhook.py)
        self.webhook = AlertWebhook.from_config(config.monitor, registry=self.metrics.registry)
        self.writer = LogWriter(
            store, max_batch=config.server.log_batch_max, on_commit=self.metrics.on_commit
        )
        self.rng = np.random.default_rng()
        self.input_shape = tuple(int(d) for d in target.input_shape)
        b = (getattr(target, "dataset", None) or {}).get("bounds")
        self.bounds = (float(b[0]), float(b[1])) if b else None
        self._keys: dict[str, tuple[KeyInfo, float]] = {}
        self.failed_auth = FailedAuth()
        # the monitor's throttles and blocks (Redis when shared, else here; the database
        # always) and the bounded queue that keeps its detectors off the request path (watch.py)
        mon = config.monitor or {}
        self.holds = Holds(store, limiter.redis_url)
        process = monitor is not None and runner_of(mon, workers) == "process"
        self.monitor_runner_auto = mon.get("runner", "thread") == "auto"
        self.observations = Observations(
            self._observe_now,
            _queue_size(mon.get("queue_size")),
            on_drop=self._dropped,
            on_fail=self.metrics.monitor_failed.inc,
            # a round's trip to the detectors' child costs about as much as a 1-record batch's
            # detectors: collect for 2 ms first (monitor_process.py)
            linger=PROCESS_LINGER if process else 0.0,
        )
        self._drop_alerted = -math.inf
        # with Redis, each client's detector state is shared by every worker and replica
        self.shared_states = None
        ttl = _seconds(mon.get("state_ttl_seconds"))
        if monitor is not None and limiter.redis_url and hasattr(monitor, "dump_state"):
            self.shared_states = SharedStates(limiter.redis_url, monitor, ttl=ttl)
        # the detectors run in a child process when [monitor] runner says so ("process", or
        # "auto" on a machine with more cores than workers; monitor_process.py); a monitor the
        # child could not rebuild exactly (an injected clock, a subclass, ...): a thread
        self.monitor_process = None
        if process:
            try:
                self.monitor_process = MonitorProcess(
                    monitor, redis_url=limiter.redis_url if self.shared_states else None, ttl=ttl
                )
            except ValueError as e:
                log.warning("query monitor: runs in a thread, not a child process: %s", e)
                self.observations.linger = 0.0
        self.chains = {name: t.chain for name, t in config.tiers.items()}
        self.fingerprinter = Fingerprinter(fingerprint_key)  # keyed once, copied per record
        self.specs = {name: chain.spec for name, chain in self.chains.items()}  # built once

    # -- auth ----------------------------------------------------------------------------
    async def authenticate(self, secret: str | None, address: str | None = None) -> KeyInfo:
        """The key of ``secret``, presented from ``address``: verified keys are cached for
        ``key_cache_seconds``; bad secrets and floods of them are refused without a database
        lookup (:class:`~privguard.gateway.auth.FailedAuth`)."""
        if not secret:
            raise auth_error(
                "missing_api_key",
                "send an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            )
        h = keystore.hash_secret(secret)
        now = time.monotonic()
        cached = self._keys.get(h)
        if cached is not None and cached[1] > now:
            key = cached[0]
        else:
            self.failed_auth.check(h, address)
            key = await run_in_threadpool(keystore.lookup, self.store, secret)
            if key is None:
                self.failed_auth.failed(h, address)
                raise unknown_key()
            self.failed_auth.verified(h)
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[h] = (key, now + self.config.server.key_cache_seconds)
        if key.revoked:
            raise auth_error(
                "revoked_api_key", "this API key was revoked; ask the gateway's admin for another"
            )
        if key.expired():
            raise auth_error(
                "expired_api_key", "this API key has expired; ask the gateway's admin for another"
            )
        return key

    def forget_key(self, key_id: str) -> None:
        for h, (k, _) in list(self._keys.items()):
            if k.id == key_id:
                del self._keys[h]

    def tier_of(self, key: KeyInfo) -> Tier:
        tier = self.config.tier(key.tier)
        if tier is None:
            raise GatewayError(
                403,
                "no_tier",
                f"this key's tier {key.tier!r} is not served by this gateway; ask the admin to "
                f"set one of: {', '.join(sorted(self.config.tiers))}",
            )
        return tier

    async def check_held(self, key: KeyInfo) -> None:
        """Refuse ``key`` while the monitor holds it or its account (the keys of its owner;
        throttle: 429, block: 403)."""
        if self.monitor is not None:
            await self.holds.check(key.id)
            if key.owner:
                await self.holds.check(account_hold_id(key.owner))

    # -- answers -------------------------------------------------------------------------
    def answer(
        self, x: np.ndarray, tier: Tier
    ) -> tuple[dict[str, Any], np.ndarray, Any, np.ndarray]:
        """The JSON answer for ``x`` under ``tier``, the labels, the served probabilities and
        the top served score per record (NaN when labels only; the log's output summary)."""
        p = np.asarray(self.target.predict_proba(x), dtype=np.float64)
        chain = self.chains[tier.name]
        q = chain.apply(p, self.rng) if chain.steps else p
        labels = answer_labels(q)
        exposure = tier.exposure
        out: dict[str, Any] = {
            "model": self.name,
            "access": exposure.label,
            "policy": self.specs[tier.name],
            "labels": labels.tolist(),
        }
        top = None
        if exposure == Access.TOPK:
            k = min(tier.k, q.shape[1])
            idx, scores = top_k(q, k)
            out["classes"] = idx.tolist()
            out["scores"] = scores.tolist()
            top = scores[:, 0]
        if exposure >= Access.PROBS:
            out["probs"] = q.tolist()
            top = np.max(q, axis=1)
        if exposure >= Access.LOGITS and not chain.steps:
            out["logits"] = np.asarray(self.target.predictor.predict_logits(x)).tolist()
        if top is None:
            top = np.full(len(labels), np.nan)
        return out, labels, (q if exposure >= Access.PROBS else None), top

    def log_row(
        self,
        key: KeyInfo,
        tier: Tier | None,
        status: int,
        t0: float,
        *,
        x: np.ndarray | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "time": utcnow(),
            "key_id": key.id,
            "client": key.name,
            "tier": tier.name if tier else None,
            "status": status,
            "n_inputs": 0 if x is None else len(x),
            "fingerprints": self.fingerprinter.json(x),
            "outputs": json.dumps(outputs or {}),
            "access": tier.exposure.label if tier else None,
            "policy": self.specs.get(tier.name) if tier else None,
            "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def observe(self, key: KeyInfo, x: np.ndarray, labels: np.ndarray, probs: Any) -> bool:
        """Queue the answered batch for the monitor (never waits: a full queue drops it,
        counted and alerted); whether it was queued."""
        if self.monitor is None:
            return False
        return self.observations.submit((key, x, labels, probs))

    async def _observe_now(self, items: list[tuple[KeyInfo, np.ndarray, np.ndarray, Any]]) -> None:
        """Run the monitor on a round of queued batches, grouped by key (in a worker thread;
        with Redis against each client's shared state, watch.SharedStates) and act on the
        findings: every finding becomes an alert row; ``block`` holds the key until an admin
        releases it, ``throttle`` for ``throttle_seconds`` (``[monitor]``, default 60), from
        its next request on (watch.py)."""
        groups: dict[str, list[tuple[KeyInfo, np.ndarray, np.ndarray, Any]]] = {}
        for item in items:
            groups.setdefault(item[0].id, []).append(item)
        for group in groups.values():
            key = group[0][0]
            try:
                if self.monitor_process is not None:
                    batches = [(x, labels, probs) for _, x, labels, probs in group]
                    findings = await self.monitor_process.observe(
                        key.name, key.tier, key.owner, batches
                    )
                else:
                    findings = await run_in_threadpool(self._run_monitor, key, group)
            except Exception as e:  # noqa: BLE001 - one client's failure spares the others
                self.observations.failed += len(group)
                self.metrics.monitor_failed.inc(len(group))
                log.error(
                    "query monitor: %d batches of one client failed: %s",
                    len(group),
                    type(e).__name__,
                )
                continue
            if findings:
                await self._act(key, findings)

    def _run_monitor(self, key: KeyInfo, group: list[tuple[Any, ...]]) -> list[Any]:
        batches = [(x, labels, probs) for _, x, labels, probs in group]
        if self.shared_states is not None:
            return self.shared_states.observe(key.name, batches, tier=key.tier, account=key.owner)
        findings = []
        for b in batches:
            findings += self.monitor.observe(key.name, *b, tier=key.tier, account=key.owner)
        return findings

    async def _act(self, key: KeyInfo, findings: list[Any]) -> None:
        rows = []
        for f in findings:
            self.metrics.findings.labels(f.detector, f.action).inc()
            rows.append(
                {
                    "time": utcnow(),
                    "client": key.name,
                    "detector": f.detector,
                    "action": f.action,
                    "statistic": _finite(f.statistic),
                    "threshold": _finite(f.threshold),
                    "evidence": json.dumps(f.evidence, default=json_plain),
                }
            )
        # a finding on the account's state holds the account (every key of the owner), one on
        # the key's own state the key; a block wins over a throttle in each
        strongest: dict[str, Any] = {}
        for f in findings:
            if f.action not in ("block", "throttle"):
                continue
            account = f.evidence.get("account")
            scope = account_hold_id(account) if account else key.id
            current = strongest.get(scope)
            if current is None or (f.action == "block" and current.action != "block"):
                strongest[scope] = f
        seconds = float((self.config.monitor or {}).get("throttle_seconds", 60))
        for scope, f in strongest.items():
            await self.holds.put(scope, f.action, seconds, f.detector)
        await run_in_threadpool(self.store.add_alerts, rows)
        if self.webhook is not None:
            for row in rows:
                self.webhook.submit(alert_payload(row, self.name))

    def _dropped(self, count: int) -> None:
        """A batch the full queue could not take: count it; store an alert at most once per
        ``DROP_ALERT_SECONDS`` (in the background: the request does not wait)."""
        self.metrics.monitor_dropped.inc()
        now = time.monotonic()
        if now - self._drop_alerted < DROP_ALERT_SECONDS:
            return
        self._drop_alerted = now
        row = drop_alert_row(count, self.observations.maxsize)
        task = asyncio.get_running_loop().run_in_executor(None, self.store.add_alerts, [row])
        task.add_done_callback(lambda t: t.exception())  # a failed insert is not re-raised
        if self.webhook is not None:
            self.webhook.submit(alert_payload(row, self.name))

    # -- the predict path ------------------------------------------------------------------
    async def predict(
        self, key: KeyInfo, read_body: Callable[[], Awaitable[bytes]], t0: float
    ) -> bytes:
        """The JSON answer to ``POST /v1/predict`` for the authenticated ``key``: held by the
        monitor? -> tier -> rate limit -> body (``read_body``, size-limited) -> validate ->
        answer -> queued for the monitor -> budget (Redis; without Redis, by the log writer in
        the logging transaction) -> log (committed before the answer is returned). The
        monitor's verdict on this batch applies from the key's next request (watch.py). Every
        refusal is a :class:`GatewayError`, logged as a row with its code."""
        tier = None
        x = None
        try:
            await self.check_held(key)
            tier = self.tier_of(key)
            await self.limiter.hit(key.id, tier)
            body = await read_body()
            # a large batch is parsed and answered in a worker thread, so that it does not
            # stall the event loop; a small one is answered faster here than a thread hop
            parse = partial(
                parse_inputs, body, self.input_shape, bounds=self.bounds, max_batch=tier.max_batch
            )
            x = await run_in_threadpool(parse) if len(body) >= OFFLOAD_BYTES else parse()
            if x.size >= OFFLOAD_ELEMENTS:
                out, labels, probs, top = await run_in_threadpool(self.answer, x, tier)
            else:
                out, labels, probs, top = self.answer(x, tier)
            # charged only when answered: by the log writer, in the transaction that logs the
            # answer, when budgets live in the database; else here (Redis)
            charge = self.limiter.charge_in_log(key.id, tier, len(x))
            if charge is None:
                await self.limiter.spend(key.id, tier, len(x))
            # queued now, while the log commits, so that the detectors have a head start on
            # the client's next request (a batch the budget then refuses is watched too)
            self.observe(key, x, labels, probs)
        except GatewayError as e:
            self.writer.submit(
                self.log_row(key, tier, e.status, t0, x=x, outputs={"error": e.code})
            )
            raise
        large = x.size >= OFFLOAD_ELEMENTS  # its log row and JSON too
        finish = partial(self._answered, key, tier, t0, x, out, top)
        row, inputs, answer = await run_in_threadpool(finish) if large else finish()
        try:
            charged = await self.writer.write(row, inputs, charge=charge)
        except SQLAlchemyError:
            raise GatewayError(
                503,
                "audit_log_unavailable",
                "the answer could not be logged, so it is withheld; retry shortly",
                {"Retry-After": "1"},
            ) from None
        if charged is not None and not charged[0]:  # logged as refused by the writer
            raise self.limiter.over_budget(tier, len(x), charged[1])
        self.metrics.child(self.metrics.records, tier.name).inc(len(x))
        self.metrics.child(self.metrics.latency, tier.name).observe(time.perf_counter() - t0)
        return answer

    def _answered(
        self, key: KeyInfo, tier: Tier, t0: float, x: np.ndarray, out: dict[str, Any], top: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None, bytes]:
        """The log row of an answered batch, its retained inputs (when the tier keeps them)
        and the answer's JSON."""
        row = self.log_row(
            key,
            tier,
            200,
            t0,
            x=x,
            outputs={"labels": out["labels"], "top": np.round(top, 4).tolist()},
        )
        inputs = None
        if tier.retain_inputs_days > 0:
            inputs = [
                {
                    "query_id": row["id"],
                    "data": self.inputs_cipher.encrypt(json.dumps(x.tolist()), row["id"]),
                    "expires_at": row["time"] + timedelta(days=tier.retain_inputs_days),
                }
            ]
        return row, inputs, orjson.dumps(out)

    def model_info(self, key: KeyInfo) -> dict[str, Any]:
        """Public metadata of the model, and what ``key``'s tier gets (``GET /v1/model``)."""
        tier = self.config.tier(key.tier)
        ds = getattr(self.target, "dataset", None) or {}
        public = (
            tier.public()
            if tier
            else {
                "access": "none",
                "policy": "none",
                "max_batch": 0,
                "rate_limits": "",
                "daily_budget": None,
            }
        )
        return {
            "name": self.name,
            "kind": getattr(self.target, "kind", "model"),
            "data_kind": ds.get("kind"),
            "input_shape": list(self.input_shape),
            "n_classes": int(self.target.n_classes),
            "classes": [str(c) for c in ds.get("classes", range(self.target.n_classes))],
            "bounds": list(self.bounds) if self.bounds else None,
            "tier": tier.name if tier else None,
            **public,
        }


def _queue_size(v: Any) -> int:
    if v is None:
        return DEFAULT_QUEUE_SIZE
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"[monitor] queue_size must be a whole number >= 1, not {v!r}")
    return v


def _seconds(v: Any) -> float:
    if v is None:
        return float(DEFAULT_STATE_TTL)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1:
        raise ConfigError(
            f"[monitor] state_ttl_seconds must be a number of seconds >= 1, not {v!r}"
        )
    return float(v)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def unknown_tier(tier: str, config: GatewayConfig) -> GatewayError:
    return GatewayError(
        422,
        "unknown_tier",
        f"no tier {tier[:100]!r}; use one of: {', '.join(sorted(config.tiers))}",
    )


def no_key(key_id: str) -> GatewayError:
    return GatewayError(404, "no_such_key", f"no key {key_id[:100]!r}; list them at /v1/admin/keys")
