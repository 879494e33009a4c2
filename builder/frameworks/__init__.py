"""One small interface per framework, so freeze/replay/sweep never import a framework directly."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from builder.data import Dataset
from builder.errors import BadInput, EngineMissing
from builder.manifest import EpochMetrics, GpuInfo, TracePoint
from builder.spec import Spec, SpecBase

EpochCallback = Callable[[EpochMetrics], None]


@dataclass(frozen=True)
class Trained:
    """What a framework hands back from training: metrics, trace, weights as NumPy arrays."""

    epochs: list[EpochMetrics]
    trace: list[TracePoint]
    initial: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    steps: int
    train_seconds: float


class Framework(Protocol):
    """A framework trains the spec's MLP in the recorded order and reports what it did.

    Weights come back in the framework's own names and layout (PyTorch `X.weight` [out, in],
    TensorFlow `X.kernel` [in, out]); `builder.layout` converts between them.
    """

    name: str

    def version(self) -> str: ...

    def gpu_facts(self) -> tuple[list[GpuInfo], str | None, str | None]:
        """GPUs visible, CUDA version, cuDNN version (empty / None when absent)."""
        ...

    def apply_base_controls(
        self, spec: SpecBase, device: str, threads: int, warn_only: bool
    ) -> dict[str, str | int | float | bool | None]:
        """Seed the framework, size its thread pools and switch on determinism (`warn_only`:
        report nondeterministic ops as warnings instead of failing, for the audit of user code);
        return the switches as the framework reports them back."""
        ...

    def apply_controls(
        self, spec: Spec, device: str, threads: int
    ) -> dict[str, str | int | float | bool | None]:
        """The base controls plus the built-in experiment's optimizer settings."""
        ...

    def train(
        self, spec: Spec, dataset: Dataset, order: np.ndarray, device: str, on_epoch: EpochCallback
    ) -> Trained: ...

    def evaluate(
        self, spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray], device: str
    ) -> EpochMetrics:
        """Loss and error rates of given weights (in this framework's names and layout) on
        every split, computed on `device` — the cross-device matrix's evaluation."""
        ...


@dataclass(frozen=True)
class FrameworkEntry:
    """What Capsule knows of a framework without importing it (importing torch takes seconds)."""

    module: str  # the module in this wing whose FRAMEWORK implements the protocol
    import_name: str  # what must be importable for it to run here
    cpu_distribution: str  # the distribution a CPU capsule pins
    cuda_requirement: str | None  # what `build --gpu` asks pip for; None: no GPU support
    builtin_mlp: bool  # trains the built-in experiment (else: the user's own code only)


FRAMEWORKS = {
    "torch": FrameworkEntry("builder.frameworks.torch", "torch", "torch", "torch", True),
    "tensorflow": FrameworkEntry(
        "builder.frameworks.tensorflow",
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow[and-cuda]",
        True,
    ),
    "numpy": FrameworkEntry("builder.frameworks.numpy", "numpy", "numpy", None, False),
}


def check_framework(name: str, source: str) -> None:
    """Refuse early (before any data or training) a framework this installation cannot run."""
    if name not in FRAMEWORKS:
        raise BadInput(f"{source}: framework: '{name}' is not available in this version of Capsule")
    if importlib.util.find_spec(FRAMEWORKS[name].import_name) is None:
        raise BadInput(
            f"{source}: framework: '{name}' is not installed here; install Capsule's '{name}' extra"
        )


def check_spec(spec: SpecBase, source: str) -> None:
    """Refuse, naming the file and field, what a spec's framework cannot do as specified."""
    check_framework(spec.framework, source)
    entry = FRAMEWORKS[spec.framework]
    if isinstance(spec, Spec) and not entry.builtin_mlp:
        raise BadInput(
            f"{source}: framework: '{spec.framework}' runs the user's own code only (give "
            f"'entrypoint'); the built-in MLP needs one of {_names(lambda e: e.builtin_mlp)}"
        )
    if spec.controls.device == "cuda" and entry.cuda_requirement is None:
        raise BadInput(
            f"{source}: controls.device: 'cuda' needs a framework with GPU support "
            f"({_names(lambda e: e.cuda_requirement is not None)}), not '{spec.framework}'"
        )
    if isinstance(spec, Spec) and spec.framework == "tensorflow" and spec.train.weight_decay:
        raise BadInput(
            f"{source}: train.weight_decay: not supported with framework 'tensorflow' "
            "(Keras's Adam decays weights differently from PyTorch's)"
        )


def _names(has: Callable[[FrameworkEntry], bool]) -> str:
    return ", ".join(f"'{name}'" for name, entry in FRAMEWORKS.items() if has(entry))


def require_device(
    framework: Framework, spec: SpecBase
) -> tuple[list[GpuInfo], str | None, str | None]:
    """The framework's GPU facts, refusing (exit 4) a CUDA run where it sees no GPU."""
    gpus, cuda, cudnn = framework.gpu_facts()
    if spec.controls.device == "cuda" and not gpus:
        raise EngineMissing(f"device cuda: {spec.framework} sees no CUDA GPU on this machine")
    return gpus, cuda, cudnn


def get_framework(name: str) -> Framework:
    check_framework(name, "spec")
    return importlib.import_module(FRAMEWORKS[name].module).FRAMEWORK
