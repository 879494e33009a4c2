"""NumPy alone, for the user's own code that needs no deep-learning framework.

Its images hold Capsule and NumPy's stack only (about 100 MB installed, against gigabytes with a
framework), so it is also the smallest capsule there is: the image tests use it for the
mechanics (rebuild ID, export/import, confinement, missing engines). NumPy has no GPU and no
switches of its own: Python's `random` and NumPy's global RNG are seeded by Capsule before the
code runs, and its BLAS threads are sized through the process environment (controls.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from builder.errors import BadInput
from builder.frameworks import LogFn, OrderFn, StepFn
from builder.records.run import EpochMetrics, GpuInfo
from builder.records.spec import Spec, SpecBase


class NumpyFramework:
    name = "numpy"

    def version(self) -> str:
        return str(np.__version__)

    def gpu_facts(self) -> tuple[list[GpuInfo], str | None, str | None]:
        return [], None, None

    def apply_base_controls(
        self, spec: SpecBase, device: str, threads: int, warn_only: bool
    ) -> dict[str, str | int | float | bool | None]:
        return {"numpy.random.seed": spec.seeds.init % 2**32, "interop_threads": threads}

    def nondeterministic_op(self, warning: str) -> str | None:
        return None

    def refused_nondeterminism(self, error: BaseException) -> bool:
        return False

    def as_array(self, value: object) -> np.ndarray:
        return np.asarray(value)

    def named_weights(self, obj: object) -> dict[str, object] | None:
        return None

    def seeding_functions(self) -> list[tuple[object, str, str]]:
        return []  # NumPy's own seed is watched for every framework

    def weights_file(self, path: Path) -> dict[str, object] | None:
        if path.suffix != ".npz":
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files} or None
        except (OSError, ValueError):
            return None

    def portable(self, device: str) -> tuple[Any, Callable[[dict], dict]]:
        raise ValueError("portable numerics trains the built-in MLP, which NumPy capsules lack")

    def sampler(self, order: OrderFn, n: int) -> object:
        raise ValueError("a PyTorch DataLoader sampler; with NumPy use run.order(n, epoch)")

    def callback(self, log: LogFn, step: StepFn, every: int | None) -> object:
        raise ValueError("a Keras callback in a NumPy capsule; call run.step(loss) per batch")

    def fit(
        self,
        order: OrderFn,
        log: LogFn,
        model: object,
        x: object,
        y: object,
        kwargs: dict[str, Any],
    ) -> object:
        raise ValueError("Keras's fit in a NumPy capsule; use run.order(n, epoch)")

    def apply_controls(
        self, spec: Spec, device: str, threads: int
    ) -> dict[str, str | int | float | bool | None]:
        raise _builtin_refused()

    def train(self, *args: object, **kwargs: object) -> object:
        raise _builtin_refused()

    def evaluate(self, *args: object, **kwargs: object) -> EpochMetrics:
        raise _builtin_refused()


def _builtin_refused() -> BadInput:
    return BadInput(
        "framework: 'numpy' runs the user's own code only (give 'entrypoint'); "
        "the built-in MLP needs 'torch' or 'tensorflow'"
    )


FRAMEWORK = NumpyFramework()
