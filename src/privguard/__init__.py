"""privguard: does this model leak its training data, and how do we stop it?

Python API:

    >>> import privguard
    >>> target = privguard.train("digits", privguard.TrainConfig(model="mlp"))
    >>> target.save("model-dir")
    >>> target = privguard.load_target("model-dir")
    >>> report = privguard.audit(target, attacks=["membership"])
    >>> privguard.write_report(report, "privguard-report")

The names below load on first use (PEP 562), so ``import privguard`` and the ``privguard``
command start without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from privguard._version import __version__
from privguard.errors import (
    AccessError,
    BudgetExhaustedError,
    ConfigError,
    DataError,
    ModelError,
    PrivguardError,
)

# public name -> (module, attribute), imported on first access
_LAZY = {
    "AttackResult": ("privguard.audit.report", "AttackResult"),
    "Report": ("privguard.audit.report", "Report"),
    "audit": ("privguard.audit.runner", "audit"),
    "dp_audit": ("privguard.audit.dp_user", "dp_audit"),
    "audit_scores": ("privguard.audit.scores", "audit_scores"),
    "adapt": ("privguard.models.adapters", "adapt"),
    "Target": ("privguard.models", "Target"),
    "TrainConfig": ("privguard.models", "TrainConfig"),
    "from_sklearn": ("privguard.models", "from_sklearn"),
    "load_target": ("privguard.models", "load_target"),
    "train": ("privguard.models", "train_target"),
    "Access": ("privguard.oracle", "Access"),
    "Oracle": ("privguard.oracle", "Oracle"),
    "as_predictor": ("privguard.oracle", "as_predictor"),
}

if TYPE_CHECKING:
    from privguard.audit.dp_user import dp_audit
    from privguard.audit.report import AttackResult, Report
    from privguard.audit.runner import audit
    from privguard.audit.scores import audit_scores
    from privguard.models import Target, TrainConfig, from_sklearn, load_target
    from privguard.models import train_target as train
    from privguard.models.adapters import adapt
    from privguard.oracle import Access, Oracle, as_predictor


def __getattr__(name: str) -> Any:
    if name == "endpoint":
        # the package privguard.endpoint is callable: privguard.endpoint(url, ...) (connect)
        return importlib.import_module("privguard.endpoint")
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'privguard' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"endpoint"})


class _Package(types.ModuleType):
    """``privguard.audit`` is the function, as it was when this module imported it eagerly:
    importing the subpackage ``privguard.audit.*`` later must not rebind the name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "audit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def write_report(report: Report, out_dir):
    """Write report.json, report.html and model-card.md into ``out_dir`` atomically."""
    from privguard.audit.report.write import write_report as _write

    return _write(report, out_dir)


__all__ = [
    "Access",
    "AccessError",
    "AttackResult",
    "BudgetExhaustedError",
    "ConfigError",
    "DataError",
    "ModelError",
    "Oracle",
    "PrivguardError",
    "Report",
    "Target",
    "TrainConfig",
    "__version__",
    "adapt",
    "as_predictor",
    "audit",
    "audit_scores",
    "dp_audit",
    "endpoint",
    "from_sklearn",
    "load_target",
    "train",
    "write_report",
]
