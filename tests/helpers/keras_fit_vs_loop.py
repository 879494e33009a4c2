"""Train one spec twice in TensorFlow — Capsule's whole-epoch loop and Keras `fit` on the same
initial weights and batch order — and print whether the final weights are bit-identical.
Run as a script (a fresh process: TensorFlow's global seeds and switches stay out of pytest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from builder.data import load_dataset, make_order
from builder.frameworks.tensorflow import FRAMEWORK, fit_reference
from builder.spec import load_spec


def main(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    dataset, _ = load_dataset(spec.data, spec_path.parent, str(spec_path))
    order = make_order(dataset.arrays["train"][0].shape[0], spec.train.epochs, spec.seeds.order)
    FRAMEWORK.apply_controls(spec, "cpu", 1)
    ours = FRAMEWORK.train(spec, dataset, order, "cpu", lambda m: None)

    start, fitted = fit_reference(spec, dataset, order)
    same_start = all(ours.initial[k].tobytes() == v.tobytes() for k, v in start.items())
    print(
        json.dumps(
            {
                "same_start": same_start,
                "equal": all(ours.weights[k].tobytes() == fitted[k].tobytes() for k in fitted),
                "max_abs": max(float(np.abs(ours.weights[k] - fitted[k]).max()) for k in fitted),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
