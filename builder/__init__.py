"""Capsule: freeze an ML experiment, replay it anywhere, and get a verdict with evidence.

`from builder import Run` gives the type a user's `main(run)` receives (builder.api), loaded
lazily so the command line does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__"]

if TYPE_CHECKING:
    from builder.api import Run


def __getattr__(name: str) -> Any:
    if name == "Run":
        from builder.api import Run

        return Run
    raise AttributeError(f"module 'builder' has no attribute {name!r}")
