"""Softmax regression in plain NumPy: an ordinary script that talks to Capsule only through
the `run` it is given. The data and the initial weights come from a generator seeded with the
capsule's init seed; the data order comes from `run.order`."""

import numpy as np

from builder import Run

CLASSES, FEATURES = 3, 4


def make_data(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, size=rows)
    x = (centres[y] + rng.normal(size=(rows, FEATURES))).astype(np.float32)
    return x, y


def error_rate(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(x @ w + b, axis=1) != y))


def main(run: Run) -> None:
    p = run.params
    rng = np.random.default_rng(run.seeds.init)
    x, y = make_data(rng, p["rows"])
    run.record_arrays("gaussians", x=x, y=y)  # the data's digest goes into the manifest
    split = len(x) * 3 // 4
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    w = (rng.normal(size=(FEATURES, CLASSES)) * 0.01).astype(np.float32)
    b = np.zeros(CLASSES, dtype=np.float32)
    step = 0
    for epoch in range(p["epochs"]):
        order = run.order(len(x_train), epoch)
        for start in range(0, len(order), p["batch_size"]):
            idx = order[start : start + p["batch_size"]]
            logits = x_train[idx] @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            loss = -np.mean(np.log(probs[np.arange(len(idx)), y_train[idx]]))
            probs[np.arange(len(idx)), y_train[idx]] -= 1.0
            grad = probs / len(idx)
            w -= np.float32(p["lr"]) * (x_train[idx].T @ grad).astype(np.float32)
            b -= np.float32(p["lr"]) * grad.sum(axis=0).astype(np.float32)
            step += 1
            if step % 10 == 0:
                run.checkpoint(step, loss, {"w": w, "b": b})
        run.log("train_error", error_rate(w, b, x_train, y_train), step=epoch + 1)
        run.log("test_error", error_rate(w, b, x_test, y_test), step=epoch + 1)
    run.save_weights({"w": w, "b": b})
