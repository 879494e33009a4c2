"""A three-class MLP with portable numerics: the model is built from `builder.portable`'s
layers, so its training is the same bits on every CPU and GPU, in PyTorch and in TensorFlow.
The data and the initial weights come from NumPy generators seeded with the capsule's init
seed, the data order from `run.order`."""

import numpy as np

from builder import Run
from builder.portable import Adam, Linear, ReLU, Sequential, backend, softmax_cross_entropy

CLASSES, FEATURES, HIDDEN = 3, 4, 32


def make_data(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(CLASSES, FEATURES)) * 1.5
    y = rng.integers(0, CLASSES, size=rows)
    x = (centres[y] + rng.normal(size=(rows, FEATURES))).astype(np.float32)
    return x, y


def error_rate(model: Sequential, o: object, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.forward(o.tensor(x))  # type: ignore[attr-defined]
    predicted = np.argmax(o.numpy(logits), axis=1)  # type: ignore[attr-defined]
    return float(np.mean(predicted != y))


def main(run: Run) -> None:
    p = run.params
    o = backend(p["backend"], run.device)
    rng = np.random.default_rng(run.seeds.init)
    x, y = make_data(rng, p["rows"])
    run.record_arrays("gaussians", x=x, y=y)
    split = len(x) * 3 // 4
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    model = Sequential(Linear(o, FEATURES, HIDDEN, rng), ReLU(o), Linear(o, HIDDEN, CLASSES, rng))
    adam = Adam(o, lr=p["lr"])
    inputs, targets = o.tensor(x_train), o.one_hot(o.tensor(y_train), CLASSES)
    for epoch in range(p["epochs"]):
        order = o.tensor(run.order(len(x_train), epoch))
        for start in range(0, len(x_train), p["batch_size"]):
            rows = order[start : start + p["batch_size"]]
            logits = model.forward(o.take_rows(inputs, rows))
            loss, grad = softmax_cross_entropy(o, logits, o.take_rows(targets, rows))
            model.backward(grad)
            adam.step(model)
            run.step(float(o.numpy(loss)), model.weights(), every=10)
        run.log("train_error", error_rate(model, o, x_train, y_train), step=epoch + 1)
        run.log("test_error", error_rate(model, o, x_test, y_test), step=epoch + 1)
    run.save_weights(model.weights())
