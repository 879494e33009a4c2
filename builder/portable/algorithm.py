"""The portable algorithm: sums, exp, log, a dense layer, ReLU, softmax cross-entropy, the MLP's
explicit backward pass and Adam — each written only with `Ops`, in one fixed order.

The orders, which every backend follows because they are written here and nowhere else:

- **Sums** (`pairwise_sum`) run along the last axis: pad it with zeros to the next power of two
  n, then add the first half to the second half elementwise (`x[:n/2] + x[n/2:]`) until one
  element is left. A layer's inner product, the gradient's sum over the batch and the loss's
  sum over the batch are all such sums.
- **exp** (Cody & Waite's range reduction with Cephes' float32 polynomial): k = floor(x·log2(e)
  + 1/2); r = (x - k·0.693359375) - k·(-2.12194440e-4); p = ((((((1.9875691500e-4·r +
  1.3981999507e-3)·r + 8.3334519073e-3)·r + 4.1665795894e-2)·r + 1.6666665459e-1)·r +
  5.0000001201e-1)·r²) + r + 1; the result is (p·2^(k-t))·(1+t), t = 1 if k = 128 else 0, the
  powers of two made from their bits. x is clamped to [-88, 88.72284] first; below -87.33654
  the true result is not a normal float32 and the flush makes it 0, above 88.72284 it is +inf.
  NaN is not propagated (it takes the clamp's bound): training that reaches NaN is diverged
  anyway.
- **log** of a positive normal x (Cephes' logf): x = m·2^e with m in [1, 2) from the bits, then
  m ≥ √2 is halved (e + 1); f = m - 1 (exact); z = f²; y = (((((((((7.0376836292e-2·f -
  1.1514610310e-1)·f + 1.1676998740e-1)·f - 1.2420140846e-1)·f + 1.4249322787e-1)·f -
  1.6668057665e-1)·f + 2.0000714765e-1)·f - 2.4999993993e-1)·f + 3.3333331174e-1)·f)·z;
  y = y + e·(-2.12194440e-4); y = y - 0.5·z; result = (f + y) + e·0.693359375.
- **softmax cross-entropy** (mean over the batch): per row the maximum (a pairwise tree of
  `maximum`), s = z - max, e = exp(s), S = Σ e, loss_row = log(S) - s[label]; loss = Σ loss_row / B;
  the gradient (e / S - onehot) / B.
- **Dense layer** z = x·W + b with W as [in, out]: the products x[b, i]·W[i, j] as one [B, in, out]
  tensor, summed over `in`; the backward pass: dW = Σ_b x[b, i]·dz[b, j], db = Σ_b dz[b, j],
  dx = Σ_j dz[b, j]·W[i, j], each a pairwise sum.
- **Activations** of the hidden layers: ReLU (exact); sigmoid 1/(1 + exp(-z)); tanh
  sign(z)·(1 - e)/(1 + e) with e = exp(-2|z|). Backward: ReLU passes the gradient where z > 0,
  tanh multiplies it by (1 - a·a), sigmoid by a·(1 - a), a the activation's output.
- **Adam** (PyTorch's update), per step: β1^t and β2^t as running float32 products, c1 = 1 -
  β1^t, c2 = 1 - β2^t, step = lr / c1, s2 = √c2 — these scalars on the host (`AdamState.
  advance`: NumPy float32, flushed, the square root correctly rounded through float64); per
  tensor g = g + decay·w (only with weight decay), m = β1·m + (1 - β1)·g, v = β2·v + (1 -
  β2)·(g·g), denom = √v / s2 + ε (√ the correctly rounded sqrt below), w = w - step·(m / denom).
- **Leading axes** (a batched sweep's seed axis) broadcast through every function: each
  element is computed by the same operations in the same order whatever stands beside it.

Every product, quotient, sum and difference is flushed below 2**-126 by `Ops` itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from builder.portable.ops import Ops

T = Any

EXP_OVERFLOW = 88.72283935546875  # above: +inf
EXP_HI, EXP_LO = EXP_OVERFLOW, -88.0
LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
            1.6666665459e-1, 5.0000001201e-1)  # fmt: skip
LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
            3.3333331174e-1)  # fmt: skip
SQRT2 = 1.41421356237309505


def pairwise_sum(o: Ops, x: T) -> T:
    """The sum over the last axis, in the fixed pairwise order (module docstring)."""
    n = o.shape(x)[-1]
    width = 1 if n <= 1 else 1 << (n - 1).bit_length()
    if width > n:
        x = o.pad_last(x, width - n, 0.0)
    while width > 1:
        width //= 2
        x = o.add(x[..., :width], x[..., width:])
    return x[..., 0]


def pairwise_max(o: Ops, x: T) -> T:
    """The maximum over the last axis (exact; the tree only fixes which of equal values wins)."""
    n = o.shape(x)[-1]
    width = 1 if n <= 1 else 1 << (n - 1).bit_length()
    if width > n:
        x = o.pad_last(x, width - n, float("-inf"))
    while width > 1:
        width //= 2
        x = o.maximum(x[..., :width], x[..., width:])
    return x[..., 0]


def _horner(o: Ops, x: T, coefficients: tuple[float, ...]) -> T:
    """((c0·x + c1)·x + c2)… — each product and sum its own operation."""
    y = o.mul(o.const(coefficients[0]), x)
    for c in coefficients[1:-1]:
        y = o.mul(o.add(y, o.const(c)), x)
    return o.add(y, o.const(coefficients[-1]))


def exp(o: Ops, x: T) -> T:
    """e**x in float32 (module docstring); max error measured in tests/test_portable.py."""
    clamped = o.maximum(o.neg(o.maximum(o.neg(x), o.const(-EXP_HI))), o.const(EXP_LO))
    k = o.floor(o.add(o.mul(clamped, o.const(LOG2E)), o.const(0.5)))
    r = o.sub(o.sub(clamped, o.mul(k, o.const(LN2_HI))), o.mul(k, o.const(LN2_LO)))
    p = o.add(o.add(o.mul(_horner(o, r, EXP_POLY), o.mul(r, r)), r), o.const(1.0))
    top = o.where(o.greater(k, o.const(127.0)), o.const(1.0), o.const(0.0))  # k = 128: 2**127·2
    scale = o.bits_float(o.shift_left(o.int_add(o.float_to_int(o.sub(k, top)), 127), 23))
    result = o.mul(o.mul(p, scale), o.add(top, o.const(1.0)))
    return o.where(o.greater(x, o.const(EXP_OVERFLOW)), o.const(float("inf")), result)


def log(o: Ops, x: T) -> T:
    """The natural logarithm of a positive normal float32 (module docstring)."""
    bits = o.float_bits(x)
    e = o.int_to_float(o.int_add(o.bit_and(o.shift_right(bits, 23), 255), -127))
    m = o.bits_float(o.bit_or(o.bit_and(bits, 0x7FFFFF), 0x3F800000))  # [1, 2)
    big = o.greater(m, o.const(SQRT2))
    m = o.where(big, o.mul(m, o.const(0.5)), m)
    e = o.where(big, o.add(e, o.const(1.0)), e)
    f = o.sub(m, o.const(1.0))
    z = o.mul(f, f)
    y = o.mul(o.mul(_horner(o, f, LOG_POLY), f), z)
    y = o.add(y, o.mul(e, o.const(LN2_LO)))
    y = o.sub(y, o.mul(o.const(0.5), z))
    return o.add(o.add(f, y), o.mul(e, o.const(LN2_HI)))


def isqrt(o: Ops, n: T) -> T:
    """⌊√n⌋ of int64 n < 2**53, exactly: the backend's guess (within one of it), corrected by
    integer products once each way."""
    r = o.isqrt_guess(n)
    r = o.where(o.greater(o.int_mul(r, r), n), o.int_add(r, -1), r)
    up = o.int_add(r, 1)
    return o.where(o.greater(o.int_mul(up, up), n), r, up)


def sqrt(o: Ops, x: T) -> T:
    """The correctly rounded square root of a non-negative float32 (zero or normal), from
    integers: libraries' float32 sqrt is not always correctly rounded (PyTorch's CPU kernel
    misses on ~0.5 % of inputs). x = m·2^k with m the 24-bit integer mantissa and k made even
    (m doubled otherwise); r = ⌊√(m·2^26)⌋ (the backend's float64 guess, corrected once each way
    with integer products); 2r + (1 if r² < m·2^26) is converted to float32
    (correctly rounded: the appended bit breaks what would be a false tie) and scaled by
    2^(k/2 - 14)."""
    bits = o.float_bits(x)
    k = o.int_add(o.bit_and(o.shift_right(bits, 23), 255), -127 - 23)
    m = o.bit_or(o.bit_and(bits, 0x7FFFFF), 0x800000)
    odd = o.greater(o.bit_and(k, 1), 0)
    m = o.where(odd, o.shift_left(m, 1), m)
    k = o.where(odd, o.int_add(k, -1), k)
    n = o.shift_left(o.widen(m), 26)
    r = isqrt(o, n)
    doubled = o.shift_left(r, 1)
    inexact = o.greater(n, o.int_mul(r, r))
    value = o.int_to_float(o.where(inexact, o.int_add(doubled, 1), doubled))
    scale = o.bits_float(o.shift_left(o.int_add(o.shift_right(k, 1), 127 - 14), 23))
    return o.where(o.greater(x, o.const(0.0)), o.mul(value, scale), x)


def relu(o: Ops, z: T) -> T:
    return o.where(o.greater(z, o.const(0.0)), z, o.const(0.0))


def sigmoid(o: Ops, z: T) -> T:
    """1 / (1 + e**-z): within a few ulps everywhere (no cancellation)."""
    one = o.const(1.0)
    return o.div(one, o.add(one, exp(o, o.neg(z))))


def tanh(o: Ops, z: T) -> T:
    """sign(z)·(1 - e)/(1 + e), e = e**-2|z|: exact at 0, within ~1e-7 absolute near 0 (where
    1 - e cancels) and a few ulps away from it."""
    one = o.const(1.0)
    e = exp(o, o.mul(o.const(-2.0), o.abs(z)))
    magnitude = o.div(o.sub(one, e), o.add(one, e))
    return o.where(o.greater(o.const(0.0), z), o.neg(magnitude), magnitude)


def activate(o: Ops, name: str, z: T) -> T:
    """The hidden layers' activation: "relu", "tanh" or "sigmoid"."""
    return {"relu": relu, "tanh": tanh, "sigmoid": sigmoid}[name](o, z)


