"""An in-toto Statement (v1) carrying SLSA build provenance (v1): what `capsule build` stores
for each image it builds, at `provenance/<variant>-<sha12>.json` in the capsule.

The models follow the two specifications' field names (https://in-toto.io/Statement/v1,
https://slsa.dev/provenance/v1), so any in-toto or SLSA tool reads the file; only the fields
Capsule fills are modelled. The statement is not a stored record of Capsule's own (no `kind`,
no `schema_version`: its `_type` and `predicateType` say what it is). Write it with
`Statement.dump()`, which uses the specifications' names and leaves out what is unset.
"""

from typing import Any, Literal

from pydantic import ConfigDict, Field

from builder.model_base import Strict

STATEMENT_TYPE: Literal["https://in-toto.io/Statement/v1"] = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE: Literal["https://slsa.dev/provenance/v1"] = "https://slsa.dev/provenance/v1"

Digest = dict[str, str]  # algorithm → lowercase hex, as in-toto's DigestSet


class ResourceDescriptor(Strict):
    """One artifact: a subject of the statement, or a dependency the build resolved."""

    name: str | None = None
    uri: str | None = None
    digest: Digest
    mediaType: str | None = None
    annotations: dict[str, Any] | None = None


class BuildDefinition(Strict):
    buildType: str
    externalParameters: dict[str, Any]
    internalParameters: dict[str, Any] | None = None
    resolvedDependencies: list[ResourceDescriptor] = Field(default=[])


class Builder(Strict):
    id: str
    version: dict[str, str] | None = None


class BuildMetadata(Strict):
    invocationId: str | None = None
    startedOn: str | None = None
    finishedOn: str | None = None


class RunDetails(Strict):
    builder: Builder
    metadata: BuildMetadata | None = None


class Provenance(Strict):
    """SLSA Provenance v1: how the subject was built and by whom."""

    buildDefinition: BuildDefinition
    runDetails: RunDetails


class Statement(Strict):
    """in-toto Statement v1 whose predicate is SLSA Provenance v1."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["https://in-toto.io/Statement/v1"] = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[ResourceDescriptor] = Field(min_length=1)
    predicateType: Literal["https://slsa.dev/provenance/v1"] = SLSA_PROVENANCE
    predicate: Provenance

    def dump(self) -> bytes:
        """The statement as the specifications spell it (`_type`; unset fields left out)."""
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2).encode() + b"\n"
