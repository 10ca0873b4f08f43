"""The HTTP oracle: attacks against a live prediction endpoint.

:class:`HttpPredictor` implements the :class:`~privguard.oracle.Predictor` protocol over HTTP
(httpx), so every black-box and label-only attack runs unchanged against a running privguard
gateway (``privguard serve``) or any JSON prediction API described by a small mapping file
(:class:`EndpointMap`). The attacks talk HTTP only; what an answer reveals is what the server
sends back for the key in use:

- ``probs`` (and ``logits``) answers are used as they are;
- ``topk`` answers become rows holding the top-k scores at their classes and zeros elsewhere;
- ``label`` answers become one-hot rows;
- an abstained record (label ``-1``, or a row of zeros) becomes a row of zeros, which
  :meth:`privguard.oracle.Oracle.labels` reads back as :data:`~privguard.oracle.ABSTAIN`.

The access level of the resulting oracle is what the server says the key gets (``GET
/v1/model``), capped by the output policy it applies; gradients are never served over HTTP, so
white-box attacks are refused.

Accounting. :attr:`HttpPredictor.queries` counts the records the server answered,
:attr:`HttpPredictor.requests` the HTTP requests sent (retries included),
:attr:`HttpPredictor.rate_limited` the 429 answers and :attr:`HttpPredictor.waited_seconds`
the time spent obeying their ``Retry-After``. A 429 whose wait exceeds ``max_retry_after`` (the
gateway's daily budget answers with a wait until the next UTC midnight) raises
:class:`~privguard.errors.BudgetExhaustedError`; 401 / 403 raise
:class:`~privguard.errors.AccessError`; connection failures and 502 / 503 / 504 are retried a
bounded number of times with exponential back-off.

:func:`audit_endpoint` runs a whole audit through the HTTP oracle. With the model directory
(``--model DIR``) the evaluator knows who the members are (model.json records the split) while
the attacks only talk HTTP; without it, only inversion attacks are scored, with the metrics that
need no member list. See docs/endpoint-audit.md.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np

from privguard.data import Dataset, load_dataset, make_split
from privguard.errors import (
    AccessError,
    BudgetExhaustedError,
    ConfigError,
    DataError,
    PrivguardError,
)
from privguard.models import Target, load_target
from privguard.oracle import Access, Oracle

Progress = Callable[[str, int, int], None]

GATEWAY_PREDICT = "/v1/predict"
GATEWAY_METADATA = "/v1/model"
RETRY_STATUS = (502, 503, 504)
# Metrics of an inversion attack that compare reconstructions with the training members; without
# the model directory nobody knows who those are.
MEMBER_METRICS = (
    "mse_to_class_mean",
    "ssim_to_class_mean",
    "nearest_member_distance",
    "nearest_nonmember_distance",
    "member_closeness",
    "member_closeness_pvalue",
)


class EndpointError(PrivguardError):
    """The endpoint cannot be reached, failed, or answered in a form the mapping does not
    describe."""


# -- the request / response mapping -----------------------------------------------------------


@dataclass
class EndpointMap:
    """How to talk to a JSON prediction API. The defaults describe privguard's gateway.

    A mapping file (TOML or JSON) holds the same keys in four tables; every key is optional::

        [request]
        inputs = "instances"          # dotted path of the field that carries the batch
        layout = "flat"               # records as flat lists, or "nested" (input_shape)
        max_batch = 32                # records per request
        extra = { version = "2" }     # constant fields sent with every request

        [response]                    # dotted paths; "a[].b" takes field b of each item of a
        probs = "predictions[].probabilities"
        labels = "predictions[].label"    # integers, or class names listed in [model].classes
        # classes = "...", scores = "..."  (top-k answers), logits = "..."

        [auth]
        header = "X-Api-Key"          # default: Authorization
        scheme = ""                   # prefix before the secret; default "Bearer "

        [model]                       # for APIs without a metadata endpoint
        metadata = "/v1/model"        # path or URL of a privguard-style metadata endpoint
        input_shape = [64]
        classes = ["0", "1", "2"]     # or n_classes = 3
        bounds = [0.0, 1.0]
        access = "probs"              # default: the richest response field mapped

    Example:
        >>> EndpointMap.load("my-api.toml").response["probs"]
        'predictions[].probabilities'
    """

    inputs: str = "inputs"
    layout: str = "flat"
    max_batch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    response: dict[str, str] = field(
        default_factory=lambda: {
            "probs": "probs",
            "logits": "logits",
            "classes": "classes",
            "scores": "scores",
            "labels": "labels",
        }
    )
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer "
    metadata: str | None = GATEWAY_METADATA
    input_shape: tuple[int, ...] | None = None
    classes: list[str] | None = None
    n_classes: int | None = None
    bounds: tuple[float, float] | None = None
    access: Access | None = None
    gateway: bool = True  # privguard's own contract (base URL + /v1/predict)

    @classmethod
    def load(cls, path: str | Path) -> EndpointMap:
        """Read a mapping file (``.toml`` or ``.json``)."""
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError(f"no endpoint mapping file at {p}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the endpoint mapping {p}: {e}") from None
        try:
            raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{p} is not valid {p.suffix.lstrip('.').upper()}: {e}") from None
        return cls.from_dict(raw, where=str(p))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "the endpoint mapping") -> EndpointMap:
        def fail(msg: str) -> ConfigError:
            return ConfigError(f"{where}: {msg}; see docs/endpoint-audit.md")

        if not isinstance(raw, dict):
            raise fail("the mapping must be a table of [request], [response], [auth], [model]")
        unknown = sorted(set(raw) - {"request", "response", "auth", "model"})
        if unknown:
            raise fail(f"unknown table(s) {', '.join(unknown)}")
        req = _table(raw, "request", {"inputs", "layout", "max_batch", "extra"}, fail)
        res = _table(raw, "response", {"probs", "logits", "classes", "scores", "labels"}, fail)
        auth = _table(raw, "auth", {"header", "scheme"}, fail)
        mod = _table(
            raw,
            "model",
            {"metadata", "input_shape", "classes", "n_classes", "bounds", "access"},
            fail,
        )
        m = cls(gateway=False, metadata=None)
        if "inputs" in req:
            m.inputs = _string(req["inputs"], "request.inputs", fail)
        if "layout" in req:
            m.layout = _string(req["layout"], "request.layout", fail)
            if m.layout not in ("flat", "nested"):
                raise fail("request.layout is 'flat' or 'nested'")
        if "max_batch" in req:
            if not isinstance(req["max_batch"], int) or req["max_batch"] < 1:
                raise fail("request.max_batch must be a positive integer")
            m.max_batch = req["max_batch"]
        if "extra" in req:
            if not isinstance(req["extra"], dict):
                raise fail("request.extra must be a table of constant fields")
            m.extra = dict(req["extra"])
        if res:
            m.response = {k: _string(v, f"response.{k}", fail) for k, v in res.items()}
        if ("classes" in m.response) != ("scores" in m.response):
            raise fail("top-k answers need both response.classes and response.scores")
        if not m.response:
            raise fail("map at least one of response.probs, response.labels, response.logits")
        if "header" in auth:
            m.auth_header = _string(auth["header"], "auth.header", fail)
        if "scheme" in auth:
            m.auth_scheme = str(auth["scheme"])
            if m.auth_scheme and not m.auth_scheme.endswith(" "):
                m.auth_scheme += " "
        elif m.auth_header.lower() != "authorization":
            m.auth_scheme = ""
        if "metadata" in mod:
            m.metadata = _string(mod["metadata"], "model.metadata", fail)
        if "input_shape" in mod:
            shape = mod["input_shape"]
            if not (
                isinstance(shape, list)
                and shape
                and all(isinstance(d, int) and d > 0 for d in shape)
            ):
                raise fail("model.input_shape must be a list of positive integers")
            m.input_shape = tuple(shape)
        if "classes" in mod:
            if not isinstance(mod["classes"], list) or len(mod["classes"]) < 2:
                raise fail("model.classes must list at least two class names")
            m.classes = [str(c) for c in mod["classes"]]
        if "n_classes" in mod:
            if not isinstance(mod["n_classes"], int) or mod["n_classes"] < 2:
                raise fail("model.n_classes must be an integer of at least 2")
            m.n_classes = mod["n_classes"]
        if "bounds" in mod:
            b = mod["bounds"]
            if not (isinstance(b, list) and len(b) == 2 and all(_is_number(v) for v in b)):
                raise fail("model.bounds must be [low, high]")
            if not b[0] < b[1]:
                raise fail("model.bounds must have low < high")
            m.bounds = (float(b[0]), float(b[1]))
        if "access" in mod:
            m.access = Access.parse(_string(mod["access"], "model.access", fail))
            if m.access > Access.LOGITS:
                raise fail("an HTTP endpoint serves at most 'logits' access")
        if m.metadata is None and m.input_shape is None:
            raise fail("the API has no metadata endpoint: set model.input_shape and model.classes")
        if m.metadata is None and m.classes is None and m.n_classes is None:
            raise fail("the API has no metadata endpoint: set model.classes or model.n_classes")
        return m

    @property
    def mapped_access(self) -> Access:
        """The richest answer the mapped response fields carry."""
        r = self.response
        if "logits" in r and "probs" in r:
            return Access.LOGITS
        if "probs" in r:
            return Access.PROBS
        if "classes" in r:
            return Access.TOPK
        return Access.LABEL


def _table(raw, name, allowed, fail) -> dict[str, Any]:
    t = raw.get(name, {})
    if not isinstance(t, dict):
        raise fail(f"[{name}] must be a table")
    unknown = sorted(set(t) - allowed)
    if unknown:
        raise fail(f"unknown key(s) in [{name}]: {', '.join(unknown)}; known: {sorted(allowed)}")
    return t


def _string(v, name, fail) -> str:
    if not isinstance(v, str) or not v.strip():
        raise fail(f"{name} must be a non-empty string")
    return v.strip()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def extract(obj: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a decoded JSON document.

    ``a.b`` is field ``b`` of field ``a``; ``a.0`` the first item of list ``a``; ``a[].b`` the
    list of field ``b`` of every item of ``a``. Raises ``KeyError`` naming the missing part.

    Example:
        >>> extract({"out": [{"p": [0.1, 0.9]}]}, "out[].p")
        [[0.1, 0.9]]
    """
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = _step(obj, head[:-2], path) if head[:-2] else obj
        if not isinstance(items, list):
            raise KeyError(f"{head[:-2] or path!r} is not a list")
        return [extract(item, rest) if rest else item for item in items]
    value = _step(obj, head, path)
    return extract(value, rest) if rest else value