def activation_backward(o: Ops, name: str, z: T, a: T, grad: T) -> T:
    """The gradient through the activation, from its input z and its output a: ReLU passes it
    where z > 0, tanh scales it by 1 - a², sigmoid by a·(1 - a)."""
    if name == "relu":
        return o.where(o.greater(z, o.const(0.0)), grad, o.const(0.0))
    one = o.const(1.0)
    if name == "tanh":
        return o.mul(grad, o.sub(one, o.mul(a, a)))
    return o.mul(grad, o.mul(a, o.sub(one, a)))


def dense(o: Ops, x: T, weight: T, bias: T) -> T:
    """x [..., B, in] · weight [..., in, out] + bias [..., out] (leading axes, e.g. one per
    seed of a batched sweep, broadcast; they change no bits)."""
    products = o.mul(x[..., :, :, None], weight[..., None, :, :])  # [..., B, in, out]
    return o.add(pairwise_sum(o, o.move_to_last(products, -2)), bias[..., None, :])


def dense_backward(
    o: Ops, x: T, weight: T, dz: T, input_grad: bool = True
) -> tuple[T, T, T | None]:
    """The dense layer's (dW, db, dx) from its input x [..., B, in] and the gradient of its
    output dz [..., B, out]: dW = Σ_b x[b, i]·dz[b, j], db = Σ_b dz[b, j], dx = Σ_j dz[b, j]·W[i, j]
    (dx only if `input_grad`)."""
    products = o.mul(x[..., :, :, None], dz[..., :, None, :])  # [..., B, in, out]
    weight_grad = pairwise_sum(o, o.move_to_last(products, -3))
    bias_grad = pairwise_sum(o, o.move_to_last(dz, -2))
    if not input_grad:
        return weight_grad, bias_grad, None
    return (
        weight_grad,
        bias_grad,
        pairwise_sum(o, o.mul(dz[..., :, None, :], weight[..., None, :, :])),
    )


