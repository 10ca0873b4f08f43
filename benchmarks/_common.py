"""The benchmarks' one runner: run header (machine, versions), the seeds x targets loop,
mean ± std aggregation, tables (plain and Markdown), ART helpers (quiet logging, a counting
``PyTorchClassifier``) and the JSON result file, written durably through ``privguard._io``.

A script defines what one (target, seed) run measures and how its runs aggregate; the loop,
logging, timings, result file and closing line are here. ART is imported only inside the ART
helpers (the ``bench`` extra); privguard never depends on it.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privguard
from privguard._io import atomic_write_json


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    import art
    import sklearn

    return {
        "privguard": privguard.__version__,
        "adversarial-robustness-toolbox": art.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON (indent 1, NaN refused) replacing ``path`` durably, mode 0644-ish."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data, indent=1, private=False)


def clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN / inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run_header(benchmark: str, argv: list[str] | None) -> dict[str, Any]:
    """The fields every benchmark's JSON starts with: what, when, how, where."""
    import sys
    from datetime import UTC, datetime

    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "machine": machine_info(),
        "versions": versions(),
    }


def finish_run(
    results: dict[str, Any],
    out: Path,
    start: float,
    *,
    print_tables: Any,
    markdown: Any | None,
) -> dict[str, Any]:
    """Record wall time and load, write the JSON atomically, print the tables (and Markdown
    when ``markdown`` is given) and the closing line; returns the cleaned results."""
    import time

    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results = clean(results)
    write_json_atomic(out, results)
    print_tables(results)
    if markdown is not None:
        print()
        print(markdown(results))
    load = results["machine"]["load_average_at_end"][1]
    print(
        f"\nwall time {results['wall_seconds']} s (5-min load average {load} on "
        f"{results['machine']['usable_cpus']} CPUs); results in {out}"
    )
    return results


# -- aggregation over seeds ---------------------------------------------------------------------


def summarise(values: Iterable[float | None]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) over seeds, rounded to 6 places;
    ``None`` counts as NaN (so a metric missing in one seed shows as NaN, not a wrong mean)."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return {
        "mean": round(float(np.mean(a)), 6),
        "std": round(float(np.std(a, ddof=1)) if len(a) > 1 else 0.0, 6),
    }


# -- the seeds x targets loop -------------------------------------------------------------------


class Clock:
    """Seconds since the run started, and a logger that prefixes them (on stderr)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


def run_seeds(
    name: str,
    seeds: Iterable[int],
    run_one: Callable[[int], dict[str, Any]],
    log: Callable[[str], None],
    *,
    show_load: bool = False,
    record_load: bool = False,
) -> list[dict[str, Any]]:
    """``run_one(seed)`` for each seed, each run stamped with its ``wall_seconds``; progress goes
    to ``log``. ``show_load`` logs the load average at each start; ``record_load`` stamps each
    run with the ``load_average_after`` it and logs its end."""
    runs = []
    for seed in seeds:
        load = f" (load {os.getloadavg()[0]:.2f})" if show_load else ""
        log(f"{name} seed {seed}{load}")
        t0 = time.perf_counter()
        run = run_one(seed)
        run["wall_seconds"] = round(time.perf_counter() - t0, 2)
        if record_load:
            run["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
            log(f"  done in {run['wall_seconds']} s (load {run['load_average_after']})")
        runs.append(run)
    return runs


def selected(name: str, in_quick: bool, quick: bool, only: set[str]) -> bool:
    """Whether a target runs under ``--quick`` / ``--only``."""
    return not ((quick and not in_quick) or (only and name not in only))


def parse_only(value: str) -> set[str]:
    """``--only a,b`` -> {"a", "b"}."""
    return {s.strip() for s in value.split(",") if s.strip()}


# -- tables -------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table on the terminal (rich), first column left-aligned, the others right."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=200).print(table)


# -- ART ----------------------------------------------------------------------------------------


def quiet_art(*, all_warnings: bool = False) -> None:
    """ART logs at INFO and warns on import and per call; keep the benchmark's output readable.
    ``all_warnings`` silences every warning (ART's extraction attacks warn from torch too)."""
    for name in ("art", "art.estimators", "art.attacks"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if all_warnings:
        warnings.filterwarnings("ignore")
    else:
        warnings.filterwarnings("ignore", module=r"art(\..*)?")
        # ART's nn attack models call softmax without a dim; torch warns from its own module.
        warnings.filterwarnings("ignore", message="Implicit dimension choice for softmax")


def art_classifier(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    clip_values: tuple[float, float] | None = (0.0, 1.0),
    count: bool = False,
    count_gradients: bool = False,
):
    """ART's ``PyTorchClassifier`` around ``module`` (CPU, cross-entropy loss). With ``count``
    its ``queries`` attribute counts the records passed to ``predict`` (and with
    ``count_gradients`` to ``class_gradient`` too), as privguard's oracle counts queries."""
    from art.estimators.classification import PyTorchClassifier

    kwargs: dict[str, Any] = {
        "model": module,
        "loss": torch.nn.CrossEntropyLoss(),
        "input_shape": tuple(input_shape),
        "nb_classes": n_classes,
    }
    if clip_values is not None:
        kwargs["clip_values"] = clip_values
    kwargs["device_type"] = "cpu"
    if not count:
        return PyTorchClassifier(**kwargs)

    class Counting(PyTorchClassifier):
        queries = 0

        def predict(self, x, *args, **kw):
            self.queries += len(x)
            return super().predict(x, *args, **kw)

        def class_gradient(self, x, *args, **kw):
            if count_gradients:
                self.queries += len(x)
            return super().class_gradient(x, *args, **kw)

    return Counting(**kwargs)
