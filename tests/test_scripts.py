"""Plain scripts as entry points (issue 15): a script run as `__main__` with its command line
built from [params], `current_run()` and its stand-in, the argparse namespace recorded, and
argparse's exit named at the user's own file; the recorded order through a PyTorch sampler
and Keras's `fit(shuffle=True, validation_split=…)`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CAPSULE_BIN, ROOT, capsule, ok

SCRIPT_SPEC = """\
name = "plain-script"
framework = "{framework}"
entrypoint = "main.py"

[code]
include = ["main.py"]

[params]
{params}

[seeds]
init = 5
order = 9
"""

# A NumPy script that knows nothing of Capsule but `current_run`: argparse with defaults the
# spec does not set, a store_true flag, and `sys.exit(main())` at the end.
NUMPY_SCRIPT = """\
import argparse
import random
import sys

import numpy as np

from builder import current_run


def main():
    parser = argparse.ArgumentParser(description="softmax regression")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    run = current_run()
    x = np.linspace(-1, 1, 64).reshape(32, 2)
    y = (x.sum(axis=1) > 0).astype(int)
    w = np.array([[random.gauss(0, 0.1) for _ in range(2)] for _ in range(2)])  # seeded
    for epoch in range(args.epochs):
        order = run.order(len(x), epoch)
        for start in range(0, len(x), args.batch_size):
            idx = order[start : start + args.batch_size]
            logits = x[idx] @ w
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            w -= args.lr * x[idx].T @ p / len(idx)
        run.log("loss", float(np.abs(w).sum()), step=epoch + 1)
    run.save_weights({"w": w})
    print("trained", args.epochs, "epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""


def script_project(
    tmp_path: Path, script: str, params: str, framework: str = "numpy", name: str = "proj"
) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "main.py").write_text(script)
    (folder / "capsule.toml").write_text(SCRIPT_SPEC.format(framework=framework, params=params))
    return folder


def manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "manifest.json").read_text())


def verdict(baseline: Path, other: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(capsule("diff", baseline, other, "--json").stdout)


def test_a_plain_script_freezes_with_argv_from_params_and_replays_identically(
    tmp_path: Path,
) -> None:
    folder = script_project(tmp_path, NUMPY_SCRIPT, "lr = 0.25\nbatch-size = 4\ndry-run = true")
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    frozen = manifest(tmp_path / "cap")
    assert frozen["spec"]["entrypoint"] == "main.py"
    # every effective value: the three [params] set and the defaults they did not
    assert frozen["arguments"] == {
        "lr": 0.25,
        "batch_size": 4,
        "dry_run": True,
        "epochs": 2,
        "gamma": 0.7,
    }
    assert len(frozen["outcome"]["metrics"]["loss"]) == 2
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    assert json.loads((tmp_path / "replay/replay.json").read_text())["arguments"]["lr"] == 0.25
    assert verdict(tmp_path / "cap", tmp_path / "replay")["verdict"] == "identical"
    # a what-if value reaches the script's command line
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "wi", "--set", "params.lr=0.5"))
    assert json.loads((tmp_path / "wi/replay.json").read_text())["arguments"]["lr"] == 0.5
    assert verdict(tmp_path / "cap", tmp_path / "wi")["verdict"] != "identical"


