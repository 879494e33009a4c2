"""Portable numerics (issue 17): training whose every bit is the same on any CPU or GPU, in
PyTorch and in TensorFlow.

Frameworks differ bitwise because they sum in device- and thread-specific orders, fuse
multiply-adds, and take exp/log from different libraries. Here the algorithm is written once
(`algorithm.py`) against a tiny set of operations (`ops.Ops`) that IEEE-754 defines exactly:
float32 +, -, x, / and sqrt, each correctly rounded and each its own operation (so nothing can
fuse them), comparisons and selection, floor, and integer/bit operations on the float's bits.
Every result below the smallest normal float32 is flushed to +0 (`Ops` does it after
each arithmetic operation), so a backend that flushes subnormals (TensorFlow's CPU threads do)
and one that does not give the same bits. Everything else — sums, exp, log, softmax
cross-entropy, the backward pass and Adam — is built from those operations in one written-down
order (docs/architecture.md, "Portable numerics"), so any backend that implements `Ops`
faithfully computes the same bits.

Backends: `backend("torch", device)` (PyTorch, CPU or CUDA) and `backend("tensorflow",
device)`. The built-in MLP uses them under `[controls] numerics = "portable"`
(`train.py`); the user's own model uses `layers.py`. The tests check the algorithm bit for bit
against an independent NumPy implementation (tests/portable_reference.py).
"""

from builder.portable.algorithm import (
    AdamState,
    adam_step,
    dense,
    exp,
    log,
    mlp_forward,
    mlp_gradients,
    pairwise_sum,
    relu,
    softmax_cross_entropy,
)
from builder.portable.layers import Adam, Linear, ReLU, Sequential, Sigmoid, Tanh
from builder.portable.ops import Ops


def backend(framework: str, device: str = "cpu") -> Ops:
    """The portable operations of "torch" or "tensorflow" on "cpu" or "cuda"."""
    from builder.frameworks import get_framework

    ops: Ops = get_framework(framework).portable(device)[0]
    return ops


__all__ = [
    "Adam",
    "AdamState",
    "Linear",
    "Ops",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "adam_step",
    "backend",
    "dense",
    "exp",
    "log",
    "mlp_forward",
    "mlp_gradients",
    "pairwise_sum",
    "relu",
    "softmax_cross_entropy",
]
