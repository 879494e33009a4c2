"""Locks and atomic writes, with real processes racing: two sweeps of one capsule keep the union
of their runs; two replays for one --out: one wins, the other is refused before training; a
SIGKILLed freeze's staging is cleaned by the next command in the same parent (a live one's is
not); a SIGTERMed or SIGKILLed sweep takes its workers down within seconds and keeps what they
finished.

The capsule is capsules/numpy-softmax (no framework), gated: a run whose init seed ends in 3…9
or 0 does not end while the file `params.gate` exists, so every race here is set up by the test,
not by timing."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CAPSULE_BIN, CAPSULES, assert_refused, capsule, ok

GATED = """\
        while run.seeds.init % 10 > 2 and os.path.exists(p["gate"]):
            time.sleep(0.05)
"""


def gated_spec(directory: Path, gate: Path | None = None) -> Path:
    """capsules/numpy-softmax, its epochs held while `gate` exists (seeds 3…9, 0 mod 10)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(CAPSULES / "numpy-softmax", directory, dirs_exist_ok=True)
    code = (directory / "train.py").read_text()
    loop = '    for epoch in range(p["epochs"]):\n'
    assert loop in code
    code = code.replace(loop, loop + GATED)
    code = code.replace("import numpy", "import os\nimport time\n\nimport numpy", 1)
    (directory / "train.py").write_text(code)
    spec = directory / "capsule.toml"
    gate_path = gate or directory / "no-gate"
    spec.write_text(spec.read_text().replace("[params]\n", f'[params]\ngate = "{gate_path}"\n'))
    return directory


