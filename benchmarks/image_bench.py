"""Benchmark of Capsule images, measured in one run on one machine (issue 3's closing figures):
cold (no-cache) and warm build times, image size against its base, wheels and installed tree
(image / (base + installed): 1.00 when no wheelhouse stays in the image), export size, and
docker-replay vs host-replay wall time (target at most 1.10 times). Needs a running Docker engine.
Writes benchmarks/results/image.json.
Usage: python benchmarks/image_bench.py [CAPSULE_SPEC_DIR] [REPEATS]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
CAPSULE = str(Path(sys.executable).parent / "capsule")


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [CAPSULE, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def image_size(ref: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", ref, "--format", "{{.Size}}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def installed_bytes(image_id: str) -> int:
    """What the install put into the image: /opt/capsule (venv and code), measured inside it."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "du", image_id,
         "-sb", "/opt/capsule"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(out.stdout.split()[0])


def main() -> None:
    spec = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "capsules/paper-2d-torch")
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        cap = Path(tmp) / "capsule"
        timed("freeze", str(spec), "--out", str(cap))
        first_build = timed("build", str(cap))
        cold = timed("build", str(cap), "--check")  # no cache: every step runs again
        warm = timed("build", str(cap))
        manifest = json.loads((cap / "manifest.json").read_text())
        image = manifest["images"]["cpu"]
        wheels = sum(
            ref["size"]
            for name, ref in manifest["artifacts"].items()
            if name.startswith("wheelhouse/")
        )
        export = Path(tmp) / "c.capsule.tar"
        export_s = timed("export", str(cap), "--out", str(export), "--with-image")
        host, docker = [], []
        for i in range(repeats):
            host.append(timed("replay", str(cap), "--out", f"{tmp}/h{i}"))
            docker.append(timed("replay", str(cap), "--on", "docker", "--out", f"{tmp}/d{i}"))
            shutil.rmtree(f"{tmp}/h{i}")
            shutil.rmtree(f"{tmp}/d{i}")
            print(
                f"replay {i + 1}: host {host[-1]:.2f} s, docker {docker[-1]:.2f} s", file=sys.stderr
            )
        result = {
            "capsule": spec.name,
            "first_build_s": first_build,
            "cold_build_no_cache_s": cold,
            "warm_build_s": warm,
            "image_id": image["image_id"],
            "image_bytes": image_size(image["image_id"]),
            "base_bytes": image_size(image["base_image"]),
            "installed_bytes": installed_bytes(image["image_id"]),
            "wheelhouse_bytes": wheels,
            "wheels": len(image["wheels"]),
            "export_with_image_bytes": export.stat().st_size,
            "export_s": export_s,
            "host_replay_s": host,
            "docker_replay_s": docker,
            "docker_over_host": statistics.median(docker) / statistics.median(host),
            "target_docker_over_host": 1.10,
        }
    result["meets_target"] = result["docker_over_host"] <= result["target_docker_over_host"]
    # 1.00 when the image holds the base and the installed tree and nothing else (issue 11)
    result["image_over_base_plus_installed"] = result["image_bytes"] / (
        result["base_bytes"] + result["installed_bytes"]
    )
    write_result("image", result)


if __name__ == "__main__":
    main()
