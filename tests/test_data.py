"""Built-in datasets and the recorded data order."""

from __future__ import annotations

import numpy as np
import pytest

from builder.data import array_digest, generate_builtin, make_order

SIZES = {
    "gaussian-2d": ({"train": 10_000, "dev": 2_000, "eval": 2_000}, 2),
    "gaussian-5d": ({"train": 100_000, "dev": 10_000, "eval": 10_000}, 5),
    "eeg-26d": ({"train": 18_936, "eval": 1_154}, 26),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_sizes_and_types(name: str) -> None:
    sizes, features = SIZES[name]
    dataset = generate_builtin(name)
    assert {s: x.shape[0] for s, (x, _) in dataset.arrays.items()} == sizes
    for x, y in dataset.arrays.values():
        assert x.dtype == np.float32 and x.shape[1] == features
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        assert abs(y.mean() - 0.5) < 0.01  # balanced classes


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_generation_is_repeatable(name: str) -> None:
    a, b = generate_builtin(name), generate_builtin(name)
    for split in a.arrays:
        assert array_digest(*a.arrays[split]) == array_digest(*b.arrays[split])


def test_order_is_one_permutation_per_epoch() -> None:
    order = make_order(1000, 3, seed=5)
    assert order.shape == (3, 1000)
    for row in order:
        assert np.array_equal(np.sort(row), np.arange(1000))
    assert not np.array_equal(order[0], order[1])
    assert np.array_equal(order, make_order(1000, 3, seed=5))
    assert not np.array_equal(order, make_order(1000, 3, seed=6))


def test_digest_depends_on_dtype_and_shape() -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    assert array_digest(x) != array_digest(x.reshape(3, 2))
    assert array_digest(x) != array_digest(x.astype(np.float64))
