"""Progress reporting shared by the library and the CLI, without rich or tqdm.

:func:`progress_lines` turns the library's ``progress(step, done, total)`` callback into
timestamped lines (the first and last update of each step, one per 10% of its total in
between) — what the CLI prints on stderr when it is not a terminal, and what
``privguard.audit(..., progress=True)`` prints. :func:`resolve` maps the ``progress`` argument
of the API (``None`` / ``False`` / ``True`` / a callback) to a callback that also logs each step
through :mod:`logging` (logger ``privguard.audit``, level INFO).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[str, int, int], None]
log = logging.getLogger("privguard.audit")


def progress_lines(stream: Any) -> Progress:
    """A progress callback writing ``HH:MM:SS step done/total`` lines to ``stream``."""
    seen: dict[str, int] = {}

    def update(step: str, done: int, total: int) -> None:
        key = step.split(" ")[0] if step.startswith("attack") else step
        tenth = int(10 * done / total) if total else 10
        if key in seen and seen[key] == tenth and done not in (0, total):
            return
        if step.startswith("attack"):
            seen.clear()
        seen[key] = tenth
        stream.write(f"{time.strftime('%H:%M:%S')} {step} {done}/{total}\n")
        stream.flush()

    return update


def resolve(progress: Progress | bool | None) -> Progress:
    """The callback behind ``progress``: ``True`` writes lines to stderr, a callable is kept,
    ``None``/``False`` shows nothing; each attack step is logged at INFO either way."""
    if progress is True:
        shown: Progress | None = progress_lines(sys.stderr)
    elif callable(progress):
        shown = progress
    else:
        shown = None
    logged: dict[str, int] = {}

    def update(step: str, done: int, total: int) -> None:
        if step.startswith("attack") and logged.get(step) != done:
            logged[step] = done
            log.info("%s (%d/%d)", step, done, total)
        if shown is not None:
            shown(step, done, total)

    return update
