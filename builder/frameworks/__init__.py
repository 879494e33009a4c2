"""One small interface per framework, so freeze/replay/sweep never import a framework directly.

Everything framework-specific lives in this wing: what Capsule knows without importing the
framework (FrameworkEntry: its distributions, the process environment it needs before import,
the environment variables that change its numbers, the switches that restate a control) and
what needs it imported (Framework: controls, training, evaluation, its nondeterminism alerts,
its tensors as NumPy). Adding a framework is one module here and one entry in FRAMEWORKS.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from builder.errors import BadInput, EngineMissing

if TYPE_CHECKING:  # the table is read without NumPy or the models: commands start faster
    import numpy as np

    from builder.data import Dataset
    from builder.records.run import EpochMetrics, GpuInfo, TracePoint
    from builder.records.spec import Spec, SpecBase

EpochCallback = Callable[["EpochMetrics"], None]
OrderFn = Callable[[int, int], "np.ndarray"]  # Run.order: (rows, epoch) → permutation
LogFn = Callable[[str, float, "int | None"], None]  # Run.log: (name, value, step)
StepFn = Callable[[object, "object | None", int], int]  # Run.step: (loss, weights, every)


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
    TensorFlow `X.kernel` [in, out]); `frameworks.layout` converts between them.
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
        self,
        spec: Spec,
        dataset: Dataset,
        order: Iterable[np.ndarray],
        device: str,
        on_epoch: EpochCallback,
    ) -> Trained:
        """Train in `order`: one int64 permutation of the training rows per epoch, taken an
        epoch at a time (a 2-D array's rows, or a `data.Order`)."""
        ...

    def evaluate(
        self, spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray], device: str
    ) -> EpochMetrics:
        """Loss and error rates of given weights (in this framework's names and layout) on
        every split, computed on `device` — the cross-device matrix's evaluation."""
        ...

    def portable(self, device: str) -> tuple[Any, Callable[[dict], dict]]:
        """Portable numerics here: this framework's `builder.portable.Ops` on `device`, and
        the function that puts reference-layout weights into this framework's layout;
        ValueError where the framework has none."""
        ...

    def nondeterministic_op(self, warning: str) -> str | None:
        """The op a warning says has no deterministic implementation (the framework's
        warn-only alert), or None for any other warning."""
        ...

    def refused_nondeterminism(self, error: BaseException) -> bool:
        """Whether the error is the framework refusing a nondeterministic op under its
        determinism switch (a framework without a warn-only mode raises instead)."""
        ...

    def as_array(self, value: object) -> np.ndarray:
        """A tensor of this framework (or anything array-like) as a NumPy array."""
        ...

    def named_weights(self, obj: object) -> dict[str, object] | None:
        """Weights by name from a model of this framework (module, state dict, Keras model),
        or None when `obj` is not one (a plain dict of arrays is handled by the caller)."""
        ...

    def seeding_functions(self) -> list[tuple[object, str, str]]:
        """(owner, attribute, name shown) of each function that reseeds this framework's
        RNG: watched while user code runs, so that a reseed that cancels the capsule's init
        seed is reported (Python's `random.seed` and NumPy's are watched for every one)."""
        ...

    def weights_file(self, path: Path) -> dict[str, object] | None:
        """Weights by name from a model file the code wrote (PyTorch: a state dict saved with
        `torch.save`, read with `weights_only=True`; NumPy: an `.npz`), or None when `path` is
        not one: what a script that never calls `run.save_weights` is frozen with."""
        ...

    def sampler(self, order: OrderFn, n: int) -> object:
        """`run.sampler`: the framework's data sampler over `n` rows yielding `order(n,
        epoch)`, one epoch per pass; ValueError where the framework has no such thing."""
        ...

    def callback(self, log: LogFn, step: StepFn, every: int | None) -> object:
        """`run.keras_callback`: a callback of the framework's `fit` that logs epoch metrics
        and (given `every`) checkpoints batch losses through `step`; ValueError without one."""
        ...

    def fit(
        self,
        order: OrderFn,
        log: LogFn,
        model: object,
        x: object,
        y: object,
        kwargs: dict[str, Any],
    ) -> object:
        """`run.keras_fit`: the framework's `fit` with its shuffle and validation split taken
        in the recorded order, epoch metrics logged; ValueError where it has no `fit`."""
        ...


