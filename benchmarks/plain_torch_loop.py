"""The baseline for the freeze-overhead benchmark: the same training as a capsule spec, written
as a researcher would write it without Capsule (same data, model, Adam, order, epochs, threads)."""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from builder.data import generate_builtin


def main(spec_path: Path) -> None:
    spec = tomllib.loads(spec_path.read_text())
    train, seeds = spec["train"], spec["seeds"]
    torch.set_num_threads(spec["controls"]["threads"])
    data = generate_builtin(spec["data"]["builtin"])
    x, y = (torch.from_numpy(a) for a in data.arrays["train"])
    torch.manual_seed(seeds["init"])
    hidden = spec["model"]["hidden"][0]
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )
    opt = torch.optim.Adam(
        model.parameters(), lr=train["lr"], betas=tuple(train["betas"]), eps=train["eps"]
    )
    rng = np.random.Generator(np.random.PCG64(seeds["order"]))
    started = time.perf_counter()
    for _ in range(train["epochs"]):
        perm = torch.from_numpy(rng.permutation(x.shape[0]))
        for i in range(0, x.shape[0], train["batch_size"]):
            idx = perm[i : i + train["batch_size"]]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        errors = {
            s: (model(torch.from_numpy(a)).argmax(1).numpy() != b).mean()
            for s, (a, b) in data.arrays.items()
        }
    print(f"plain loop: {time.perf_counter() - started:.1f} s training, errors {errors}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
