"""What `capsule report` prints (`--json`) and embeds in the page it writes: every number the
page shows, gathered from the capsule and the runs compared with it. Printed, never stored:
the page is regenerated from the capsules, which are the record."""

from typing import Literal

from pydantic import Field

from builder.model_base import Printed
from builder.records.audit import AuditRecord
from builder.records.matrix import MatrixRecord
from builder.records.run import EpochMetrics, MetricPoint
from builder.records.sweep import Summary, Tost
from builder.records.verdict import Equivalence, Verdict

SECTIONS = (
    "summary",
    "environment",
    "curves",
    "drift",
    "variance",
    "matrix",
    "audits",
    "checklist",
)
"""Every section a report may hold, in page order; one is present when the capsules hold its
data (the summary and the checklist always)."""


class RunFacts(Printed):
    """What one run was (the capsule's baseline, a replay or another capsule) and what it
    gave: the Summary section's facts."""

    label: str  # the name the page uses for it: "baseline", or the directory's name
    path: str
    kind: Literal["capsule", "replay"]
    name: str
    description: str
    framework: str
    framework_version: str
    python: str
    os: str
    cpu_model: str
    cores: int
    gpus: list[str]
    device: str
    threads: int
    deterministic: bool
    dtype: str
    seeds: dict[str, int | str]
    on: str  # where it ran: host (a capsule's freeze) or the replay's --on
    created: str
    epochs: int
    steps: int
    train_seconds: float
    final: dict[str, float | None]
    overrides: dict[str, str]
    digest: str | None = None  # a capsule's (builder.trust)


class EnvRow(Printed):
    """One fact of two environments side by side."""

    group: str  # framework, machine, controls, switches, environment, packages
    field: str
    baseline: str
    other: str
    differs: bool


class Compared(Printed):
    """A replay or another capsule against the capsule's baseline: `diff`'s verdict, the two
    environments side by side, and (a swept capsule) its TOST against the sweep."""

    facts: RunFacts
    verdict: Verdict
    environment: list[EnvRow]
    equivalence: Equivalence | None = None


class TracePoint(Printed):
    step: int
    loss: float


class Curve(Printed):
    """One run's training history: per-epoch metrics (built-in experiments), the metrics the
    user's code logged, the batch loss at each trace checkpoint, and where it first differs
    from the baseline's trace."""

    label: str
    epochs: list[EpochMetrics]
    metrics: dict[str, list[MetricPoint]]
    trace: list[TracePoint]
    steps_per_epoch: float | None
    first_divergent_step: int | None = None


class AxisStats(Printed):
    """A sweep's runs along one axis: init seeds at the capsule's order seed, or order seeds
    at its init seed (the paper's two rows), or every run where neither axis has two."""

    axis: Literal["seeds", "orders", "runs"]
    fixed: str  # what was held fixed, in words
    runs: int
    values: dict[str, list[float]]
    summaries: list[Summary]


class Mark(Printed):
    """A value drawn on the variance figures: the baseline's or a compared run's."""

    label: str
    metric: str
    value: float


class LabelledTost(Printed):
    label: str
    tost: Tost


class Variance(Printed):
    """The capsule's seed/order sweep: the paper's table as figures."""

    runs: int
    init_seeds: int
    order_seeds: int
    seconds: float  # summed over the runs
    summaries: list[Summary]
    axes: list[AxisStats]
    marks: list[Mark]
    tests: list[LabelledTost]
    margin: str
    alpha: float


class MatrixStudy(Printed):
    """A cross-device matrix made from the capsule, and the cells whose numbers are bit for
    bit the baseline's (weights identical to the baseline's and every metric equal)."""

    path: str
    metric: str  # the error rate the heatmap shows
    record: MatrixRecord
    identical_cells: list[list[str]]  # [trained_on, evaluated_on]
    note: str | None = None


class CheckItem(Printed):
    """One item of the NeurIPS checklist or the ACM artifact badges that the capsule itself
    answers, with the evidence."""

    source: Literal["NeurIPS", "ACM"]
    item: str
    met: bool
    evidence: str


class ReportData(Printed):
    """Every number on the page; embedded in it as JSON (`#capsule-data`)."""

    format: Literal["capsule-report/1"] = "capsule-report/1"
    capsule: RunFacts
    data: list[str]  # the data the run read, with digests, one line each
    compared: list[Compared]
    curves: list[Curve]
    variance: Variance | None
    matrices: list[MatrixStudy]
    audits: list[AuditRecord]
    checklist: list[CheckItem]
    sections: list[str]


class ReportResult(Printed):
    """`report`: the file written, its sections and figures, and the page's data."""

    path: str
    format: str
    sections: list[str]
    figures: int
    files: list[str] = Field(description="Files written beside the page (Markdown's figures).")
    data: ReportData
