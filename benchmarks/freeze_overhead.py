"""Benchmark: wall time of `capsule freeze` against a plain PyTorch loop doing the same training.

Both run as fresh processes on the same machine, interleaved, so imports and data generation
count on both sides. Target (issue 2): freeze costs at most 5 % more. Writes
benchmarks/results/freeze_overhead.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "paper-5d-torch"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    spec = ROOT / "capsules" / name / "capsule.toml"
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    plain, frozen = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            plain.append(
                timed(
                    [str(BIN / "python"), str(ROOT / "benchmarks/plain_torch_loop.py"), str(spec)],
                    env,
                )
            )
            out = Path(tmp) / f"c{i}"
            frozen.append(
                timed([str(BIN / "capsule"), "freeze", str(spec), "--out", str(out)], env)
            )
            shutil.rmtree(out)
            print(
                f"run {i + 1}: plain {plain[-1]:.2f} s, freeze {frozen[-1]:.2f} s", file=sys.stderr
            )
    result = {
        "capsule": name,
        "repeats": repeats,
        "plain_s": plain,
        "freeze_s": frozen,
        "plain_median_s": statistics.median(plain),
        "freeze_median_s": statistics.median(frozen),
        "overhead": statistics.median(frozen) / statistics.median(plain) - 1,
        "target_overhead": 0.05,
    }
    result["meets_target"] = result["overhead"] <= result["target_overhead"]
    write_result("freeze_overhead", result)


if __name__ == "__main__":
    main()
