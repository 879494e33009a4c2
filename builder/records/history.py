"""A capsule directory's history (`history.jsonl`): what was done with it here — imports,
exports, replays, sweeps, matrices — and where each ran. Not an artifact: outside the digest and
the signature, not carried by an export; `inspect` shows it."""

from typing import Literal

from builder.model_base import Strict
from builder.records.enums import Where


class HistoryEvent(Strict):
    """One command's use of the capsule, written when it succeeded."""

    at: str  # ISO 8601, UTC
    command: Literal["import", "export", "replay", "sweep", "matrix"]
    on: Where | None = None  # where it ran: host, or the image on an engine
    node: str  # the machine's name
    path: str | None = None  # what it wrote: the export file, the replay directory, …
    format: str | None = None  # an export's format (tar, oci, ro-crate)
    engine: str | None = None  # the engine an export's image came from or an import's went to
    bytes: int | None = None
    runs: int | None = None  # a sweep's runs that ran
    executor: str | None = None  # a sweep's executor (local, slurm)
