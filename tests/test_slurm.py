"""Sweeps through a real single-node Slurm (scripts/slurm-up.sh): the same per-seed results as
the local executor, and a crashed task reported, its finished runs kept, the rerun completing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CAPSULE_BIN, capsule, ok

pytestmark = pytest.mark.slurm


def swept(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(ok(capsule("sweep", path, *args, "--json")).stdout)


def test_slurm_sweep_matches_the_local_one_bit_for_bit(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    local = tmp_path / "local"
    ok(capsule("freeze", tiny_spec(), "--out", local))
    slurm = tmp_path / "slurm"
    shutil.copytree(local, slurm)
    a = swept(local, "--seeds", "3", "--orders", "2", "--jobs", "2")
    b = swept(slurm, "--seeds", "3", "--orders", "2", "--jobs", "2", "--executor", "slurm")
    assert b["ran"] == 6 and not b["failures"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["runs"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["runs"]]
    assert not (slurm / ".slurm").exists()  # a clean sweep leaves no submitit folder
    ok(capsule("verify", slurm))


def test_crashed_slurm_task_is_reported_and_the_rerun_completes(
    frozen_2d: Path, tmp_path: Path
) -> None:
    cap = tmp_path / "paper-2d"
    shutil.copytree(frozen_2d, cap)
    # 8 seeds: 2 tasks of 4 runs, so the kill lands inside a task's work (with 2 runs a task
    # could journal both and die only before writing its result: no run lost, exit 0)
    command = [str(CAPSULE_BIN), "sweep", str(cap), "--seeds", "8", "--jobs", "2"]
    command += ["--executor", "slurm"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = False, time.time() + 240
    while not killed and time.time() < deadline and process.poll() is None:
        found = subprocess.run(  # this sweep's tasks only: another test may run Slurm tasks
            ["pgrep", "-f", f"submitit.core._submit {cap}/.slurm/"], capture_output=True, text=True
        ).stdout.split()
        if found:
            time.sleep(1.0)  # let it get into its run
        for pid in map(int, found):  # srun and the task's python: whichever still runs
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed = True
        time.sleep(0.2)
    assert killed, "no Slurm task was caught running"
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "ended without a result" in stderr or "died" in stderr, stderr
    rerun = swept(cap, "--seeds", "8", "--jobs", "2", "--executor", "slurm")
    assert rerun["ran"] >= 1 and rerun["ran"] + rerun["reused"] == 8
    assert len(rerun["runs"]) == 8 and not rerun["failures"]


def test_no_slurm_is_exit_4(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    ok(capsule("freeze", tiny_spec(), "--out", tmp_path / "cap"))
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin")}  # no sbatch on this PATH
    result = subprocess.run(
        [str(CAPSULE_BIN), "sweep", tmp_path / "cap", "--seeds", "2", "--executor", "slurm"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 4 and "no Slurm" in result.stderr, result.stderr
