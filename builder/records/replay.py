"""The replay record (`replay.json`) and the base it shares with the manifest.

A manifest and a replay record repeat most of their fields: the head (schema version, kind,
tool, creation time) and the run (spec, controls, fingerprint, inputs, findings, outcome,
artifacts). `RunRecord` holds them once. Each record puts fields of its own between them —
the replay its source after the head, the manifest its data after the fingerprint — and JSON
keeps the order fields were declared in, base classes first (in method resolution order). So
the base comes in layers (`RecordHead` → `RunSetup` → `RunRecord`), and each record's own
fields sit on a layer of their own, which is what keeps `manifest.json` and `replay.json`
byte-for-byte as they were.
"""

from typing import Any, Literal

from pydantic import Field

from builder.model_base import Strict
from builder.records.enums import Where
from builder.records.run import (
    AppliedControls,
    ArtifactRef,
    Finding,
    Fingerprint,
    InputRecord,
    Outcome,
    Sha256,
    ToolInfo,
)
from builder.records.spec import AnySpec

SCHEMA_VERSION: Literal[1] = 1


class RecordHead(Strict):
    """What both records start with; each narrows `kind` to its own word."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: str
    tool: ToolInfo
    created: str


class RunSetup(RecordHead):
    """What the run was: the spec, the controls applied, the machine."""

    spec: AnySpec
    controls: AppliedControls
    fingerprint: Fingerprint


class RunRecord(RunSetup):
    """The shared base of the manifest and the replay record: one run, with what it read,
    what the audit found, what came out and the files that hold it."""

    inputs: dict[str, InputRecord] = Field(default={})
    audit: list[Finding] = Field(default=[])
    outcome: Outcome
    artifacts: dict[str, ArtifactRef]
    # a plain script's parsed command line (argparse, defaults included); absent when the
    # code parsed none, so records made before it are byte for byte as they were
    arguments: dict[str, Any] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The argparse namespace the code parsed from its command line: every "
        "effective value, defaults included",
    )


class CapsuleRef(Strict):
    name: str
    path: str
    manifest_sha256: Sha256
    # the capsule's frozen content (store.capsule_digest: without images and studies), which
    # `diff` compares with the capsule's; replays made before it was recorded have none
    source_digest: Sha256 | None = Field(default=None, exclude_if=lambda v: v is None)


class _ReplaySource(RecordHead):
    """Which capsule was replayed, where, and with which what-if values."""

    capsule: CapsuleRef
    on: Where
    image_id: str | None = None
    overrides: dict[str, str]


class ReplayRecord(RunRecord, _ReplaySource):
    """A replay of a capsule: its own environment and outcome, for `diff` to judge."""

    kind: Literal["replay"] = "replay"
