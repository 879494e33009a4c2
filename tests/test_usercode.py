"""The user's own training code in a capsule: the digits CNN examples, the Run object, the
nondeterminism audit (static and at run time), --strict, and clear errors for broken code."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CAPSULES, assert_refused, capsule, ok
from tests.helpers.projects import project, tiny


def inspect_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(ok(capsule("inspect", path, "--json")).stdout)


def verdict(baseline: Path, other: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(capsule("diff", baseline, other, "--json").stdout)


# ---------------------------------------------------------------- the digits examples


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_digits_example_freezes_and_replays_identically_on_the_host(
    framework: str, frozen_digits: Callable[[str], Path], tmp_path: Path
) -> None:
    frozen = frozen_digits(framework)
    manifest = inspect_json(frozen)
    assert manifest["spec"]["entrypoint"] == "train.py:main"
    code = {n for n in manifest["artifacts"] if n.startswith("code/")}
    assert code == {"code/train.py", "code/models/__init__.py", "code/models/cnn.py"}
    assert manifest["inputs"]["sklearn-digits"]["kind"] == "arrays"
    assert manifest["audit"] == []
    assert len(manifest["outcome"]["trace"]) >= 10
    assert manifest["outcome"]["metrics"]["test_error"][-1]["value"] < 0.2
    assert "scikit-learn" in manifest["fingerprint"]["distributions"]
    ok(capsule("replay", frozen, "--out", tmp_path / "replay"))
    result = verdict(frozen, tmp_path / "replay")
    assert result["verdict"] == "identical", result["reasons"]
    assert {m["name"] for m in result["metrics"]} == {"train_error", "test_error"}


def test_an_altered_code_file_fails_verify(
    frozen_digits: Callable[[str], Path], tmp_path: Path
) -> None:
    copy = tmp_path / "altered"
    shutil.copytree(frozen_digits("torch"), copy)
    model = copy / "code/models/cnn.py"
    model.write_text(model.read_text().replace("32 * 4 * 4, 64", "32 * 4 * 4, 65"))
    result = capsule("verify", copy)
    assert result.returncode == 3
    assert "code/models/cnn.py" in result.stderr


def test_an_image_whose_code_differs_from_the_capsule_is_refused(
    frozen_digits: Callable[[str], Path], tmp_path: Path
) -> None:
    """Inside an image the code comes from the image's copy, checked against the manifest."""
    import os
    import subprocess

    from tests.conftest import CAPSULE_BIN

    copy = tmp_path / "image-code"
    shutil.copytree(frozen_digits("torch") / "code", copy)
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n# changed\n")
    env = {**os.environ, "CAPSULE_CODE_DIR": str(copy)}
    result = subprocess.run(
        [str(CAPSULE_BIN), "replay", frozen_digits("torch"), "--out", tmp_path / "r"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 3, result.stderr
    assert "train.py" in result.stderr and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- verdicts on user code


def test_clock_reseeded_script_diverges_at_the_first_differing_checkpoint(
    tmp_path: Path,
) -> None:
    """Epoch 0 follows the recorded order; from epoch 1 the script shuffles with Python's
    `random` reseeded from the clock, so the runs part at step 5 (the first step of epoch 1)."""
    script = tiny(
        reseed="if epoch >= 1:\n    random.seed(time.time_ns())\n    random.shuffle(order)"
    )
    folder = project(tmp_path, script)
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    result = verdict(tmp_path / "cap", tmp_path / "replay")
    assert result["verdict"] == "diverged"
    assert result["first_divergent_step"] == 5
    trace = [r["message"] for r in result["reasons"] if r["kind"] == "trace"]
    assert trace and "first differs at step 5" in trace[0]
    rules = {f["rule"] for f in inspect_json(tmp_path / "cap")["audit"]}
    assert "seed-from-clock" in rules


def test_run_data_files_are_stored_and_replayed_from_the_capsule(tmp_path: Path) -> None:
    extra = 'run.log("data_sum", float(np.load(run.data("values.npy")).sum()))'
    folder = project(tmp_path, tiny(extra=extra))
    np_values = __import__("numpy").arange(6, dtype="float32")
    __import__("numpy").save(folder / "values.npy", np_values)
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    manifest = inspect_json(tmp_path / "cap")
    record = manifest["inputs"]["values.npy"]
    assert record["kind"] == "file" and record["artifact"] in manifest["artifacts"]
    (folder / "values.npy").unlink()  # the replay reads the capsule's copy, not the user's file
    ok(capsule("replay", tmp_path / "cap", "--out", tmp_path / "replay"))
    result = verdict(tmp_path / "cap", tmp_path / "replay")
    assert result["verdict"] == "identical", result["reasons"]
    assert manifest["outcome"]["metrics"]["data_sum"][-1]["value"] == 15.0


# ---------------------------------------------------------------- the nondeterminism audit


AUDITED = tiny(
    reseed="torch.zeros(4).put_(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))  # runtime alert",
    extra="np.random.seed(0)  # legacy global NumPy RNG: a static finding",
)


def test_static_and_runtime_findings_are_listed_in_the_manifest(tmp_path: Path) -> None:
    folder = project(tmp_path, AUDITED)
    frozen = ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    assert "legacy-numpy-random" in frozen.stderr and "torch-nondeterministic-op" in frozen.stderr
    audit = inspect_json(tmp_path / "cap")["audit"]
    static = [f for f in audit if f["source"] == "static"]
    runtime = [f for f in audit if f["source"] == "runtime"]
    lines = AUDITED.splitlines()
    assert static[0]["rule"] == "legacy-numpy-random" and static[0]["file"] == "train.py"
    assert "np.random.seed" in lines[static[0]["line"] - 1]
    assert runtime[0]["rule"] == "torch-nondeterministic-op"
    assert runtime[0]["file"] == "train.py" and "put_" in lines[runtime[0]["line"] - 1]
    assert runtime[0]["count"] == 3  # once per epoch
    assert "put_" in runtime[0]["message"]
    shown = ok(capsule("inspect", tmp_path / "cap")).stdout
    assert "legacy-numpy-random" in shown and "torch-nondeterministic-op" in shown


def test_strict_refuses_to_freeze_code_with_findings(tmp_path: Path) -> None:
    folder = project(tmp_path, AUDITED)
    result = capsule("freeze", folder, "--out", tmp_path / "cap", "--strict")
    assert result.returncode == 2
    assert "--strict" in result.stderr and "legacy-numpy-random" in result.stderr
    assert not (tmp_path / "cap").exists()
    assert not list(tmp_path.glob(".cap.partial-*"))


def test_strict_refuses_a_runtime_finding_alone(tmp_path: Path) -> None:
    script = tiny(extra="torch.zeros(4).put_(torch.tensor([0]), torch.tensor([1.0]))")
    folder = project(tmp_path, script)
    result = capsule("freeze", folder, "--out", tmp_path / "cap", "--strict")
    assert result.returncode == 2
    assert "torch-nondeterministic-op" in result.stderr
    assert not (tmp_path / "cap").exists()


def test_tensorflow_determinism_refusal_is_a_clear_error(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """\
        import tensorflow as tf


        def main(run):
            tf.nn.fractional_max_pool(tf.ones([1, 4, 4, 1]), [1.0, 1.5, 1.5, 1.0])
            run.save_weights({"w": tf.ones([1])})
        """
    )
    folder = project(tmp_path, script, framework="tensorflow")
    result = capsule("freeze", folder, "--out", tmp_path / "cap")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "train.py:5" in last and "TensorFlow refused a nondeterministic op" in last
    assert not (tmp_path / "cap").exists()


# ---------------------------------------------------------------- broken code, clear errors


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "def main(run):\n    raise ValueError('no data here')\n",
            "train.py:2: ValueError: no data here",
        ),
        ("def main(run):\n    run.log('x', 1.0)\n", "without calling run.save_weights"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
        ("def main(run)\n    pass\n", "train.py:1: SyntaxError"),
        ("def train(run):\n    pass\n", "has no function 'main'"),
        ("def main(run):\n    run.save_weights('weights')\n", "run.save_weights: got str"),
        ("def main(run):\n    run.data('missing.csv')\n", "no such file"),
    ],
)
def test_broken_code_gets_one_clear_line_and_no_capsule(
    tmp_path: Path, script: str, expected: str
) -> None:
    folder = project(tmp_path, script)
    result = capsule("freeze", folder, "--out", tmp_path / "cap")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("capsule: error: ") and expected in last, result.stderr
    assert not (tmp_path / "cap").exists()
    assert not list(tmp_path.glob(".cap.partial-*"))


