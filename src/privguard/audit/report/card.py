"""``model-card.md``: a Markdown model card filled from the audit.

The card follows the sections of Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019), filled with what privguard measured; what only the model's owner knows is marked
``**[TO FILL: ...]**`` and listed again in a closing checklist.
"""

from __future__ import annotations

import re

from privguard.audit.report import Report
from privguard.audit.report.html import environment
from privguard.audit.report.view import build_view

TODOS: dict[str, tuple[str, str]] = {
    "owner": ("Model details", "model name, version, owner and contact"),
    "model_licence": ("Model details", "licence under which the model is released"),
    "intended_use": ("Intended use", "primary intended uses and users"),
    "out_of_scope": ("Intended use", "uses the model must not be put to"),
    "collection": ("Data collection", "who collected the data, when, and with what consent"),
    "personal_data": (
        "Data collection",
        "which personal or sensitive attributes the data holds, and the legal basis for using them",
    ),
    "retention": ("Data collection", "how long the training data is kept and who can access it"),
    "preprocessing": ("Training", "preprocessing, cleaning and labelling applied before training"),
    "deployment": (
        "Deployment",
        "where and how the model is served and what outputs callers receive (labels, top-k, "
        "scores)",
    ),
    "access_control": ("Deployment", "who may query the model, rate limits and query budgets"),
    "monitoring": (
        "Monitoring",
        "who watches the query logs, the alert thresholds and the response plan",
    ),
    "reaudit": ("Monitoring", "when the model is audited again (e.g. after every retraining)"),
    "limitations": ("Caveats", "known limitations, biases and failure modes beyond privacy"),
}


def _fill(key: str) -> str:
    return f"**[TO FILL: {TODOS[key][1]}]**"


def render_model_card(report: Report) -> str:
    """``model-card.md``: a Markdown model card filled from the audit, gaps marked TO FILL."""
    view = build_view(report, with_plots=False)
    text = environment().get_template("model_card.md.j2").render(r=view, fill=_fill, todos=TODOS)
    return re.sub(r"\n{3,}", "\n\n", text)  # templates leave runs of blank lines
