"""Bad input: one line naming the file and the field, exit 2, no traceback, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import assert_refused, capsule


def freeze_refused(spec: Path, tmp_path: Path, *needles: str) -> None:
    out = tmp_path / "out" / "capsule"
    assert_refused(capsule("freeze", spec, "--out", out), *needles)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda s: s.replace('name = "tiny"', 'name = "tiny'), ("malformed TOML",)),
        (
            lambda s: s.replace("epochs = 3", "epochs = 3\nlrr = 0.1"),
            ("train.lrr", "unknown field"),
        ),
        (lambda s: s.replace("epochs = 3", 'epochs = "three"'), ("train.epochs",)),
        (lambda s: s.replace("lr = 0.01", "lr = -0.01"), ("train.lr",)),
        (lambda s: s.replace("eps = 1e-8\n", ""), ("train.eps", "missing")),
        (lambda s: s.replace('framework = "torch"', 'framework = "jax"'), ("framework",)),
        (
            lambda s: s.replace("lr = 0.01", "lr = 0.01\nweight_decay = 0.1").replace(
                'framework = "torch"', 'framework = "tensorflow"'
            ),
            ("train.weight_decay", "not supported"),
        ),
        (
            lambda s: s.replace('train = "train.csv"', 'train = "nowhere.csv"'),
            ("nowhere.csv", "data.train", "not found"),
        ),
        (
            lambda s: s.replace(
                'eval = "eval.npz"', 'eval = "eval.npz"\nsha256 = { eval = "' + "0" * 64 + '" }'
            ),
            ("data.sha256.eval", "digest mismatch"),
        ),
    ],
    ids=[
        "malformed-toml",
        "unknown-field",
        "mistyped-field",
        "out-of-range",
        "missing-field",
        "unknown-framework",
        "tensorflow-weight-decay",
        "missing-data-file",
        "data-digest-mismatch",
    ],
)
def test_bad_spec_is_refused(
    tiny_spec: Callable[..., Path],
    tmp_path: Path,
    edit: Callable[[str], str],
    needles: tuple[str, ...],
) -> None:
    spec = tiny_spec()
    spec.write_text(edit(spec.read_text()))
    freeze_refused(spec, tmp_path, spec.name, *needles)


def test_missing_spec_file(tmp_path: Path) -> None:
    assert_refused(
        capsule("freeze", tmp_path / "absent.toml", "--out", tmp_path / "c"),
        "absent.toml",
        "not found",
    )


def test_bad_data_contents(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = tiny_spec()
    (tmp_path / "train.csv").write_text("label,a,b\n0,1.0,oops\n")
    freeze_refused(spec, tmp_path, "train.csv", "data.train", "numeric CSV")


def test_npz_without_labels(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    import numpy as np

    spec = tiny_spec()
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 3), dtype=np.float32))
    freeze_refused(spec, tmp_path, "eval.npz", "data.eval", "'y'")


@pytest.mark.parametrize("command", ["verify", "inspect", "replay", "diff"])
def test_a_directory_that_is_not_a_capsule(tmp_path: Path, command: str) -> None:
    (tmp_path / "junk").mkdir()
    args: list[object] = [command, tmp_path / "junk"]
    if command == "replay":
        args += ["--out", tmp_path / "r"]
    if command == "diff":
        args += [tmp_path / "junk"]
    assert_refused(capsule(*args), "junk", "not a capsule")
    assert not (tmp_path / "r").exists()


def test_manifest_with_a_wrong_field_type(frozen_2d: Path, tmp_path: Path) -> None:
    import hashlib
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(frozen_2d, copy)
    text = (copy / "manifest.json").read_text().replace('"steps": 3130', '"steps": "many"')
    (copy / "manifest.json").write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (copy / "manifest.sha256").write_text(f"{digest}  manifest.json\n")
    assert_refused(capsule("inspect", copy), "manifest.json", "outcome.steps")


def test_freeze_will_not_overwrite(frozen_2d: Path) -> None:
    from tests.conftest import CAPSULES

    assert_refused(
        capsule("freeze", CAPSULES / "paper-2d-torch", "--out", frozen_2d),
        str(frozen_2d),
        "already exists",
    )