def _step(obj: Any, key: str, path: str) -> Any:
    if isinstance(obj, dict):
        if key not in obj:
            raise KeyError(f"no field {key!r} (path {path!r})")
        return obj[key]
    if isinstance(obj, list) and key.lstrip("-").isdigit():
        try:
            return obj[int(key)]
        except IndexError:
            raise KeyError(f"index {key} out of range (path {path!r})") from None
    raise KeyError(f"cannot take {key!r} of a {type(obj).__name__} (path {path!r})")


def _assign(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value


def read_api_key(path: str | Path) -> str:
    """The secret in an API key file (first non-empty line, whitespace stripped)."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines()]
    except FileNotFoundError:
        raise ConfigError(f"no API key file at {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the API key file {p}: {e}") from None
    key = next((ln for ln in lines if ln), "")
    if not key:
        raise ConfigError(f"the API key file {p} is empty; put the key's secret in it")
    return key


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
        _assign(body, m.inputs, records.tolist())
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
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
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


def _policy_cap(access: Access, policy: str | None) -> Access:
    """The access an output policy leaves (as :func:`privguard.defenses.output.protect`)."""
    if not policy:
        return access
    from privguard.defenses.output import parse_policy, policy_access

    try:
        chain = parse_policy(policy)
    except ConfigError:
        return access  # another service's policy name: trust the access it states
    return policy_access(access, chain)


def _policy_k(policy: str | None) -> int | None:
    if not policy:
        return None
    from privguard.defenses.output import parse_policy

    try:
        return parse_policy(policy).k
    except ConfigError:
        return None


def check_access(wanted: Access, granted: Access) -> None:
    """Refuse asking an endpoint for more than it grants (white-box never)."""
    if wanted >= Access.WHITEBOX:
        raise AccessError(
            "white-box attacks need the model's gradients, which an HTTP endpoint never serves; "
            "audit the model directory instead (privguard audit --model DIR --access whitebox)"
        )
    if wanted > granted:
        raise AccessError(
            f"the endpoint gives this key only '{granted.label}' access, not '{wanted.label}'; "
            f"drop --access (it defaults to what the endpoint grants) or use a key whose tier "
            f"allows {wanted.label}"
        )


# -- an audit through the HTTP oracle ---------------------------------------------------------


class EndpointTarget(Target):
    """The served model, seen through HTTP only: its predictor is an :class:`HttpPredictor`.

    ``knows_members`` says whether the split is the served model's own (``local``, its model
    directory) or a seeded split of the attacker's data (members unknown)."""

    def __init__(self, http: HttpPredictor, *, local: Target | None = None, **kw: Any) -> None:
        super().__init__(http, **kw)
        self.http = http
        #: the served model's own directory, when given: truth for evaluators, never attacked
        self.local = local
        self.knows_members = local is not None
        self._data: Dataset | None = None

    def oracle(self, access=None, *, budget: int | None = None) -> Oracle:  # type: ignore[override]
        return self.http.oracle(access, budget=budget)

    def load_data(self, data: Any = None, *, label: str | None = None) -> Dataset:
        if self._data is not None:
            return self._data
        return super().load_data(data, label=label)

    def describe(self) -> dict[str, Any]:
        d = super().describe() if self.knows_members else {"kind": "endpoint"}
        d["endpoint"] = self.http.describe()
        return d


