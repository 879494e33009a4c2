"""The parts of a run that a manifest and a replay record both hold: the tool, the applied
controls, the machine's fingerprint, the outcome, findings, inputs and artifacts."""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SerializerFunctionWrapHandler, model_serializer

from builder.model_base import Real, Strict
from builder.records.enums import Device

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
METRICS = ("train_loss", "train_error", "dev_error", "eval_error")


class ToolInfo(Strict):
    name: str
    version: str


def _file_name(path: str) -> str:
    if not path or "\x00" in path:
        raise ValueError("not a file name (empty, or it holds a NUL byte)")
    return path


class ArtifactRef(Strict):
    """A file of the capsule, relative to its root, named with the sha256 of its bytes."""

    path: Annotated[str, AfterValidator(_file_name)]
    sha256: Sha256
    size: int
    media_type: str


class SeedRecord(Strict):
    init: int
    order: int
    python: int
    numpy: int
    framework: int
    pythonhashseed: str


class AppliedControls(Strict):
    """What was actually switched on for a run, as the framework reported it back."""

    seeds: SeedRecord
    deterministic: bool
    threads: int
    interop_threads: int
    device: Device
    dtype: str
    adam_impl: str
    order_source: Literal["recorded"] = "recorded"
    framework_switches: dict[str, str | int | float | bool | None]
    env: dict[str, str]
    numerics: Literal["native", "portable"] = "native"

    @model_serializer(mode="wrap")
    def _native_unwritten(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Native numerics is written as before it could be chosen (old records keep their
        bytes and digests)."""
        data: dict[str, Any] = write(self)
        if data.get("numerics") == "native":
            data.pop("numerics")
        return data


class GpuInfo(Strict):
    name: str
    driver: str | None
    capability: str | None
    memory_mib: int | None


class Fingerprint(Strict):
    os: str
    kernel: str
    machine: str
    cpu_model: str
    cpu_flags: list[str]
    cores: int
    gpus: list[GpuInfo]
    cuda: str | None
    cudnn: str | None
    python: str
    python_implementation: str
    framework: str
    framework_version: str
    distributions: dict[str, str]
    env: dict[str, str | None]


class EpochMetrics(Strict):
    epoch: int
    train_loss: Real
    train_error: Real
    dev_error: Real | None
    eval_error: Real | None


class FinalMetrics(Strict):
    train_loss: Real
    train_error: Real
    dev_error: Real | None
    eval_error: Real | None


class TracePoint(Strict):
    """Every `checkpoint_every` steps: the batch loss, its exact bits, and a weights digest."""

    step: int
    loss: Real
    loss_bits: str
    params_sha256: str | None = Field(
        default=None, description="None where the user's checkpoint named no weights"
    )


class TensorDigest(Strict):
    shape: list[int]
    dtype: str
    sha256: Sha256


class MetricPoint(Strict):
    step: int | None
    value: Real


class Outcome(Strict):
    """Built-in experiments fill `final` and `epochs`; user code fills `metrics` (run.log)."""

    final: FinalMetrics | None = None
    epochs: list[EpochMetrics] = Field(default=[])
    metrics: dict[str, list[MetricPoint]] = Field(default={})
    trace: list[TracePoint]
    weights: dict[str, TensorDigest]
    steps: int
    train_seconds: Real

    def final_values(self) -> dict[str, float | None]:
        """The built-in experiment's final metrics, or the last value of each metric the
        user's code logged: what a sweep keeps per run and what diff compares."""
        if self.final is not None:
            return {name: getattr(self.final, name) for name in METRICS}
        return {name: points[-1].value for name, points in self.metrics.items() if points}


class Finding(Strict):
    """One nondeterminism finding: in the code's text (static, the code scan) or seen while it
    ran (runtime), with the file and line it points at."""

    source: Literal["static", "runtime"]
    rule: str
    file: str
    line: int
    message: str
    count: int = 1


class InputRecord(Strict):
    """Data the user's code read: a file (`run.data`, stored in the capsule) or arrays it
    loaded itself (`run.record_arrays`, digest only)."""

    kind: Literal["file", "arrays"]
    artifact: str | None = None
    sha256: Sha256
    detail: str = ""
