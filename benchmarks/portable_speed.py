"""What portable numerics costs and what batching gains (issue 17), side by side in one run:

1. Epoch time of paper-5d in PyTorch on the CPU, one thread: native vs portable (target: the
   portable one at most 3x the native one).
2. A 100-seed sweep of portable paper-2d three ways: `sweep --batched --jobs 2` (one program),
   `sweep --jobs 2` (the pool of two warm workers, each run solo) and one fresh process per run
   (`capsule replay --set seeds.init=S`, on the first FRESH seeds; runs per minute from those).
   Targets: batched >= 3x the pool's and >= 10x the fresh processes' runs per minute, and every
   batched run bit-identical to its solo run in the pool (final metrics and weights digest).

Usage: python benchmarks/portable_speed.py [SEEDS] [FRESH]   (default 100 10)
Writes benchmarks/results/portable_speed.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_portable_capsules import manifest, portable_spec  # noqa: E402

CAPSULE = str(Path(sys.executable).parent / "capsule")


def run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([CAPSULE, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def epoch_seconds(work: Path) -> dict[str, float]:
    """paper-5d, PyTorch, CPU, one thread, two epochs each way: training seconds per epoch
    (each epoch's full-set evaluation included, as in a capsule)."""
    portable = portable_spec(work, "paper-5d", "torch", epochs=2)
    native = work / "paper-5d-native.toml"
    native.write_text(portable.read_text().replace('numerics = "portable"\n', ""))
    out = {}
    for label, spec in (("native", native), ("portable", portable)):
        run("freeze", str(spec), "--out", str(work / f"5d-{label}"), "--threads", "1")
        outcome = manifest(work / f"5d-{label}")["outcome"]
        out[label] = round(outcome["train_seconds"] / len(outcome["epochs"]), 3)
    return out


def sweeps(work: Path, seeds: int, fresh: int) -> dict[str, object]:
    base = work / "2d"
    run("freeze", str(portable_spec(work, "paper-2d", "torch", epochs=10)), "--out", str(base))
    seconds, runs = {}, {}
    for label, args in (("batched", ["--batched", "--jobs", "2"]), ("pool", ["--jobs", "2"])):
        copy = work / label
        shutil.copytree(base, copy)
        seconds[label] = run("sweep", str(copy), "--seeds", str(seeds), *args)
        print(f"{label}: {seconds[label]:.1f} s", file=sys.stderr)
        record = json.loads(subprocess.check_output([CAPSULE, "inspect", str(copy), "--json"]))
        runs[label] = {
            (r["init"], r["order"]): (r["final"], r["weights_sha256"])
            for r in record["sweep"]["record"]["runs"]
        }
    started = time.perf_counter()
    for seed in range(1, fresh + 1):
        what_if = f"seeds.init={seed}"
        run("replay", str(base), "--set", what_if, "--out", str(work / f"fresh-{seed}"))
    seconds["fresh_process_per_run"] = time.perf_counter() - started
    counts = {"batched": seeds, "pool": seeds, "fresh_process_per_run": fresh}
    per_minute = {k: round(60 * counts[k] / v, 1) for k, v in seconds.items()}
    return {
        "seeds": seeds,
        "fresh_runs": fresh,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "runs_per_minute": per_minute,
        "batched_vs_pool": round(per_minute["batched"] / per_minute["pool"], 2),
        "batched_vs_fresh": round(per_minute["batched"] / per_minute["fresh_process_per_run"], 1),
        "batched_runs_equal_to_solo": sum(runs["batched"][k] == v for k, v in runs["pool"].items()),
    }


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    fresh = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory(prefix="portable-speed-") as work:
        epochs = epoch_seconds(Path(work))
        print(f"epoch seconds: {epochs}", file=sys.stderr)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "epoch_seconds_paper_5d_torch_cpu_1_thread": epochs,
            "portable_over_native": round(epochs["portable"] / epochs["native"], 2),
            "sweep_paper_2d": sweeps(Path(work), seeds, fresh),
        }
    write_result("portable_speed", result)


if __name__ == "__main__":
    main()
