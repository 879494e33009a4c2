"""User projects for the tests of user code and audits: a spec template, a tiny PyTorch
training script (with hooks to plant nondeterminism) and a folder holding both."""

from __future__ import annotations

import textwrap
from pathlib import Path

SPEC = """\
name = "{name}"
framework = "{framework}"
entrypoint = "train.py:main"

[code]
include = {include}

[seeds]
init = 5
order = 9
"""

# A tiny PyTorch training script: 3 epochs of 4 batches, a checkpoint at every step.
TINY_TORCH = """\
import random
import time

import numpy as np
import torch

from builder import Run


def main(run: Run) -> None:
    x = torch.from_numpy(np.linspace(-1, 1, 64, dtype=np.float32).reshape(32, 2))
    y = (x.sum(dim=1) > 0).long()
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    for epoch in range(3):
        order = list(run.order(32, epoch))
{reseed}
        for start in range(0, 32, 8):
            idx = torch.tensor(order[start : start + 8])
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            run.checkpoint(step, loss, model)
        run.log("loss", loss.item(), step=epoch)
{extra}
    run.save_weights(model)
"""


def project(
    tmp_path: Path,
    script: str,
    name: str = "tiny-code",
    framework: str = "torch",
    include: str = '["train.py"]',
) -> Path:
    """A user project: capsule.toml and train.py in a directory of their own."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "capsule.toml").write_text(
        SPEC.format(name=name, framework=framework, include=include)
    )
    (folder / "train.py").write_text(script)
    return folder


def tiny(reseed: str = "", extra: str = "") -> str:
    return TINY_TORCH.format(
        reseed=textwrap.indent(reseed, " " * 8), extra=textwrap.indent(extra, " " * 4)
    )
