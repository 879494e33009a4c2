"""The user's `capsule.toml` → a validated Spec, with one-line errors naming file and field.

The models themselves are records (`builder.records.spec`): manifests carry them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.errors import BadInput
from builder.records import describe_validation_error
from builder.records.spec import Spec, UserSpec

BUILTIN_ONLY = ("data", "model", "train")


def parse_spec(data: dict[str, Any], source: str) -> Spec | UserSpec:
    """A built-in experiment, or (with `entrypoint`) the user's own code."""
    if "entrypoint" in data:
        for key in BUILTIN_ONLY:
            if key in data:
                raise BadInput(
                    f"{source}: {key}: not used with 'entrypoint' (the code builds its own model "
                    "and reads its data through run.data; pass values in [params])"
                )
    model = UserSpec if "entrypoint" in data else Spec
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadInput(describe_validation_error(source, error)) from None


def load_spec(path: Path) -> Spec | UserSpec:
    """Read and validate a capsule.toml; every failure is a BadInput naming the file and field."""
    if path.is_dir():
        path = path / "capsule.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: cannot read spec: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"{path}: malformed TOML: {error}") from None
    except RecursionError:
        raise BadInput(f"{path}: malformed TOML: nested too deeply") from None
    return parse_spec(data, str(path))
