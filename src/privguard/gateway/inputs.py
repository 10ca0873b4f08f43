"""Validation of prediction requests, in one place.

``POST /v1/predict`` takes ``{"inputs": [record, ...]}``; a record is a flat list of
``prod(input_shape)`` numbers or a nested list of exactly ``input_shape``. Anything else is
refused with a 4xx and a message that says what to send: malformed JSON (400), a body over the
size limit (413), too many records for the tier (413), unknown fields, wrong shapes, non-numbers,
non-finite values or values outside the model's declared feature bounds (422).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import numpy as np
import orjson

from privguard.gateway.errors import GatewayError

BOUNDS_TOLERANCE = 1e-6


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """The JSON document of ``body``: orjson's parser (about 10x the standard library's on a
    batch of 64 records), and, for any body orjson refuses, the standard library's, whose
    answer (a document or a 400) decides. So a body orjson cannot read -- ``NaN``, ``1e400``,
    a lone surrogate, nesting past 1,024 levels -- is read or refused exactly as before; an
    integer past 64 bits orjson reads as the float the standard library's ``parse_int=float``
    gave; the one difference is an integer ``-0``, read as 0 (it was -0.0)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _parse_json_std(body)


def _parse_json_std(body: bytes) -> Any:
    try:
        # integers as floats: a huge integer is a number out of bounds, not an object
        return json.loads(body, parse_constant=_no_constants, parse_int=float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise GatewayError(
            400, "invalid_json", 'the body is not valid JSON; send {"inputs": [[...], ...]}'
        ) from None


def parse_inputs(
    body: bytes,
    input_shape: tuple[int, ...],
    *,
    bounds: tuple[float, float] | None,
    max_batch: int,
) -> np.ndarray:
    """The records of a ``/v1/predict`` body as float32 ``(n, *input_shape)``.

    One JSON parse of the raw body, one array built from it; every check below runs on every
    request (the error texts are built only when a check fails)."""
    doc = parse_json(body)
    width = math.prod(input_shape)
    if not isinstance(doc, dict):
        raise GatewayError(422, "invalid_body", 'the body must be an object {"inputs": [...]}')
    if len(doc) != 1 or "inputs" not in doc:
        extra = sorted(set(doc) - {"inputs"})
        if extra:
            raise GatewayError(
                422,
                "unknown_field",
                f"unknown field(s) {', '.join(map(repr, extra))[:200]}; the body has only 'inputs'",
            )
        raise GatewayError(422, "missing_inputs", "the body needs 'inputs': a list of records")
    records = doc["inputs"]
    if not isinstance(records, list) or not records:
        raise GatewayError(422, "invalid_inputs", "'inputs' must be a non-empty list of records")
    if len(records) > max_batch:
        raise GatewayError(
            413,
            "batch_too_large",
            f"{len(records)} records in one request; this tier allows at most {max_batch}: "
            "split the batch",
        )
    # orjson keeps integers as integers; numpy makes floats of any mix of them with floats or
    # of int64 with uint64, so the array is the one the standard library's floats gave
    arr = _array(records)
    # numpy turns booleans mixed with numbers into numbers; a valid body holds no string but
    # the key 'inputs', so a true/false literal anywhere means a boolean somewhere
    if arr is None or arr.dtype.kind not in "iuf" or b"true" in body or b"false" in body:
        raise GatewayError(
            422,
            "invalid_record",
            f"every record must be a list of {width} numbers, or nested lists of shape "
            f"{_shape_txt(input_shape)} (no strings, booleans, nulls or ragged lists)",
        )
    if arr.shape[1:] != (width,) and arr.shape[1:] != tuple(input_shape):
        got = ("x".join(map(str, arr.shape[1:])) or "scalar")[:40]
        raise GatewayError(
            422,
            "wrong_shape",
            f"records have shape {got}; this model takes {width} numbers per record (flat) "
            f"or nested lists of shape {_shape_txt(input_shape)}",
        )
    x = arr.astype(np.float64, copy=False).reshape((len(arr), *input_shape))
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    # min/max propagate NaN and keep an infinity: two reductions check every value
    if not (math.isfinite(x32.min()) and math.isfinite(x32.max())):
        raise GatewayError(422, "non_finite", "inputs must be finite numbers")
    if bounds is not None:
        lo, hi = bounds
        if x.min() < lo - BOUNDS_TOLERANCE or x.max() > hi + BOUNDS_TOLERANCE:
            bad = (x < lo - BOUNDS_TOLERANCE) | (x > hi + BOUNDS_TOLERANCE)
            n_bad = int(bad.reshape(len(x), -1).any(axis=1).sum())
            raise GatewayError(
                422,
                "out_of_bounds",
                f"{n_bad} record(s) have values outside the model's feature bounds "
                f"[{lo:g}, {hi:g}]; scale inputs as the model was trained",
            )
    return x32


def _array(records: list) -> np.ndarray | None:
    try:
        return np.asarray(records)
    except (ValueError, OverflowError, TypeError):
        return None


def _shape_txt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class Fingerprinter:
    """Keyed HMAC-SHA256 of each record's float32 little-endian bytes (hex).

    Equal records give equal fingerprints under one key, so repeated queries can be counted
    and a logged request recognised, but without the key a fingerprint says nothing about the
    record. The key is absorbed once; each record copies that keyed state (``hmac.copy``)
    instead of keying a new HMAC.

    Example:
        >>> fp = Fingerprinter(key)
        >>> fp(x)          # ['3f1c...', ...], one per record
        >>> fp.json(x)     # the same as a JSON list (the log row's column)
    """

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, x: np.ndarray) -> list[str]:
        flat = np.ascontiguousarray(x, dtype="<f4").reshape(len(x), -1)
        base = self._base
        out = []
        for row in flat:
            h = base.copy()
            h.update(row.data)
            out.append(h.hexdigest())
        return out

    def json(self, x: np.ndarray | None) -> str:
        """``json.dumps(self(x))`` (hex digests need no escaping); ``"[]"`` for ``None``."""
        if x is None or len(x) == 0:
            return "[]"
        return '["' + '", "'.join(self(x)) + '"]'


def fingerprints(key: bytes, x: np.ndarray) -> list[str]:
    """Keyed HMAC-SHA256 of each record's float32 little-endian bytes (hex); see
    :class:`Fingerprinter`, which keeps the keyed state between calls."""
    return Fingerprinter(key)(x)
