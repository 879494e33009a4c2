"""What-if values for one replay (`--set KEY=VALUE`): applied to the capsule's spec, validated
like the spec itself, and recorded so the verdict can name them first."""

from __future__ import annotations

import tomllib
from typing import Any

from builder.errors import BadInput
from builder.records.spec import Spec, UserSpec
from builder.spec import parse_spec

FIXED = {
    "name": "it names the capsule",
    "framework": "compare with a capsule of the other framework instead",
    "entrypoint": "it is part of the frozen code",
    "code": "the code is frozen in the capsule",
    "data": "the data is stored in the capsule",
}


def parse_value(raw: str) -> Any:
    """A TOML value (`0.01`, `true`, `[26, 26]`, `"relu"`); anything else is a plain string."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings → {dotted key: value}; a malformed item is a one-line BadInput."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise BadInput(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=0.005")
        changes[key] = parse_value(raw.strip())
    return changes


def apply_changes(spec: Spec | UserSpec, changes: dict[str, Any]) -> Spec | UserSpec:
    """The spec with `changes` set, validated again (errors name `--set` and the field)."""
    data = spec.model_dump(mode="json")
    for key, value in changes.items():
        top = key.split(".")[0]
        if top in FIXED:
            raise BadInput(f"--set {key}: cannot be changed in a replay: {FIXED[top]}")
        node = data
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise BadInput(f"--set {key}: '{part}' is not a table of the spec")
            node = child
        node[last] = value
    return parse_spec(data, "--set")


def with_controls(
    spec: Spec | UserSpec, device: str | None, threads: int | None
) -> Spec | UserSpec:
    """The spec with a command line's --device and --threads, validated again."""
    changes: dict[str, object] = {}
    if device is not None:
        changes["controls.device"] = device
    if threads is not None:
        changes["controls.threads"] = threads
    return apply_changes(spec, changes) if changes else spec


def changed(before: Spec | UserSpec, after: Spec | UserSpec) -> dict[str, str]:
    """The dotted keys whose values differ between two specs, in words (what a replay records)."""
    out: dict[str, str] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif a != b:
            out[prefix] = str(b)

    walk(before.model_dump(mode="json"), after.model_dump(mode="json"), "")
    return out
