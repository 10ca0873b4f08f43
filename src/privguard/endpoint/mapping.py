"""The endpoint mapping: how a JSON prediction API's requests and answers are laid out.

:class:`EndpointMap` (read from a small TOML file, see docs/endpoint-audit.md) says where the
records go in a request and where the probabilities, logits, classes or label sit in the answer;
:func:`extract` and :func:`assign` read and write those dotted paths. A privguard gateway needs
no mapping.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privguard.errors import ConfigError, PrivguardError
from privguard.oracle import Access

GATEWAY_PREDICT = "/v1/predict"
GATEWAY_METADATA = "/v1/model"


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


def assign(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value
