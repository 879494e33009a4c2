"""Seed and order sweeps: stored runs, reuse, parallel = serial bit for bit, a killed worker,
the paper's statistics, the `equivalent` tier and what-if replays (`--set`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CAPSULE_BIN, capsule, ok


def swept(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(ok(capsule("sweep", path, *args, "--json")).stdout)


def verdict(baseline: Path, other: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(capsule("diff", baseline, other, "--json").stdout)


def frozen_tiny(tiny_spec: Callable[..., Path], tmp_path: Path, **kwargs: object) -> Path:
    out = tmp_path / f"cap-{kwargs.get('name', 'tiny')}"
    ok(capsule("freeze", tiny_spec(**kwargs), "--out", out))
    return out


def test_primes_are_the_smallest_above_a_million() -> None:
    from builder.sweep import parse_seeds

    assert parse_seeds("primes:5", "--seeds") == [1000003, 1000033, 1000037, 1000039, 1000081]
    assert parse_seeds("3", "--seeds") == [1, 2, 3]
    assert parse_seeds("7,5,7", "--seeds") == [7, 5]


def test_sweep_is_stored_in_the_capsule_and_reused(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    cap = frozen_tiny(tiny_spec, tmp_path)
    first = swept(cap, "--seeds", "primes:4")
    assert (first["ran"], first["reused"]) == (4, 0)
    assert {r["init"] for r in first["runs"]} == {1000003, 1000033, 1000037, 1000039}
    stats = {s["metric"]: s for s in first["stats"]}
    assert stats["eval_error"]["n"] == 4
    assert stats["eval_error"]["min"] <= stats["eval_error"]["mean"] <= stats["eval_error"]["max"]
    assert stats["eval_error"]["ci_low"] <= stats["eval_error"]["mean"]
    ok(capsule("verify", cap))
    second = swept(cap, "--seeds", "primes:6")
    assert (second["ran"], second["reused"]) == (2, 4)
    shown = ok(capsule("inspect", cap)).stdout
    assert "95% CI of mean" in shown and "6 init seed(s) x 1 order seed(s)" in shown
    manifest = json.loads((cap / "manifest.json").read_text())
    assert manifest["artifacts"]["sweep"]["path"].startswith("sweeps/")
    assert len(list((cap / "sweeps").iterdir())) == 1  # the previous record was replaced
    stored = json.loads((cap / manifest["artifacts"]["sweep"]["path"]).read_text())
    assert stored["summaries"] == second["stats"]  # inspect shows them without scipy:
    probe = "import sys, pathlib; from builder.inspection import inspect; "
    probe += "inspect(pathlib.Path(sys.argv[1])); "
    probe += "print(sorted(m for m in sys.modules if m.startswith('scipy')))"
    out = subprocess.run([sys.executable, "-c", probe, str(cap)], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_parallel_sweep_is_bitwise_identical_to_serial(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    serial = frozen_tiny(tiny_spec, tmp_path)
    parallel = tmp_path / "parallel"
    shutil.copytree(serial, parallel)
    a = swept(serial, "--seeds", "1,2,3", "--orders", "5,6", "--jobs", "1")["runs"]
    b = swept(parallel, "--seeds", "1,2,3", "--orders", "5,6", "--jobs", "2")["runs"]
    assert len(a) == 6 and a == [{**r, "seconds": x["seconds"]} for r, x in zip(b, a, strict=True)]
    assert len({r["weights_sha256"] for r in a}) == 6  # every seed pair trained differently


def test_baseline_seed_pair_reproduces_the_capsules_weights(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    from builder.executors.work import weights_digest

    cap = frozen_tiny(tiny_spec, tmp_path)
    run = swept(cap, "--seeds", "11,", "--orders", "13,")["runs"][0]  # "11" alone = 1…11
    from safetensors.numpy import load_file

    assert run["weights_sha256"] == weights_digest(load_file(cap / "artifacts/weights.safetensors"))


def test_killed_worker_keeps_finished_runs_and_the_rerun_completes(
    frozen_2d: Path, tmp_path: Path
) -> None:
    cap = tmp_path / "paper-2d"
    shutil.copytree(frozen_2d, cap)
    command = [str(CAPSULE_BIN), "sweep", str(cap), "--seeds", "8", "--jobs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def journalled() -> bool:  # each worker journals what it finishes (its part of the journal)
        return any(p.read_text().strip() for p in cap.glob(".sweep-journal*.jsonl"))

    deadline = time.time() + 300
    while time.time() < deadline and not journalled():
        time.sleep(0.2)
    assert journalled(), "no run finished in time"
    workers = subprocess.run(
        ["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True, text=True
    ).stdout.split()
    assert workers
    os.kill(int(workers[0]), signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "worker process died" in stderr
    kept = json.loads(ok(capsule("inspect", cap, "--json")).stdout)["artifacts"]["sweep"]
    assert kept  # the finished runs were stored despite the failure
    rerun = swept(cap, "--seeds", "8", "--jobs", "2")
    assert rerun["reused"] >= 1 and rerun["ran"] == 8 - rerun["reused"]
    assert len(rerun["runs"]) == 8 and not rerun["failures"]


def test_equivalent_tier_order_seed_replay_and_lr_10x(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    cap = frozen_tiny(tiny_spec, tmp_path)
    ok(capsule("replay", cap, "--set", "seeds.order=101", "--out", tmp_path / "order"))
    before = verdict(cap, tmp_path / "order")
    assert before["verdict"] == "diverged"
    assert "not available" in json.dumps(before["reasons"])
    swept(cap, "--orders", "10")
    order = verdict(cap, tmp_path / "order")
    assert order["verdict"] == "equivalent", order["reasons"]
    assert order["reasons"][0] == {
        "kind": "override",
        "message": "replay overrode seeds.order = 101",
    }
    tests = {t["metric"]: t for t in order["equivalence"]["tests"]}
    assert set(tests) == {"train_error", "eval_error"} and tests["eval_error"]["n"] == 10
    ok(capsule("replay", cap, "--set", "train.lr=0.1", "--out", tmp_path / "lr"))
    lr = verdict(cap, tmp_path / "lr")
    assert lr["verdict"] == "diverged"
    assert lr["reasons"][0]["message"] == "replay overrode train.lr = 0.1"
    assert not all(t["equivalent"] for t in lr["equivalence"]["tests"])
    assert capsule("diff", cap, tmp_path / "lr").returncode == 1  # default --require equivalent
    assert capsule("diff", cap, tmp_path / "order").returncode == 0


def test_what_if_values_are_recorded_and_bad_ones_refused(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    cap = frozen_tiny(tiny_spec, tmp_path)
    ok(capsule("replay", cap, "--set", "train.epochs=2", "--out", tmp_path / "r"))
    record = json.loads((tmp_path / "r/replay.json").read_text())
    assert record["overrides"] == {"train.epochs": "2"}
    assert len(record["outcome"]["epochs"]) == 2
    for item, message in (
        ("train.lrr=1", "--set: train.lrr: unknown field"),
        ("train.lr=-1", "--set: train.lr: Input should be greater than 0"),
        ("data.train=x.csv", "--set data.train: cannot be changed in a replay"),
        ("nonsense", "expected KEY=VALUE"),
    ):
        result = capsule("replay", cap, "--set", item, "--out", tmp_path / "bad")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_stats_welch_between_sweeps_and_tost_of_a_value(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    slow = frozen_tiny(tiny_spec, tmp_path, name="slow", lr=0.01)
    fast = frozen_tiny(tiny_spec, tmp_path, name="fast", lr=0.1)
    for cap in (slow, fast):
        swept(cap, "--seeds", "6")
    result = json.loads(ok(capsule("stats", slow, fast, "--json")).stdout)
    welch = {w["metric"]: w for w in result["welch"]}
    assert welch["train_loss"]["significant"] and welch["train_loss"]["p"] < 0.05
    mean = {s["metric"]: s for s in result["stats"]}["eval_error"]["mean"]
    near = json.loads(
        ok(capsule("stats", slow, "--value", mean, "--metric", "eval_error", "--json")).stdout
    )["tost"]
    assert near["equivalent"] and near["margin"] > 0
    far = json.loads(
        ok(capsule("stats", slow, "--value", mean + 0.5, "--metric", "eval_error", "--json")).stdout
    )["tost"]
    assert not far["equivalent"]
    text = ok(capsule("stats", slow, fast)).stdout
    assert "welch" in text and "95% CI of mean" in text


def test_sweep_input_errors(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    cap = frozen_tiny(tiny_spec, tmp_path)
    for args, message in (
        ((), "give --seeds and/or --orders"),
        (("--seeds", "primes:x"), "--seeds 'primes:x': expected N, primes:N or a,b,c"),
        (("--orders", "0"), "--orders '0'"),
    ):
        result = capsule("sweep", cap, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = capsule("stats", cap)
    assert result.returncode == 2 and "no sweep yet" in result.stderr
