"""Every model Capsule writes to disk or prints as JSON, in one tree.

Stored records — a capsule's manifest, a replay record, the sweep and audits stored in a
capsule, a matrix — each carry `kind` and `schema_version` and are read by `parse`/`load`, which
pick the model from the document's `kind`: the document says what it is, not its file name.
`json_schema` is what `capsule schema` prints (shipped in schema/, see `schema_files`).

Importing this package imports no model: `model_for(kind)` imports the one a document needs, so
`inspect` of a capsule does not build the sweep's, the audit's or the matrix's classes
(benchmarks/startup.py).
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from builder.errors import BadInput
from builder.records.enums import RecordKind

if TYPE_CHECKING:
    from builder.model_base import Strict
    from builder.records.audit import AuditRecord
    from builder.records.manifest import Manifest
    from builder.records.matrix import MatrixRecord
    from builder.records.replay import ReplayRecord
    from builder.records.sweep import SweepRecord

    Record = Manifest | ReplayRecord | SweepRecord | AuditRecord | MatrixRecord

# each stored kind's model, as "module:class" so that only the one a document needs is imported
_MODELS: dict[RecordKind, str] = {
    RecordKind.capsule: "builder.records.manifest:Manifest",
    RecordKind.replay: "builder.records.replay:ReplayRecord",
    RecordKind.sweep: "builder.records.sweep:SweepRecord",
    RecordKind.audit: "builder.records.audit:AuditRecord",
    RecordKind.matrix: "builder.records.matrix:MatrixRecord",
}
KINDS: tuple[str, ...] = tuple(_MODELS)

# matrix.json had no `kind` before records carried one; it is told by its own fields
_UNKINDED_MATRIX = frozenset({"capsule", "configs", "rows", "cells"})


def model_for(kind: RecordKind | str) -> type[Strict]:
    """The model that reads and writes one stored kind (imported on first use)."""
    module, name = _MODELS[RecordKind(kind)].split(":")
    model: type[Strict] = getattr(import_module(module), name)
    return model


def record_models() -> dict[RecordKind, type[Strict]]:
    """Every stored kind with its model (imports them all)."""
    return {kind: model_for(kind) for kind in _MODELS}


def record_kind(value: Any) -> str | None:
    """A document's `kind` (a matrix written before `kind` existed is recognised by its
    fields)."""
    if not isinstance(value, dict):
        return getattr(value, "kind", None)
    kind = value.get("kind")
    if kind is None and set(value) == _UNKINDED_MATRIX:
        return "matrix"
    return kind if isinstance(kind, str) else None


def describe_validation_error(source: str, error: ValidationError, skip: int = 0) -> str:
    """The first problem of a pydantic error as `source: field: reason`, in plain words
    (`skip` leading location parts, such as the union's tag)."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"][skip:]) or "(top level)"
    if first["type"] == "extra_forbidden":
        reason = "unknown field"
    elif first["type"] == "missing":
        reason = "required field is missing"
    else:
        reason = first["msg"].removeprefix("Value error, ")
        if "input" in first and first["type"] not in ("value_error", "json_invalid"):
            got = repr(first["input"])
            reason += f" (got {got if len(got) <= 80 else got[:79] + '…'})"
    return f"{source}: {field}: {reason}"


def parse(data: bytes, source: str) -> Record:
    """A stored record from its JSON bytes, the model chosen by its `kind`; every failure is
    one BadInput naming `source` and the field."""
    try:
        document = json.loads(data)
    except ValueError as error:  # UnicodeDecodeError too: the bytes are not UTF-8
        raise BadInput(f"{source}: not valid JSON: {error}") from None
    except RecursionError:
        raise BadInput(f"{source}: not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise BadInput(f"{source}: not a record (a JSON object with a 'kind')")
    kind = record_kind(document)
    if kind not in KINDS:
        found = "required field is missing" if document.get("kind") is None else "unknown"
        raise BadInput(
            f"{source}: kind: {found} (got {document.get('kind')!r}; a stored record is one of "
            f"{', '.join(KINDS)})"
        )
    try:
        record: Record = model_for(kind).model_validate_json(data)  # type: ignore[assignment]
    except ValidationError as error:
        raise BadInput(describe_validation_error(source, error)) from None
    return record


def load(path: Path) -> Record:
    """Read and parse one record file (no digest check: `builder.store` does that for the
    records of a capsule or replay directory)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"{path}: cannot read: {error.strerror or error}") from None
    return parse(data, str(path))


def kind_of(model: type[Strict]) -> RecordKind:
    """The `kind` a stored record's model writes."""
    return next(kind for kind in _MODELS if model_for(kind) is model)


def json_schema(kind: RecordKind | None = None) -> dict[str, Any]:
    """The JSON schema of one stored record kind, or of all of them: one document whose
    `oneOf` is discriminated on `kind`."""
    from pydantic.json_schema import models_json_schema

    if kind is not None:
        return model_for(kind).model_json_schema()
    models = record_models()
    refs, top = models_json_schema(
        [(model, "validation") for model in models.values()],
        title="Capsule stored records",
        description="Every record Capsule stores, told apart by `kind`.",
    )
    chosen = {name: refs[(model, "validation")]["$ref"] for name, model in models.items()}
    return {
        "title": top["title"],
        "description": top["description"],
        "oneOf": [{"$ref": ref} for ref in chosen.values()],
        "discriminator": {"propertyName": "kind", "mapping": chosen},
        "$defs": top["$defs"],
    }
