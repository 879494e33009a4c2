"""How long `capsule report` takes on a study of the paper's size (issue 14's target: under
5 s here for a capsule with a 100-run sweep and a matrix).

Made once, then reported on: paper-2d-torch cut to 2 epochs (the report's cost does not depend
on how long the runs trained), swept over 50 init seeds and 50 data orders (100 runs, the
paper's two rows), a 2 x 2 cross-device matrix (cpu:1, cpu:2), an identical replay and a
what-if replay (train.lr x 10). Then `capsule report CAPSULE REPLAY WHATIF MATRIX --out
report.html --force` runs `repeats` times, each a fresh process, and the median and fastest
wall times are reported with the machine and date, with the same for `--format md` and the
page's size. Writes benchmarks/results/report.json.

Usage: python benchmarks/report_bench.py [REPEATS]   (default 5)
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
TARGET_SECONDS = 5.0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def run(*args: object) -> None:
    subprocess.run([CAPSULE, *map(str, args)], check=True, capture_output=True)


def timed(*args: object) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def study(work: Path) -> list[Path]:
    """The capsule, its replays and its matrix: what the report is made from."""
    spec = work / "capsule.toml"
    text = (ROOT / "capsules" / "paper-2d-torch" / "capsule.toml").read_text()
    spec.write_text(text.replace("epochs = 10", "epochs = 2"))
    cap = work / "paper-2d-torch"
    run("freeze", spec, "--out", cap)
    run("sweep", cap, "--seeds", "50", "--jobs", "2")  # seeds 1…50 at the capsule's order
    run("sweep", cap, "--orders", "50", "--jobs", "2")  # orders 1…50 at its init seed
    run("replay", cap, "--out", work / "replay")
    run("replay", cap, "--set", "train.lr=0.005", "--out", work / "lr-x10")
    run("matrix", cap, "--devices", "cpu:1,cpu:2", "--out", work / "matrix")
    return [cap, work / "replay", work / "lr-x10", work / "matrix"]


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "builder")], check=True)
    with tempfile.TemporaryDirectory(prefix="capsule-report-bench-") as tmp:
        work = Path(tmp)
        made = time.perf_counter()
        inputs = study(work)
        made = time.perf_counter() - made
        html, md = work / "report.html", work / "report.md"
        times: dict[str, list[float]] = {"html": [], "md": []}
        for _ in range(repeats):  # interleaved: the machine's drift hits both alike
            times["html"].append(timed("report", *inputs, "--out", html, "--force"))
            times["md"].append(timed("report", *inputs, "--out", md, "--format", "md", "--force"))
        page_bytes = html.stat().st_size
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "study": "paper-2d-torch (2 epochs), 100-run sweep (50 seeds + 50 orders), "
        "2x2 matrix, 2 replays",
        "study_made_seconds": round(made, 1),
        "repeats": repeats,
        "target_seconds": TARGET_SECONDS,
        "page_bytes": page_bytes,
    }
    for fmt, values in times.items():
        result[f"{fmt}_median_seconds"] = round(statistics.median(values), 3)
        result[f"{fmt}_fastest_seconds"] = round(min(values), 3)
        result[f"{fmt}_all_seconds"] = [round(v, 3) for v in values]
    result["meets_target"] = result["html_median_seconds"] < TARGET_SECONDS
    write_result("report", result)


if __name__ == "__main__":
    main()
