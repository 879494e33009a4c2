"""`Ops` for TensorFlow (CPU or GPU): each method one elementwise op, run eagerly or — a
training step, through `compile` — as a `tf.function` whose graph nothing rewrites (Grappler
and XLA auto-clustering off while it runs), so no two ops are ever fused; results flushed below
2**-126 (TensorFlow's CPU threads flush subnormals themselves; the flush makes every backend
agree: builder/portable/ops.py). Every op, slicing included, is placed on the Ops' device."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from builder.portable.ops import TINY, flushed_constant


class TensorFlowOps:
    name = "tensorflow"

    def __init__(self, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda'")
        self.device = "/GPU:0" if device == "cuda" else "/CPU:0"
        self._unrewritten_depth = 0
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
        """`fn` as a tf.function placed on this device, run with Grappler and XLA's
        auto-clustering off (and both restored after each call, so the rest of the process keeps
        TensorFlow's defaults): its graph runs the same kernels as eager mode, one op each — no
        rewrite, no fusion — about 5x faster than calling them eagerly."""

        def placed(*args: Any) -> Any:
            with tf.device(self.device):
                return fn(*args)

        graph = tf.function(placed, jit_compile=False, reduce_retracing=False)

        def run(*args: Any) -> Any:
            with self._unrewritten():
                return graph(*args)

        return run

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """A context placing the ops made inside it on this device (slicing, which does not
        go through the methods here, included), with the graph optimizer off throughout (so a
        compiled step need not switch it off and on, ~0.1 ms, at every call)."""
        with tf.device(self.device), self._unrewritten():
            yield

    @contextlib.contextmanager
    def _unrewritten(self) -> Iterator[None]:
        if self._unrewritten_depth:
            yield
            return
        self._unrewritten_depth += 1
        try:
            with unrewritten():
                yield
        finally:
            self._unrewritten_depth -= 1

    def _flush(self, x: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.abs(x) < self._tiny, self._zero, x)

    def const(self, value: float) -> tf.Tensor:
        with tf.device(self.device):
            return tf.constant(flushed_constant(value), tf.float32)

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


@contextlib.contextmanager
def unrewritten() -> Iterator[None]:
    """Grappler (the graph optimizer: arithmetic rewrites, remapping, fusion) off, and XLA's
    auto-clustering if someone switched it on (setting it off explicitly when it already is
    costs ~1 s a run here); then both as they were."""
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    jit = tf.config.optimizer.get_jit()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if jit:
        tf.config.optimizer.set_jit(False)
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})
        if jit:
            tf.config.optimizer.set_jit(jit)


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