@pytest.mark.parametrize(
    ("extra_spec", "include", "expected"),
    [
        ("[train]\nepochs = 1\n", '["train.py"]', "train: not used with 'entrypoint'"),
        ("", '["other.py"]', "entrypoint file 'train.py' is not among code.include"),
        ("", '["train.py", "../outside.py"]', "code.include: '../outside.py' lies outside"),
        ("", '["train.py", "absent/"]', "code.include: 'absent/' not found"),
        ("[code2]\n", '["train.py"]', "code2: unknown field"),
    ],
)
def test_bad_code_specs_name_the_file_and_field(
    tmp_path: Path, extra_spec: str, include: str, expected: str
) -> None:
    folder = project(tmp_path, "def main(run):\n    pass\n", include=include)
    (tmp_path / "outside.py").write_text("")
    (folder / "other.py").write_text("")
    spec = folder / "capsule.toml"
    spec.write_text(spec.read_text() + extra_spec)
    result = capsule("freeze", folder, "--out", tmp_path / "cap")
    assert result.returncode == 2
    assert str(spec) in result.stderr and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sweep_of_user_code_reruns_it_per_seed(tmp_path: Path) -> None:
    """The code is imported afresh for every run; the capsule's own seeds give its weights."""
    from safetensors.numpy import load_file

    from builder.executors.work import weights_digest

    folder = project(tmp_path, tiny())
    ok(capsule("freeze", folder, "--out", tmp_path / "cap"))
    result = json.loads(
        ok(capsule("sweep", tmp_path / "cap", "--seeds", "5,6", "--orders", "9,", "--json")).stdout
    )
    runs = {r["init"]: r for r in result["runs"]}
    own = weights_digest(load_file(tmp_path / "cap/artifacts/weights.safetensors"))
    assert runs[5]["weights_sha256"] == own and runs[6]["weights_sha256"] != own
    assert set(runs[5]["final"]) == {"loss"}


