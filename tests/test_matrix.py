"""The cross-device matrix and `evaluate` on the host (the docker column is in test_image.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import BadInput
from builder.matrix import parse_devices
from tests.conftest import capsule, ok


def test_device_configurations_parse() -> None:
    configs = parse_devices("cpu:1,cpu:2,docker:cpu,cuda")
    assert [(c.on, c.device, c.threads) for c in configs] == [
        ("host", "cpu", 1),
        ("host", "cpu", 2),
        ("docker", "cpu", None),
        ("host", "cuda", None),
    ]
    for bad in ("gpu", "cpu:0", "cpu,cpu", "docker:tpu"):
        with pytest.raises(BadInput):
            parse_devices(bad)


def test_host_matrix_agrees_with_separate_replays(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    cap = tmp_path / "cap"
    ok(capsule("freeze", tiny_spec(), "--out", cap))
    out = tmp_path / "matrix"
    result = json.loads(
        ok(
            capsule(
                "matrix",
                cap,
                "--devices",
                "cpu:1,cpu:2",
                "--out",
                out,
                "--csv",
                tmp_path / "m.csv",
                "--json",
            )
        ).stdout
    )
    assert len(result["cells"]) == 4 and all(
        r["weights_identical_to_baseline"] for r in result["rows"]
    )
    ok(capsule("replay", cap, "--threads", "2", "--out", tmp_path / "r2"))
    final = json.loads((tmp_path / "r2/replay.json").read_text())["outcome"]["final"]
    cell = next(
        c for c in result["cells"] if c["trained_on"] == "cpu:2" and c["evaluated_on"] == "cpu:2"
    )
    assert (cell["train_error"], cell["eval_error"], cell["train_loss"]) == (
        final["train_error"],
        final["eval_error"],
        final["train_loss"],
    )
    assert (out / "matrix.json").is_file() and (out / "train-cpu-2/replay.json").is_file()
    assert (tmp_path / "m.csv").read_text().startswith("trained_on,evaluated_on")
    evaluated = json.loads(
        ok(capsule("evaluate", cap, out / "train-cpu-1", "--threads", "2", "--json")).stdout
    )
    assert evaluated[str(out / "train-cpu-1")]["eval_error"] == cell["eval_error"]


def test_matrix_refuses_bad_devices(tmp_path: Path) -> None:
    result = capsule("matrix", tmp_path, "--devices", "tpu", "--out", tmp_path / "m")
    assert result.returncode == 2 and "--devices 'tpu'" in result.stderr


def flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_matrix_steps_trust_the_verified_capsule_yet_check_what_they_read(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """`matrix` verifies the capsule once and runs each training and evaluation as a process
    with the hidden `--opened`: there the whole capsule is not hashed again (an artifact the
    step does not read goes unnoticed), but every artifact it reads is checked (exit 3)."""
    cap = tmp_path / "cap"
    ok(capsule("freeze", tiny_spec(), "--out", cap))
    weights = cap / "artifacts" / "weights.safetensors"
    weights.write_bytes(flipped(weights.read_bytes()))  # a replay trains: it reads no weights
    assert capsule("replay", cap, "--out", tmp_path / "r1").returncode == 3
    ok(capsule("replay", cap, "--out", tmp_path / "r2", "--opened"))
    order = cap / "artifacts" / "order.safetensors"
    order.write_bytes(flipped(order.read_bytes()))  # the replay reads the order
    refused = capsule("replay", cap, "--out", tmp_path / "r3", "--opened")
    assert refused.returncode == 3 and "artifact 'order' was altered" in refused.stderr
    assert not (tmp_path / "r3").exists()
    assert capsule("matrix", cap, "--devices", "cpu:1", "--out", tmp_path / "m").returncode == 3
    assert "--opened" not in ok(capsule("replay", "--help")).stdout
