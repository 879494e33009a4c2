"""Capsule images against real engines (Docker, and Podman's service): build, replay in the
container, reproducible IDs (the same on both engines), the containers' confinement, one-file
export/import, and the engine-missing errors (exit 4, nothing left behind).

The mechanics run on the smallest capsule (`small_image`: NumPy only, ~370 MB image); one test
per framework builds and replays that framework's real image (`torch_image` is shared by the
tests that need a PyTorch image). Each image is built once per session and removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from rocrate.rocrate import ROCrate

from builder.errors import EngineMissing
from builder.store import capsule_digest, load_manifest
from tests.conftest import (
    CAPSULE_BIN,
    CAPSULES,
    assert_refused,
    capsule,
    fingerprint_version,
    ok,
    previous_release,
)
from tests.helpers.engines import empty_docker, empty_podman, images, no_caches, offline
from tests.helpers.examples import EXAMPLES, small_copy

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def containers() -> set[str]:
    return set(docker("ps", "-aq").split())


def manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "manifest.json").read_text())


def wheels(path: Path) -> list[str]:
    return [n for n in manifest(path)["artifacts"] if n.startswith("wheelhouse/")]


def replay_in_image_is_identical(capsule_dir: Path, out: Path) -> dict:  # type: ignore[type-arg]
    """Replay in the capsule's image (leaving no container) and require `identical`."""
    before = containers()
    ok(capsule("replay", capsule_dir, "--on", "docker", "--out", out))
    assert containers() == before
    record = json.loads((out / "replay.json").read_text())
    assert record["on"] == "docker"
    assert record["image_id"] == manifest(capsule_dir)["images"]["cpu"]["image_id"]
    verdict = json.loads(
        ok(capsule("diff", capsule_dir, out, "--json", "--require", "identical")).stdout
    )
    assert verdict["verdict"] == "identical"
    # The image has Debian's Python; the host's may be the same (a fresh bookworm) or not
    # (pyenv): a `python` reason appears exactly when the two fingerprints differ there.
    pythons = {manifest(capsule_dir)["fingerprint"]["python"], record["fingerprint"]["python"]}
    assert any(r["kind"] == "python" for r in verdict["reasons"]) == (len(pythons) == 2)
    return record


