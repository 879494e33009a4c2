"""Portable numerics for the user's own model: layers with an explicit backward pass, softmax
cross-entropy and Adam, on any backend's `Ops` — the same bits on every CPU and GPU, in PyTorch
and in TensorFlow (README, "Portable numerics"; capsules/portable-mlp is an example).

    o = backend("torch", run.device)
    model = Sequential(Linear(o, 4, 32, rng), ReLU(o), Linear(o, 32, 3, rng))
    adam = Adam(o, lr=1e-3)
    logits = model.forward(o.tensor(x))
    loss, grad = softmax_cross_entropy(o, logits, o.one_hot(o.tensor(y), 3))
    model.backward(grad)
    adam.step(model)

Each layer keeps what its backward pass needs from its last forward pass; `backward` sets
each layer's gradients and returns the gradient of its input. Nothing here fuses, reorders or
reduces in a library's order: every sum is the fixed pairwise one (`algorithm.py`).
"""

from __future__ import annotations

import numpy as np

from builder.portable.algorithm import (
    AdamState,
    activate,
    activation_backward,
    adam_step,
    dense,
    dense_backward,
)
from builder.portable.ops import Ops, T


class Layer:
    """A layer: `forward(x)`, then `backward(grad)` → the gradient of x; trainable layers list
    their tensors in `params` and, after `backward`, their gradients in `grads`."""

    o: Ops
    params: list[T]
    grads: list[T]

    def forward(self, x: T) -> T:
        raise NotImplementedError

    def backward(self, grad: T) -> T:
        raise NotImplementedError


class Linear(Layer):
    """y = x·W + b, W [in, out] drawn Glorot-uniform from `rng` (NumPy, so every backend and
    device starts from the same bits), b zeros."""

    def __init__(self, o: Ops, inputs: int, outputs: int, rng: np.random.Generator) -> None:
        limit = np.sqrt(6.0 / (inputs + outputs))
        weight = rng.uniform(-limit, limit, size=(inputs, outputs)).astype(np.float32)
        self.o = o
        self.params = [o.tensor(weight), o.tensor(np.zeros(outputs, np.float32))]
        self.grads = []
        self._input: T = None

    def forward(self, x: T) -> T:
        self._input = x
        with self.o.scope():
            return dense(self.o, x, self.params[0], self.params[1])

    def backward(self, grad: T) -> T:
        o, x, weight = self.o, self._input, self.params[0]
        if x is None:
            raise ValueError("Linear.backward before forward: call model.forward(x) first")
        with o.scope():
            weight_grad, bias_grad, dx = dense_backward(o, x, weight, grad)
        self.grads = [weight_grad, bias_grad]
        return dx


class Activation(Layer):
    """An elementwise activation ("relu", "tanh" or "sigmoid"; `algorithm.py`)."""

    name = "relu"

    def __init__(self, o: Ops) -> None:
        self.o = o
        self.params, self.grads = [], []
        self._input: T = None
        self._output: T = None

    def forward(self, x: T) -> T:
        self._input, self._output = x, activate(self.o, self.name, x)
        return self._output

    def backward(self, grad: T) -> T:
        return activation_backward(self.o, self.name, self._input, self._output, grad)


class ReLU(Activation):
    name = "relu"


class Tanh(Activation):
    name = "tanh"


class Sigmoid(Activation):
    name = "sigmoid"


class Sequential(Layer):
    """Layers applied in turn; backward in reverse."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = list(layers)

    @property
    def params(self) -> list[T]:  # type: ignore[override]
        return [p for layer in self.layers for p in layer.params]

    @property
    def grads(self) -> list[T]:  # type: ignore[override]
        return [g for layer in self.layers for g in layer.grads]

    def forward(self, x: T) -> T:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad: T) -> T:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def set_params(self, params: list[T]) -> None:
        """Hand each layer its share of `params` (in `self.params`' order)."""
        for layer in self.layers:
            count = len(layer.params)
            share, params = list(params[:count]), params[count:]
            if isinstance(layer, Sequential):
                layer.set_params(share)
            else:
                layer.params = share

    def weights(self) -> dict[str, np.ndarray]:
        """The parameters as NumPy arrays, named `<layer index>.weight` / `.bias` (a nested
        Sequential's prefixed by its index), for `run.save_weights`."""
        out = {}
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                out.update({f"{index}.{k}": v for k, v in layer.weights().items()})
                continue
            for name, p in zip(("weight", "bias"), layer.params, strict=False):
                out[f"{index}.{name}"] = np.asarray(layer.o.numpy(p))
        return out


class Adam:
    """PyTorch's Adam update (L2 weight decay as PyTorch's), portable (`algorithm.adam_step`)."""

    def __init__(
        self,
        o: Ops,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.o, self.lr, self.betas, self.eps, self.decay = o, lr, betas, eps, weight_decay
        self.state = AdamState()

    def step(self, model: Sequential) -> None:
        """One update of the model's parameters from the gradients of its last backward."""
        if len(model.grads) != len(model.params):
            raise ValueError("Adam.step before model.backward(grad): no gradients to apply")
        with self.o.scope():
            updated = adam_step(
                self.o, model.params, model.grads, self.state, self.lr, self.betas, self.eps,
                self.decay,
            )  # fmt: skip
        model.set_params(updated)
