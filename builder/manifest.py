"""The capsule's manifest and the replay record: the product's long-lived on-disk contract.

Schema version 1. Fields are only ever added with defaults; anything else bumps the version.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from builder.model_base import Strict
from builder.spec import AnySpec

SCHEMA_VERSION: Literal[1] = 1
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Split = Literal["train", "dev", "eval"]


class ToolInfo(Strict):
    name: str
    version: str


class ArtifactRef(Strict):
    """A file of the capsule, relative to its root, named with the sha256 of its bytes."""

    path: str
    sha256: Sha256
    size: int
    media_type: str


class SplitInfo(Strict):
    rows: int
    features: int
    sha256: Sha256 = Field(
        description="sha256 over the split's x and y arrays (dtype, shape, bytes)"
    )


class BuiltinRecipe(Strict):
    name: str
    recipe_version: int
    seed: int


class SourceFile(Strict):
    """A user data file as it was when frozen: its path as given and the digest of its bytes."""

    path: str
    sha256: Sha256


class DataRecord(Strict):
    source: Literal["builtin", "files"]
    builtin: BuiltinRecipe | None = None
    files: dict[Split, SourceFile] = Field(default_factory=dict)
    classes: int
    splits: dict[Split, SplitInfo]


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
    device: str
    dtype: str
    adam_impl: str
    order_source: Literal["recorded"] = "recorded"
    framework_switches: dict[str, str | int | float | bool | None]
    env: dict[str, str]


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
    train_loss: float
    train_error: float
    dev_error: float | None
    eval_error: float | None


class FinalMetrics(Strict):
    train_loss: float
    train_error: float
    dev_error: float | None
    eval_error: float | None


class TracePoint(Strict):
    """Every `checkpoint_every` steps: the batch loss, its exact bits, and a weights digest."""

    step: int
    loss: float
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
    value: float


class Outcome(Strict):
    """Built-in experiments fill `final` and `epochs`; user code fills `metrics` (run.log)."""

    final: FinalMetrics | None = None
    epochs: list[EpochMetrics] = Field(default_factory=list)
    metrics: dict[str, list[MetricPoint]] = Field(default_factory=dict)
    trace: list[TracePoint]
    weights: dict[str, TensorDigest]
    steps: int
    train_seconds: float


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


class ImageRecord(Strict):
    """A container image built for the capsule, reproducible from its own wheelhouse; its ID
    does not depend on the engine that built it (`engine`, Docker in capsules made before)."""

    engine: Literal["docker", "podman"] = "docker"
    image_id: str
    tag: str
    base_image: str
    base_id: str
    dockerfile_sha256: Sha256
    capsule_digest: Sha256 = Field(description="sha256 of the manifest without `images`")
    source_date_epoch: int
    wheels: list[str]
    built: str


class Manifest(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["capsule"] = "capsule"
    tool: ToolInfo
    created: str
    spec: AnySpec
    controls: AppliedControls
    fingerprint: Fingerprint
    data: DataRecord | None = Field(default=None, description="None for the user's own code")
    inputs: dict[str, InputRecord] = Field(default_factory=dict)
    audit: list[Finding] = Field(default_factory=list)
    outcome: Outcome
    artifacts: dict[str, ArtifactRef]
    images: dict[Literal["cpu", "cuda"], ImageRecord] = Field(default_factory=dict)


class CapsuleRef(Strict):
    name: str
    path: str
    manifest_sha256: Sha256


class ReplayRecord(Strict):
    """A replay of a capsule: its own environment and outcome, for `diff` to judge."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["replay"] = "replay"
    tool: ToolInfo
    created: str
    capsule: CapsuleRef
    on: Literal["host", "docker", "podman"]
    image_id: str | None = None
    overrides: dict[str, str]
    spec: AnySpec
    controls: AppliedControls
    fingerprint: Fingerprint
    inputs: dict[str, InputRecord] = Field(default_factory=dict)
    audit: list[Finding] = Field(default_factory=list)
    outcome: Outcome
    artifacts: dict[str, ArtifactRef]
