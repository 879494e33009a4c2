"""What `diff` prints (`--json`): the tier, the reasons, per-tensor and metric deltas, and
the evidence of the equivalent tier. Printed, never stored; an audit keeps the reasons' words."""

from builder.model_base import Printed
from builder.records.enums import Closed, Tier
from builder.records.sweep import Tost


class ReasonKind(Closed):
    """The machine-readable `kind` of a reason (the README's `--json` section lists them)."""

    identical = "identical"  # every weight tensor and metric is bit-for-bit equal
    capsule = "capsule"  # the replay was made from other content than this capsule's now
    override = "override"  # a `replay --set` what-if value
    framework = "framework"  # the framework or its version differs
    data = "data"  # a data input of the user's code differs, or only one side read it
    code = "code"  # a file of the user's code differs (two capsules)
    outputs = "outputs"  # a file the user's code wrote differs, or only one side wrote it
    trace = "trace"  # the first checkpoint whose loss bits or weights digest differ
    weights = "weights"  # a weight tensor's drift, shape or presence
    metrics = "metrics"  # a final metric changed
    init = "init"  # whether the two runs started from bit-identical weights
    equivalence = "equivalence"  # the equivalent tier's tests against the capsule's sweep
    tier = "tier"  # a tier that could not be judged (no sweep for `equivalent`)
    controls = "controls"  # an applied control: device, threads, determinism, seeds, switches
    hardware = "hardware"  # GPU, CUDA, cuDNN, CPU model or flags, machine, cores
    python = "python"  # the Python version
    os = "os"  # the operating system or kernel
    library = "library"  # installed packages differ
    env = "env"  # a determinism-related environment variable


class Reason(Printed):
    kind: ReasonKind
    message: str


class Tolerances(Printed):
    """diff's defaults: also what an audit judges with."""

    atol: float = 1e-5
    rtol: float = 1e-4
    metric_atol: float = 0.0025
    margin: str = "3sd"
    alpha: float = 0.05


class TensorDelta(Printed):
    name: str
    shape: list[int]
    equal: bool
    max_abs: float | None
    max_ulp: float | None
    within_tolerance: bool


class MetricDelta(Printed):
    name: str
    baseline: float | None
    replay: float | None
    delta: float | None
    equal: bool


class Equivalence(Printed):
    """The `equivalent` tier's evidence: one TOST per final metric against the sweep."""

    runs: int
    margin: str
    alpha: float
    tests: list[Tost]
    equivalent: bool


class Verdict(Printed):
    verdict: Tier
    baseline: str
    replay: str
    reasons: list[Reason]
    tensors: list[TensorDelta]
    metrics: list[MetricDelta]
    first_divergent_step: int | None
    tolerances: Tolerances
    equivalence: Equivalence | None = None
