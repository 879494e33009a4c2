"""Benchmark: how long the commands that do no work take to start (issue 12's target: under
0.3 s here for `--version`, `--help`, `schema` and `inspect`).

Each command runs as a fresh process, interleaved, `repeats` times; the median and the fastest
run are reported with the machine and date (this machine's speed drifts by a third over an
hour: compare only figures from one run). Measured beside them: `python -c pass`, the
interpreter's own start, and the import of typer, rich and pydantic, the libraries every
command stands on; neither can be removed by Capsule's import order. Capsule's own modules are
byte-compiled first, as an installed Capsule's are (an editable install with
PYTHONDONTWRITEBYTECODE set, as here, would otherwise compile them on every start).
Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
CAPSULE = str(Path(sys.executable).parent / "capsule")
TARGET_SECONDS = 0.3
LIBRARIES = "import typer, rich.console, pydantic.main"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "builder")], check=True)
    with tempfile.TemporaryDirectory(prefix="capsule-startup-") as tmp:
        capsule_dir = Path(tmp) / "c"
        subprocess.run(
            [
                CAPSULE,
                "freeze",
                str(ROOT / "capsules" / "numpy-softmax"),
                "--out",
                str(capsule_dir),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [CAPSULE, "sweep", str(capsule_dir), "--seeds", "3"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # inspect then also shows the sweep's table (stored summaries: no scipy)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import typer, rich, pydantic": [sys.executable, "-c", LIBRARIES],
            "capsule --version": [CAPSULE, "--version"],
            "capsule --help": [CAPSULE, "--help"],
            "capsule schema": [CAPSULE, "schema"],
            "capsule inspect": [CAPSULE, "inspect", str(capsule_dir)],
            "capsule inspect --json": [CAPSULE, "inspect", str(capsule_dir), "--json"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            timed(command)  # warm the page cache once
        for _ in range(repeats):
            for name, command in commands.items():
                times[name].append(timed(command))
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    fastest = {name: round(min(t), 3) for name, t in times.items()}
    write_result(
        "startup",
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "repeats": repeats,
            "median_seconds": medians,
            "fastest_seconds": fastest,
            "target_seconds": TARGET_SECONDS,
            "meets_target": {
                n: s < TARGET_SECONDS for n, s in medians.items() if n.startswith("capsule")
            },
        },
    )


if __name__ == "__main__":
    main()
