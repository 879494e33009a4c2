"""Portable numerics end to end (issue 17): capsules frozen with `[controls] numerics =
"portable"` in PyTorch (1 and 2 threads) and TensorFlow are bit-identical to each other and to
the independent NumPy reference (tests/portable_reference.py) — every weight, every epoch's
metrics — on the three paper data sets (one epoch each here; benchmarks/portable_check.py runs
the full capsules); `diff` says `identical`; a batched sweep stores each run exactly as its
solo run; and what portable numerics does not implement is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from builder.data import generate_builtin
from builder.executors.work import weights_digest
from builder.frameworks.initial_weights import shared_initial_weights
from builder.frameworks.layout import to_reference_layout
from builder.records.spec import ModelSpec
from tests import portable_reference as ref
from tests.conftest import CAPSULES, assert_refused, capsule, ok

F = np.float32
DATASETS = {"paper-2d": "gaussian-2d", "paper-5d": "gaussian-5d", "paper-26d": "eeg-26d"}
BATCH = {"paper-2d": 32, "paper-5d": 320, "paper-26d": 64}  # ~300 steps: one epoch each


def portable_spec(
    directory: Path, paper: str, framework: str, epochs: int = 1, batch: int = 32
) -> Path:
    """The paper capsule's spec for `framework`, portable, `epochs` long in batches of
    `batch`."""
    name = f"{paper}-{framework}"
    text = (CAPSULES / f"{paper}-torch" / "capsule.toml").read_text()
    text = text.replace('framework = "torch"', f'framework = "{framework}"')
    text = text.replace(f'name = "{paper}-torch"', f'name = "{name}"')
    text = text.replace("batch_size = 32\n", f"batch_size = {batch}\n")
    text = text.replace("epochs = 10\n", f"epochs = {epochs}\n")
    text = text.replace("epochs = 20\n", f"epochs = {epochs}\n")
    text = text.replace('activation = "relu"', 'activation = "relu"\ninit = "shared"')
    text = text.replace("[controls]\n", '[controls]\nnumerics = "portable"\n')
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def manifest(capsule_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((capsule_dir / "manifest.json").read_text())


def reference_run(capsule_dir: Path, builtin: str) -> tuple[dict[str, np.ndarray], list[dict]]:  # type: ignore[type-arg]
    """The NumPy reference trained as the capsule says: its spec, its shared initial weights,
    its recorded order."""
    record = manifest(capsule_dir)
    spec, order_ref = record["spec"], record["artifacts"]["order"]
    dataset = generate_builtin(builtin)
    model = ModelSpec.model_validate(spec["model"])
    initial = shared_initial_weights(
        model, dataset.features, dataset.classes, spec["seeds"]["init"], "float32"
    )
    names = ["hidden.0", "output"]
    layers = [(initial[f"{n}.weight"].T.copy(), initial[f"{n}.bias"]) for n in names]
    order = load_file(str(capsule_dir / order_ref["path"]))["order"]
    splits = {s: (x.astype(F), y) for s, (x, y) in dataset.arrays.items()}
    trained, history = ref.train(
        layers, splits, dataset.classes, order, spec["train"]["batch_size"], spec["train"]["lr"]
    )
    weights = {}
    for n, (w, b) in zip(names, trained, strict=True):
        weights[f"{n}.weight"], weights[f"{n}.bias"] = w.T, b
    return weights, history


def stored_weights(capsule_dir: Path) -> dict[str, np.ndarray]:
    """The capsule's final weights in the reference layout (PyTorch's names, [out, in])."""
    ref_ = manifest(capsule_dir)["artifacts"]["weights"]
    return to_reference_layout(load_file(str(capsule_dir / ref_["path"])))


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=F).tobytes()


@pytest.mark.parametrize("paper", list(DATASETS))
def test_pytorch_tensorflow_and_the_reference_train_the_same_bits(
    paper: str, tmp_path: Path
) -> None:
    frozen = {}
    for framework, threads in (("torch", 1), ("torch", 2), ("tensorflow", 1)):
        out = tmp_path / f"{framework}-{threads}"
        spec = portable_spec(tmp_path, paper, framework, batch=BATCH[paper])
        ok(capsule("freeze", spec, "--out", out, "--threads", threads))
        frozen[(framework, threads)] = out
    weights, history = reference_run(frozen[("torch", 1)], DATASETS[paper])
    for (framework, threads), out in frozen.items():
        record = manifest(out)
        assert record["controls"]["numerics"] == "portable"
        assert record["controls"]["threads"] == threads
        got = stored_weights(out)
        assert got.keys() == weights.keys()
        for name, expected in weights.items():
            assert bits(got[name]) == bits(expected), f"{framework}/{threads}: {name}"
        epochs = record["outcome"]["epochs"]
        assert len(epochs) == len(history)
        for stored, expected in zip(epochs, history, strict=True):
            for metric, value in expected.items():
                assert stored[metric] == value, f"{framework}/{threads}: {metric}"
    diff = ok(capsule("diff", frozen[("torch", 1)], frozen[("tensorflow", 1)], "--json"))
    verdict = json.loads(diff.stdout)
    assert verdict["verdict"] == "identical", diff.stdout
    assert any("framework: torch" in r["message"] for r in verdict["reasons"])


def test_a_batched_sweep_stores_each_run_as_its_solo_run(tmp_path: Path) -> None:
    """8 runs (4 init seeds x 2 order seeds) batched, and the same 8 each in a process of its
    own (the pool): the same final metrics and weights digests, bit for bit; and one of them
    replayed solo from the capsule (`replay --set`): the same final metrics and weights digest
    as the batched run stored."""
    out = tmp_path / "p2d"
    ok(capsule("freeze", portable_spec(tmp_path, "paper-2d", "torch"), "--out", out))
    solo = tmp_path / "solo"
    batched = tmp_path / "batched"
    for copy in (solo, batched):
        shutil.copytree(out, copy)
    ok(capsule("sweep", batched, "--seeds", "4", "--orders", "2", "--batched"))
    ok(capsule("sweep", solo, "--seeds", "4", "--orders", "2", "--jobs", "2"))
    runs = {}
    for copy in (solo, batched):
        record = json.loads(ok(capsule("inspect", copy, "--json")).stdout)
        runs[copy] = {(r["init"], r["order"]): (r["final"], r["weights_sha256"])
                      for r in record["sweep"]["record"]["runs"]}  # fmt: skip
    assert len(runs[batched]) == 8
    assert runs[batched] == runs[solo]
    assert len({digest for _, digest in runs[batched].values()}) == 8
    replay = tmp_path / "replay"
    ok(capsule("replay", out, "--out", replay, "--set", "seeds.init=3", "--set", "seeds.order=2"))
    record = json.loads((replay / "replay.json").read_text())
    weights = load_file(str(replay / record["artifacts"]["weights"]["path"]))
    assert runs[batched][(3, 2)] == (record["outcome"]["final"], weights_digest(weights))


def test_what_portable_numerics_does_not_do_is_refused(tmp_path: Path) -> None:
    spec = portable_spec(tmp_path, "paper-2d", "torch")
    text = spec.read_text()
    spec.write_text(text.replace('init = "shared"\n', ""))
    assert_refused(capsule("freeze", spec, "--out", tmp_path / "a"), "model.init = 'shared'")
    spec.write_text(text.replace('dtype = "float32"', 'dtype = "float64"'))
    assert_refused(capsule("freeze", spec, "--out", tmp_path / "b"), "train.dtype")
    spec.write_text(text.replace("lr = 0.0005", 'lr = 0.0005\nadam_variant = "keras"'))
    assert_refused(capsule("freeze", spec, "--out", tmp_path / "c"), "adam_variant")
    spec.write_text(text.replace("eps = 1e-8", "eps = 1e-40"))
    assert_refused(capsule("freeze", spec, "--out", tmp_path / "d"), "train.eps", "2**-126")
    assert not any((tmp_path / d).exists() for d in "abcd")
    native = tmp_path / "native"
    spec.write_text(text.replace('numerics = "portable"\n', ""))
    ok(capsule("freeze", spec, "--out", native))
    assert "numerics" not in manifest(native)["spec"]["controls"]  # written as before
    assert "numerics" not in manifest(native)["controls"]
    assert_refused(capsule("sweep", native, "--seeds", "2", "--batched"), "numerics = 'portable'")
    portable = tmp_path / "portable"
    spec.write_text(text)
    ok(capsule("freeze", spec, "--out", portable))
    verdict = json.loads(capsule("diff", native, portable, "--json").stdout)
    assert any(r["message"] == "numerics: native → portable" for r in verdict["reasons"])


def test_the_users_own_portable_model_is_identical_in_pytorch_and_tensorflow(
    tmp_path: Path,
) -> None:
    """capsules/portable-mlp (the user's own MLP built with builder.portable's layers) frozen
    as it is (PyTorch) and with TensorFlow's kernels: diff says identical."""
    variant = tmp_path / "portable-mlp-tensorflow"
    shutil.copytree(CAPSULES / "portable-mlp", variant)
    spec = variant / "capsule.toml"
    text = spec.read_text().replace('framework = "torch"', 'framework = "tensorflow"')
    spec.write_text(text.replace('backend = "torch"', 'backend = "tensorflow"'))
    ok(capsule("freeze", CAPSULES / "portable-mlp", "--out", tmp_path / "torch"))
    ok(capsule("freeze", variant, "--out", tmp_path / "tensorflow"))
    record = manifest(tmp_path / "tensorflow")
    assert record["fingerprint"]["framework"] == "tensorflow"
    assert len(record["outcome"]["trace"]) == 14  # a checkpoint every 10 of 140 steps
    diff = ok(capsule("diff", tmp_path / "torch", tmp_path / "tensorflow", "--json"))
    assert json.loads(diff.stdout)["verdict"] == "identical", diff.stdout
