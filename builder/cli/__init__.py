"""The `capsule` command line: thin typer commands, one module per group.

Each command parses its arguments, calls one service (which never prints) and hands the result
to `common.emit`: one JSON document with `--json`, else text from builder.report.text. Progress
goes to stderr through a rich observer (progress.py). CapsuleError becomes one line on stderr
and the contract's exit code (2 bad input, 3 integrity, 4 engine missing), never a traceback.

Only typer and rich are imported to start: each command imports its service when it runs, so
`--help` and `--version` start without pydantic, NumPy or a framework (benchmarks/startup.py).
"""

from __future__ import annotations

import gc
import os
import sys
import types

# Capsule uses no pydantic plugin, and pydantic looks for them by reading the entry points of
# every installed distribution (~12 ms with a deep-learning stack installed). Off in Capsule's
# processes unless the user sets the variable (to "" to keep them).
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
if os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__" and "pydantic" not in sys.modules:
    # With plugins off, pydantic's loader returns no plugins, yet importing it imports
    # importlib.metadata and email (~30 ms): this stand-in returns the same nothing.
    _no_plugins = types.ModuleType("pydantic.plugin._loader")
    _no_plugins.get_plugins = tuple  # type: ignore[attr-defined]
    sys.modules["pydantic.plugin._loader"] = _no_plugins
# Start-up allocates some 300,000 objects that all live on (modules, classes, validators): the
# cyclic collector would scan them ~80 times for nothing (~15 ms). It runs rarely until a
# command starts its work (`common.reported` restores the default thresholds).
gc.set_threshold(100_000, 50, 50)
from typing import Annotated  # noqa: E402  (imports after the start-up settings above)

import typer  # noqa: E402

from builder import __version__  # noqa: E402
from builder.cli.common import app  # noqa: E402


def _version(value: bool) -> None:
    if value:
        print(f"capsule {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Exit codes: 0 ok, 1 verdict below requirement, 2 bad input, 3 integrity, 4 no engine."""


# the command groups register themselves on `app` (their services load when a command runs)
from builder.cli import capsules, images, reports, studies  # noqa: E402, F401

__all__ = ["app", "main"]


def main() -> None:
    from builder.frameworks import quiet_logs

    quiet_logs()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