STARTED: list[subprocess.Popen[str]] = []
WORKERS: list[int] = []


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """A failing test leaves no command or worker waiting at a gate."""
    yield
    (tmp_path / "gate").unlink(missing_ok=True)
    while WORKERS:
        pid = WORKERS.pop()
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def start(*args: object) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [str(CAPSULE_BIN), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(process)
    return process


def capsule_env(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CAPSULE_BIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def wait_for(condition: object, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored_runs(cap: Path) -> list[tuple[int, int]]:
    manifest = json.loads((cap / "manifest.json").read_text())
    record = json.loads((cap / manifest["artifacts"]["sweep"]["path"]).read_text())
    return sorted((r["init"], r["order"]) for r in record["runs"])


def journalled(cap: Path) -> int:
    lines = 0
    for path in cap.glob(".sweep-journal*.jsonl"):
        lines += sum(1 for line in path.read_text().splitlines() if line.endswith("}"))
    return lines


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def workers(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "spawn_main"], capture_output=True, text=True
    ).stdout.split()
    return [int(p) for p in found]


def test_two_sweeps_at_once_store_the_union_of_their_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # both sweeps read the capsule before either stores anything
    cap = tmp_path / "cap"
    ok(capsule("freeze", gated_spec(tmp_path / "spec", gate), "--out", cap))
    gate.touch()
    first = start("sweep", cap, "--seeds", "1,3", "--json")
    second = start("sweep", cap, "--seeds", "11,13", "--json")
    wait_for(lambda: journalled(cap) >= 2, "each sweep's quick run")
    gate.unlink()
    for process in (first, second):
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert stored_runs(cap) == [(1, 17), (3, 17), (11, 17), (13, 17)]  # 17: the order seed
    assert not list(cap.glob(".sweep-journal*"))  # both sweeps' journals are stored and gone
    assert len(list((cap / "sweeps").iterdir())) == 1
    ok(capsule("verify", cap))


def test_a_writer_waits_for_the_lock_and_says_for_whom(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    ok(capsule("freeze", gated_spec(tmp_path / "spec"), "--out", cap))
    fd = os.open(cap / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 1 (capsule audit elsewhere)\n")
    try:
        timed = capsule_env({"CAPSULE_LOCK_TIMEOUT": "1"}, "sweep", cap, "--seeds", "1,")
        assert timed.returncode == 2 and "Traceback" not in timed.stderr, timed.stderr
        assert timed.stderr.splitlines()[-1].endswith(
            "pid 1 (capsule audit elsewhere) is still writing it after 1 s "
            "(CAPSULE_LOCK_TIMEOUT); nothing was written"
        )
        waiting = start("sweep", cap, "--seeds", "1,", "--json")
        notice = f"waiting for pid 1 (capsule audit elsewhere) to finish writing {cap}"
        assert waiting.stderr is not None
        assert notice in waiting.stderr.readline()  # one line, then it waits
        assert waiting.poll() is None
    finally:
        os.close(fd)
    stdout, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr
    assert json.loads(stdout)["ran"] == 1 and stored_runs(cap) == [(1, 17)]


def test_two_replays_for_one_out_one_wins_the_other_is_refused_first(tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # the first replay trains until it goes
    cap = tmp_path / "cap"
    ok(capsule("freeze", gated_spec(tmp_path / "spec", gate), "--out", cap))
    gate.touch()
    out = tmp_path / "r"
    winner = start("replay", cap, "--out", out)
    wait_for(lambda: list(tmp_path.glob(".r.partial-*")), "the first replay to start staging")
    for extra in ([], ["--force"]):  # --force replaces a finished replay, never a live one
        loser = capsule("replay", cap, "--out", out, *extra, timeout=120)
        assert_refused(loser, str(out), "is writing it now")
        assert "step 1" not in loser.stderr  # refused before training
    assert winner.poll() is None
    gate.unlink()
    _, stderr = winner.communicate(timeout=120)
    assert winner.returncode == 0, stderr
    ok(capsule("verify", out))
    ok(capsule("diff", cap, out))  # the winner's replay: whole, and the capsule's result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap", "r", "spec"]  # no claim left
    assert_refused(capsule("replay", cap, "--out", out), "already exists")
    ok(capsule("replay", cap, "--out", out, "--force"))


def test_a_killed_freeze_is_cleaned_by_the_next_one_a_live_one_is_not(tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # freezes of `slow` train until it goes
    slow = gated_spec(tmp_path / "slow", gate)
    fast = gated_spec(tmp_path / "fast")
    parent = tmp_path / "caps"
    gate.touch()
    killed = start("freeze", slow, "--out", parent / "a")
    wait_for(lambda: list(parent.glob(".a.partial-*")), "the freeze to start staging")
    killed.kill()  # SIGKILL: nothing of its own cleanup runs
    killed.communicate(timeout=30)
    assert list(parent.glob(".a.partial-*")) and (parent / ".a.claim").exists()
    live = start("freeze", slow, "--out", parent / "b")
    wait_for(lambda: list(parent.glob(".b.partial-*")), "the second freeze to start staging")
    ok(capsule("freeze", fast, "--out", parent / "c"))
    assert not list(parent.glob(".a.*")), list(parent.iterdir())  # the dead one's staging went
    assert list(parent.glob(".b.partial-*")) and live.poll() is None  # the live one's did not
    gate.unlink()
    _, stderr = live.communicate(timeout=120)
    assert live.returncode == 0, stderr
    ok(capsule("verify", parent / "b"))
    assert sorted(p.name for p in parent.iterdir()) == ["b", "c"]


def test_a_killed_sweep_stops_its_workers_and_keeps_what_they_finished(tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # while it exists, runs of init seeds 3, 4, 13, 14 do not end
    cap = tmp_path / "cap"
    ok(capsule("freeze", gated_spec(tmp_path / "spec", gate), "--out", cap))
    gate.touch()
    for kill, seeds in ((signal.SIGTERM, "1,2,3,4"), (signal.SIGKILL, "11,12,13,14")):
        sweep = start("sweep", cap, "--seeds", seeds, "--jobs", "2")
        wait_for(lambda: journalled(cap) >= 2, "the two quick runs to finish")
        wait_for(lambda: len(workers(sweep.pid)) == 2, "two workers")  # noqa: B023
        pool = workers(sweep.pid)
        WORKERS.extend(pool)
        time.sleep(0.5)  # both workers are now inside the gated runs
        sweep.send_signal(kill)
        wait_for(lambda: not any(alive(p) for p in pool), "the workers to end", 5)  # noqa: B023
        _, stderr = sweep.communicate(timeout=60)
        if kill == signal.SIGTERM:
            assert sweep.returncode == 130, stderr
            assert "finished runs are kept" in stderr
            assert stored_runs(cap) == [(1, 17), (2, 17)]  # stored on the way out
            assert not list(cap.glob(".sweep-journal*"))
        else:
            assert sweep.returncode == -signal.SIGKILL
            assert journalled(cap) == 2  # the workers journalled 11 and 12 themselves
    gate.unlink()
    rerun = capsule("sweep", cap, "--seeds", "1,2,3,4,11,12,13,14", "--jobs", "2", "--json")
    result = json.loads(ok(rerun).stdout)
    assert (result["ran"], result["reused"]) == (4, 4)
    assert stored_runs(cap) == [(s, 17) for s in (1, 2, 3, 4, 11, 12, 13, 14)]
    assert not list(cap.glob(".sweep-journal*"))
    ok(capsule("verify", cap))
