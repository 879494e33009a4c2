"""Sweep throughput in runs per minute, measured in one run of this script on one capsule:
serial (--jobs 1), --jobs 2 (warm worker processes), Slurm (--executor slurm --jobs 2), and one
fresh Python process per run (`capsule replay --set seeds.init=S`, the naive way).

Usage: python benchmarks/sweep_throughput.py [SPEC] [RUNS]   (default capsules/paper-2d-torch 8)
Needs a running Slurm (scripts/slurm-up.sh) for the Slurm row.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

CAPSULE = [str(Path(sys.executable).parent / "capsule")]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    spec = sys.argv[1] if len(sys.argv) > 1 else "capsules/paper-2d-torch"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    base = work / "base"
    subprocess.run([*CAPSULE, "freeze", spec, "--out", str(base)], check=True, capture_output=True)
    seeds = f"primes:{runs}"
    modes = {
        "serial": ["--jobs", "1"],
        "jobs_2": ["--jobs", "2"],
        "slurm_jobs_2": ["--jobs", "2", "--executor", "slurm"],
    }
    seconds: dict[str, float] = {}
    for mode, args in modes.items():
        copy = work / mode
        shutil.copytree(base, copy)
        seconds[mode] = timed([*CAPSULE, "sweep", str(copy), "--seeds", seeds, *args])
        print(f"{mode}: {seconds[mode]:.1f} s", file=sys.stderr)
    started = time.perf_counter()
    for i in range(runs):
        out = work / f"fresh-{i}"
        what_if = f"seeds.init={1000003 + i}"
        command = [*CAPSULE, "replay", str(base), "--set", what_if, "--out", str(out)]
        subprocess.run(command, check=True, capture_output=True)
    seconds["fresh_process_per_run"] = time.perf_counter() - started
    print(f"fresh: {seconds['fresh_process_per_run']:.1f} s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    write_result(
        "sweep_throughput",
        {
            "spec": spec,
            "runs": runs,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "runs_per_minute": {k: round(60 * runs / v, 2) for k, v in seconds.items()},
        },
    )


if __name__ == "__main__":
    main()