def test_the_same_script_runs_on_its_own_with_the_stand_in(tmp_path: Path) -> None:
    folder = script_project(tmp_path, NUMPY_SCRIPT, "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "main.py", "--epochs", "3"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "trained 3 epochs" in result.stdout
    assert not list(folder.glob("*.safetensors"))  # the stand-in records nothing


def test_argparse_refusing_params_names_the_users_file_not_the_staging_copy(
    tmp_path: Path,
) -> None:
    folder = script_project(tmp_path, NUMPY_SCRIPT, "learning-rate = 0.1")
    result = capsule("freeze", folder, "--out", tmp_path / "cap")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "argparse refused its command line" in last and "[params]" in last, last
    assert f"{folder / 'main.py'}:" in last, last
    assert ".partial" not in result.stderr, result.stderr
    assert "unrecognized arguments: --learning-rate 0.1" in result.stderr
    assert not (tmp_path / "cap").exists()


def test_an_error_in_a_script_names_its_own_file_and_line(tmp_path: Path) -> None:
    """Named as the user typed it (relative to where they ran capsule), though the code ran
    from the capsule's staging copy in its outputs folder."""
    script = NUMPY_SCRIPT.replace(
        "    run = current_run()\n", "    run = current_run()\n    1 / 0\n"
    )
    script_project(tmp_path, script, "")
    result = subprocess.run(
        [str(CAPSULE_BIN), "freeze", "proj", "--out", "caps/proj"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    line = script.splitlines().index("    1 / 0") + 1
    assert f"failed at proj/main.py:{line}: ZeroDivisionError" in last, last
    assert f'File "proj/main.py", line {line}' in result.stderr
    assert ".partial" not in result.stderr


# ---------------------------------------------------------------- the order, where expected

TORCH_SAMPLER = """\
import torch
from torch.utils.data import DataLoader, TensorDataset

from builder import current_run

run = current_run()
x = torch.linspace(-1, 1, 40).reshape(20, 2)
y = (x.sum(dim=1) > 0).long()
dataset = TensorDataset(torch.arange(20), x, y)
loader = DataLoader(dataset, batch_size=5, sampler=run.sampler(dataset))
model = torch.nn.Linear(2, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for epoch in range(3):  # the sampler counts the epochs: the script never tells it
    seen = []
    for rows, xb, yb in loader:
        seen += rows.tolist()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.step(loss, model, every=2)  # the global step counted across epochs
    run.log("first_row", seen[0], step=epoch)
    run.log("loss", loss.item(), step=run.global_step)
run.save_weights(model)
"""

KERAS_FIT = """\
import keras
import numpy as np

from builder import current_run

x = np.linspace(-1, 1, 100, dtype="float32").reshape(50, 2)
y = (x.sum(axis=1) > 0).astype("int64")
model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(2, activation="softmax")])
model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
history = current_run().keras_fit(
    model, x, y, batch_size=8, epochs=2, shuffle=True, validation_split=0.2, verbose=0,
    callbacks=[current_run().keras_callback(every=1)],
)
assert len(history.history["loss"]) == 2 and history.epoch == [0, 1]
current_run().save_weights(model)
"""


def orders_of(path: Path) -> dict:  # type: ignore[type-arg]
    from safetensors.numpy import load_file

    return load_file(path / "artifacts/order.safetensors")


def sweep_spread(path: Path, metric: str) -> float:
    result = json.loads(ok(capsule("sweep", path, "--orders", "1,2,3", "--json")).stdout)
    assert not result["failures"], result["failures"]
    stats = {s["metric"]: s for s in result["stats"]}
    return float(stats[metric]["std"])


def test_a_dataloader_on_run_sampler_takes_the_recorded_order(tmp_path: Path) -> None:
    folder = script_project(tmp_path, TORCH_SAMPLER, "", framework="torch")
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    orders = orders_of(tmp_path / "cap")
    assert sorted(orders) == ["n20.epoch0", "n20.epoch1", "n20.epoch2"]
    first = manifest(tmp_path / "cap")["outcome"]["metrics"]["first_row"]
    assert [p["value"] for p in first] == [orders[f"n20.epoch{e}"][0] for e in range(3)]
    assert len({tuple(o) for o in orders.values()}) == 3  # a new permutation every epoch
    outcome = manifest(tmp_path / "cap")["outcome"]
    assert [p["step"] for p in outcome["trace"]] == [2, 4, 6, 8, 10, 12]  # 4 batches, 3 epochs
    assert all(p["params_sha256"] for p in outcome["trace"])
    last = outcome["metrics"]["loss"][-1]
    assert last["step"] == 12 and outcome["trace"][-1]["loss"] == last["value"]
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    assert verdict(tmp_path / "cap", tmp_path / "replay")["verdict"] == "identical"
    assert sweep_spread(tmp_path / "cap", "loss") > 0


def test_keras_fit_keeps_shuffle_and_validation_split_in_the_recorded_order(
    tmp_path: Path,
) -> None:
    folder = script_project(tmp_path, KERAS_FIT, "", framework="tensorflow")
    frozen = ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    # TensorFlow's C++ chatter (oneDNN notice, tf.data's NodeDef error) is kept off stderr
    for chatter in ("oneDNN custom operations", "NodeDef mentions", "absl::InitializeLog"):
        assert chatter not in frozen.stderr, frozen.stderr
    orders = orders_of(tmp_path / "cap")
    assert sorted(orders) == ["n40.epoch0", "n40.epoch1"]  # 50 rows, the last 10 validate
    metrics = manifest(tmp_path / "cap")["outcome"]["metrics"]
    assert {"loss", "val_loss"} <= set(metrics) and len(metrics["val_loss"]) == 2
    assert len(metrics["loss"]) == 2  # keras_fit's own logger stands aside for the callback
    trace = manifest(tmp_path / "cap")["outcome"]["trace"]
    assert [p["step"] for p in trace] == list(range(1, 11))  # 5 batches, 2 epochs
    # each batch's own loss, not the running mean: the epoch's mean is their weighted mean
    epoch0 = [p["loss"] for p in trace[:5]]
    mean = (sum(epoch0[:4]) * 8 + epoch0[4] * 8) / 40
    assert abs(mean - metrics["loss"][0]["value"]) < 1e-5 and len(set(epoch0)) == 5
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    assert verdict(tmp_path / "cap", tmp_path / "replay")["verdict"] == "identical"
    assert sweep_spread(tmp_path / "cap", "loss") > 0


# ---------------------------------------------------------------- saying what is true


def findings(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return manifest(path)["audit"]  # type: ignore[no-any-return]


def test_a_constant_reseed_is_a_finding_strict_refuses_it_and_the_seed_sweep_warns(
    tmp_path: Path,
) -> None:
    script = NUMPY_SCRIPT.replace(
        "    run = current_run()\n", "    run = current_run()\n    random.seed(args.seed)\n"
    ).replace(
        "type=int, default=2)\n",
        'type=int, default=2)\n    parser.add_argument("--seed", type=int, default=1)\n',
    )
    folder = script_project(tmp_path, script, "")
    frozen = ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    line = script.splitlines().index("    random.seed(args.seed)") + 1
    reseeds = [f for f in findings(tmp_path / "cap") if f["rule"] == "reseeded"]
    assert [(f["file"], f["line"]) for f in reseeds] == [("main.py", line)]
    assert "random.seed() reseeds with 1, not the capsule's init seed (5)" in frozen.stderr
    refused = capsule("freeze", folder, "--out", tmp_path / "strict", "--strict")
    assert refused.returncode == 2 and "reseeded" in refused.stderr
    assert not (tmp_path / "strict").exists()
    # the sweep it cancels: every init seed trains the same weights, and the sweep says so
    sweep = capsule("sweep", tmp_path / "cap", "--seeds", "1,2,3", "--json")
    assert sweep.returncode == 0, sweep.stderr
    result = json.loads(sweep.stdout)
    assert result["stats"][0]["std"] == 0
    assert any("bit-identical weights" in w for w in result["warnings"])
    assert "capsule: warning: loss is the same in all 3 runs" in sweep.stderr
    assert capsule("sweep", tmp_path / "cap", "--seeds", "1,2,3", "--strict").returncode == 1


def test_an_order_never_drawn_through_the_run_is_said_so(tmp_path: Path) -> None:
    script = NUMPY_SCRIPT.replace(
        "order = run.order(len(x), epoch)", "order = np.array(random.sample(range(len(x)), len(x)))"
    )
    folder = script_project(tmp_path, script, "")
    frozen = ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    assert "order-not-recorded" in frozen.stderr
    assert [f["rule"] for f in findings(tmp_path / "cap") if f["source"] == "runtime"] == [
        "order-not-recorded"
    ]
    assert "order" not in manifest(tmp_path / "cap")["artifacts"]
    shown = ok(capsule("inspect", tmp_path / "cap")).stdout
    assert "data order: not recorded" in shown
    refused = capsule("freeze", folder, "--out", tmp_path / "strict", "--strict")
    assert refused.returncode == 2 and "order-not-recorded" in refused.stderr
    sweep = capsule("sweep", tmp_path / "cap", "--orders", "1,2", "--json")
    assert any("order seeds differ" in w for w in json.loads(sweep.stdout)["warnings"])


# ---------------------------------------------------------------- side outputs

WRITER = NUMPY_SCRIPT.replace(
    '    print("trained", args.epochs, "epochs")\n',
    """    print("trained", args.epochs, "epochs")
    np.save("weights.npy", w)  # its working directory: run.outputs under Capsule
    with open("/tmp/capsule-test-elsewhere.txt", "w") as f:
        f.write(str(time.time_ns()))  # a different file on every run
    run.save_file("/tmp/capsule-test-elsewhere.txt")
""",
).replace("import sys\n", "import sys\nimport time\n")


def test_files_the_code_writes_are_stored_and_compared_by_diff(tmp_path: Path) -> None:
    folder = script_project(tmp_path, WRITER, "")
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    artifacts = manifest(tmp_path / "cap")["artifacts"]
    assert {"outputs/weights.npy", "outputs/capsule-test-elsewhere.txt"} <= set(artifacts)
    assert not (folder / "weights.npy").exists()  # nothing lands beside the spec
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    result = verdict(tmp_path / "cap", tmp_path / "replay")
    assert result["verdict"] != "identical"
    outputs = [r["message"] for r in result["reasons"] if r["kind"] == "outputs"]
    assert outputs == [outputs[0]] and "capsule-test-elsewhere.txt differs" in outputs[0]


@pytest.mark.parametrize("script", [TORCH_SAMPLER, KERAS_FIT], ids=["sampler", "keras_fit"])
def test_the_order_helpers_run_on_their_own_with_the_stand_in(tmp_path: Path, script: str) -> None:
    """`python main.py` outside Capsule: run.sampler and run.keras_fit (with its callback)
    work on the stand-in, which draws from order seed 0 and records nothing."""
    (tmp_path / "main.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.py"]