def mean_rows(o: Ops, row_values: T) -> T:
    """The mean over the last axis: its pairwise sum divided by the count."""
    return o.div(pairwise_sum(o, row_values), o.const(float(o.shape(row_values)[-1])))


def softmax_parts(o: Ops, logits: T, onehot: T) -> tuple[T, T, T]:
    """(each row's loss [..., B], e = exp(z - max) [..., B, C], S = Σ e [..., B])."""
    shifted, e, total = _softmax(o, logits)
    picked = pairwise_sum(o, o.where(o.greater(onehot, o.const(0.0)), shifted, o.const(0.0)))
    return o.sub(log(o, total), picked), e, total


def _softmax(o: Ops, logits: T) -> tuple[T, T, T]:
    """(s = z - max, e = exp(s), S = Σ e) per row."""
    shifted = o.sub(logits, pairwise_max(o, logits)[..., None])
    e = exp(o, shifted)
    return shifted, e, pairwise_sum(o, e)


def softmax_cross_entropy(
    o: Ops, logits: T, onehot: T, with_loss: bool = True
) -> tuple[T | None, T]:
    """(the mean loss over the batch [...], its gradient with respect to the logits). The
    gradient needs no log: `with_loss=False` skips the loss (None)."""
    rows = o.const(float(o.shape(logits)[-2]))
    if with_loss:
        row_loss, e, total = softmax_parts(o, logits, onehot)
    else:
        _, e, total = _softmax(o, logits)
    grad = o.div(o.sub(o.div(e, total[..., None]), onehot), rows)
    return (mean_rows(o, row_loss) if with_loss else None), grad


