"""Capsule images against a real Docker engine: build, replay in the container, reproducible
IDs, one-file export/import, and the engine-missing errors (exit 4, nothing left behind)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import capsule, ok, remove_images

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def containers() -> set[str]:
    return set(docker("ps", "-aq").split())


@pytest.fixture(scope="module")
def built(frozen_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the frozen paper-2d capsule with its CPU image built (removed afterwards)."""
    copy = tmp_path_factory.mktemp("built") / "paper-2d-torch"
    shutil.copytree(frozen_2d, copy)
    ok(capsule("build", copy))
    yield copy
    remove_images(copy)


def manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "manifest.json").read_text())


def test_build_records_the_image_and_the_capsule_still_verifies(built: Path) -> None:
    record = manifest(built)["images"]["cpu"]
    assert record["image_id"].startswith("sha256:")
    labels = json.loads(
        docker("inspect", record["image_id"], "--format", "{{json .Config.Labels}}")
    )
    assert labels["org.capsule.digest"] == record["capsule_digest"]
    wheels = [n for n in manifest(built)["artifacts"] if n.startswith("wheelhouse/")]
    assert any(w.startswith("wheelhouse/torch-2.13.0") for w in wheels)
    assert any(w.startswith("wheelhouse/capsule_builder-") for w in wheels)
    assert any(w.startswith("wheelhouse/pip-") for w in wheels)
    assert not any("pytest" in w or "hypothesis" in w for w in wheels)  # dev tools stay out
    ok(capsule("verify", built))


def test_docker_replay_is_identical_to_the_host_baseline(built: Path, tmp_path: Path) -> None:
    before = containers()
    ok(capsule("replay", built, "--on", "docker", "--out", tmp_path / "r"))
    assert containers() == before
    record = json.loads((tmp_path / "r/replay.json").read_text())
    assert (
        record["on"] == "docker"
        and record["image_id"] == manifest(built)["images"]["cpu"]["image_id"]
    )
    verdict = json.loads(
        ok(capsule("diff", built, tmp_path / "r", "--json", "--require", "identical")).stdout
    )
    assert verdict["verdict"] == "identical"
    # The image has Debian's Python; the host's may be the same (a fresh bookworm) or not
    # (pyenv): a `python` reason appears exactly when the two fingerprints differ there.
    pythons = {manifest(built)["fingerprint"]["python"], record["fingerprint"]["python"]}
    assert any(r["kind"] == "python" for r in verdict["reasons"]) == (len(pythons) == 2)


def test_no_cache_rebuild_gives_the_recorded_image_id(built: Path) -> None:
    result = ok(capsule("build", built, "--check", "--json"))
    assert json.loads(result.stdout)["matches"] is True


def test_gpu_request_without_nvidia_runtime_exits_4_and_leaves_no_container(
    built: Path, tmp_path: Path
) -> None:
    before = containers()
    result = capsule("replay", built, "--on", "docker", "--device", "cuda", "--out", tmp_path / "r")
    assert result.returncode == 4, result.stderr
    assert "NVIDIA" in result.stderr or "cuda image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert containers() == before
    assert not (tmp_path / "r").exists()


def test_gpu_request_on_the_cpu_image_reaches_the_engine(built: Path, tmp_path: Path) -> None:
    """Point the cuda variant at the CPU image, so the engine itself must refuse the GPU."""
    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    data = manifest(copy)
    data["images"]["cuda"] = data["images"]["cpu"]
    _rewrite_manifest(copy, data)
    before = containers()
    result = capsule("replay", copy, "--on", "docker", "--device", "cuda", "--out", tmp_path / "r")
    assert result.returncode == 4, result.stderr
    assert "NVIDIA runtime" in result.stderr
    assert containers() == before
    assert not (tmp_path / "r").exists()


