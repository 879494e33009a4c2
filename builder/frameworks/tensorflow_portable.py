"""`Ops` for TensorFlow (eager, CPU or GPU): each method one elementwise op run eagerly (no
graph, so no optimizer can fuse two), results flushed below 2**-126 — TensorFlow's CPU threads
flush subnormals themselves, the flush makes every backend agree (builder/portable/ops.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from builder.portable.ops import TINY


class TensorFlowOps:
    name = "tensorflow"

    def __init__(self, device: str = "cpu") -> None:
        self.device = "/GPU:0" if device == "cuda" else "/CPU:0"
        with tf.device(self.device):
            self._tiny = tf.constant(TINY, tf.float32)
            self._zero = tf.constant(0.0, tf.float32)

    def tensor(self, array: Any) -> tf.Tensor:
        """A tensor of a NumPy array on this device: floats as float32, flushed (TensorFlow's
        CPU would read a subnormal input as zero; the other backends must too)."""
        array = np.asarray(array)
        with tf.device(self.device):
            if array.dtype.kind == "f":
                return self._flush(tf.constant(array.astype(np.float32)))
            return tf.constant(array)

    def numpy(self, a: tf.Tensor) -> np.ndarray:
        return np.asarray(a.numpy())

    def compile(self, fn: Any) -> Any:
        """A tf.function with Grappler off: its graph runs the same kernels as eager mode, one
        op each (no rewrite, no fusion, no XLA), ~10x faster than calling them eagerly."""
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        return tf.function(fn, jit_compile=False, reduce_retracing=False)

    def _flush(self, x: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.abs(x) < self._tiny, self._zero, x)

    def const(self, value: float) -> tf.Tensor:
        with tf.device(self.device):
            return tf.constant(value, tf.float32)

    def reshape(self, a: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
        return tf.reshape(a, shape)

    def concat_last(self, parts: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(parts, axis=-1)

    def add(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return self._flush(tf.add(a, b))

    def sub(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return self._flush(tf.subtract(a, b))

    def mul(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return self._flush(tf.multiply(a, b))

    def div(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return self._flush(tf.divide(a, b))

    def neg(self, a: tf.Tensor) -> tf.Tensor:
        return tf.negative(a)

    def abs(self, a: tf.Tensor) -> tf.Tensor:
        return tf.abs(a)

    def floor(self, a: tf.Tensor) -> tf.Tensor:
        return tf.floor(a)

    def greater(self, a: tf.Tensor, b: tf.Tensor | int) -> tf.Tensor:
        return tf.greater(a, tf.cast(b, a.dtype) if isinstance(b, int) else b)

    def where(self, condition: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.where(condition, a, b)

    def maximum(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.greater(a, b), a, b)

    def shape(self, a: tf.Tensor) -> tuple[int, ...]:
        return tuple(int(d) for d in a.shape)

    def pad_last(self, a: tf.Tensor, count: int, value: float) -> tf.Tensor:
        paddings = [[0, 0]] * (len(a.shape) - 1) + [[0, count]]
        return tf.pad(a, paddings, constant_values=value)

    def move_to_last(self, a: tf.Tensor, axis: int) -> tf.Tensor:
        axis %= len(a.shape)
        order = [i for i in range(len(a.shape)) if i != axis] + [axis]
        return tf.transpose(a, order)

    def take_rows(self, a: tf.Tensor, rows: Any) -> tf.Tensor:
        return tf.gather(a, rows)

    def one_hot(self, labels: tf.Tensor, classes: int) -> tf.Tensor:
        return tf.one_hot(tf.cast(labels, tf.int32), classes, dtype=tf.float32)

    def float_bits(self, a: tf.Tensor) -> tf.Tensor:
        return tf.bitcast(a, tf.int32)

    def bits_float(self, a: tf.Tensor) -> tf.Tensor:
        return tf.bitcast(a, tf.float32)

    def shift_right(self, a: tf.Tensor, count: int) -> tf.Tensor:
        return tf.bitwise.right_shift(a, tf.cast(count, a.dtype))

    def shift_left(self, a: tf.Tensor, count: int) -> tf.Tensor:
        return tf.bitwise.left_shift(a, tf.cast(count, a.dtype))

    def bit_and(self, a: tf.Tensor, mask: int) -> tf.Tensor:
        return tf.bitwise.bitwise_and(a, tf.cast(mask, a.dtype))

    def bit_or(self, a: tf.Tensor, mask: int) -> tf.Tensor:
        return tf.bitwise.bitwise_or(a, tf.cast(mask, a.dtype))

    def int_add(self, a: tf.Tensor, value: int) -> tf.Tensor:
        return tf.add(a, tf.cast(value, a.dtype))

    def widen(self, a: tf.Tensor) -> tf.Tensor:
        return tf.cast(a, tf.int64)

    def int_mul(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.multiply(a, b)

    def int_to_float(self, a: tf.Tensor) -> tf.Tensor:
        return tf.cast(a, tf.float32)

    def float_to_int(self, a: tf.Tensor) -> tf.Tensor:
        return tf.cast(a, tf.int32)

    def isqrt_guess(self, a: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.sqrt(tf.cast(a, tf.float64)), tf.int64)


def _placed(method: Callable[..., Any]) -> Callable[..., Any]:
    """The op runs on the Ops' device (eager TensorFlow would otherwise pick the GPU)."""

    @functools.wraps(method)
    def run(self: TensorFlowOps, *args: Any) -> Any:
        with tf.device(self.device):
            return method(self, *args)

    return run


for _name in (
    "add", "sub", "mul", "div", "neg", "abs", "floor", "greater", "where", "maximum",
    "pad_last", "move_to_last", "reshape", "concat_last", "take_rows", "one_hot",
    "float_bits", "bits_float",
    "shift_right", "shift_left", "bit_and", "bit_or", "int_add", "widen", "int_mul",
    "int_to_float", "float_to_int", "isqrt_guess",
):  # fmt: skip
    setattr(TensorFlowOps, _name, _placed(getattr(TensorFlowOps, _name)))
