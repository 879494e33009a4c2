"""The full acceptance of portable numerics (issue 17) on the three paper capsules, as written
(every epoch, batch 32): each frozen with `numerics = "portable"` in PyTorch at 1 and 2 threads
and in TensorFlow, trained again by the independent NumPy reference (tests/portable_reference.py)
from the same initial weights in the recorded order; every weight and every epoch's metrics
compared bit for bit, and `capsule diff` of the PyTorch and TensorFlow capsules.

Usage: python benchmarks/portable_check.py [PAPER ...]   (default: paper-2d paper-5d paper-26d)
Writes benchmarks/results/portable_check.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_portable_capsules import (  # noqa: E402
    DATASETS,
    bits,
    manifest,
    portable_spec,
    reference_run,
    stored_weights,
)

CAPSULE = str(Path(sys.executable).parent / "capsule")
EPOCHS = {"paper-2d": 10, "paper-5d": 10, "paper-26d": 20}
VARIANTS = (("torch", 1), ("torch", 2), ("tensorflow", 1))


def check(paper: str, work: Path) -> dict[str, object]:
    frozen, seconds = {}, {}
    for framework, threads in VARIANTS:
        label = f"{framework}-{threads}"
        spec = portable_spec(work, paper, framework, epochs=EPOCHS[paper])
        out = work / f"{paper}-{label}"
        started = time.perf_counter()
        command = [CAPSULE, "freeze", str(spec), "--out", str(out), "--threads", str(threads)]
        subprocess.run(command, check=True, capture_output=True)
        seconds[label] = round(time.perf_counter() - started, 1)
        frozen[label] = out
        print(f"{paper} {label}: {seconds[label]} s", file=sys.stderr)
    started = time.perf_counter()
    weights, history = reference_run(frozen["torch-1"], DATASETS[paper])
    seconds["numpy-reference"] = round(time.perf_counter() - started, 1)
    equal = {}
    for label, out in frozen.items():
        got = stored_weights(out)
        same_weights = got.keys() == weights.keys() and all(
            bits(got[n]) == bits(w) for n, w in weights.items()
        )
        epochs = manifest(out)["outcome"]["epochs"]
        same_metrics = len(epochs) == len(history) and all(
            stored[m] == v for stored, expected in zip(epochs, history, strict=True)
            for m, v in expected.items()
        )  # fmt: skip
        equal[label] = {"weights": same_weights, "metrics": same_metrics}
    diff = subprocess.run(
        [CAPSULE, "diff", str(frozen["torch-1"]), str(frozen["tensorflow-1"]), "--json"],
        capture_output=True,
        text=True,
    )
    final = manifest(frozen["torch-1"])["outcome"]["final"]
    return {
        "epochs": EPOCHS[paper],
        "steps": manifest(frozen["torch-1"])["outcome"]["steps"],
        "equal_to_numpy_reference": equal,
        "diff_torch_vs_tensorflow": json.loads(diff.stdout)["verdict"],
        "final": final,
        "seconds": seconds,
    }


def main() -> None:
    papers = sys.argv[1:] or list(DATASETS)
    with tempfile.TemporaryDirectory(prefix="portable-check-") as work:
        results = {paper: check(paper, Path(work)) for paper in papers}
    write_result("portable_check", {"date": time.strftime("%Y-%m-%d"), "papers": results})


if __name__ == "__main__":
    main()
