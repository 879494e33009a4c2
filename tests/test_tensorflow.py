"""The TensorFlow/Keras backend: repeatable capsules, Keras-fit equality, shared initial weights
across frameworks, Adam variants, and the cross-framework diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.numpy import load_file

from builder.frameworks.layout import to_reference_layout
from tests.conftest import CAPSULES, ROOT, capsule, ok, write_tiny_data

TINY = """\
name = "{name}"
framework = "{framework}"

[data]
train = "train.csv"
eval = "eval.npz"

[model]
hidden = [8]
activation = "relu"
init = "{init}"

[train]
optimizer = "adam"
lr = 0.01
betas = [0.9, 0.999]
eps = 1e-7
loss = "cross_entropy"
epochs = 3
batch_size = 16
checkpoint_every = 10
{extra}
[seeds]
init = 5
order = 6
"""


def tiny(tmp: Path, name: str, framework: str, init: str = "shared", extra: str = "") -> Path:
    write_tiny_data(tmp)
    path = tmp / f"{name}.toml"
    path.write_text(TINY.format(name=name, framework=framework, init=init, extra=extra))
    return path


def manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "manifest.json").read_text())


def test_tensorflow_capsule_replays_identically(tmp_path: Path) -> None:
    ok(capsule("freeze", CAPSULES / "paper-2d-tensorflow", "--out", tmp_path / "c"))
    switches = manifest(tmp_path / "c")["controls"]["framework_switches"]
    assert switches["tf.config.experimental.enable_op_determinism"] is True
    assert switches["adam.variant"] == "keras" and switches["adam.eps"] == 1e-8
    assert switches["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert 0.06 < manifest(tmp_path / "c")["outcome"]["final"]["eval_error"] < 0.11
    ok(capsule("replay", tmp_path / "c", "--out", tmp_path / "r", "--threads", "2"))
    ok(capsule("diff", tmp_path / "c", tmp_path / "r", "--require", "identical"))


def test_whole_epoch_loop_is_bitwise_equal_to_keras_fit(tmp_path: Path) -> None:
    spec = tmp_path / "capsule.toml"
    spec.write_text(
        (CAPSULES / "paper-2d-tensorflow/capsule.toml")
        .read_text()
        .replace("epochs = 10", "epochs = 2")
    )
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/helpers/keras_fit_vs_loop.py"), str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"same_start": True, "equal": True, "max_abs": 0.0}


def test_shared_initial_weights_are_bit_identical_across_frameworks(tmp_path: Path) -> None:
    ok(capsule("freeze", tiny(tmp_path, "t", "torch"), "--out", tmp_path / "t"))
    ok(capsule("freeze", tiny(tmp_path, "k", "tensorflow"), "--out", tmp_path / "k"))
    torch_init = load_file(tmp_path / "t/artifacts/initial.safetensors")
    tf_init = to_reference_layout(load_file(tmp_path / "k/artifacts/initial.safetensors"))
    assert (
        torch_init.keys()
        == tf_init.keys()
        == {"hidden.0.weight", "hidden.0.bias", "output.weight", "output.bias"}
    )
    assert all(torch_init[k].tobytes() == tf_init[k].tobytes() for k in torch_init)
    verdict = json.loads(capsule("diff", tmp_path / "t", tmp_path / "k", "--json").stdout)
    assert verdict["reasons"][0]["kind"] == "framework"
    assert "torch" in verdict["reasons"][0]["message"]
    assert "tensorflow" in verdict["reasons"][0]["message"]
    assert any(r["message"] == "the initial weights are bit-identical" for r in verdict["reasons"])
    assert {t["name"] for t in verdict["tensors"]} == set(torch_init)  # matched layer by layer
    assert all(t["max_abs"] is not None for t in verdict["tensors"])


def test_adam_variants_run_and_are_recorded(tmp_path: Path) -> None:
    torch_keras = tiny(tmp_path, "tk", "torch", extra='adam_variant = "keras"\n')
    tf_torch = tiny(tmp_path, "kt", "tensorflow", extra='adam_variant = "torch"\n')
    ok(capsule("freeze", torch_keras, "--out", tmp_path / "tk"))
    ok(capsule("freeze", tf_torch, "--out", tmp_path / "kt"))
    assert manifest(tmp_path / "tk")["controls"]["framework_switches"]["adam.variant"] == "keras"
    assert manifest(tmp_path / "kt")["controls"]["framework_switches"]["adam.variant"] == "torch"
    for name in ("tk", "kt"):
        assert manifest(tmp_path / name)["outcome"]["final"]["eval_error"] < 0.4
    # the same formula in both frameworks, from the same start: far closer than the defaults
    ok(capsule("freeze", tiny(tmp_path, "t", "torch"), "--out", tmp_path / "t"))
    same = json.loads(capsule("diff", tmp_path / "t", tmp_path / "kt", "--json").stdout)
    assert max(t["max_abs"] for t in same["tensors"]) < 1e-3


def test_paper_capsules_differ_by_framework(frozen_2d: Path, tmp_path: Path) -> None:
    ok(capsule("freeze", CAPSULES / "paper-2d-tensorflow", "--out", tmp_path / "b"))
    words = capsule("diff", frozen_2d, tmp_path / "b").stdout
    assert "framework: torch 2.13.0" in words and "tensorflow 2.21.0" in words
    assert "hidden.0.weight" in words and "max |Δ|" in words
