"""``report.html``: one self-contained page, and the Jinja environment both report templates use.

The page has inline CSS, PNG plots as data URIs and no scripts; it renders the view model of
:mod:`privguard.audit.report.view`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from privguard.audit.report import Report
from privguard.audit.report.view import (
    build_view,
    field_label,
    fmt_number,
    fmt_value,
    md_escape,
    metric_label,
)

TEMPLATE_DIR = Path(__file__).parent.parent / "templates"


@cache
def environment() -> jinja2.Environment:
    """The Jinja environment of the report templates (and the sweep's), with the view filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_number
    env.filters["val"] = fmt_value
    env.filters["md"] = md_escape
    env.filters["label"] = field_label
    env.filters["metric_label"] = metric_label
    return env


def render_html(report: Report) -> str:
    """``report.html``: one self-contained page (inline CSS, PNG plots as data URIs, no scripts).

    Summary first (overall risk, attacks table, membership ROC overlay), then target, data,
    one section per attack, and the plan that reproduces the audit.
    """
    return environment().get_template("report.html.j2").render(r=build_view(report))
