"""Alert delivery to a webhook: every monitor finding the gateway stores is also POSTed, as JSON,
to ``[monitor] webhook = "https://..."``.

Delivery is off the request path: :meth:`AlertWebhook.submit` only puts the alert on a bounded
queue (a full queue drops the alert, logs it and counts it), and one background thread per
gateway process sends each alert with a bounded number of retries (exponential back-off) on
connection errors, timeouts, 429 and 5xx answers. A failure is logged and counted on
``/metrics`` (``privguard_webhook_deliveries_total{outcome}``), never raised: the gateway's
answers do not depend on the receiver. Delivery is at least once per worker that raised the
alert; the receiver can deduplicate on the ``id`` field.

The body is the alert as ``GET /v1/admin/alerts`` shows it, plus ``id`` and ``gateway`` (the
model's name)::

    {"id": "5f0c...", "gateway": "digits-mlp", "client": "mallory", "detector": "similarity",
     "action": "throttle", "statistic": 7.0, "threshold": 5.0,
     "evidence": {"fingerprints": ["0a1b..."], ...}, "time": "2025-01-01T12:00:00.123456Z"}

With ``[monitor] webhook_secret = "..."`` each request carries
``X-Privguard-Signature: sha256=<hex HMAC-SHA256 of the body>`` so the receiver can check where
it came from.

The URL itself is a secret (its path or query is often the receiver's token): logs show it only
through :func:`~privguard.gateway.redact.redact_url` (scheme and host).

Example:
    >>> hook = AlertWebhook.from_config({"webhook": "http://127.0.0.1:9000/alerts"})
    >>> hook.start(); hook.submit(alert); hook.stop()
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from privguard.errors import ConfigError
from privguard.gateway.redact import redact_text, redact_url

log = logging.getLogger("privguard.gateway")

SIGNATURE_HEADER = "X-Privguard-Signature"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_STOP = object()


def alert_payload(row: dict[str, Any], gateway: str) -> dict[str, Any]:
    """The webhook body of one stored alert row (``evidence`` as JSON text, ``time`` a naive UTC
    datetime): the alert as ``GET /v1/admin/alerts`` shows it, plus ``gateway``."""
    t = row["time"]
    if isinstance(t, datetime):
        t = t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    evidence = row.get("evidence") or {}
    return {
        "gateway": gateway,
        "client": row["client"],
        "detector": row["detector"],
        "action": row["action"],
        "statistic": row.get("statistic"),
        "threshold": row.get("threshold"),
        "evidence": json.loads(evidence) if isinstance(evidence, str) else evidence,
        "time": t,
    }


class AlertWebhook:
    """POST alerts to ``url`` from a background thread.

    Args:
        url: an ``http://`` or ``https://`` URL.
        secret: signs each body with HMAC-SHA256 (``X-Privguard-Signature``) when given.
        retries: further attempts after a failed one (connection error, timeout, 408 / 425 /
            429 / 5xx); other 4xx answers are not retried.
        timeout: seconds per attempt.
        backoff: seconds before the first retry; doubled each time, at most 30 s.
        max_queue: alerts waiting to be sent; further ones are dropped (logged, counted).
        registry: a Prometheus registry to count deliveries in (by outcome: ``sent``,
            ``failed``, ``dropped``).
        verify: TLS verification (``False`` or a CA bundle path).
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        retries: int = 3,
        timeout: float = 5.0,
        backoff: float = 0.5,
        max_queue: int = 1000,
        registry: Any = None,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f'[monitor] webhook must be an http(s) URL such as "https://host/alerts", '
                f"not {redact_url(url, path=False)!r}"
            )
        if not (isinstance(retries, int) and 0 <= retries <= 10):
            raise ConfigError("[monitor] webhook_retries must be an integer from 0 to 10")
        if not (timeout > 0 and backoff >= 0 and max_queue >= 1):
            raise ConfigError("[monitor] webhook_timeout must be a positive number of seconds")
        self.url = url
        #: what logs show: the path and query of a webhook URL are often its token
        self.shown_url = redact_url(url, path=False)
        self.secret = secret.encode() if secret else None
        self.retries = retries
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.verify = verify
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.deliveries = None
        if registry is not None:
            from prometheus_client import Counter

            self.deliveries = Counter(
                "privguard_webhook_deliveries",
                "Alerts delivered to the webhook, by outcome (sent, failed, dropped)",
                ["outcome"],
                registry=registry,
            )
            for outcome in ("sent", "failed", "dropped"):
                self.deliveries.labels(outcome)

    @classmethod
    def from_config(
        cls, monitor: dict[str, Any] | None, *, registry: Any = None
    ) -> AlertWebhook | None:
        """The webhook of a ``[monitor]`` table (``webhook``, ``webhook_secret``,
        ``webhook_retries``, ``webhook_timeout``), or ``None`` without ``webhook``."""
        url = (monitor or {}).get("webhook")
        if url in (None, ""):
            return None
        if not isinstance(url, str):
            raise ConfigError('[monitor] webhook must be a URL string, e.g. "https://host/alerts"')
        secret = monitor.get("webhook_secret")
        if secret is not None and not isinstance(secret, str):
            raise ConfigError("[monitor] webhook_secret must be a string")
        timeout = monitor.get("webhook_timeout", 5.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            raise ConfigError("[monitor] webhook_timeout must be a positive number of seconds")
        return cls(
            url,
            secret=secret or None,
            retries=monitor.get("webhook_retries", 3),
            timeout=float(timeout),
            registry=registry,
        )

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="privguard-webhook", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then stop the thread."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = self._queue.qsize()
        if self._thread.is_alive() or left:
            log.warning(
                "webhook: stopped with %d alert(s) not delivered to %s", left, self.shown_url
            )
        self._thread = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- sending ----------------------------------------------------------------------------
    def submit(self, alert: dict[str, Any]) -> bool:
        """Queue one alert (never blocks); ``False`` when the queue is full and it was dropped."""
        body = {"id": uuid.uuid4().hex, **alert}
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning("webhook: queue full, alert for %s dropped", alert.get("client"))
            self._count("dropped")
            return False
        return True

    def _count(self, outcome: str) -> None:
        if self.deliveries is not None:
            self.deliveries.labels(outcome).inc()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout, verify=self.verify) as client:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                try:
                    ok = self._deliver(client, item)
                except Exception as e:  # noqa: BLE001 - the sender must outlive any one alert
                    # the type only: an HTTP library's message may quote the URL (its token)
                    log.error(
                        "webhook: alert %s could not be sent to %s (%s)",
                        item.get("id"),
                        self.shown_url,
                        type(e).__name__,
                    )
                    ok = False
                self._count("sent" if ok else "failed")

    def _deliver(self, client: Any, alert: dict[str, Any]) -> bool:
        import httpx

        data = json.dumps(_finite(alert), allow_nan=False, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "privguard-gateway"}
        if self.secret is not None:
            digest = hmac.new(self.secret, data, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                # while stopping, retries are cut short so shutdown stays bounded
                wait = min(self.backoff * 2 ** (attempt - 1), 30.0)
                if self._stopping.wait(wait):
                    break
            try:
                r = client.post(self.url, content=data, headers=headers)
            except httpx.HTTPError as e:
                why = redact_text(f"{type(e).__name__}: {e}", path=False)
                continue
            if r.status_code < 300:
                return True
            why = f"HTTP {r.status_code}"
            if r.status_code not in _RETRY_STATUS:
                break
        log.warning(
            "webhook: alert %s (%s on %s) not delivered to %s: %s",
            alert.get("id"),
            alert.get("detector"),
            alert.get("client"),
            self.shown_url,
            why or "stopped",
        )
        return False


def _finite(v: Any) -> Any:
    """``v`` with NaN and infinities replaced by ``None`` (JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v
