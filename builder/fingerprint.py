"""Environment capture: everything about a machine that can change a run's numbers."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

from builder.frameworks import FRAMEWORKS
from builder.records.run import Fingerprint, GpuInfo

NAMED_ENV = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_TF32_OVERRIDE",
    *(name for entry in FRAMEWORKS.values() for name in entry.env_names),
)
ENV_PREFIXES = (
    *(prefix for entry in FRAMEWORKS.values() for prefix in entry.env_prefixes),
    "CUBLAS_", "CUDNN_", "KMP_", "MKL_", "OMP_", "OPENBLAS_",
)  # fmt: skip
NOT_NUMERIC = tuple(prefix for entry in FRAMEWORKS.values() for prefix in entry.env_not_numeric)


def _cpu() -> tuple[str, list[str]]:
    model: str = platform.processor() or "unknown"
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("unknown", "", platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = sorted(value.split())
    except OSError:
        pass
    return model, flags


def _distributions() -> dict[str, str]:
    """name → version of what imports would find: where two directories on sys.path hold the
    same distribution (an audit's overlay over Capsule's venv), the first one is the one used."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower().replace("_", "-"), dist.version)
    return dict(sorted(found.items()))


def _env() -> dict[str, str | None]:
    env: dict[str, str | None] = {k: os.environ.get(k) for k in NAMED_ENV}
    env.update(
        {
            k: v
            for k, v in os.environ.items()
            if k.startswith(ENV_PREFIXES) and not k.startswith(NOT_NUMERIC)
        }
    )
    return dict(sorted(env.items()))


def capture(
    framework: str,
    framework_version: str,
    gpus: list[GpuInfo],
    cuda: str | None,
    cudnn: str | None,
) -> Fingerprint:
    """The fingerprint of this process; GPU facts come from the framework that can see them."""
    uname = platform.uname()
    cpu_model, cpu_flags = _cpu()
    return Fingerprint(
        os=platform.platform(terse=True),
        kernel=f"{uname.system} {uname.release}",
        machine=uname.machine,
        cpu_model=cpu_model,
        cpu_flags=cpu_flags,
        cores=os.cpu_count() or 1,
        gpus=gpus,
        cuda=cuda,
        cudnn=cudnn,
        python=platform.python_version(),
        python_implementation=f"{platform.python_implementation()} {sys.version.split()[0]}",
        framework=framework,
        framework_version=framework_version,
        distributions=_distributions(),
        env=_env(),
    )
