"""``report.json``: the report as JSON, and the JSON-safe conversion every report file starts from.

All report files are rendered from one JSON-safe copy of the report (non-finite numbers become
null, numpy values plain Python), so they always agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from privguard.audit.report import Report


def to_jsonable(obj: Any, where: str = "report") -> Any:
    """A copy of ``obj`` made of JSON types only: non-finite floats become ``None``.

    numpy scalars and arrays become Python numbers and lists, paths become strings. Anything
    else raises ``TypeError`` naming where it sits, e.g. ``report.attacks[0].metrics.auc``.
    """
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {_json_key(k, where): to_jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "dtype") and callable(getattr(obj, "tolist", None)):  # numpy, torch
        return to_jsonable(obj.tolist(), where)
    raise TypeError(f"{where} holds a {type(obj).__name__}, which a JSON report cannot hold")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(key)
    raise TypeError(f"{where} has a key of type {type(key).__name__}; report keys must be text")


def report_dict(report: Report) -> dict[str, Any]:
    """``report.to_dict()`` made JSON-safe (see :func:`to_jsonable`)."""
    return to_jsonable(report.to_dict())


def render_json(report: Report) -> str:
    """``report.json``: the report as JSON, indented by 2, with ``null`` for NaN and infinity.

    Example:
        >>> Report.from_dict(json.loads(render_json(report)))  # doctest: +SKIP
    """
    return json.dumps(report_dict(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