def endpoint_target(
    predictor: HttpPredictor,
    model: Any = None,
    *,
    data: Any = None,
    seed: int = 0,
    label: str | None = None,
) -> EndpointTarget:
    """A :class:`~privguard.models.Target` whose predictions come from ``predictor``.

    With ``model`` (a model directory or Target: the one the endpoint serves) the split, dataset
    record and training recipe are the model's, so the evaluator knows who the members are; the
    local weights are never queried. Without it, ``data`` (a built-in name, a file or a Dataset)
    is split by ``seed`` as ``privguard train`` splits (40 / 30 / 30): the 30% auxiliary share
    is the attacker's pool; the evaluators' classifiers are fitted on all of the data (who was
    trained on is unknown)."""
    if model is not None:
        local = model if isinstance(model, Target) else load_target(model)
        return EndpointTarget(
            predictor,
            local=local,
            kind=local.kind,
            architecture=local.architecture,
            dataset=local.dataset,
            split=local.split,
            config=local.config,
            metrics=local.metrics,
            estimator=local.estimator,
            path=local.path,
        )
    if data is None:
        raise ConfigError(
            "auditing an endpoint needs the attacker's data: pass --data NAME (a built-in "
            "dataset or a file from the same population)"
        )
    ds = data if isinstance(data, Dataset) else load_dataset(str(data), label=label)
    t = EndpointTarget(
        predictor,
        kind="endpoint",
        architecture={"input_shape": list(predictor.input_shape), "n_classes": predictor.n_classes},
        dataset={"name": ds.name, "kind": ds.kind},
        split=make_split(ds.y, seed=seed),
    )
    t._data = ds
    return t