Layers = list[tuple[T, T]]  # (weight [..., in, out], bias [..., out]) per layer, input first


def mlp_forward(
    o: Ops, layers: Layers, x: T, activation: str = "relu"
) -> tuple[T, list[tuple[T, T, T]]]:
    """The logits, and per layer (its input, its pre-activation, its output) for the backward
    pass; every layer but the last is followed by the activation."""
    cache = []
    a = x
    for index, (weight, bias) in enumerate(layers):
        z = dense(o, a, weight, bias)
        out = activate(o, activation, z) if index < len(layers) - 1 else z
        cache.append((a, z, out))
        a = out
    return a, cache


def mlp_gradients(
    o: Ops, layers: Layers, x: T, onehot: T, activation: str = "relu", with_loss: bool = True
) -> tuple[T | None, T, Layers]:
    """(loss — None unless `with_loss` —, logits, per-layer (dW, db)) of the MLP under softmax
    cross-entropy."""
    logits, cache = mlp_forward(o, layers, x, activation)
    loss, dz = softmax_cross_entropy(o, logits, onehot, with_loss)
    grads: Layers = []
    for index in range(len(layers) - 1, -1, -1):
        weight_grad, bias_grad, da = dense_backward(
            o, cache[index][0], layers[index][0], dz, index > 0
        )
        grads.append((weight_grad, bias_grad))
        if index > 0:
            _, z, out = cache[index - 1]
            dz = activation_backward(o, activation, z, out, da)
    return loss, logits, grads[::-1]


