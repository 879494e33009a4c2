"""An independent NumPy implementation of the portable algorithm, written from its description
(builder/portable/algorithm.py's docstring, docs/architecture.md) and not from its code: the
tests hold every backend to it bit for bit.

NumPy computes each float32 ufunc per element with one correctly rounded operation and never
contracts two into a multiply-add, and keeps subnormals: `f` flushes them after each step, as
the algorithm prescribes.
"""

from __future__ import annotations

import math

import numpy as np

F = np.float32
TINY = F(2.0**-126)


def f(x: np.ndarray) -> np.ndarray:
    """Flush results below the smallest normal float32 (zeros too) to +0."""
    x = np.asarray(x, dtype=F)
    return np.where(np.abs(x) < TINY, F(0), x).astype(F)


def tree(x: np.ndarray, combine, pad: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    n = x.shape[-1]
    width = 1
    while width < n:
        width *= 2
    if width > n:
        x = np.concatenate([x, np.full((*x.shape[:-1], width - n), pad, dtype=F)], axis=-1)
    while width > 1:
        width //= 2
        x = combine(x[..., :width], x[..., width:])
    return x[..., 0]


def total(x: np.ndarray) -> np.ndarray:
    return tree(x, lambda a, b: f(a + b), 0.0)


def largest(x: np.ndarray) -> np.ndarray:
    return tree(x, lambda a, b: np.where(a > b, a, b), -np.inf)


def exp(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=F)
    top_bound = F(88.72283935546875)
    c = np.where(x < top_bound, x, top_bound)
    c = np.where(c > F(-88), c, F(-88))
    k = np.floor(f(f(c * F(1.44269504088896341)) + F(0.5)))
    r = f(f(c - f(k * F(0.693359375))) - f(k * F(-2.12194440e-4)))
    p = f(F(1.9875691500e-4) * r)
    for coefficient in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1):
        p = f(f(p + F(coefficient)) * r)
    p = f(p + F(5.0000001201e-1))
    p = f(f(f(p * f(r * r)) + r) + F(1))
    top = np.where(k > F(127), F(1), F(0))
    scale = ((f(k - top).astype(np.int32) + 127) << 23).astype(np.int32).view(F)
    result = f(f(p * scale) * f(top + F(1)))
    return np.where(x > F(88.72283935546875), F(np.inf), result).astype(F)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Correctly rounded, from integers (as the algorithm, independently written)."""
    x = np.asarray(x, dtype=F)
    bits = x.view(np.int32).astype(np.int64)
    k = ((bits >> 23) & 255) - 150
    m = (bits & 0x7FFFFF) | 0x800000
    m = np.where(k % 2 == 1, m * 2, m)
    k = np.where(k % 2 == 1, k - 1, k)
    n = m << 26
    r = np.array([math.isqrt(int(v)) for v in n.ravel()], dtype=np.int64).reshape(n.shape)
    value = (2 * r + (r * r < n)).astype(F)
    scale = ((k // 2 - 14 + 127) << 23).astype(np.int32).view(F)
    return np.where(x > F(0), value * scale, x).astype(F)


def log(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=F)
    bits = x.view(np.int32)
    e = (((bits >> 23) & 255) - 127).astype(F)
    m = ((bits & 0x7FFFFF) | 0x3F800000).astype(np.int32).view(F)
    big = m > F(1.41421356237309505)
    m = np.where(big, f(m * F(0.5)), m)
    e = np.where(big, f(e + F(1)), e)
    g = f(m - F(1))
    z = f(g * g)
    y = f(F(7.0376836292e-2) * g)
    for coefficient in (-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
                        -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1):  # fmt: skip
        y = f(f(y + F(coefficient)) * g)
    y = f(y + F(3.3333331174e-1))
    y = f(f(y * g) * z)
    y = f(y + f(e * F(-2.12194440e-4)))
    y = f(y - f(F(0.5) * z))
    return f(f(g + y) + f(e * F(0.693359375)))


def step_gradients(
    layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, labels: np.ndarray, classes: int
) -> tuple[np.float32, list[tuple[np.ndarray, np.ndarray]]]:
    """The loss and each layer's (dW, db) of a ReLU MLP with kernels [in, out]."""
    onehot = np.eye(classes, dtype=F)[labels]
    inputs, pre = [], []
    a = f(x)  # inputs are flushed as they enter, as every backend's `tensor` does
    for index, (w, b) in enumerate(layers):
        z = f(total(np.moveaxis(f(a[:, :, None] * w[None, :, :]), 1, -1)) + b[None, :])
        inputs.append(a)
        pre.append(z)
        a = np.where(z > F(0), z, F(0)) if index < len(layers) - 1 else z
    rows = F(x.shape[0])
    s = f(a - largest(a)[:, None])
    e = exp(s)
    sums = total(e)
    picked = total(np.where(onehot > F(0), s, F(0)))
    loss = f(total(f(log(sums) - picked)) / rows)
    dz = f(f(f(e / sums[:, None]) - onehot) / rows)
    grads = []
    for index in range(len(layers) - 1, -1, -1):
        w = layers[index][0]
        dw = total(np.moveaxis(f(inputs[index][:, :, None] * dz[:, None, :]), 0, -1))
        db = total(np.moveaxis(dz, 0, -1))
        grads.append((dw, db))
        if index:
            da = total(f(dz[:, None, :] * w[None, :, :]))
            dz = np.where(pre[index - 1] > F(0), da, F(0))
    return F(loss), grads[::-1]