def audit_endpoint(
    url: str,
    *,
    api_key: str | None,
    mapping: EndpointMap | None = None,
    model: Any = None,
    data: Any = None,
    label: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str | None = None,
    seed: int = 0,
    budget: int | None = None,
    n_jobs: int = 1,
    progress: Progress | None = None,
    command: str | None = None,
    predictor_options: dict[str, Any] | None = None,
    **audit_options: Any,
):
    """Run black-box and label-only attacks against a live endpoint and score them.

    Args:
        url: the gateway's base URL, or a mapped API's prediction URL.
        api_key: the key's secret (``None``: send no auth header).
        mapping: for non-privguard APIs (see :class:`EndpointMap`).
        model: the model directory the endpoint serves: gives the evaluator the member split and
            the attacker the training recipe. Without it only inversion attacks are scored.
        data: the attacker's data (default: the model's recorded data).
        access: what the attacker uses (default and maximum: what the endpoint grants).
        budget: query budget per attack, in records.
        predictor_options: passed to :class:`HttpPredictor` (timeout, retries, waits, verify).
        **audit_options: passed on to :func:`privguard.audit` (sensitive, scheduler, cache_dir).

    Example:
        >>> report = audit_endpoint("http://127.0.0.1:8000", api_key=secret, model="model-dir",
        ...                         attacks=["membership"])
    """
    from privguard.attacks import resolve
    from privguard.audit.runner import audit

    predictor = HttpPredictor(url, api_key, mapping=mapping, **(predictor_options or {}))
    try:
        wanted = predictor.access if access is None else Access.parse(access)
        check_access(wanted, predictor.access)
        names = [attacks] if isinstance(attacks, str) else list(attacks)
        names = [n.strip().lower() for raw in names for n in raw.split(",") if n.strip()]
        _refuse_whitebox(names)
        if model is None:
            names = _without_ground_truth(names, wanted)
        target = endpoint_target(predictor, model, data=data, seed=seed, label=label)
        ds = target.load_data(data if model is not None else None, label=label)
        if tuple(ds.input_shape) != predictor.input_shape or ds.n_classes != predictor.n_classes:
            raise DataError(
                f"the endpoint takes inputs of shape {predictor.input_shape} and answers "
                f"{predictor.n_classes} classes, but the data ({ds.name}) has shape "
                f"{tuple(ds.input_shape)} and {ds.n_classes} classes; audit it with the data "
                "its model was trained on"
            )
        resolve(names, wanted)  # unknown names and access errors before any query
        report = audit(
            target,
            data=ds,
            attacks=names,
            access=wanted,
            seed=seed,
            budget=budget,
            n_jobs=n_jobs,
            progress=progress,
            command=command,
            **audit_options,
        )
    finally:
        predictor.close()
    report.target["endpoint"] = predictor.describe()
    report.plan["endpoint"] = predictor.url
    if model is None:
        _drop_member_metrics(report)
    return report


