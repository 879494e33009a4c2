"""The seed/order sweep stored in a capsule (artifact "sweep"), and the statistics printed
over it (`capsule stats`, diff's equivalent tier)."""

from typing import Any, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer

from builder.model_base import Printed, Real, Strict
from builder.records.enums import Where


class SweepRun(Strict):
    """One run of a sweep: its seeds, final metrics and a digest over all its weights."""

    init: int
    order: int
    final: dict[str, Real | None]
    weights_sha256: str
    seconds: Real
    on: Where | None = None
    """Where it ran: this host's Python, or a container of the capsule's image on an engine
    (absent from runs recorded before)."""
    node: str | None = None
    """The machine's name (a Slurm node's, for a sweep on Slurm)."""

    @model_serializer(mode="wrap")
    def _unknown_place_unwritten(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A run recorded before runs said where they ran is written back as it was."""
        data: dict[str, Any] = write(self)
        for key in ("on", "node"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Summary(Strict):
    """One row of the paper's Statistical Analysis table; stored with the sweep, so that
    `inspect` shows it without importing scipy (~0.7 s)."""

    metric: str
    n: int
    min: Real
    max: Real
    mean: Real
    std: Real
    ci_low: Real
    ci_high: Real


class SweepRecord(Strict):
    """Every finished run of the capsule's sweeps, sorted by (init, order)."""

    kind: Literal["sweep"] = "sweep"
    schema_version: Literal[1] = 1
    runs: list[SweepRun]
    summaries: list[Summary] | None = None
    """Those of `runs`, written with them (absent from records written before)."""

    def by_key(self) -> dict[tuple[int, int], SweepRun]:
        return {(r.init, r.order): r for r in self.runs}

    def values(self, keys: list[tuple[int, int]] | None = None) -> dict[str, list[float]]:
        """metric → the values of the sweep's runs (those of `keys` only, when given)."""
        chosen = self.runs if keys is None else [r for r in self.runs if (r.init, r.order) in keys]
        out: dict[str, list[float]] = {}
        for run in chosen:
            for metric, value in run.final.items():
                if value is not None:
                    out.setdefault(metric, []).append(value)
        return out


class Welch(Printed):
    """Welch's t-test of one metric between two sweeps."""

    metric: str
    mean_a: float
    mean_b: float
    t: float
    p: float
    significant: bool
    alpha: float


class Tost(Printed):
    """Two one-sided t-tests: is the sweep's mean within ±margin of `value`?"""

    metric: str
    value: float
    n: int
    mean: float
    std: float
    margin: float
    p_lower: float
    p_upper: float
    p: float
    alpha: float
    equivalent: bool
