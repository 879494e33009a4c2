"""Benchmark: one capsule built and replayed on both engines, side by side in one run (issue
12): build time and image ID with Docker and with Podman (from the same base image, the one
the capsule carries), and the wall time of a replay on the host, in Docker and in Podman, each
judged against the baseline.
Needs Docker and Podman's service. Writes benchmarks/results/engines-<capsule>.json.
Usage: python benchmarks/engine_bench.py [CAPSULE_SPEC_DIR] [REPEATS]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
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


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([CAPSULE, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def verdict(capsule: Path, replay: Path) -> str:
    out = subprocess.run(
        [CAPSULE, "diff", str(capsule), str(replay), "--json"], capture_output=True, text=True
    )
    return str(json.loads(out.stdout)["verdict"])


def image_id(capsule: Path) -> str:
    return str(json.loads((capsule / "manifest.json").read_text())["images"]["cpu"]["image_id"])


def main() -> None:
    spec = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "capsules/numpy-softmax")
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="capsule-engines-") as tmp:
        docker_cap, podman_cap = Path(tmp) / "docker", Path(tmp) / "podman"
        timed("freeze", str(spec), "--out", str(docker_cap))
        docker_build = timed("build", str(docker_cap))
        shutil.copytree(docker_cap, podman_cap)  # it carries its base: Podman loads that
        podman_build = timed("build", str(podman_cap), "--engine", "podman")
        times: dict[str, list[float]] = {"host": [], "docker": [], "podman": []}
        verdicts: dict[str, set[str]] = {"host": set(), "docker": set(), "podman": set()}
        for i in range(repeats):
            for where in times:
                out = Path(tmp) / f"{where}-{i}"
                times[where].append(
                    timed("replay", str(docker_cap), "--on", where, "--out", str(out))
                )
                verdicts[where].add(verdict(docker_cap, out))
                shutil.rmtree(out)
        ids = {"docker": image_id(docker_cap), "podman": image_id(podman_cap)}
        for engine in ("docker", "podman"):
            subprocess.run([engine, "rmi", "-f", ids[engine]], capture_output=True)
    medians = {where: statistics.median(t) for where, t in times.items()}
    write_result(
        f"engines-{spec.name}",
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "capsule": spec.name,
            "build_s": {"docker": docker_build, "podman": podman_build},
            "image_id": ids,
            "same_image_id": ids["docker"] == ids["podman"],
            "replay_s": times,
            "replay_median_s": medians,
            "over_host": {w: medians[w] / medians["host"] for w in ("docker", "podman")},
            "verdicts": {w: sorted(v) for w, v in verdicts.items()},
        },
    )


if __name__ == "__main__":
    main()
