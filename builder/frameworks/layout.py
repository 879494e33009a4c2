"""Weight names and layouts across frameworks: PyTorch's `X.weight` [out, in] is TensorFlow's
`X.kernel` [in, out]; biases are the same. Used to load shared weights and to diff capsules of
different frameworks layer by layer. The reference layout, the one `diff` compares in, is
PyTorch's `X.weight` [out, in]."""

from __future__ import annotations

import numpy as np


def to_reference_layout(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Kernels ([in, out]) become reference weights ([out, in]); everything else is unchanged."""
    out = {}
    for name, array in weights.items():
        if name.endswith(".kernel"):
            out[name.removesuffix(".kernel") + ".weight"] = np.ascontiguousarray(array.T)
        else:
            out[name] = array
    return out


def to_kernel_layout(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch weights ([out, in]) become kernels ([in, out])."""
    out = {}
    for name, array in weights.items():
        if name.endswith(".weight"):
            out[name.removesuffix(".weight") + ".kernel"] = np.ascontiguousarray(array.T)
        else:
            out[name] = array
    return out
