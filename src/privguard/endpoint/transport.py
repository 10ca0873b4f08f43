"""The HTTP transport: :class:`HttpPredictor`, a model behind an endpoint as a predictor.

It sends records (httpx), reads the answers through the :class:`~privguard.endpoint.mapping.
EndpointMap` (or the gateway's own format), and handles the network: connection failures and
502 / 503 / 504 are retried with exponential back-off, a 429 waits its ``Retry-After`` (or
raises :class:`~privguard.errors.BudgetExhaustedError` when the wait is too long), 401 / 403
raise :class:`~privguard.errors.AccessError`.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np

from privguard.endpoint.access import _policy_cap, _policy_k, check_access
from privguard.endpoint.mapping import (
    GATEWAY_PREDICT,
    EndpointError,
    EndpointMap,
    assign,
    extract,
)
from privguard.errors import AccessError, BudgetExhaustedError, ConfigError, DataError
from privguard.oracle import Access, Oracle

RETRY_STATUS = (502, 503, 504)


# -- the predictor ------------------------------------------------------------------------------


class HttpPredictor:
    """A model behind an HTTP endpoint, as a :class:`~privguard.oracle.Predictor`.

    Args:
        url: the gateway's base URL (``http://127.0.0.1:8000``; a trailing ``/v1/predict`` is
            accepted), or, with a mapping for another API, the full prediction URL.
        api_key: the secret sent with every request (``None``: no auth header).
        mapping: how to talk to a non-privguard API (default: the gateway's contract).
        timeout: seconds per HTTP request.
        retries: further attempts after a connection error or a 502 / 503 / 504.
        max_retry_after: the longest single ``Retry-After`` obeyed; a longer one (a spent daily
            budget) raises :class:`~privguard.errors.BudgetExhaustedError`.
        max_wait: the most seconds spent waiting on 429s over the predictor's life.
        verify: TLS verification: ``True`` (system CAs, or the file named by
            ``$SSL_CERT_FILE``), a CA bundle path (a self-signed server's certificate), or
            ``False``.

    Example:
        >>> p = HttpPredictor("http://127.0.0.1:8000", api_key=secret)
        >>> oracle = p.oracle()           # at the access the server grants this key
        >>> oracle.labels(x)
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        mapping: EndpointMap | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_after: float = 60.0,
        max_wait: float = 900.0,
        verify: bool | str = True,
    ) -> None:
        import httpx

        self.mapping = mapping or EndpointMap()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"--endpoint must be an http(s) URL such as http://host:8000, not {url!r}"
            )
        if self.mapping.gateway:
            base = url.rstrip("/")
            if base.endswith(GATEWAY_PREDICT):
                base = base[: -len(GATEWAY_PREDICT)]
            self.url = base
            self.predict_url = base + GATEWAY_PREDICT
        else:
            self.url = self.predict_url = url
        if retries < 0 or max_retry_after < 0 or max_wait < 0 or timeout <= 0:
            raise ConfigError("retries, waits and the timeout must not be negative")
        self.retries = retries
        self.max_retry_after = max_retry_after
        self.max_wait = max_wait
        headers = {"Accept": "application/json", "User-Agent": "privguard-http-oracle"}
        if api_key is not None:
            headers[self.mapping.auth_header] = f"{self.mapping.auth_scheme}{api_key}"
        self._client = httpx.Client(headers=headers, timeout=timeout, verify=verify)
        self.queries = 0
        self.requests = 0
        self.rate_limited = 0
        self.retried = 0
        self.waited_seconds = 0.0
        self.metadata: dict[str, Any] = {}
        try:
            self._describe()
        except BaseException:
            self._client.close()
            raise

    # -- metadata -------------------------------------------------------------------------------
    def _describe(self) -> None:
        m = self.mapping
        meta: dict[str, Any] = {}
        if m.metadata is not None:
            meta_url = m.metadata if "://" in m.metadata else urljoin(self.url + "/", m.metadata)
            r = self._send("GET", meta_url)
            meta = self._json(r, "metadata")
            if not isinstance(meta, dict):
                raise EndpointError(f"{meta_url} answered {type(meta).__name__}, not an object")
        self.metadata = meta
        shape = m.input_shape or meta.get("input_shape")
        classes = m.classes or meta.get("classes")
        n_classes = m.n_classes or meta.get("n_classes") or (len(classes) if classes else None)
        if not shape or not n_classes:
            raise EndpointError(
                "the endpoint's metadata gives no input_shape / n_classes; set them in the "
                "mapping file's [model] table"
            )
        try:
            self.input_shape = tuple(int(d) for d in shape)
            self.n_classes = int(n_classes)
        except (TypeError, ValueError):
            raise EndpointError(f"unreadable input_shape / n_classes in {meta!r}") from None
        self.classes = (
            [str(c) for c in classes] if classes else [str(i) for i in range(self.n_classes)]
        )
        bounds = m.bounds or meta.get("bounds")
        self.bounds = (float(bounds[0]), float(bounds[1])) if bounds else None
        self.policy = str(meta.get("policy") or "") or None
        self.max_batch = int(m.max_batch or meta.get("max_batch") or 64)
        self.model_name = str(meta.get("name") or self.url)
        self.rate_limits = meta.get("rate_limits")
        if m.access is not None:
            access = m.access
        elif "access" in meta:
            if str(meta["access"]).lower() == "none":
                raise AccessError(
                    "the endpoint serves this API key no predictions (its tier is not served); "
                    "ask the endpoint's admin for a key with a tier"
                )
            access = Access.parse(str(meta["access"]))
        else:
            access = m.mapped_access
        self.access = min(_policy_cap(access, self.policy), Access.LOGITS)
        self.top_k = _policy_k(self.policy)

    def oracle(self, access: Access | str | None = None, *, budget: int | None = None) -> Oracle:
        """An oracle over this endpoint at ``access`` (default: what the server grants); asking
        for more than the server grants raises :class:`~privguard.errors.AccessError`."""
        wanted = self.access if access is None else Access.parse(access)
        check_access(wanted, self.access)
        oracle = Oracle(self, wanted, budget=budget)
        if self.top_k is not None:
            oracle.top_k = self.top_k
        return oracle

    def describe(self) -> dict[str, Any]:
        """What the endpoint said about itself and what the audit spent on it."""
        return {
            "endpoint": self.url,
            "model": self.model_name,
            "access": self.access.label,
            "policy": self.policy,
            "max_batch": self.max_batch,
            "rate_limits": self.rate_limits,
            "records_answered": self.queries,
            "http_requests": self.requests,
            "rate_limited_429": self.rate_limited,
            "retried": self.retried,
            "seconds_waiting_on_429": round(self.waited_seconds, 3),
        }

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Predictor protocol --------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability rows ``(n, n_classes)`` float64 built from the answers (see module doc)."""
        return self._predict(x, logits=False)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """The served logits (``logits`` tiers); otherwise log-probabilities of the answers."""
        if "logits" in self.mapping.response and self.access >= Access.LOGITS:
            return self._predict(x, logits=True)
        return np.log(np.clip(self._predict(x, logits=False), 1e-300, None))

    def _predict(self, x: np.ndarray, *, logits: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise DataError(f"inputs must have shape (n, {self.input_shape}), got {x.shape}")
        out = np.zeros((len(x), self.n_classes), dtype=np.float64)
        start = 0
        while start < len(x):
            chunk = x[start : start + self.max_batch]
            try:
                out[start : start + len(chunk)] = self._ask(chunk, logits=logits)
            except _TooLarge:
                # the body went over the server's size limit: halve the batch and carry on
                self.max_batch = max(1, len(chunk) // 2)
                continue
            start += len(chunk)
        return out

    def _ask(self, x: np.ndarray, *, logits: bool) -> np.ndarray:
        m = self.mapping
        records = x.reshape(len(x), -1) if m.layout == "flat" else x
        body: dict[str, Any] = json.loads(json.dumps(m.extra)) if m.extra else {}
        assign(body, m.inputs, records.tolist())
        r = self._send("POST", self.predict_url, body)
        answer = self._json(r, "prediction")
        rows = self._rows(answer, len(x), logits=logits)
        self.queries += len(x)
        return rows

    def _rows(self, answer: Any, n: int, *, logits: bool) -> np.ndarray:
        """Turn one answer into ``(n, n_classes)`` rows."""
        r = self.mapping.response

        def field(name: str) -> Any | None:
            if name not in r:
                return None
            try:
                return extract(answer, r[name])
            except KeyError as e:
                if self.mapping.gateway:
                    return None  # the gateway leaves out what the tier does not allow
                raise EndpointError(
                    f"the answer has no {name} where the mapping says ({e.args[0]}); fix "
                    f"response.{name} in the mapping file"
                ) from None

        def matrix(value: Any, name: str, width: int | None) -> np.ndarray:
            try:
                a = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise EndpointError(f"the answer's {name} are not numbers") from None
            if a.ndim != 2 or len(a) != n or (width is not None and a.shape[1] != width):
                raise EndpointError(
                    f"the answer's {name} have shape {a.shape}; expected ({n}, "
                    f"{width if width is not None else 'k'}) for {n} inputs"
                )
            return a

        C = self.n_classes
        if logits:
            value = field("logits")
            if value is None:
                raise AccessError("the endpoint sent no logits for this key")
            return matrix(value, "logits", C)
        probs = field("probs")
        if probs is not None:
            p = matrix(probs, "probs", C)
            if not np.isfinite(p).all() or (p < 0).any():
                raise EndpointError("the answer's probabilities are not finite and non-negative")
            return p
        classes, scores = field("classes"), field("scores")
        if classes is not None and scores is not None:
            c = self._class_index(_topk_rows(classes, n), "classes")
            s = matrix(scores, "scores", c.shape[1])
            out = np.zeros((n, C), dtype=np.float64)
            np.put_along_axis(out, c.clip(0, C - 1), np.where(c >= 0, s, 0.0), axis=1)
            return out
        labels = field("labels")
        if labels is None:
            raise EndpointError(
                f"the answer carries none of {sorted(r)}; check the mapping (got "
                f"{_preview(answer)})"
            )
        if not isinstance(labels, list) or len(labels) != n:
            raise EndpointError(f"the answer has {_len(labels)} labels for {n} inputs")
        lab = self._class_index([[v] for v in labels], "labels")[:, 0]
        out = np.zeros((n, C), dtype=np.float64)
        live = lab >= 0
        out[np.flatnonzero(live), lab[live]] = 1.0
        return out

    def _class_index(self, values: list[list[Any]], name: str) -> np.ndarray:
        """Class indices from ints or class names; -1 stays -1 (abstained)."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        out = np.empty((len(values), len(values[0]) if values else 0), dtype=np.int64)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if isinstance(v, bool):
                    raise EndpointError(f"the answer's {name} hold booleans, not classes")
                if isinstance(v, int | float) and float(v).is_integer():
                    idx = int(v)
                elif isinstance(v, str) and v in lookup:
                    idx = lookup[v]
                else:
                    raise EndpointError(
                        f"the answer's {name} hold {v!r}, neither a class index nor one of the "
                        f"classes {self.classes[:5]}..."
                    )
                if not -1 <= idx < self.n_classes:
                    raise EndpointError(f"the answer names class {idx} of {self.n_classes}")
                out[i, j] = idx
        return out

    # -- HTTP -----------------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: dict[str, Any] | None = None):
        import httpx

        attempt = 0
        while True:
            self.requests += 1
            try:
                r = self._client.request(method, url, json=body)
            except (httpx.TransportError, httpx.DecodingError) as e:
                if attempt < self.retries:
                    attempt += 1
                    self.retried += 1
                    time.sleep(min(0.25 * 2**attempt, 5.0))
                    continue
                raise EndpointError(
                    f"cannot reach the endpoint at {url} ({type(e).__name__}: {e}) after "
                    f"{attempt + 1} attempts; check the URL and that the server is running"
                ) from None
            if r.status_code == 429:
                self.rate_limited += 1
                self._wait(r)
                continue
            if r.status_code in RETRY_STATUS and attempt < self.retries:
                attempt += 1
                self.retried += 1
                time.sleep(min(_retry_after(r) or 0.25 * 2**attempt, 5.0))
                continue
            if r.status_code in (401, 403):
                raise AccessError(
                    f"the API key was refused: {_message(r)} (HTTP {r.status_code}); check "
                    "--api-key-file, and that the key is active and allowed to predict"
                )
            if r.status_code == 413 and body is not None and len(_body_records(body, self)) > 1:
                raise _TooLarge
            if 400 <= r.status_code < 500:
                raise DataError(
                    f"the endpoint rejected the request: {_message(r)} (HTTP {r.status_code})"
                )
            if r.status_code >= 300:
                raise EndpointError(
                    f"the endpoint failed: HTTP {r.status_code} {_message(r)} from {url}"
                )
            return r

    def _wait(self, r) -> None:
        wait = _retry_after(r)
        code = _code(r)
        if wait is None:
            wait = 1.0
        if (code and ("budget" in code or "quota" in code)) or wait > self.max_retry_after:
            raise BudgetExhaustedError(
                f"the endpoint's query budget for this key is spent: {_message(r)} (the server "
                f"says retry in {wait:.0f} s, more than the {self.max_retry_after:.0f} s this "
                "audit waits); ask for a larger budget, use a smaller --budget, or run later"
            )
        if self.waited_seconds + wait > self.max_wait:
            raise BudgetExhaustedError(
                f"the endpoint kept rate-limiting this key: {self.waited_seconds:.0f} s spent "
                f"waiting on 429 answers already, {wait:.0f} s more asked; ask for a higher rate "
                "limit or a smaller --budget"
            )
        time.sleep(wait)
        self.waited_seconds += wait

    def _json(self, r, what: str) -> Any:
        try:
            return r.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise EndpointError(
                f"the endpoint's {what} answer is not JSON (content-type "
                f"{r.headers.get('content-type')!r}): {r.text[:120]!r}"
            ) from None


