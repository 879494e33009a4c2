"""Capsule: freeze an ML experiment, replay it anywhere, and get a verdict with evidence.

`from builder import Run` gives the type a user's `main(run)` receives (builder.api), and
`from builder import current_run` the Run of a plain script (a stand-in outside Capsule);
both are loaded lazily so the command line does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "current_run"]

if TYPE_CHECKING:
    from builder.api import Run, current_run


def __getattr__(name: str) -> Any:
    if name in ("Run", "current_run"):
        from builder import api

        return getattr(api, name)
    raise AttributeError(f"module 'builder' has no attribute {name!r}")
