"""The library-upgrade audit stored in a capsule (artifact "audit/<sha12>"): the versions
swapped, the verdict, and every environment tried."""

from typing import Literal

from pydantic import Field

from builder.model_base import Strict
from builder.records.enums import Closed, Tier, Where


class TrialVerdict(Closed):
    """A trial's outcome: diff's tier, or `unresolved` when its environment could not be set
    up (its versions conflict) — the bisection then treats that subset as unknown."""

    identical = "identical"
    close = "close"
    equivalent = "equivalent"
    diverged = "diverged"
    unresolved = "unresolved"


class Change(Strict):
    name: str
    old: str | None = Field(description="The capsule's version; None when the change adds it.")
    new: str

    def __str__(self) -> str:
        return f"{self.name} {self.old or 'absent'} → {self.new}"


class Trial(Strict):
    """One replay in an environment with `changes` (names) applied."""

    changes: list[str]
    added: dict[str, str] = Field(default={}, description="Newly required, added.")
    verdict: TrialVerdict
    reasons: list[str]


class AuditRecord(Strict):
    """`schema_version` came after the first audits: those load as version 1."""

    kind: Literal["audit"] = "audit"
    schema_version: Literal[1] = 1
    created: str
    on: Where
    changes: list[Change]
    added: dict[str, str] = Field(
        default={}, description="Distributions the new versions require, added."
    )
    verdict: Tier
    reasons: list[str]
    bisect: list[str] | None = Field(
        default=None, description="The smallest set of changes that moves the result."
    )
    trials: list[Trial]
