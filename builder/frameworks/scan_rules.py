"""The code scan's rules about the frameworks' own APIs (the scan itself is builder/scan.py):
PyTorch's DataLoader shuffle and cuDNN autotuning, and the frameworks' seeding calls (for the
seed-from-clock rule, builder/scan_clock.py).

Capsule seeds every RNG with the init seed before it runs the code, so an unseeded Keras
initializer (it takes its seed from Python's `random`) or DataLoader worker is deterministic
under Capsule and no finding: a rule reports what goes wrong under Capsule."""

from __future__ import annotations

import ast

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
    """(rule, message) for a call of a framework API whose randomness escapes the capsule's
    recorded order, else None (`keywords` includes those passed through a `**dict` literal).

    A DataLoader with `shuffle=True` draws its order from PyTorch's global RNG (or the
    `generator=` it is given): under Capsule that RNG is seeded with the init seed before the
    code runs, so replays are identical — but the order is not recorded, follows the init
    seed, and an order sweep cannot vary it. Worker processes are no finding under Capsule:
    their seeds derive from the same seeded RNG."""
    if last != "DataLoader":
        return None
    shuffle = keywords.get("shuffle")
    if isinstance(shuffle, ast.Constant) and shuffle.value is True and "sampler" not in keywords:
        return (
            "dataloader-shuffle",
            "DataLoader(shuffle=True) draws its order from PyTorch's RNG: under Capsule it "
            "follows the init seed and is not recorded, so an order sweep cannot vary it; "
            "pass sampler=run.sampler(dataset) instead of shuffle=True",
        )
    return None


def assign_rule(target: str, value: ast.expr) -> tuple[str, str] | None:
    """(rule, message) for an assignment that switches on a nondeterministic backend mode."""
    if target.endswith("cudnn.benchmark") and isinstance(value, ast.Constant) and value.value:
        return (
            "cudnn-benchmark",
            "cudnn.benchmark = True: cuDNN picks kernels by timing, so results vary",
        )
    return None
