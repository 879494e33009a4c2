"""Train a small CNN on scikit-learn's digits with PyTorch: an ordinary training script that
talks to Capsule only through the `run` it is given."""

import numpy as np
import torch
from models.cnn import DigitsCNN
from sklearn.datasets import load_digits
from torch.nn import functional

from builder import Run

TEST_ROWS = 360  # the last 360 images are held out (a fixed split: no RNG involved)


def load(run: Run) -> tuple[torch.Tensor, ...]:
    images, labels = load_digits(return_X_y=True)
    x = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = labels.astype(np.int64)
    run.record_arrays("sklearn-digits", x=x, y=y)  # the data's digest goes into the manifest
    split = len(x) - TEST_ROWS
    return tuple(
        torch.from_numpy(a).to(run.device) for a in (x[:split], y[:split], x[split:], y[split:])
    )


def error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        wrong = (model(x).argmax(dim=1) != y).sum().item()
    model.train()
    return wrong / len(y)


def main(run: Run) -> None:
    p = run.params
    x_train, y_train, x_test, y_test = load(run)
    model = DigitsCNN().to(run.device)  # initial weights from the seeded torch RNG
    optimizer = torch.optim.Adam(model.parameters(), lr=p["lr"])
    step = 0
    for epoch in range(p["epochs"]):
        order = torch.from_numpy(run.order(len(x_train), epoch)).to(run.device)
        for start in range(0, len(order), p["batch_size"]):
            idx = order[start : start + p["batch_size"]]
            loss = functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % p["checkpoint_every"] == 0:
                run.checkpoint(step, loss, model)
        run.log("train_error", error_rate(model, x_train, y_train), step=epoch + 1)
        run.log("test_error", error_rate(model, x_test, y_test), step=epoch + 1)
    run.save_weights(model)
