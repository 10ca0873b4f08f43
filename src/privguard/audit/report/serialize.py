"""``report.json``: the report as JSON, and the JSON-safe conversion every report file starts from.

All report files are rendered from one JSON-safe copy of the report (non-finite numbers become
null, numpy values plain Python), so they always agree.
"""

from __future__ import annotations

import json
from typing import Any

from privguard._io import to_jsonable
from privguard.audit.report import Report


def report_dict(report: Report) -> dict[str, Any]:
    """``report.to_dict()`` made JSON-safe (see :func:`to_jsonable`)."""
    return to_jsonable(report.to_dict(), "report")


def render_json(report: Report) -> str:
    """``report.json``: the report as JSON, indented by 2, with ``null`` for NaN and infinity.

    Example:
        >>> Report.from_dict(json.loads(render_json(report)))  # doctest: +SKIP
    """
    return json.dumps(report_dict(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
