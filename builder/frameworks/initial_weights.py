"""Shared initial weights: drawn by Capsule itself so that every framework starts identically.

Layout and names are PyTorch's (`hidden.N.weight` is [out, in]); a framework that stores
kernels as [in, out] transposes on load (see `frameworks.layout`).
"""

from __future__ import annotations

import numpy as np

from builder.records.spec import ModelSpec


def layer_names(spec: ModelSpec) -> list[str]:
    return [f"hidden.{i}" for i in range(len(spec.hidden))] + ["output"]


def shared_initial_weights(
    spec: ModelSpec, inputs: int, classes: int, seed: int, dtype: str
) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and zero biases, layer by layer, from one PCG64 stream."""
    rng = np.random.Generator(np.random.PCG64(seed))
    widths = [inputs, *spec.hidden, classes]
    weights: dict[str, np.ndarray] = {}
    for name, fan_in, fan_out in zip(layer_names(spec), widths, widths[1:], strict=False):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)
        weights[f"{name}.weight"] = np.ascontiguousarray(kernel.T)
        weights[f"{name}.bias"] = np.zeros(fan_out, dtype=dtype)
    return weights