class Adam:
    def __init__(self, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.lr, self.b1, self.b2, self.eps = F(lr), F(betas[0]), F(betas[1]), F(eps)
        self.p1 = self.p2 = F(1)
        self.m: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        if not self.m:
            self.m = [f(p * F(0)) for p in params]
            self.v = [f(p * F(0)) for p in params]
        self.p1, self.p2 = f(self.p1 * self.b1), f(self.p2 * self.b2)
        size = f(self.lr / f(F(1) - self.p1))
        root = sqrt(f(F(1) - self.p2))
        out = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            self.m[i] = f(f(self.b1 * self.m[i]) + f(f(F(1) - self.b1) * g))
            self.v[i] = f(f(self.b2 * self.v[i]) + f(f(F(1) - self.b2) * f(g * g)))
            denom = f(f(sqrt(self.v[i]) / root) + self.eps)
            out.append(f(p - f(size * f(self.m[i] / denom))))
        return out


def forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The logits of a ReLU MLP (kernels [in, out]) for rows x."""
    a = f(x)
    for index, (w, b) in enumerate(layers):
        z = f(total(np.moveaxis(f(a[:, :, None] * w[None, :, :]), 1, -1)) + b[None, :])
        a = np.where(z > F(0), z, F(0)) if index < len(layers) - 1 else z
    return a


def mean_loss(logits: np.ndarray, labels: np.ndarray, classes: int) -> np.float32:
    """Softmax cross-entropy, each row's in the fixed order, then their pairwise mean."""
    onehot = np.eye(classes, dtype=F)[labels]
    s = f(logits - largest(logits)[:, None])
    rows = f(log(total(exp(s))) - total(np.where(onehot > F(0), s, F(0))))
    return F(f(total(rows) / F(rows.shape[0])))


def train(
    layers: list[tuple[np.ndarray, np.ndarray]],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: int,
    order: np.ndarray,
    batch: int,
    lr: float,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[dict[str, float]]]:
    """The built-in MLP trained in `order` ([epochs, rows]) with Adam (β 0.9/0.999, ε 1e-8);
    the weights at the end and, per epoch, the training loss and each split's error rate (a
    prediction is the first largest logit)."""
    x, y = splits["train"]
    adam = Adam(lr, (0.9, 0.999), 1e-8)
    flat = [f(a) for layer in layers for a in layer]
    history = []
    for permutation in order:
        for start in range(0, len(permutation), batch):
            rows = permutation[start : start + batch]
            pairs = list(zip(flat[::2], flat[1::2], strict=True))
            _, grads = step_gradients(pairs, x[rows], y[rows], classes)
            flat = adam.step(flat, [g for pair in grads for g in pair])
        pairs = list(zip(flat[::2], flat[1::2], strict=True))
        metrics = {}
        for split, (xs, ys) in splits.items():
            logits = forward(pairs, xs)
            metrics[f"{split}_error"] = int((np.argmax(logits, axis=1) != ys).sum()) / len(ys)
            if split == "train":
                metrics["train_loss"] = float(mean_loss(logits, ys, classes))
        history.append(metrics)
    return list(zip(flat[::2], flat[1::2], strict=True)), history