def _no_env(spec: SpecBase) -> dict[str, str]:
    return {}


def _tensorflow_env(spec: SpecBase) -> dict[str, str]:
    return {
        "TF_ENABLE_ONEDNN_OPTS": "1" if spec.controls.onednn else "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up chatter; changes no numbers
    }


@dataclass(frozen=True)
class FrameworkEntry:
    """What Capsule knows of a framework without importing it (importing torch takes seconds)."""

    module: str  # the module in this wing whose FRAMEWORK implements the protocol
    title: str  # in sentences
    import_name: str  # what must be importable for it to run here
    cpu_distribution: str  # the distribution a CPU capsule pins
    cuda_requirement: str | None  # what `build --gpu` asks pip for; None: no GPU support
    builtin_mlp: bool  # trains the built-in experiment (else: the user's own code only)
    process_env: Callable[[SpecBase], dict[str, str]] = _no_env  # set before it is imported
    env_names: tuple[str, ...] = ()  # variables that change its numbers (fingerprinted)
    env_prefixes: tuple[str, ...] = ()  # families of such variables
    env_not_numeric: tuple[str, ...] = ()  # prefixes within those families that change none
    thread_switches: tuple[str, ...] = ()  # switches that restate controls.threads
    quiet_env: tuple[tuple[str, str], ...] = ()  # defaults that keep its own logging quiet


FRAMEWORKS = {
    "torch": FrameworkEntry(
        "builder.frameworks.torch",
        "PyTorch",
        "torch",
        "torch",
        "torch",
        True,
        env_prefixes=("TORCH_",),
        thread_switches=("torch.get_num_threads", "torch.get_num_interop_threads"),
    ),
    "tensorflow": FrameworkEntry(
        "builder.frameworks.tensorflow",
        "TensorFlow",
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow[and-cuda]",
        True,
        process_env=_tensorflow_env,
        env_names=(
            "TF_DETERMINISTIC_OPS",
            "TF_CUDNN_DETERMINISTIC",
            "TF_ENABLE_ONEDNN_OPTS",
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
        ),
        env_prefixes=("TF_",),
        env_not_numeric=(
            "TF_CLI_",
            "TF_VAR_",
            "TF_LOG",
            "TF_DATA_DIR",
            "TF_IN_AUTOMATION",  # Terraform's
            "TF_CPP_MIN_LOG_LEVEL",  # how much TensorFlow logs: no number depends on it
        ),
        # its C++ INFO/WARNING lines (oneDNN, CPU features) are not Capsule's output
        quiet_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),),
    ),
    "numpy": FrameworkEntry("builder.frameworks.numpy", "NumPy", "numpy", "numpy", None, False),
}
# The switches every framework's built-in MLP records alike, so that `diff` compares them
# across frameworks (the others name each framework's own API).
SHARED_SWITCHES = ("adam.variant", "adam.lr", "adam.beta_1", "adam.beta_2", "adam.eps", "init")


def quiet_logs() -> None:
    """Set (unless the user did) what keeps the frameworks' own start-up logging off the
    terminal; a run records such variables among its controls, the fingerprint leaves them out
    (env_not_numeric): no number depends on them."""
    for entry in FRAMEWORKS.values():
        for name, value in entry.quiet_env:
            os.environ.setdefault(name, value)


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
    from builder.records.spec import Spec

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
    if spec.framework == "tensorflow" and spec.seeds.init >= 2**32:
        raise BadInput(
            f"{source}: seeds.init: at most 2**32 - 1 = {2**32 - 1} with framework 'tensorflow' "
            f"(keras.utils.set_random_seed seeds NumPy's global RNG with it; got {spec.seeds.init})"
        )
    if (
        isinstance(spec, Spec)
        and spec.framework == "tensorflow"
        and spec.train.weight_decay
        and spec.controls.numerics == "native"
    ):
        raise BadInput(
            f"{source}: train.weight_decay: not supported with framework 'tensorflow' "
            "(Keras's Adam decays weights differently from PyTorch's; with controls.numerics = "
            "'portable' it is supported)"
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
