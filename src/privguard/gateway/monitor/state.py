"""Per-client detector state as bytes, without pickle: how the monitor's state travels through
Redis so that every worker and replica watches a client's whole query stream (issue 19).

The codec is generic over the state objects detectors keep (``Detector.new_state()``): plain
objects (their ``vars``, or ``__slots__``), dataclasses, dicts (any JSON-scalar keys), lists,
tuples, numbers, strings, booleans, ``None`` and numeric NumPy arrays. The bytes are

    b"PGS1" | header length (4 bytes, big-endian) | JSON header | the arrays' raw bytes

where the JSON header is the state's tree with each array replaced by its offset, dtype and shape
in the trailing bytes. Decoding needs a *template*: a fresh state from the same detector
(``new_state()``), whose objects are filled in place, so the bytes never name a class to build
and loading them never runs code from them. A blob that does not fit its template (another
privguard, another monitor) raises :class:`StateError`; the monitor then starts that client
afresh rather than guessing.

Example:
    >>> blob = encode(det.new_state())
    >>> state = decode(blob, det.new_state())
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

MAGIC = b"PGS1"
_HEAD = struct.Struct(">I")


class StateError(ValueError):
    """The bytes are not a state this monitor wrote (corrupt, truncated or another layout)."""


def encode(state: Any) -> bytes:
    """``state`` as bytes (see the module's docstring); arrays of objects are refused."""
    chunks: list[bytes] = []
    offset = [0]

    def enc(v: Any) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, float)):
            return v
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise StateError("a state array holds Python objects; states hold numbers only")
            raw = np.ascontiguousarray(v).tobytes()
            node = {"$nd": [offset[0], v.dtype.str, list(v.shape)]}
            chunks.append(raw)
            offset[0] += len(raw)
            return node
        if isinstance(v, dict):
            return {"$dict": [[_key(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, (list, tuple)):
            return {"$list" if isinstance(v, list) else "$tuple": [enc(x) for x in v]}
        attrs = _attrs(v)
        if attrs is None:
            raise StateError(f"cannot encode a {type(v).__name__} in a detector state")
        return {"$obj": {k: enc(x) for k, x in attrs.items()}}

    head = json.dumps(enc(state), separators=(",", ":")).encode()
    return MAGIC + _HEAD.pack(len(head)) + head + b"".join(chunks)


def decode(blob: bytes, template: Any) -> Any:
    """The state in ``blob``, built into ``template`` (a fresh state of the same detector)."""
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise StateError("not a privguard monitor state")
    (n,) = _HEAD.unpack(blob[4:8])
    try:
        tree = json.loads(blob[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise StateError(f"malformed state header ({e})") from None
    data = memoryview(blob)[8 + n :]

    def dec(node: Any, tmpl: Any) -> Any:
        if not isinstance(node, dict):
            if isinstance(tmpl, float) and isinstance(node, int) and not isinstance(node, bool):
                return float(node)
            return node
        if "$nd" in node:
            off, dtype, shape = node["$nd"]
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise StateError("a state array of Python objects")
            count = int(np.prod(shape, dtype=np.int64))
            if off < 0 or off + count * dt.itemsize > len(data):
                raise StateError("a state array runs past the end of the bytes")
            arr = np.frombuffer(data, dtype=dt, count=count, offset=off).reshape(shape).copy()
            same = arr.dtype == getattr(tmpl, "dtype", None) and arr.shape == tmpl.shape
            if isinstance(tmpl, np.ndarray) and not same:
                raise StateError(f"an array of {arr.shape} {arr.dtype}, not {tmpl.shape}")
            return arr
        if "$dict" in node:
            t = tmpl if isinstance(tmpl, dict) else {}
            out = {}
            for k, v in node["$dict"]:
                k = tuple(k) if isinstance(k, list) else k
                out[k] = dec(v, t.get(k))
            return out
        if "$list" in node:
            return [dec(v, None) for v in node["$list"]]
        if "$tuple" in node:
            return tuple(dec(v, None) for v in node["$tuple"])
        if "$obj" in node:
            attrs = _attrs(tmpl)
            if attrs is None:
                raise StateError(f"an object where the state has a {type(tmpl).__name__}")
            fields = node["$obj"]
            if set(fields) != set(attrs):
                raise StateError(f"fields {sorted(fields)}, not {sorted(attrs)}")
            for k, v in fields.items():
                setattr(tmpl, k, dec(v, attrs[k]))
            return tmpl
        raise StateError(f"unknown state node {sorted(node)[:3]}")

    try:
        return dec(tree, template)
    except StateError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise StateError(f"malformed state ({type(e).__name__}: {e})") from None


def _key(k: Any) -> Any:
    if isinstance(k, np.generic):
        k = k.item()
    if k is None or isinstance(k, (bool, int, float, str)):
        return k
    if isinstance(k, tuple) and all(isinstance(x, (bool, int, float, str)) for x in k):
        return list(k)
    raise StateError(f"a state dict key of type {type(k).__name__}")


def _attrs(v: Any) -> dict[str, Any] | None:
    """An object's fields: a dataclass's, its ``__dict__`` or its ``__slots__``."""
    if isinstance(v, type) or callable(v):
        return None
    if dataclasses.is_dataclass(v):
        return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    d = getattr(v, "__dict__", None)
    if d is not None:
        return dict(d)
    slots = [s for c in type(v).__mro__ for s in getattr(c, "__slots__", ())]
    if slots:
        return {s: getattr(v, s) for s in slots if hasattr(v, s)}
    return None


__all__ = ["MAGIC", "StateError", "decode", "encode"]
