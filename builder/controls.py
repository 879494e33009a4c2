"""Seeding and determinism switches: the process environment first, then every RNG.

Some controls only take effect when a process starts (PYTHONHASHSEED, thread pools, cuBLAS
workspace), so `process_env` names what the process needs and `ensure_process_env` re-executes
the command once with it before any framework is imported.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from builder.records.run import AppliedControls, SeedRecord
from builder.records.spec import SpecBase

PYTHONHASHSEED = "0"
REEXEC_MARK = "CAPSULE_REEXECUTED"


def process_env(spec: SpecBase) -> dict[str, str]:
    """Environment variables a deterministic run needs before its framework starts."""
    threads = str(spec.controls.threads)
    env = {
        "PYTHONHASHSEED": PYTHONHASHSEED,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }
    if spec.controls.device == "cuda":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS, whichever framework
    from builder.frameworks import FRAMEWORKS

    entry = FRAMEWORKS.get(spec.framework)
    return {**env, **(entry.process_env(spec) if entry else {})}


def ensure_process_env(spec: SpecBase) -> None:
    """Re-execute this command once if the environment lacks what determinism needs.

    Runs before any framework is imported, so the cost is one interpreter start (~0.1 s).
    """
    wanted = process_env(spec)
    if all(os.environ.get(k) == v for k, v in wanted.items()) or os.environ.get(REEXEC_MARK):
        return
    env = {**os.environ, **wanted, REEXEC_MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "builder", *sys.argv[1:]], env)


def seed_everything(seed: int) -> None:
    """Seed the RNGs every framework shares (Python, NumPy's global state)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def seed_record(init: int, order: int) -> SeedRecord:
    return SeedRecord(
        init=init,
        order=order,
        python=init,
        numpy=init % 2**32,
        framework=init,
        pythonhashseed=os.environ.get("PYTHONHASHSEED", "unset"),
    )


def applied_controls(
    spec: SpecBase,
    switches: dict[str, str | int | float | bool | None],
    dtype: str,
    adam_impl: str,
) -> AppliedControls:
    """The controls a run had, as the manifest and the replay record hold them: the spec's,
    the thread pools and switches the framework reported back, the controlled environment."""
    threads = spec.controls.threads
    return AppliedControls(
        seeds=seed_record(spec.seeds.init, spec.seeds.order),
        deterministic=spec.controls.deterministic,
        threads=threads,
        interop_threads=int(switches.get("interop_threads", threads) or threads),
        device=spec.controls.device,
        dtype=dtype,
        adam_impl=adam_impl,
        framework_switches=switches,
        env=applied_env(spec),
        numerics=spec.controls.numerics,
    )


def applied_env(spec: SpecBase) -> dict[str, str]:
    """The controlled variables as this process actually has them (unset shows as 'unset')."""
    return {k: os.environ.get(k, "unset") for k in process_env(spec)}