class _TooLarge(Exception):
    """A 413 answer to a batch of more than one record."""


def _body_records(body: dict[str, Any], predictor: HttpPredictor) -> list[Any]:
    """The records of a request body (to tell whether it can be split)."""
    try:
        records = extract(body, predictor.mapping.inputs)
    except KeyError:
        return []
    return records if isinstance(records, list) else []


def _topk_rows(value: Any, n: int) -> list[list[Any]]:
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(isinstance(v, list) for v in value)
    ):
        raise EndpointError(f"the answer's top-k classes are not {n} lists")
    widths = {len(v) for v in value}
    if len(widths) > 1:
        raise EndpointError("the answer's top-k rows differ in length")
    return value


def _retry_after(r) -> float | None:
    raw = r.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:  # "nan" is no delay at all (sleeping NaN seconds raises); "inf" means never
        return None if math.isnan(seconds) else max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error(r) -> dict[str, Any]:
    try:
        body = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return err
    if isinstance(body, dict) and "detail" in body:
        return {"message": str(body["detail"])}
    return {}


def _code(r) -> str:
    return str(_error(r).get("code") or "").lower()


def _message(r) -> str:
    err = _error(r)
    msg = err.get("message") or r.text[:200] or r.reason_phrase
    code = err.get("code")
    return f"{code}: {msg}" if code else str(msg)


def _preview(answer: Any) -> str:
    text = json.dumps(answer)[:120] if answer is not None else "null"
    return text


def _len(v: Any) -> str:
    return str(len(v)) if isinstance(v, list) else "no list of"


# -- an audit through the HTTP oracle ---------------------------------------------------------