def without_daemons(tmp: Path) -> dict[str, str]:
    """A cluster node's environment for a command: no Docker or Podman service to reach (their
    sockets point nowhere), neither program on PATH — only runc and umoci — and an OCI store of
    its own."""
    tools = tmp / "bin"
    tools.mkdir()
    for tool in ("runc", "umoci"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    return {
        "PATH": str(tools),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "CAPSULE_PODMAN_HOST": "unix:///nonexistent/podman.sock",
        "CAPSULE_OCI_STORE": str(tmp / "oci-store"),
    }


def replay_on_oci_is_identical(capsule_dir: Path, tmp: Path) -> dict:  # type: ignore[type-arg]
    """Export the capsule with its image as an OCI archive here; on a 'node' without daemons
    import it into the daemonless engine and replay it there with runc: `identical`."""
    tmp.mkdir()
    archive = tmp / "capsule.oci.tar"
    ok(capsule("export", capsule_dir, "--format", "oci", "--out", archive))
    node = without_daemons(tmp)
    try:
        no_daemon = capsule("replay", capsule_dir, "--on", "docker", "--out", tmp / "x", env=node)
        assert no_daemon.returncode == 4, no_daemon.stderr  # there is no daemon there indeed
        ok(capsule("import", archive, "--engine", "oci", "--out", tmp / "imported", env=node))
        ok(capsule("replay", tmp / "imported", "--on", "oci", "--out", tmp / "r", env=node))
        record = json.loads((tmp / "r" / "replay.json").read_text())
        assert record["on"] == "oci"
        assert record["image_id"] == manifest(capsule_dir)["images"]["cpu"]["image_id"]
        diff = capsule("diff", capsule_dir, tmp / "r", "--json", "--require", "identical")
        assert json.loads(ok(diff).stdout)["verdict"] == "identical"
        assert list((tmp / "oci-store" / "runs").iterdir()) == []  # no run left behind
        return record  # type: ignore[no-any-return]
    finally:  # gigabytes: the archive, the store's blobs and its unpacked bundle
        archive.unlink(missing_ok=True)
        shutil.rmtree(tmp / "oci-store", ignore_errors=True)


# ---------------------------------------------------------------- one real image per framework


def test_torch_image_records_its_wheels_and_replays_identically(
    torch_image: Path, tmp_path: Path
) -> None:
    record = manifest(torch_image)["images"]["cpu"]
    assert record["image_id"].startswith("sha256:")
    labels = json.loads(
        docker("inspect", record["image_id"], "--format", "{{json .Config.Labels}}")
    )
    assert labels["org.capsule.digest"] == record["capsule_digest"]
    names = wheels(torch_image)
    assert any(w.startswith("wheelhouse/torch-2.13.0") for w in names)
    assert any(w.startswith("wheelhouse/capsule_builder-") for w in names)
    assert not any("pytest" in w or "hypothesis" in w for w in names)  # dev tools stay out
    ok(capsule("verify", torch_image))
    replay_in_image_is_identical(torch_image, tmp_path / "r")
    replay_on_oci_is_identical(torch_image, tmp_path / "node")


def test_image_holds_each_wheel_once_installed_and_no_wheelhouse(small_image: Path) -> None:
    """Two-stage build: the image is the base plus one layer with the installed tree."""
    image_id = manifest(small_image)["images"]["cpu"]["image_id"]
    base_id = manifest(small_image)["images"]["cpu"]["base_id"]
    layers = json.loads(docker("inspect", image_id, "--format", "{{json .RootFS.Layers}}"))
    base_layers = json.loads(docker("inspect", base_id, "--format", "{{json .RootFS.Layers}}"))
    assert layers[: len(base_layers)] == base_layers and len(layers) == len(base_layers) + 1
    listing = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image_id,
         "-c", "ls /opt/capsule; ls /opt/capsule/venv/lib/python3*/site-packages"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "wheelhouse" not in listing and {"venv", "code"} <= set(listing)
    assert {"numpy", "idna", "builder"} <= set(listing)  # numpy, what `requires` names, Capsule


# ---------------------------------------------------------------- mechanics, on the small image


def test_small_image_replays_the_users_code_identically(small_image: Path, tmp_path: Path) -> None:
    """User code in the image (/opt/capsule/code, checked against the capsule's digests) and
    what it `requires`."""
    names = wheels(small_image)
    assert any(w.startswith("wheelhouse/idna-") for w in names)
    assert any(w.startswith("wheelhouse/pip-") for w in names)
    assert not any(w.startswith(("wheelhouse/torch-", "wheelhouse/tensorflow")) for w in names)
    replay_in_image_is_identical(small_image, tmp_path / "r")


def test_building_a_built_capsule_again_keeps_its_image(small_image: Path) -> None:
    before = manifest(small_image)["images"]["cpu"]
    result = ok(capsule("build", small_image))
    assert "built already" in result.stderr
    assert manifest(small_image)["images"]["cpu"] == before


def test_no_cache_rebuild_gives_the_recorded_image_id(small_image: Path) -> None:
    result = ok(capsule("build", small_image, "--check", "--json"))
    assert json.loads(result.stdout)["matches"] is True


def test_a_check_against_another_recipe_is_refused(small_image: Path, tmp_path: Path) -> None:
    """An image recorded from another Dockerfile (an earlier Capsule) cannot be matched."""
    copy = tmp_path / "c"
    shutil.copytree(small_image, copy)
    data = manifest(copy)
    data["images"]["cpu"]["dockerfile_sha256"] = "0" * 64
    _rewrite_manifest(copy, data)
    result = capsule("build", copy, "--check")
    assert result.returncode == 2 and "dockerfile_sha256" in result.stderr, result.stderr


def test_no_engine_exits_4(small_image: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/absent.sock"}
    result = subprocess.run(
        [str(CAPSULE_BIN), "replay", small_image, "--on", "docker", "--out", tmp_path / "r"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 4
    assert "the Docker engine does not answer" in result.stderr
    assert not (tmp_path / "r").exists()
    env = {**os.environ, "CAPSULE_PODMAN_HOST": f"unix://{tmp_path}/absent.sock"}
    result = subprocess.run(
        [str(CAPSULE_BIN), "build", small_image, "--engine", "podman"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 4
    assert "the Podman service does not answer" in result.stderr
    assert "scripts/podman-up.sh" in result.stderr


def test_export_remove_import_replay(small_image: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c"  # the image is removed and loaded again: keep the session's record
    shutil.copytree(small_image, copy)
    export = tmp_path / "small.capsule.tar"
    ok(capsule("export", copy, "--out", export, "--with-image"))
    image = manifest(copy)["images"]["cpu"]
    subprocess.run(["docker", "rmi", "-f", image["image_id"]], capture_output=True)
    assert (
        subprocess.run(["docker", "inspect", image["image_id"]], capture_output=True).returncode
        != 0
    )
    missing = capsule("replay", copy, "--on", "docker", "--out", tmp_path / "x")
    assert missing.returncode == 4 and "not in the Docker engine" in missing.stderr
    ok(capsule("import", export, "--out", tmp_path / "imported"))
    ok(capsule("verify", tmp_path / "imported"))
    ok(capsule("replay", tmp_path / "imported", "--on", "docker", "--out", tmp_path / "r"))
    ok(capsule("diff", copy, tmp_path / "r", "--require", "identical"))


# ---------------------------------------------------------------- years later: offline rebuild


@pytest.fixture(scope="module")
def small_export(small_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    export = tmp_path_factory.mktemp("years-later") / "small.capsule.tar"
    ok(capsule("export", small_image, "--out", export, "--with-image"))
    yield export
    export.unlink(missing_ok=True)


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _forged(capsule_dir: Path, archive: str, tags: list[str]) -> None:
    """Give the capsule's base archive tags (which a `docker load` would apply), with its
    digest recomputed in the manifest, as whoever made a capsule can."""
    import io
    import tarfile

    import zstandard

    path = capsule_dir / archive
    unpacked = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(unpacked)) as source,
        tarfile.open(fileobj=out, mode="w") as tar,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json" and data is not None:
                entries = json.loads(data)
                entries[0]["RepoTags"] = tags
                data = json.dumps(entries).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
    data = manifest(capsule_dir)
    ref = data["artifacts"][archive]
    ref["sha256"], ref["size"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    data["images"]["cpu"]["base"]["unpacked_bytes"] = len(out.getvalue())
    _rewrite_manifest(capsule_dir, data)


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_years_later_the_export_replays_and_rebuilds_offline_in_an_empty_engine(
    small_image: Path, small_export: Path, engine: str, tmp_path: Path
) -> None:
    """The export file and an engine are all that a rebuild years later needs: in an engine of
    its own (no image, no build cache), with no pip cache, the engine and every command in a
    network namespace with no interfaces: import, replay (identical), and `build --check`
    gives the recorded image ID, from the base the capsule carries. A capsule that lacks its
    base is told exactly what is missing, in one line; a base archive that would tag images
    in the engine is refused before it is loaded; no name in the engine is moved."""
    recorded = manifest(small_image)["images"]["cpu"]
    base = recorded["base"]
    assert base["release"] == "bookworm" and base["packages_date"] and base["mirror"]
    assert recorded["base_id"] == base["image_id"]
    start = empty_docker if engine == "docker" else empty_podman
    with start() as engine_env:
        env = {**engine_env, **no_caches(tmp_path / "home")}
        assert images(engine, engine_env) == []
        imported, replayed = tmp_path / "i", tmp_path / "r"
        ok(offline("import", small_export, "--engine", engine, "--out", imported, env=env))
        ok(offline("replay", imported, "--on", engine, "--out", replayed, env=env))
        diff = offline("diff", imported, replayed, "--json", "--require", "identical", env=env)
        assert json.loads(ok(diff).stdout)["verdict"] == "identical"
        shown = ok(offline("inspect", imported, env=env)).stdout
        assert f"carried ({base['archive']}" in shown and "Debian bookworm, packages of" in shown

        if engine == "docker":  # what is missing, said in one line (the base is not loaded yet)
            host = env["DOCKER_HOST"]
            for case in ("file", "listing", "record", "tags"):
                bare = tmp_path / case
                shutil.copytree(imported, bare)
                data = manifest(bare)
                if case == "file":
                    (bare / base["archive"]).unlink()
                    one_line(offline("build", bare, "--check", env=env), 3, base["archive"])
                elif case == "listing":
                    del data["artifacts"][base["archive"]]
                    _rewrite_manifest(bare, data)
                    listing = offline("build", bare, "--check", env=env)
                    one_line(listing, 3, base["archive"], "is not listed")
                elif case == "record":  # an image recorded before bases were carried
                    del data["images"]["cpu"]["base"], data["artifacts"][base["archive"]]
                    _rewrite_manifest(bare, data)
                    old = offline("build", bare, "--check", env=env)
                    one_line(old, 4, "images.cpu.base", recorded["base_image"], "does not carry")
                else:
                    _forged(bare, base["archive"], ["victim:latest"])
                    forged = offline("build", bare, "--check", env=env)
                    one_line(forged, 3, base["archive"], "names tags")
                    assert "victim" not in docker("-H", host, "images")
            assert base["image_id"] not in images(engine, engine_env)  # nothing was loaded
            # a name in the engine that the capsule's base once had: left where it points
            docker("-H", host, "tag", recorded["image_id"], recorded["base_image"])

        check = offline("build", imported, "--check", "--engine", engine, "--json", env=env)
        result = json.loads(ok(check).stdout)
        assert result["matches"] and result["rebuilt_id"] == recorded["image_id"]
        assert f"base: loading {base['image_id'][:19]}" in check.stderr
        if engine == "docker":
            found = docker("-H", host, "inspect", "--format", "{{.Id}}", recorded["base_image"])
            assert found.strip() == recorded["image_id"]  # not moved to the loaded base


def test_an_image_recorded_before_bases_were_carried_gets_its_base_and_keeps_its_id(
    small_image: Path, tmp_path: Path
) -> None:
    """A record as Capsule wrote it before (no `base`, built FROM the base's name): `build`
    builds again on that base (the engine has it), stores it, and the image ID is the same."""
    from builder.engines.recipe import render_dockerfile

    copy = tmp_path / "c"
    shutil.copytree(small_image, copy)
    data = manifest(copy)
    image = data["images"]["cpu"]
    base = image.pop("base")
    del data["artifacts"][base["archive"]]
    (copy / base["archive"]).unlink()
    pip = next(w for w in image["wheels"] if w.startswith("pip-"))
    before = render_dockerfile(False, image["base_image"], pip).encode()
    image["dockerfile_sha256"] = hashlib.sha256(before).hexdigest()
    _rewrite_manifest(copy, data)
    assert "not carried" in ok(capsule("inspect", copy)).stdout
    ok(capsule("build", copy))
    again = manifest(copy)["images"]["cpu"]
    assert again["image_id"] == image["image_id"] and again["base"] == base
    assert (copy / base["archive"]).is_file()


def test_audit_in_docker_builds_an_image_of_its_own_and_removes_it(
    small_image: Path, tmp_path: Path
) -> None:
    """Issue 7: numpy one release back, swapped into a wheelhouse of its own and replayed in
    an image built from it; the capsule's own image stays, the audit's is gone afterwards."""
    copy = tmp_path / "c"
    shutil.copytree(small_image, copy)
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


# ---------------------------------------------------------------- GPU requests without a GPU


def test_gpu_request_without_nvidia_runtime_exits_4_and_leaves_no_container(
    torch_image: Path, tmp_path: Path
) -> None:
    before = containers()
    result = capsule(
        "replay", torch_image, "--on", "docker", "--device", "cuda", "--out", tmp_path / "r"
    )
    assert result.returncode == 4, result.stderr
    assert "NVIDIA" in result.stderr or "cuda image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert containers() == before
    assert not (tmp_path / "r").exists()


def test_gpu_request_on_the_cpu_image_reaches_the_engine(torch_image: Path, tmp_path: Path) -> None:
    """Point the cuda variant at the CPU image, so the engine itself must refuse the GPU."""
    copy = tmp_path / "c"
    shutil.copytree(torch_image, copy)
    data = manifest(copy)
    data["images"]["cuda"] = data["images"]["cpu"]
    _rewrite_manifest(copy, data)
    before = containers()
    result = capsule("replay", copy, "--on", "docker", "--device", "cuda", "--out", tmp_path / "r")
    assert result.returncode == 4, result.stderr
    assert "NVIDIA runtime" in result.stderr
    assert containers() == before
    assert not (tmp_path / "r").exists()


def _rewrite_manifest(path: Path, data: dict) -> None:  # type: ignore[type-arg]
    import hashlib

    text = json.dumps(data, indent=2).encode() + b"\n"
    (path / "manifest.json").write_bytes(text)
    (path / "manifest.sha256").write_text(f"{hashlib.sha256(text).hexdigest()}  manifest.json\n")


# ---------------------------------------------------------------- the matrix's docker column


def test_matrix_with_a_docker_column_agrees_with_the_baseline(
    torch_image: Path, tmp_path: Path
) -> None:
    """Issue 7: cpu:1, cpu:2 and docker:cpu, each trained model evaluated everywhere; the
    docker cell is a training in the image, so it must give the baseline's own numbers."""
    out = tmp_path / "matrix"
    result = json.loads(
        ok(
            capsule(
                "matrix", torch_image, "--devices", "cpu:1,cpu:2,docker:cpu", "--out", out, "--json"
            )
        ).stdout
    )
    assert len(result["cells"]) == 9
    final = manifest(torch_image)["outcome"]["final"]
    for cell in result["cells"]:
        assert (cell["train_error"], cell["eval_error"]) == (
            final["train_error"],
            final["eval_error"],
        ), cell
    identical = {r["trained_on"]: r["weights_identical_to_baseline"] for r in result["rows"]}
    assert identical == {"cpu:1": True, "cpu:2": True, "docker:cpu": True}


def test_a_tensorflow_cuda_wheelhouse_asks_for_tensorflow_and_cuda(tmp_path: Path) -> None:
    """`build --gpu` of a TensorFlow capsule (its CPU pins hold tensorflow-cpu) asks pip for
    tensorflow[and-cuda]; with no index to ask, one line and exit 2, nothing left behind."""
    ok(capsule("freeze", CAPSULES / "paper-2d-tensorflow", "--out", tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path / "empty"),
    }
    result = subprocess.run(
        [str(CAPSULE_BIN), "build", tmp_path / "c", "--gpu"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "tensorflow[and-cuda]==2.21.0" in result.stderr
    assert "pip download failed" in result.stderr and "Traceback" not in result.stderr
    assert not [p for p in (tmp_path / "c").iterdir() if "wheelhouse" in p.name]


# ---------------------------------------------------------------- Podman beside Docker


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def podman_image(small_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The small capsule built again with --engine podman, from the same base image: the one
    the capsule carries (Docker's local base, loaded into Podman if it lacks it, same ID)."""
    copy = tmp_path_factory.mktemp("podman") / "c"
    shutil.copytree(small_image, copy)
    ok(capsule("build", copy, "--engine", "podman"))
    yield copy
    subprocess.run(["podman", "rmi", "-f", manifest(copy)["images"]["cpu"]["image_id"]])


def test_podman_builds_the_same_image_id_as_docker(small_image: Path, podman_image: Path) -> None:
    """Capsule writes the capsule's layer and config itself, so the engines' differing tar
    writers (Podman leaves out owner names) do not reach the image ID."""
    docker_built = manifest(small_image)["images"]["cpu"]
    podman_built = manifest(podman_image)["images"]["cpu"]
    assert podman_built["engine"] == "podman" and docker_built["engine"] == "docker"
    assert podman_built["image_id"] == docker_built["image_id"]
    assert podman("image", "inspect", podman_built["image_id"], "--format", "{{.Id}}").strip() == (
        docker_built["image_id"].removeprefix("sha256:")
    )
    assert not podman("images", "-q", "--filter", "dangling=true").split()  # stages removed


def test_podman_replay_is_identical_to_the_host_baseline(
    podman_image: Path, tmp_path: Path
) -> None:
    before = set(podman("ps", "-aq").split())
    ok(capsule("replay", podman_image, "--on", "podman", "--out", tmp_path / "r"))
    assert set(podman("ps", "-aq").split()) == before
    record = json.loads((tmp_path / "r" / "replay.json").read_text())
    assert record["on"] == "podman"
    assert record["image_id"] == manifest(podman_image)["images"]["cpu"]["image_id"]
    ok(capsule("diff", podman_image, tmp_path / "r", "--require", "identical"))


PROBE = """
import errno, json, os, resource
def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "allowed"
    except OSError as error:
        return errno.errorcode[error.errno]
mounts = {line.split()[1]: line.split() for line in open("/proc/self/mounts")}
def userns():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: caps inside a user namespace
        return "allowed"
    return errno.errorcode[ctypes.get_errno()]
print(json.dumps({
    "uid": os.getuid(),
    "cap_eff": int(status["CapEff"].strip(), 16),
    "no_new_privs": int(status["NoNewPrivs"].strip()),
    "interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]),
    "pids_max": read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory_max": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
    "capsule_write": write("/capsule/probe"),
    "root_write": write("/probe"),
    "opt_write": write("/opt/capsule/probe"),
    "tmp_write": write("/tmp/probe"),
    "tmp_fs": mounts["/tmp"][2],
    "tmp_mode": oct(os.stat("/tmp").st_mode & 0o7777),
    "tmp_noexec": "noexec" in mounts["/tmp"][3].split(","),
    "userns": userns(),
}))
"""


def test_the_confinement_is_the_same_on_every_engine(
    podman_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe in the running container (the replay's own path: Engine.run under CONFINEMENT)
    reports what it may do: no network, not root, no capabilities, no new privileges, bounded
    processes, memory and open files, the capsule and the root file system read-only, /tmp a
    private tmpfs — the same under Docker, Podman and runc (the daemonless engine)."""
    from builder.engines import CONFINEMENT, Job, Mount, open_engine

    monkeypatch.setenv("CAPSULE_OCI_STORE", str(tmp_path / "oci-store"))
    image_id = manifest(podman_image)["images"]["cpu"]["image_id"]
    open_engine("oci").load(open_engine("docker").save(image_id))
    job = Job(["/opt/capsule/venv/bin/python", "-c", PROBE], [Mount(podman_image, "/capsule")])
    seen = {}
    for name in ("docker", "podman", "oci"):
        code, last = open_engine(name).run(image_id, job, lambda line: None)
        assert code == 0, last
        seen[name] = json.loads(last)
    assert seen["docker"] == seen["oci"], seen
    podman_seen = {k: v for k, v in seen["podman"].items() if k != "userns"}
    assert podman_seen == {k: v for k, v in seen["docker"].items() if k != "userns"}, seen
    probe = seen["docker"]
    assert probe["uid"] == 65534 and probe["cap_eff"] == 0 and probe["no_new_privs"] == 1
    assert probe["interfaces"] == ["lo"]
    assert probe["pids_max"] == str(CONFINEMENT.pids)
    assert int(probe["memory_max"]) == CONFINEMENT.memory_bytes() // 4096 * 4096
    assert probe["nofile"] == [CONFINEMENT.open_files] * 2
    assert probe["nproc"] == [CONFINEMENT.processes] * 2
    assert probe["capsule_write"] == probe["root_write"] == probe["opt_write"] == "EROFS"
    assert probe["tmp_write"] == "allowed" and probe["tmp_fs"] == "tmpfs"
    assert probe["tmp_mode"] == "0o1777"
    assert probe["tmp_noexec"] is False  # stated (`exec`): Docker's and Podman's defaults differ
    assert probe["userns"] == "EPERM"  # Docker's default seccomp profile, and the OCI engine's
    gpu = Job(job.argv, job.mounts, gpu=True)
    with pytest.raises(EngineMissing, match="CDI"):
        open_engine("podman").run(image_id, gpu, lambda line: None)
    runs = tmp_path / "oci-store" / "runs"
    with pytest.raises(EngineMissing, match="NVIDIA container toolkit"):  # none on this host
        open_engine("oci").run(image_id, gpu, lambda line: None)
    assert list(runs.iterdir()) == []  # nothing left behind
    assert "capsule-" not in subprocess.run(["runc", "list"], capture_output=True, text=True).stdout


def test_container_limits_are_overridable_and_bad_values_refused(
    podman_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CAPSULE_CONTAINER_MEMORY / _PIDS set the limits a running container gets (both
    engines); a value that is not one is refused before any container starts (exit 2)."""
    from builder.engines import Job, Mount, open_engine

    image_id = manifest(podman_image)["images"]["cpu"]["image_id"]
    job = Job(["/opt/capsule/venv/bin/python", "-c", PROBE], [Mount(podman_image, "/capsule")])
    monkeypatch.setenv("CAPSULE_CONTAINER_MEMORY", "512m")
    monkeypatch.setenv("CAPSULE_CONTAINER_PIDS", "128")
    for name in ("docker", "podman"):
        code, last = open_engine(name).run(image_id, job, lambda line: None)
        assert code == 0, last
        probe = json.loads(last)
        assert (probe["memory_max"], probe["pids_max"]) == (str(512 << 20), "128"), name
    before = set(podman("ps", "-aq").split())
    for variable, value in (("CAPSULE_CONTAINER_MEMORY", "lots"), ("CAPSULE_CONTAINER_PIDS", "0")):
        monkeypatch.setenv(variable, value)
        result = capsule("replay", podman_image, "--on", "podman", "--out", tmp_path / "r")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and variable in result.stderr
        assert not (tmp_path / "r").exists()
        monkeypatch.delenv(variable)
    assert set(podman("ps", "-aq").split()) == before


def test_podman_export_and_import_keep_the_image_id(podman_image: Path, tmp_path: Path) -> None:
    export = tmp_path / "small.capsule.tar"
    ok(capsule("export", podman_image, "--out", export, "--with-image", "--engine", "podman"))
    image_id = manifest(podman_image)["images"]["cpu"]["image_id"]
    podman("rmi", "-f", image_id)
    missing = capsule("replay", podman_image, "--on", "podman", "--out", tmp_path / "x")
    assert missing.returncode == 4 and "not in the Podman service" in missing.stderr
    result = json.loads(
        ok(
            capsule("import", export, "--out", tmp_path / "i", "--engine", "podman", "--json")
        ).stdout
    )
    assert result["images"]["cpu"] == image_id
    assert podman("image", "inspect", image_id, "--format", "{{.Id}}").strip() in image_id


def test_a_sweep_on_podman_runs_in_containers_and_gives_the_hosts_numbers(
    podman_image: Path, tmp_path: Path
) -> None:
    """`sweep --on podman --jobs 2`: two containers of the capsule's image share the runs; the
    runs are the ones a host sweep of the same seeds gives, bit for bit."""
    in_image, on_host = tmp_path / "image", tmp_path / "host"
    shutil.copytree(podman_image, in_image)
    shutil.copytree(podman_image, on_host)
    before = set(podman("ps", "-aq").split())
    sweep = ["sweep", "--seeds", "3", "--jobs", "2", "--json"]
    found = json.loads(ok(capsule(*sweep[:1], in_image, *sweep[1:], "--on", "podman")).stdout)
    assert found["ran"] == 3 and not found["failures"]
    assert set(podman("ps", "-aq").split()) == before
    here = json.loads(ok(capsule(*sweep[:1], on_host, *sweep[1:])).stdout)
    digests = {(r["init"], r["final"]["test_error"], r["weights_sha256"]) for r in here["runs"]}
    assert {(r["init"], r["final"]["test_error"], r["weights_sha256"]) for r in found["runs"]} == (
        digests
    )
    ok(capsule("verify", in_image))
    assert {(r["on"], r["node"]) for r in found["runs"]} == {("podman", socket.gethostname())}
    assert {r["on"] for r in here["runs"]} == {"host"}


@pytest.mark.slurm
def test_a_slurm_sweep_runs_each_task_in_the_image_without_a_daemon(
    small_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep --executor slurm --on oci`: each Slurm task runs its share in a container of the
    capsule's image with runc (no daemon reachable); the runs equal a host sweep of the same
    four seeds bit for bit, and each records where it ran."""
    from builder.engines import open_engine

    store = tmp_path / "oci-store"
    monkeypatch.setenv("CAPSULE_OCI_STORE", str(store))
    image_id = manifest(small_image)["images"]["cpu"]["image_id"]
    open_engine("oci").load(open_engine("docker").save(image_id))
    in_image, on_host = tmp_path / "image", tmp_path / "host"
    shutil.copytree(small_image, in_image)
    shutil.copytree(small_image, on_host)
    node = {
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "CAPSULE_PODMAN_HOST": "unix:///nonexistent/podman.sock",
        "CAPSULE_OCI_STORE": str(store),
    }
    sweep = ["--seeds", "4", "--jobs", "2", "--json"]
    on_slurm = capsule("sweep", in_image, *sweep, "--executor", "slurm", "--on", "oci", env=node)
    found = json.loads(ok(on_slurm).stdout)
    assert found["ran"] == 4 and not found["failures"]
    here = json.loads(ok(capsule("sweep", on_host, *sweep)).stdout)
    key = ("init", "order", "final", "weights_sha256")
    assert [{k: r[k] for k in key} for r in found["runs"]] == [
        {k: r[k] for k in key} for r in here["runs"]
    ]
    stored = json.loads((in_image / manifest(in_image)["artifacts"]["sweep"]["path"]).read_text())
    assert {(r["on"], r["node"]) for r in stored["runs"]} == {("oci", socket.gethostname())}
    assert list((store / "runs").iterdir()) == []
    ok(capsule("verify", in_image))
    shutil.rmtree(store)


# ---------------------------------------------------------------- export --format oci (issue 16)


def test_export_oci_is_an_oci_archive_of_the_recorded_image_with_the_capsule_inside(
    small_image: Path, tmp_path: Path
) -> None:
    """skopeo reads it without a daemon, umoci unpacks its layout into a rootfs holding the
    capsule's venv, the config blob hashes to the recorded image ID, and the capsule's own
    files travel in the same tar (`capsule/…`)."""
    import tarfile

    from builder.engines.layout import config_digest

    image_id = manifest(small_image)["images"]["cpu"]["image_id"]
    export = tmp_path / "small.oci.tar"
    ok(capsule("export", small_image, "--format", "oci", "--out", export))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci-archive:{export}:cpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert inspected["rootfs"]["type"] == "layers"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--config", f"oci-archive:{export}:cpu"],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image_id
    layout = tmp_path / "layout"
    with tarfile.open(export) as tar:
        names = tar.getnames()
        tar.extractall(layout, filter="data")
    assert {"oci-layout", "index.json", "capsule/manifest.json"} <= set(names)
    assert (layout / "capsule" / "manifest.json").read_bytes() == (
        small_image / "manifest.json"
    ).read_bytes()
    assert config_digest(layout, "cpu") == image_id
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:cpu", str(bundle)],
        capture_output=True,
        check=True,
    )
    assert (bundle / "rootfs" / "opt" / "capsule" / "venv" / "bin" / "capsule").exists()


def test_podman_loads_the_oci_export_with_the_recorded_image_id(
    small_image: Path, tmp_path: Path
) -> None:
    image_id = manifest(small_image)["images"]["cpu"]["image_id"]
    export = tmp_path / "small.oci.tar"
    ok(capsule("export", small_image, "--format", "oci", "--out", export))
    had = subprocess.run(["podman", "image", "exists", image_id]).returncode == 0
    try:
        podman("load", "-i", str(export))
        assert podman("image", "inspect", image_id, "--format", "{{.Id}}").strip() == (
            image_id.removeprefix("sha256:")
        )
    finally:
        if not had:
            subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True)


def test_export_oci_refuses_a_capsule_without_an_image_and_needs_skopeo(
    frozen_small: Path, small_image: Path, tmp_path: Path
) -> None:
    result = capsule("export", frozen_small, "--format", "oci", "--out", tmp_path / "x.tar")
    assert_refused(result, "images: none recorded", "capsule build")
    assert not (tmp_path / "x.tar").exists()
    (tmp_path / "there.tar").write_bytes(b"keep")
    result = capsule("export", small_image, "--format", "oci", "--out", tmp_path / "there.tar")
    assert_refused(result, "already exists", "--force")
    assert (tmp_path / "there.tar").read_bytes() == b"keep"
    (tmp_path / "there.tar").unlink()
    y = tmp_path / "y.tar"
    no_skopeo = subprocess.run(
        [str(CAPSULE_BIN), "export", str(small_image), "--format", "oci", "--out", str(y)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(CAPSULE_BIN.parent)},
    )
    assert no_skopeo.returncode == 4, no_skopeo.stderr
    assert len(no_skopeo.stderr.strip().splitlines()) == 1
    assert "scripts/oci-up.sh" in no_skopeo.stderr
    assert not list(tmp_path.iterdir())


def test_the_oci_export_from_podman_holds_the_same_image_blobs_as_from_docker(
    small_image: Path, podman_image: Path, tmp_path: Path
) -> None:
    """The same image ID on both engines, so the same layout: every blob and index.json are
    byte for byte the same whichever engine saved the image (only capsule/… differs: the
    manifest records the engine)."""
    import tarfile

    def layout(export: Path) -> dict[str, str]:
        with tarfile.open(export) as tar:
            return {
                m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and not m.name.startswith("capsule/")
            }

    from_docker, from_podman = tmp_path / "d.oci.tar", tmp_path / "p.oci.tar"
    ok(capsule("export", small_image, "--format", "oci", "--out", from_docker))
    ok(
        capsule(
            "export", podman_image, "--format", "oci", "--engine", "podman", "--out", from_podman
        )
    )
    assert layout(from_docker) == layout(from_podman)


# ---------------------------------------------------------------- the example scripts' images


@pytest.mark.docker
@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_replays_identically_in_its_image(
    name: str, tmp_path: Path, cleanup_images: list[Path]
) -> None:
    """Built, the image carries the freeze time as its creation date, its framework's wheels
    (TensorFlow's CPU build alone for Keras) and the build leaves no image of its own behind;
    the replay in it (read-only root) is identical, outputs too — and for the TensorFlow one
    also from its OCI export with runc, no daemon reachable (PyTorch's: the torch_image test).
    These are the suite's TensorFlow and second PyTorch image (one build each)."""
    folder = small_copy(name, tmp_path)
    cap = tmp_path / "cap"
    ok(capsule("freeze", folder, "--out", cap))
    cleanup_images.append(cap)
    ok(capsule("build", cap))
    manifest = json.loads((cap / "manifest.json").read_text())
    image = manifest["images"]["cpu"]
    label = f"label=org.capsule.digest={image['capsule_digest']}"
    ours = set(docker("images", "-aq", "--no-trunc", "--filter", label).split())
    assert ours == {image["image_id"]}, ours  # the build's raw image is gone
    created = docker("inspect", image["image_id"], "--format", "{{.Created}}").strip()
    frozen = datetime.fromisoformat(manifest["created"])
    assert datetime.fromisoformat(created.replace("Z", "+00:00")) == frozen, created
    ok(capsule("replay", cap, "--on", "docker", "--out", tmp_path / "replay"))
    result = json.loads(capsule("diff", cap, tmp_path / "replay", "--json").stdout)
    assert result["verdict"] == "identical", result["reasons"]
    replayed = json.loads((tmp_path / "replay/replay.json").read_text())
    outputs = {n for n in manifest["artifacts"] if n.startswith("outputs/")}
    assert outputs == {n for n in replayed["artifacts"] if n.startswith("outputs/")}
    names = wheels(cap)
    if manifest["spec"]["framework"] == "tensorflow":
        assert any(w.startswith("wheelhouse/tensorflow_cpu-2.21.0") for w in names)
        assert not any(w.startswith("wheelhouse/torch-") for w in names)
        replay_on_oci_is_identical(cap, tmp_path / "node")
    else:
        assert any(w.startswith("wheelhouse/torch-2.13.0") for w in names)


# ---------------------------------------------------------------- build provenance, end to end


@pytest.mark.docker
def test_a_build_stores_a_statement_whose_subject_is_the_recorded_image(
    small_image: Path, tmp_path: Path
) -> None:
    manifest = json.loads((small_image / "manifest.json").read_text())
    image = manifest["images"]["cpu"]
    ref = manifest["artifacts"]["provenance/cpu"]
    statement = json.loads((small_image / ref["path"]).read_text())
    assert statement["subject"][0]["name"] == image["tag"]
    assert "sha256:" + statement["subject"][0]["digest"]["sha256"] == image["image_id"]
    deps = {
        d["name"]: d["digest"]["sha256"]
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    assert deps[image["base_image"]] == image["base_id"].removeprefix("sha256:")
    for wheel in image["wheels"]:
        assert deps[f"wheelhouse/{wheel}"] == manifest["artifacts"][f"wheelhouse/{wheel}"]["sha256"]
    metadata = statement["predicate"]["runDetails"]["metadata"]
    assert metadata["startedOn"] <= metadata["finishedOn"] == image["built"]
    # the statement is a study: the image's label still names the capsule's digest
    labels = json.loads(
        subprocess.run(
            ["docker", "inspect", image["image_id"], "--format", "{{json .Config.Labels}}"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert labels["org.capsule.digest"] == image["capsule_digest"]
    assert capsule_digest(load_manifest(small_image)) == image["capsule_digest"]
    ok(capsule("verify", small_image))
    ok(capsule("export", small_image, "--format", "ro-crate", "--out", tmp_path / "c.zip"))
    crate = ROCrate(tmp_path / "c.zip")
    assert crate.get("#image-cpu")["identifier"] == image["image_id"]
    assert crate.get("#image-cpu")["subjectOf"].id == ref["path"]
