"""What the user's code did while it ran, beyond what it told the Run: the command line it
parsed (argparse, defaults included) and the RNGs it reseeded. Both are watched by wrapping
the library functions for the run's duration; nothing of the code is changed.

A reseed with another value than the capsule's init seed cancels that seed for everything
drawn after it — an init-seed sweep then trains the same model every time, silently — so it
becomes a finding at the line of the user's code that made it.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from builder.records.run import Finding

RESEED_RULE = "reseeded"
ORDER_RULE = "order-not-recorded"


@dataclass
class Watched:
    arguments: dict[str, object] | None = None
    reseeds: dict[tuple[str, int], tuple[str, object]] = field(default_factory=dict)


@contextmanager
def parsed_arguments(watched: Watched) -> Iterator[None]:
    """Record the namespace of every command line the code parses from sys.argv (argparse,
    defaults included): the values the code really ran with, not only those in [params]."""
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(
        self: argparse.ArgumentParser, args: object = None, namespace: object = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = original(self, args, namespace)  # type: ignore[call-overload]
        if args is None:
            watched.arguments = {k: _plain(v) for k, v in sorted(vars(parsed).items())}
        return parsed, extra

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]


def _plain(value: object) -> object:
    """An argparse value as JSON: numbers, strings, booleans, None and lists as they are,
    anything else (a Path, a file) as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _caller_in(code_dir: Path) -> tuple[str, int] | None:
    """The innermost frame of the user's code on the stack (file relative to `code_dir`)."""
    frame = sys._getframe(2)
    root = str(code_dir)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(root + "/"):
            return Path(name).relative_to(code_dir).as_posix(), frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None


@contextmanager
def seeding_calls(
    watched: Watched, code_dir: Path, functions: list[tuple[object, str, str]]
) -> Iterator[None]:
    """Record each reseed the user's code makes (directly or through a helper such as
    Lightning's `seed_everything`): its file and line, the function and the seed."""
    targets = [
        (random, "seed", "random.seed"),
        (np.random, "seed", "np.random.seed"),
        *functions,
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]

    def wrap(original: Callable[..., Any], shown: str) -> Callable[..., Any]:
        def reseed(*args: Any, **kwargs: Any) -> Any:
            where = _caller_in(code_dir)
            if where is not None and where not in watched.reseeds:
                seed = args[0] if args else kwargs.get("seed", kwargs.get("a"))
                watched.reseeds[where] = (shown, seed)
            return original(*args, **kwargs)

        return reseed

    for (owner, attr, shown), (_, _, original) in zip(targets, saved, strict=True):
        setattr(owner, attr, wrap(original, shown))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def reseed_findings(watched: Watched, init: int) -> list[Finding]:
    """A finding for each reseed with another value than the init seed (or from entropy)."""
    findings = []
    for (file, line), (function, seed) in sorted(watched.reseeds.items()):
        if isinstance(seed, int) and seed in (init, init % 2**32):
            continue
        what = "from entropy" if seed is None else f"with {seed!r}"
        findings.append(
            Finding(
                source="runtime",
                rule=RESEED_RULE,
                file=file,
                line=line,
                message=f"{function}() reseeds {what}, not the capsule's init seed ({init}): "
                "it cancels that seed for all that follows, so an init-seed sweep cannot vary "
                "it (seed from current_run().seeds.init, or drop the call)",
            )
        )
    return findings


def order_finding(entry: str, drew_order: bool) -> list[Finding]:
    """The code drew no data order through the Run: nothing is recorded, and an order sweep
    varies nothing (whatever order it used follows the init seed, or none)."""
    if drew_order:
        return []
    return [
        Finding(
            source="runtime",
            rule=ORDER_RULE,
            file=entry,
            line=1,
            message="the code drew no data order through the run (run.sampler, run.keras_fit "
            "or run.order): no order is recorded, and an order sweep cannot vary it",
        )
    ]