def test_no_engine_exits_4(built: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/absent.sock"}
    result = subprocess.run(
        [
            str(Path(os.sys.executable).parent / "capsule"),
            "replay",
            str(built),
            "--on",
            "docker",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 4
    assert "no Docker engine answers" in result.stderr
    assert not (tmp_path / "r").exists()


def test_export_remove_import_replay(built: Path, tmp_path: Path) -> None:
    export = tmp_path / "paper-2d.capsule.tar"
    ok(capsule("export", built, "--out", export, "--with-image"))
    image = manifest(built)["images"]["cpu"]
    raw = "capsule-raw/" + image["tag"].split("/", 1)[1]
    subprocess.run(["docker", "rmi", "-f", image["image_id"], raw], capture_output=True)
    assert (
        subprocess.run(["docker", "inspect", image["image_id"]], capture_output=True).returncode
        != 0
    )
    missing = capsule("replay", built, "--on", "docker", "--out", tmp_path / "x")
    assert missing.returncode == 4 and "not in the Docker engine" in missing.stderr
    ok(capsule("import", export, "--out", tmp_path / "imported"))
    ok(capsule("verify", tmp_path / "imported"))
    ok(capsule("replay", tmp_path / "imported", "--on", "docker", "--out", tmp_path / "r"))
    ok(capsule("diff", built, tmp_path / "r", "--require", "identical"))


def test_tensorflow_capsule_builds_and_replays_identically_in_docker(
    tmp_path: Path, cleanup_images: list[Path]
) -> None:
    from tests.conftest import CAPSULES

    ok(capsule("freeze", CAPSULES / "paper-2d-tensorflow", "--out", tmp_path / "c"))
    cleanup_images.append(tmp_path / "c")
    ok(capsule("build", tmp_path / "c"))
    wheels = [n for n in manifest(tmp_path / "c")["artifacts"] if n.startswith("wheelhouse/")]
    assert any(w.startswith("wheelhouse/tensorflow_cpu-2.21.0") for w in wheels)
    assert not any(w.startswith("wheelhouse/torch-") for w in wheels)
    ok(capsule("replay", tmp_path / "c", "--on", "docker", "--out", tmp_path / "r"))
    ok(capsule("diff", tmp_path / "c", tmp_path / "r", "--require", "identical"))


def _rewrite_manifest(path: Path, data: dict) -> None:  # type: ignore[type-arg]
    import hashlib

    text = json.dumps(data, indent=2).encode() + b"\n"
    (path / "manifest.json").write_bytes(text)
    (path / "manifest.sha256").write_text(f"{hashlib.sha256(text).hexdigest()}  manifest.json\n")


def test_matrix_with_a_docker_column_agrees_with_separate_replays(
    built: Path, tmp_path: Path
) -> None:
    """Issue 7: cpu:1, cpu:2 and docker:cpu, each trained model evaluated everywhere."""
    out = tmp_path / "matrix"
    result = json.loads(
        ok(
            capsule("matrix", built, "--devices", "cpu:1,cpu:2,docker:cpu", "--out", out, "--json")
        ).stdout
    )
    assert len(result["cells"]) == 9
    ok(capsule("replay", built, "--on", "docker", "--out", tmp_path / "d"))
    final = json.loads((tmp_path / "d/replay.json").read_text())["outcome"]["final"]
    cell = next(
        c
        for c in result["cells"]
        if c["trained_on"] == "docker:cpu" and c["evaluated_on"] == "docker:cpu"
    )
    assert (cell["train_error"], cell["eval_error"]) == (final["train_error"], final["eval_error"])
    identical = {r["trained_on"]: r["weights_identical_to_baseline"] for r in result["rows"]}
    assert identical == {"cpu:1": True, "cpu:2": True, "docker:cpu": True}


def test_audit_in_docker_builds_an_image_of_its_own_and_removes_it(
    built: Path, tmp_path: Path
) -> None:
    """Issue 7: numpy one release back, swapped into a wheelhouse of its own and replayed in
    an image built from it; the capsule's own image stays, the audit's is gone afterwards."""
    from tests.test_upgrade import fingerprint_version, previous_release

    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    current = fingerprint_version(copy, "numpy")
    older = previous_release("numpy", current)
    images_before = set(docker("images", "-q").split())
    result = json.loads(ok(capsule("audit", copy, "--with", f"numpy=={older}", "--json")).stdout)
    assert result["on"] == "docker"
    assert result["reasons"][0] == f"audit: numpy {current} → {older}"
    assert f"numpy {current} → {older}" in " ".join(result["reasons"][1:])
    assert set(docker("images", "-q").split()) <= images_before
    assert not docker("images", "-q", "capsule-audit/*").split()
    ok(capsule("verify", copy))
