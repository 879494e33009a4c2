"""Shared helpers: every test drives the real `capsule` command in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPSULES = ROOT / "capsules"
CAPSULE_BIN = Path(sys.executable).parent / "capsule"


DOCKER_TESTS = "tests/test_image.py"  # the one file that touches Docker and Podman


@pytest.fixture(scope="session", autouse=True)
def repository_left_as_it_was() -> Iterator[None]:
    """Tests write only under their own temporary folders: at the end of a session (of each
    xdist worker) nothing under tests/fixtures or capsules/ was added or changed (a replay of
    a fixture capsule in place once added a history line to it)."""
    yield
    if not (ROOT / ".git").exists():
        return
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "tests/fixtures", "capsules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert not changed, f"tests changed the repository:\n{changed}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Docker tests first: under `-n 2 --dist loadfile` (make test) their file is the longest
    unit of work, so it starts at once on one worker while the other takes every other file;
    docker stays on that one worker, so no test sees another's containers or images (nor
    prunes a build in progress). That holds only while they share one file: a docker test
    elsewhere is refused at collection."""
    stray = [
        item.nodeid
        for item in items
        if item.get_closest_marker("docker") and not item.nodeid.startswith(DOCKER_TESTS)
    ]
    if stray:
        raise pytest.UsageError(f"docker tests belong in {DOCKER_TESTS}: {', '.join(stray)}")
    items.sort(key=lambda item: item.get_closest_marker("docker") is None)


def capsule(
    *args: object, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI (`env`: variables set for it); tests assert on its exit code,
    stdout and stderr."""
    return subprocess.run(
        [str(CAPSULE_BIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def remove_images(capsule_dir: Path) -> None:
    """Remove the images a test built for this capsule (and any dangling layers), so a suite
    that builds several multi-gigabyte images never holds more than one at a time."""
    images = json.loads((capsule_dir / "manifest.json").read_text()).get("images", {})
    refs = [ref for record in images.values() for ref in (record["image_id"], record["tag"])]
    for engine in ("docker", "podman"):  # the image ID is the same on both engines
        if refs and shutil.which(engine):
            subprocess.run([engine, "rmi", "-f", *refs], capture_output=True)
            subprocess.run([engine, "image", "prune", "-f"], capture_output=True)


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 with one line (no traceback) that holds every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def cleanup_images() -> Iterator[list[Path]]:
    """Capsule directories appended to the yielded list get their images removed afterwards."""
    built: list[Path] = []
    yield built
    for directory in built:
        remove_images(directory)


TINY_SPEC = """\
name = "{name}"
framework = "torch"

[data]
train = "train.csv"
eval = "eval.npz"

[model]
hidden = [8]
activation = "tanh"

[train]
optimizer = "adam"
lr = {lr}
betas = [0.9, 0.999]
eps = 1e-8
loss = "cross_entropy"
epochs = 3
batch_size = 16
checkpoint_every = 10

[seeds]
init = {init}
order = {order}
"""


def write_tiny_data(directory: Path) -> None:
    """A small two-class problem as CSV (label first, as in the paper's course data) and NPZ."""
    rng = np.random.default_rng(7)
    for split, n in (("train", 240), ("eval", 80)):
        y = rng.integers(0, 2, size=n)
        x = rng.normal(size=(n, 3)) + y[:, None] * 1.2
        if split == "train":
            np.savetxt(directory / "train.csv", np.column_stack([y, x]), delimiter=",", fmt="%.6f")
        else:
            np.savez(directory / "eval.npz", x=x.astype(np.float32), y=y)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny user-data spec; keyword arguments change its name, seeds or lr."""
    write_tiny_data(tmp_path)

    def make(name: str = "tiny", init: int = 11, order: int = 13, lr: float = 0.01) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY_SPEC.format(name=name, init=init, order=order, lr=lr))
        return path

    return make


@pytest.fixture(scope="session")
def frozen_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("capsules") / "paper-2d-torch"
    ok(capsule("freeze", CAPSULES / "paper-2d-torch", "--out", out))
    return out


@pytest.fixture(scope="session")
def frozen_digits(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The digits CNN examples (the user's own code), frozen once per framework."""
    frozen: dict[str, Path] = {}

    def get(framework: str) -> Path:
        if framework not in frozen:
            out = tmp_path_factory.mktemp("digits") / f"digits-cnn-{framework}"
            ok(capsule("freeze", CAPSULES / f"digits-cnn-{framework}", "--out", out))
            frozen[framework] = out
        return frozen[framework]

    return get


REQUIRES_IDNA = 'include = ["train.py"]\nrequires = ["idna"]'


@pytest.fixture(scope="session")
def frozen_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest capsule: capsules/numpy-softmax (the user's own NumPy code, no framework),
    here also requiring `idna`, so its image shows what `[code] requires` brings in."""
    spec_dir = tmp_path_factory.mktemp("small-spec")
    shutil.copytree(CAPSULES / "numpy-softmax", spec_dir, dirs_exist_ok=True)
    spec = spec_dir / "capsule.toml"
    spec.write_text(spec.read_text().replace('include = ["train.py"]', REQUIRES_IDNA))
    out = tmp_path_factory.mktemp("capsules") / "numpy-softmax"
    ok(capsule("freeze", spec_dir, "--out", out))
    return out


def built_copy(frozen: Path, into: Path) -> Path:
    """A copy of a frozen capsule with its CPU image built."""
    copy = into / frozen.name
    shutil.copytree(frozen, copy)
    ok(capsule("build", copy))
    return copy


@pytest.fixture(scope="session")
def small_image(frozen_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The smallest capsule with its image built, once per session, for the tests of image
    mechanics (rebuild ID, export/import, replay, missing engines); removed afterwards."""
    copy = built_copy(frozen_small, tmp_path_factory.mktemp("small-image"))
    yield copy
    remove_images(copy)


@pytest.fixture(scope="session")
def torch_image(frozen_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """paper-2d-torch with its real PyTorch image built, once per session; removed afterwards."""
    copy = built_copy(frozen_2d, tmp_path_factory.mktemp("torch-image"))
    yield copy
    remove_images(copy)


def previous_release(name: str, version: str) -> str:
    """The release of `name` just before `version`, as the package index lists them."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("Available versions:"))
    releases = [v.strip() for v in line.split(":", 1)[1].split(",")]
    return releases[releases.index(version) + 1]


def fingerprint_version(path: Path, name: str) -> str:
    manifest = json.loads((path / "manifest.json").read_text())
    return str(manifest["fingerprint"]["distributions"][name])
