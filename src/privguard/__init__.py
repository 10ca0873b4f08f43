"""privguard: does this model leak its training data, and how do we stop it?

Python API:

    >>> import privguard
    >>> target = privguard.train("digits", privguard.TrainConfig(model="mlp"))
    >>> target.save("model-dir")
    >>> target = privguard.load_target("model-dir")
    >>> report = privguard.audit(target, attacks=["membership"])
    >>> privguard.write_report(report, "privguard-report")
"""

__version__ = "0.1.0"

from privguard.audit.report import AttackResult, Report  # noqa: E402
from privguard.audit.runner import audit  # noqa: E402
from privguard.errors import (  # noqa: E402
    AccessError,
    BudgetExhaustedError,
    ConfigError,
    DataError,
    ModelError,
    PrivguardError,
)
from privguard.models import Target, TrainConfig, from_sklearn, load_target  # noqa: E402
from privguard.models import train_target as train  # noqa: E402
from privguard.oracle import Access, Oracle, as_predictor  # noqa: E402


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
    "as_predictor",
    "audit",
    "from_sklearn",
    "load_target",
    "train",
    "write_report",
]
