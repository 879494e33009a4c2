"""Closed value sets shared by several records: types instead of strings.

Each is a StrEnum, so a member is still the string it stands for: records write the very
strings they wrote before, and `==`, f-strings and dict lookups by string keep working.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema
from pydantic_core.core_schema import EnumSchema


class Closed(StrEnum):
    """A closed set of words. Strict models take a member or its exact string (a spec read
    from TOML, a command-line choice) — anything else is refused with the allowed values."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = cast(EnumSchema, handler(source))
        schema["strict"] = False  # by value: strict mode would take members only
        return schema


class Device(Closed):
    """Where the numbers are computed."""

    cpu = "cpu"
    cuda = "cuda"


class Where(Closed):
    """Where a replay runs: this host, or the capsule's image in a container engine."""

    host = "host"
    docker = "docker"
    podman = "podman"
    oci = "oci"


class Tier(Closed):
    """diff's verdict, strongest first."""

    identical = "identical"
    close = "close"
    equivalent = "equivalent"
    diverged = "diverged"

    def meets(self, required: Tier) -> bool:
        """At least as strong as `required` (what `--require` asks for)."""
        order = list(Tier)
        return order.index(self) <= order.index(required)


class RecordKind(Closed):
    """The `kind` of each stored record: what `builder.records` tells documents apart by."""

    capsule = "capsule"
    replay = "replay"
    sweep = "sweep"
    audit = "audit"
    matrix = "matrix"
