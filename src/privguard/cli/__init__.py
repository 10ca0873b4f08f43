"""The ``privguard`` command: a thin layer over the Python API.

The commands live by group in ``train``, ``audit`` (audit, import), ``defend`` (sweep,
dp-audit), ``demo``, ``data`` (attacks, datasets) and ``gateway`` (serve, keys, seal, purge,
monitor); this module builds the typer app from them and maps errors to exit codes.
Importing it imports neither torch nor the gateway: each command imports what it needs when it
runs.

Exit codes: 0 done; 1 ``--fail-on LEVEL`` tripped; 2 bad input (one line on stderr, nothing
written); 3 an internal error (a bug: one line, ``PRIVGUARD_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import sys

import typer

from privguard.cli import audit as _audit
from privguard.cli import data as _data
from privguard.cli import defend as _defend
from privguard.cli import demo as _demo
from privguard.cli import gateway as _gateway
from privguard.cli import train as _train
from privguard.cli._common import err, out
from privguard.errors import PrivguardError

# rich_markup_mode=None: help text is printed as written, so "[tiers.NAME]" and "[server]"
# stay verbatim instead of being read as rich markup (and rich is not loaded for --help).
app = typer.Typer(
    help="Audit ML models for training-data leakage, and defend them.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from privguard._version import __version__

        out.print(f"privguard {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """privguard: does this model leak its training data, and how do we stop it?"""


app.command()(_train.train)
app.command()(_audit.audit)
app.command("import")(_audit.import_model)
app.command()(_demo.demo)
app.command()(_defend.sweep)
app.command("dp-audit")(_defend.dp_audit)
app.command("attacks")(_data.list_attacks)
app.command("datasets")(_data.list_datasets)
app.add_typer(_gateway.keys_app, name="keys")
app.add_typer(_gateway.monitor_app, name="monitor")
app.command()(_gateway.serve)
app.command()(_gateway.seal)
app.command()(_gateway.purge)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: privguard errors become one line on stderr and
    exit code 2, never a traceback; usage errors are typer's (exit 2)."""
    try:
        app(args=argv, prog_name="privguard")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except PrivguardError as e:
        err.print(f"privguard: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("privguard: interrupted; nothing was written")
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback
        if os.environ.get("PRIVGUARD_DEBUG"):
            raise
        err.print(
            f"privguard: internal error: {type(e).__name__}: {e} (set PRIVGUARD_DEBUG=1 for the "
            "traceback, and please report it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 3
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["app", "main", "run"]
