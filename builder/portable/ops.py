"""The operations portable numerics is built from, one interface per backend.

Each arithmetic method is one elementwise IEEE-754 float32 operation, correctly rounded, run as
an operation of its own (never fused with another into a multiply-add), whose result is then
flushed: a result of magnitude below 2**-126 (a subnormal, or a zero of either sign) becomes
+0, so backends that flush subnormals in hardware (with either sign) and backends that keep
them agree. Comparisons,
selection, floor, abs, negation, slicing, padding and bit operations are exact by nature.
A backend implements `Ops` faithfully or not at all: tests/test_portable.py holds each one to an
independent NumPy implementation, bit for bit.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

T = Any  # a backend's float32 (or int32, bool) tensor

TINY = 2.0**-126  # the smallest normal float32: below it, results are flushed to zero


def flushed_constant(value: float) -> float:
    """`value` as float32 holds it, +0 below 2**-126 (as every result): what `Ops.const`
    makes of it."""
    rounded = float(np.float32(value))
    return 0.0 if abs(rounded) < TINY else rounded


class Ops(Protocol):
    """float32 tensors of one backend, on one device."""

    name: str

    def const(self, value: float) -> T:
        """A float32 scalar: `value` rounded to float32 (round to nearest, ties to even), +0
        if that is below 2**-126 (as every result)."""
        ...

    def add(self, a: T, b: T) -> T: ...
    def sub(self, a: T, b: T) -> T: ...
    def mul(self, a: T, b: T) -> T: ...
    def div(self, a: T, b: T) -> T: ...
    def neg(self, a: T) -> T: ...
    def abs(self, a: T) -> T: ...
    def floor(self, a: T) -> T: ...
    def greater(self, a: T, b: T | int) -> T:
        """a > b elementwise (floats, or integers against a tensor or a Python int)."""
        ...

    def where(self, condition: T, a: T, b: T) -> T: ...
    def maximum(self, a: T, b: T) -> T:
        """a where a > b, else b (no NaN special case: the first operand wins only if
        greater)."""
        ...

    def shape(self, a: T) -> tuple[int, ...]: ...
    def pad_last(self, a: T, count: int, value: float) -> T:
        """`a` with `count` copies of `value` appended along its last axis."""
        ...

    def reshape(self, a: T, shape: tuple[int, ...]) -> T: ...
    def concat_last(self, parts: list[T]) -> T:
        """The tensors joined along their last axis."""
        ...

    def move_to_last(self, a: T, axis: int) -> T:
        """The axis `axis` moved to the end (the others keep their order)."""
        ...

    def take_rows(self, a: T, rows: Any) -> T:
        """a[rows] along the first axis (rows: an int64 array of this backend)."""
        ...

    def one_hot(self, labels: T, classes: int) -> T:
        """float32 rows of zeros with one 1 at each label."""
        ...

    def float_bits(self, a: T) -> T:
        """The int32 whose bits are the float32's."""
        ...

    def bits_float(self, a: T) -> T:
        """The float32 whose bits are the int32's."""
        ...

    def shift_right(self, a: T, count: int) -> T: ...
    def shift_left(self, a: T, count: int) -> T: ...
    def bit_and(self, a: T, mask: int) -> T: ...
    def bit_or(self, a: T, mask: int) -> T: ...
    def int_add(self, a: T, value: int) -> T: ...
    def widen(self, a: T) -> T:
        """int32 → int64."""
        ...

    def int_mul(self, a: T, b: T) -> T:
        """int64 * int64 (the uses stay below 2**53)."""
        ...

    def int_to_float(self, a: T) -> T:
        """int32 or int64 → float32, correctly rounded (round to nearest, ties to even)."""
        ...

    def isqrt_guess(self, a: T) -> T:
        """An int64 within one of floor(sqrt(a)) for 0 <= a < 2**53 (a float64 square root,
        truncated): `algorithm.sqrt` corrects it exactly with integer arithmetic."""
        ...

    def float_to_int(self, a: T) -> T:
        """float32 holding an integer → int32, exact (the only use)."""
        ...

    def tensor(self, array: Any) -> T:
        """A tensor of this backend on its device from a NumPy array: floats become float32
        and are flushed (as TensorFlow's CPU reads a subnormal input: as zero)."""
        ...

    def numpy(self, a: T) -> Any:
        """The tensor as a NumPy array on the host (the same bits)."""
        ...

    def scope(self) -> Any:
        """A context manager under which every op (slicing too) runs on this backend's device."""
        ...

    def compile(self, fn: Any) -> Any:
        """`fn` (tensors in, tensors out) as one program of this backend where running it so
        changes no bits (TensorFlow: a graph with its optimizer off, so nothing is rewritten
        or fused), else `fn` itself."""
        ...
