"""Benchmark: Capsule's whole-epoch tf.function loop against Keras `fit`, seconds per epoch on
paper-5d at batch 32 (issue 4's target: at least 5x faster). The first epoch of each includes
tracing; the figure is the median of the later epochs. Writes benchmarks/results/tf_loop_speed.json.
Run with TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 (as `capsule` would)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from results_file import write_result

from builder.data import load_dataset, make_order
from builder.frameworks.tensorflow import FRAMEWORK, fit_reference
from builder.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    spec_path = (
        ROOT
        / "capsules"
        / (sys.argv[1] if len(sys.argv) > 1 else "paper-5d-tensorflow")
        / "capsule.toml"
    )
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": epochs})})
    dataset, _ = load_dataset(spec.data, spec_path.parent, str(spec_path))
    order = make_order(dataset.arrays["train"][0].shape[0], epochs, spec.seeds.order)
    FRAMEWORK.apply_controls(spec, "cpu", spec.controls.threads)

    loop_times: list[float] = []
    last = [time.perf_counter()]

    def tick(_: object) -> None:
        now = time.perf_counter()
        loop_times.append(now - last[0])
        last[0] = now

    FRAMEWORK.train(spec, dataset, order, "cpu", tick)

    fit_times: list[float] = []
    last[0] = time.perf_counter()

    def fit_tick() -> None:
        now = time.perf_counter()
        fit_times.append(now - last[0])
        last[0] = now

    fit_reference(spec, dataset, order, fit_tick)
    loop_s, fit_s = statistics.median(loop_times[1:]), statistics.median(fit_times[1:])
    write_result(
        "tf_loop_speed",
        {
            "capsule": spec.name,
            "batch_size": spec.train.batch_size,
            "loop_epoch_s": loop_times,
            "fit_epoch_s": fit_times,
            "loop_median_s": loop_s,
            "fit_median_s": fit_s,
            "speedup": fit_s / loop_s,
            "target_speedup": 5.0,
            "meets_target": fit_s / loop_s >= 5.0,
        },
    )


if __name__ == "__main__":
    main()
