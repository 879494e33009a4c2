"""The code scan's rules about the frameworks' own APIs (the scan itself is builder/scan.py):
PyTorch's DataLoader workers and cuDNN autotuning, Keras initializers without a seed, and the
frameworks' seeding calls (for the seed-from-clock rule, builder/scan_clock.py)."""

from __future__ import annotations

import ast

KERAS_INITIALIZERS = {
    "GlorotUniform",
    "GlorotNormal",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "Orthogonal",
    "VarianceScaling",
}
SEEDING_CALLS = {"set_random_seed", "set_seed"}
# Functions and constructors that seed a framework's RNG, by qualified name (the scan resolves
# the code's import aliases, so `th.manual_seed` after `import torch as th` is torch's).
SEEDING_FUNCTIONS = {
    "torch.manual_seed",
    "torch.random.manual_seed",
    "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all",
    "torch.Generator.manual_seed",
    "tensorflow.random.set_seed",
    "tensorflow.random.Generator.from_seed",
    "tensorflow.compat.v1.set_random_seed",
    "tensorflow.keras.utils.set_random_seed",
    "keras.utils.set_random_seed",
    "keras.random.SeedGenerator",
}


def call_rule(last: str, keywords: dict[str, ast.expr]) -> tuple[str, str] | None:
    """(rule, message) for a call of a framework API that draws unseeded, else None."""
    if last != "DataLoader":
        return None
    workers = keywords.get("num_workers")
    parallel = workers is not None and not (
        isinstance(workers, ast.Constant) and workers.value in (0, None)
    )
    if parallel and "generator" not in keywords and "worker_init_fn" not in keywords:
        return (
            "dataloader-workers-unseeded",
            "DataLoader with worker processes but no generator= or worker_init_fn=: "
            "the shuffle order and worker RNGs are not seeded",
        )
    return None


def unseeded_initializer(name: str, last: str, keywords: dict[str, ast.expr]) -> bool:
    """A Keras initializer made without seed= (a finding unless the framework is seeded first)."""
    return (
        last in KERAS_INITIALIZERS
        and "seed" not in keywords
        and ("initializers" in name or name == last)
    )


INITIALIZER_RULE = "keras-initializer-unseeded"


def initializer_message(name: str) -> str:
    return (
        f"{name}() without seed= before any set_random_seed(): its weights differ from "
        "process to process"
    )


def assign_rule(target: str, value: ast.expr) -> tuple[str, str] | None:
    """(rule, message) for an assignment that switches on a nondeterministic backend mode."""
    if target.endswith("cudnn.benchmark") and isinstance(value, ast.Constant) and value.value:
        return (
            "cudnn-benchmark",
            "cudnn.benchmark = True: cuDNN picks kernels by timing, so results vary",
        )
    return None