@dataclass
class AdamState:
    """Adam's moments per tensor (on the backend) and the running powers β1^t, β2^t (float32
    scalars on the host: they depend on the step count alone, so the host computes them — and
    the step size and √(1 - β2^t) — once per step for every backend alike)."""

    m: list[T] = field(default_factory=list)
    v: list[T] = field(default_factory=list)
    beta1_power: np.float32 = field(default_factory=lambda: np.float32(1.0))
    beta2_power: np.float32 = field(default_factory=lambda: np.float32(1.0))
    steps: int = 0

    def advance(self, lr: float, betas: tuple[float, float]) -> tuple[np.float32, np.float32]:
        """The next step's (step size lr / (1 - β1^t), √(1 - β2^t)), in float32 on the host:
        NumPy's float32 scalar operations are IEEE's, flushed as `Ops` flushes, and the square
        root of a float32 taken in float64 and rounded to float32 is the correctly rounded one
        (53 ≥ 2·24 + 2 bits)."""
        one = np.float32(1.0)
        self.steps += 1
        self.beta1_power = _host_flush(self.beta1_power * np.float32(betas[0]))
        self.beta2_power = _host_flush(self.beta2_power * np.float32(betas[1]))
        step = _host_flush(np.float32(lr) / _host_flush(one - self.beta1_power))
        root = np.float32(math.sqrt(float(_host_flush(one - self.beta2_power))))
        return step, root


def _host_flush(x: np.float32) -> np.float32:
    return np.float32(0.0) if abs(x) < np.float32(2.0**-126) else np.float32(x)


def adam_start(o: Ops, params: list[T], state: AdamState) -> None:
    """Adam's first moments: zeros shaped as the parameters (p·0, flushed to +0)."""
    state.m = [o.mul(p, o.const(0.0)) for p in params]
    state.v = [o.mul(p, o.const(0.0)) for p in params]


def adam_update(
    o: Ops,
    params: list[T],
    grads: list[T],
    moments: tuple[list[T], list[T]],
    step: T,
    root: T,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float = 0.0,
) -> tuple[list[T], list[T], list[T]]:
    """The elementwise part of one Adam update, given the step's scalars (`AdamState.advance`,
    as tensors): (new parameters, new m, new v)."""
    b1, b2 = o.const(betas[0]), o.const(betas[1])
    one = np.float32(1.0)
    keep1 = o.const(float(one - np.float32(betas[0])))
    keep2 = o.const(float(one - np.float32(betas[1])))
    updated, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, *moments, strict=True):
        if weight_decay:
            g = o.add(g, o.mul(o.const(weight_decay), p))
        m = o.add(o.mul(b1, m), o.mul(keep1, g))
        v = o.add(o.mul(b2, v), o.mul(keep2, o.mul(g, g)))
        denom = o.add(o.div(sqrt(o, v), root), o.const(eps))
        updated.append(o.sub(p, o.mul(step, o.div(m, denom))))
        new_m.append(m)
        new_v.append(v)
    return updated, new_m, new_v


def adam_step(
    o: Ops,
    params: list[T],
    grads: list[T],
    state: AdamState,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float = 0.0,
) -> list[T]:
    """One Adam update (PyTorch's; weight decay as PyTorch's L2 term, g + decay·w) in the fixed
    order; returns the new parameters and advances `state`."""
    if state.steps == 0:
        adam_start(o, params, state)
    step, root = state.advance(lr, betas)
    updated, state.m, state.v = adam_update(
        o, params, grads, (state.m, state.v), o.tensor(step), o.tensor(root), betas, eps,
        weight_decay,
    )  # fmt: skip
    return updated
