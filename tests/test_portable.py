"""Portable numerics (builder/portable, issue 17): PyTorch's backend against the independent
NumPy reference (tests/portable_reference.py), bit for bit — the primitives on hard inputs,
then a few hundred training steps of each paper data set at 1 and 2 threads — and the accuracy
of the portable exp and log against float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from builder.data import generate_builtin, make_order
from builder.frameworks.torch_portable import TorchOps
from builder.portable import AdamState, adam_step, exp, log, mlp_gradients
from builder.portable.algorithm import sqrt
from builder.portable.ops import Ops
from tests import portable_reference as ref

F = np.float32


def bits(x: object) -> np.ndarray:
    array = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(array, dtype=F).view(np.uint32)


def hard_inputs(low: float, high: float) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(7))
    spread = rng.uniform(low, high, 200_000).astype(F)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 2.0**-126, -(2.0**-126), 2.0**-130, low, high], F)
    return np.concatenate([spread, edges])


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at exact."""
    spacing = np.spacing(np.abs(exact).astype(F)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_exp_and_log_are_the_references_bits_and_within_two_ulps_of_float64() -> None:
    o = TorchOps()
    x = hard_inputs(-87.0, 88.72)
    got = exp(o, o.tensor(x))
    assert np.array_equal(bits(got), bits(ref.exp(x)))
    assert ulps(got.numpy(), np.exp(x.astype(np.float64))).max() <= 2.0
    assert exp(o, o.tensor(np.array([-100.0, 100.0], F))).tolist() == [0.0, float("inf")]
    positive = np.abs(hard_inputs(-1e30, 1e30))
    positive = positive[positive >= 2.0**-126]
    got = log(o, o.tensor(positive))
    assert np.array_equal(bits(got), bits(ref.log(positive)))
    exact = np.log(positive.astype(np.float64))
    near_one = np.abs(exact) < 1e-3  # there the relative error of any float32 log grows
    assert ulps(got.numpy()[~near_one], exact[~near_one]).max() <= 2.0
    assert np.abs(got.numpy()[near_one] - exact[near_one]).max() < 1e-9


def test_sqrt_is_correctly_rounded_on_every_input() -> None:
    """The portable sqrt, made from integers, is the correctly rounded one (NumPy's) and the
    reference's on every input, whatever the backend library's sqrt does (PyTorch's CPU build
    here misses on ~0.5 % of inputs; another build or CPU may not)."""
    o = TorchOps()
    x = np.abs(hard_inputs(0.0, 4.0))
    x = np.concatenate([x[(x == 0) | (x >= 2.0**-126)], np.array([1e-30, 3e30, 2.0**-126], F)])
    exact = np.sqrt(x)
    got = sqrt(o, o.tensor(x))
    assert np.array_equal(bits(got), bits(exact))
    assert np.array_equal(bits(ref.sqrt(x[:20_000])), bits(exact[:20_000]))


def layers_of(features: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform kernels [in, out] and zero biases: an MLP(26) for two classes."""
    rng = np.random.Generator(np.random.PCG64(seed))
    widths = [features, 26, 2]
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        layers.append(
            (rng.uniform(-limit, limit, (fan_in, fan_out)).astype(F), np.zeros(fan_out, F))
        )
    return layers


def backend(name: str, threads: int) -> Ops:
    if name == "torch":
        torch.set_num_threads(threads)
        return TorchOps()
    from builder.frameworks.tensorflow_portable import TensorFlowOps

    return TensorFlowOps()  # its thread pools are fixed when it starts: this machine's cores


BACKENDS = [("torch", 1, 300), ("torch", 2, 300), ("tensorflow", 0, 80)]  # TF: ~0.1 s a step


@pytest.mark.parametrize(
    ("name", "threads", "steps"), BACKENDS, ids=["torch-1", "torch-2", "tensorflow"]
)
@pytest.mark.parametrize("builtin", ["gaussian-2d", "gaussian-5d", "eeg-26d"])
def test_training_steps_are_the_references_bits(
    builtin: str, name: str, threads: int, steps: int
) -> None:
    """A few hundred Adam steps (lr 5e-4, batch 32, the paper's MLP) on the recorded order:
    every loss and every weight at the end equal to the NumPy reference's, bit for bit, in
    PyTorch (1 and 2 threads) and in TensorFlow."""
    o = backend(name, threads)
    x, y = generate_builtin(builtin).arrays["train"]
    order = make_order(len(x), 1, 11)[0]
    layers = layers_of(x.shape[1], 3)
    params = [o.tensor(a) for layer in layers for a in layer]
    state = AdamState()
    flat = [ref.f(a) for layer in layers for a in layer]
    adam = ref.Adam(5e-4, (0.9, 0.999), 1e-8)
    for step in range(steps):
        rows = order[step * 32 : (step + 1) * 32]
        xb, yb = x[rows].astype(F), y[rows]
        pairs = list(zip(params[::2], params[1::2], strict=True))
        onehot = o.one_hot(o.tensor(yb), 2)
        loss, _, grads = mlp_gradients(o, pairs, o.tensor(xb), onehot)
        flat_grads = [g for pair in grads for g in pair]
        params = adam_step(o, params, flat_grads, state, 5e-4, (0.9, 0.999), 1e-8)
        pairs_ref = list(zip(flat[::2], flat[1::2], strict=True))
        loss_ref, grads_ref = ref.step_gradients(pairs_ref, xb, yb, 2)
        flat = adam.step(flat, [g for pair in grads_ref for g in pair])
        assert bits(loss) == bits(loss_ref), f"step {step}: loss {float(loss)} vs {loss_ref}"
    for got, expected in zip(params, flat, strict=True):
        assert np.array_equal(bits(got), bits(expected))
    assert np.isfinite(float(loss))


def test_compiled_tensorflow_steps_leave_the_graph_optimizer_as_it_was() -> None:
    """A portable step runs as a tf.function with Grappler and XLA auto-clustering off — and
    the process gets TensorFlow's defaults back after each call (user code or a native run in
    the same process must not lose them); its result is eager mode's, bit for bit."""
    import tensorflow as tf

    from builder.frameworks.tensorflow_portable import TensorFlowOps

    o = TensorFlowOps()
    x = o.tensor(hard_inputs(-80.0, 80.0)[:1000])
    compiled = o.compile(lambda t: exp(o, t))
    assert np.array_equal(bits(compiled(x).numpy()), bits(exp(o, x).numpy()))
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")
    assert not tf.config.optimizer.get_jit()


def test_the_layer_api_on_misuse_and_nesting() -> None:
    """builder.portable's layers: a nested Sequential trains and names its weights; Adam before
    backward, and a device neither 'cpu' nor 'cuda', are refused with a sentence."""
    from builder.portable import Adam, Linear, ReLU, Sequential, backend, softmax_cross_entropy

    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda'"):
        backend("torch", "gpu")
    o = backend("torch")
    rng = np.random.Generator(np.random.PCG64(1))
    model = Sequential(Sequential(Linear(o, 3, 4, rng), ReLU(o)), Linear(o, 4, 2, rng))
    adam = Adam(o, lr=0.01)
    with pytest.raises(ValueError, match=r"before model\.backward"):
        adam.step(model)
    x = o.tensor(rng.normal(size=(8, 3)).astype(F))
    onehot = o.one_hot(o.tensor(np.arange(8) % 2), 2)
    before = model.weights()
    _, grad = softmax_cross_entropy(o, model.forward(x), onehot)
    model.backward(grad)
    adam.step(model)
    after = model.weights()
    assert sorted(after) == ["0.0.bias", "0.0.weight", "1.bias", "1.weight"]
    assert all(not np.array_equal(before[k], after[k]) for k in after)
