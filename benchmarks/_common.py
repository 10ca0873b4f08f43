"""Helpers shared by the benchmark scripts: machine and version info, JSON-safe values,
atomic result files."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privguard


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