# ---------------------------------------------------------------- framework "numpy"


def test_numpy_code_freezes_and_replays_identically_with_no_framework(
    frozen_small: Path, tmp_path: Path
) -> None:
    manifest = inspect_json(frozen_small)
    assert manifest["fingerprint"]["framework"] == "numpy"
    assert manifest["controls"]["framework_switches"]["numpy.random.seed"] == 5
    assert manifest["audit"] == []  # the example draws from a seeded Generator
    ok(capsule("replay", frozen_small, "--out", tmp_path / "replay"))
    result = verdict(frozen_small, tmp_path / "replay")
    assert result["verdict"] == "identical", result["reasons"]


def test_numpy_is_refused_where_it_cannot_work(frozen_small: Path, tmp_path: Path) -> None:
    """The built-in MLP, a CUDA device and a CUDA image need a real framework."""
    builtin = tmp_path / "builtin.toml"
    builtin.write_text(
        (CAPSULES / "paper-2d-torch/capsule.toml").read_text().replace('"torch"', '"numpy"', 1)
    )
    assert_refused(capsule("freeze", builtin, "--out", tmp_path / "a"), "framework", "entrypoint")
    spec = tmp_path / "spec"
    shutil.copytree(CAPSULES / "numpy-softmax", spec)
    toml = spec / "capsule.toml"
    toml.write_text(toml.read_text() + '\n[controls]\ndevice = "cuda"\n')
    assert_refused(capsule("freeze", spec, "--out", tmp_path / "b"), "controls.device")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    copy = tmp_path / "c"
    shutil.copytree(frozen_small, copy)
    assert_refused(capsule("build", copy, "--gpu"), "framework", "numpy")
