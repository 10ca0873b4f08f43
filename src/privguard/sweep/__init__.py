"""The privacy–utility sweep: defended variants trained, audited alike, and compared.

An orchestrator above :mod:`privguard.audit`: it trains variants, runs
:func:`privguard.audit` on each, and reads the reports. One concern per module:
:mod:`~privguard.sweep.grid` (the variants), :mod:`~privguard.sweep.run` (training fan-out,
auditing, one row per variant), :mod:`~privguard.sweep.frontier` (Pareto frontier,
recommendation) and :mod:`~privguard.sweep.report` (``sweep.json``, ``sweep.html``).
"""

from privguard.sweep.frontier import mark_pareto, recommend
from privguard.sweep.grid import DEFAULT_ATTACKS, DEFAULT_GRID, Variant, load_grid
from privguard.sweep.run import SweepResult, SweepRow, sweep

__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_GRID",
    "SweepResult",
    "SweepRow",
    "Variant",
    "load_grid",
    "mark_pareto",
    "recommend",
    "sweep",
]
