"""How long the report writer takes to draw a demo report's figures, two ways, in one run.

``render_html`` of saved reports (``report.json`` files, by default the two that
``privguard demo`` writes: ``privguard-report/report.json`` and
``privguard-report/digits/report.json``), timed in CPU seconds of this process with

- ``constrained``: every figure with matplotlib's constrained layout (how
  :mod:`privguard.audit.plots` drew them before): the layout engine measures every tick label
  and the figure is drawn twice, once to lay it out and once to render it;
- ``fixed``: the fixed margins the plots now set by hand, one draw per figure.

The two alternate ``--repeat`` times (interleaved, so a change in machine load hits both);
the load average is recorded before and after. Each variant's HTML is checked to hold the same
number of PNG plots. Run ``python benchmarks/report_figures.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_run, markdown_table, print_table, run_header  # noqa: E402
from privguard.audit import plots  # noqa: E402
from privguard.audit.report import Report  # noqa: E402
from privguard.audit.report.html import render_html  # noqa: E402

DEFAULT_REPORTS = ["privguard-report/report.json", "privguard-report/digits/report.json"]


def _render(reports: list[Report], constrained: bool) -> tuple[float, float, int]:
    """CPU and wall seconds of rendering every report's HTML, and the number of plots drawn."""
    original = plots.new_figure

    def forced(width: float, height: float, *, layout: str | None = "constrained"):
        return original(width, height, layout="constrained")

    if constrained:  # subplots_adjust is ignored under a layout engine: the old figures exactly
        plots.new_figure = forced
        warnings.filterwarnings("ignore", message="This figure was using a layout engine")
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        n = sum(render_html(r).count("data:image/png;base64,") for r in reports)
        return time.process_time() - c0, time.perf_counter() - w0, n
    finally:
        plots.new_figure = original


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("reports", nargs="*", default=DEFAULT_REPORTS, help="report.json files")
    p.add_argument("--repeat", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/report_figures.json"))
    args = p.parse_args(argv)
    missing = [r for r in args.reports if not Path(r).is_file()]
    if missing:
        p.error(f"no report at {', '.join(missing)}: run `privguard demo` first or pass paths")
    reports = [Report.from_dict(json.loads(Path(r).read_text())) for r in args.reports]
    start = time.perf_counter()
    results = run_header("report_figures", argv)
    results["machine"]["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    results["reports"] = list(args.reports)
    runs: dict[str, list[dict[str, float]]] = {"constrained": [], "fixed": []}
    _render(reports, False)  # warm-up: imports, fonts, the Jinja template
    for _ in range(args.repeat):
        for name in ("constrained", "fixed"):
            cpu, wall, n = _render(reports, name == "constrained")
            runs[name].append({"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "plots": n})
    results["runs"] = runs
    if len({r["plots"] for v in runs.values() for r in v}) != 1:
        raise SystemExit("the two variants drew a different number of plots")
    cpu = {k: sum(r["cpu_s"] for r in v) / len(v) for k, v in runs.items()}
    results["mean_cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
    results["cpu_ratio"] = round(cpu["constrained"] / cpu["fixed"], 2)
    return finish_run(results, args.out, start, print_tables=_print, markdown=_markdown)


def _rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, runs in results["runs"].items():
        rows.append(
            [
                name,
                str(runs[0]["plots"]),
                " / ".join(f"{r['cpu_s']:.2f}" for r in runs),
                f"{results['mean_cpu_s'][name]:.2f}",
                " / ".join(f"{r['wall_s']:.1f}" for r in runs),
            ]
        )
    return rows


_HEADER = ["layout", "plots", "CPU s per round", "mean CPU s", "wall s per round"]


def _print(results: dict[str, Any]) -> None:
    print_table("report.html of the demo reports", _HEADER, _rows(results))
    print(f"constrained / fixed CPU: {results['cpu_ratio']}x")


def _markdown(results: dict[str, Any]) -> str:
    return markdown_table(_HEADER, _rows(results))


if __name__ == "__main__":
    main()
