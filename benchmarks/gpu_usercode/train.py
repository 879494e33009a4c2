"""A small CNN on synthetic 16x16 images, on CUDA; a label histogram by torch.histc (flagged by
PyTorch as nondeterministic on CUDA) shows the runtime audit without touching the training.
(index_add_ was tried first: PyTorch 2.11 no longer flags it on CUDA.)"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from builder import Run


def main(run: Run) -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2048, 1, 16, 16)).astype(np.float32)).to(run.device)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, :8].mean(dim=(1, 2)) > 0).long()
    run.record_arrays("synthetic", x=x, y=y)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 4),
    ).to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    histogram = torch.histc(y.float(), bins=4, min=0, max=3)
    run.log("label_share_0", (histogram[0] / len(y)).item())
    step = 0
    for epoch in range(run.params["epochs"]):
        order = torch.from_numpy(run.order(len(x), epoch)).to(run.device)
        for start in range(0, len(order), run.params["batch_size"]):
            idx = order[start : start + run.params["batch_size"]]
            loss = functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 8 == 0:
                run.checkpoint(step, loss, model)
        with torch.no_grad():
            run.log("train_error", (model(x).argmax(1) != y).float().mean().item(), step=epoch)
    run.save_weights(model)