def _refuse_whitebox(names: list[str]) -> None:
    from privguard.attacks import all_attacks

    by_name = {c.name: c for c in all_attacks()}
    for n in names:
        cls = by_name.get(n)
        if cls is not None and cls.needs >= Access.WHITEBOX:
            raise AccessError(
                f"the {n} attack needs white-box access (the model's gradients), which an HTTP "
                "endpoint never serves; audit the model directory instead (privguard audit "
                f"--model DIR --access whitebox --attacks {n})"
            )


def _without_ground_truth(names: list[str], access: Access) -> list[str]:
    """Without the model directory nobody knows who the members are: keep inversion.

    Membership and attribute scores need the member list; extraction's fidelity is measured on
    held-out non-members, which a split of the attacker's data cannot promise."""
    from privguard.attacks import resolve

    needs_truth = ("membership", "attribute", "extraction")
    for n in names:
        family = n if n in needs_truth else None
        if family is None and n not in ("all", "inversion"):
            family = next((c.family for c in resolve([n], access)), None)
        if family in needs_truth:
            raise ConfigError(
                f"scoring {n} needs to know who the model was trained on: pass --model DIR (the "
                "directory of the served model; its model.json records the split) together "
                "with --endpoint; without it only inversion attacks are scored"
            )
    if "all" in names:
        return ["inversion"]
    return names


def _drop_member_metrics(report: Any) -> None:
    """Without the member list: keep the evaluators' recognition metrics only."""
    from privguard.audit.report import summarise
    from privguard.audit.risk import assess

    for a in report.attacks:
        if a.family != "inversion":
            continue
        for k in MEMBER_METRICS:
            a.metrics.pop(k, None)
        a.notes = [n for n in a.notes if "member" not in n]
        a.notes.append(
            "audited without the model directory: who was trained on is unknown, so member "
            "closeness and distances to training members are not measured (pass --model DIR)"
        )
        a.curves.pop("class_means", None)
        a.risk = assess(a.family, a.metrics)
    skipped = report.summary.get("skipped")
    most = report.summary.get("most_exposed")
    report.summary = summarise(report.attacks)
    if skipped:
        report.summary["skipped"] = skipped
    if most:
        report.summary["most_exposed"] = most
    report.data["split"] = {
        "note": "members unknown (no --model): the attacker's auxiliary pool is a seeded 30% "
        "of the data",
        "aux": report.data.get("split", {}).get("aux"),
    }
    report.data.pop("duplicates", None)
