"""Engines of a test's own, empty and offline: "a machine years later" for the rebuild test.

Each is a real engine (a second dockerd, a second Podman service) with its own storage under a
short temporary directory (socket paths are limited to 108 bytes): no image, no build cache.
It is started inside a network namespace with no interfaces (`unshare -n`), like the commands
the test runs against it (`offline`), so nothing in the test can reach a network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import CAPSULE_BIN


def offline(
    *args: object, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """The capsule CLI in a network namespace with no interfaces, with `env` set."""
    return subprocess.run(
        ["unshare", "-n", str(CAPSULE_BIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def no_caches(home: Path) -> dict[str, str]:
    """An empty home and cache for the CLI and pip, and pip told there is no index."""
    home.mkdir()
    return {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
    }


def _started(argv: list[str], answers: list[str], root: Path) -> subprocess.Popen[bytes]:
    """The daemon, once it answers; on failure it is stopped and its directory removed."""
    log = root / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(["unshare", "-n", *argv], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            if subprocess.run(answers, capture_output=True, timeout=10).returncode == 0:
                return process
            if process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"{argv[0]} did not answer: {log.read_text()[-600:]}")
    except BaseException:
        _stopped(process)
        shutil.rmtree(root, ignore_errors=True)
        raise


def _stopped(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def empty_docker() -> Iterator[dict[str, str]]:
    """A dockerd of its own (its own configuration, containerd namespace, data and exec
    roots); yields the environment that points the CLI at it."""
    root = Path(tempfile.mkdtemp(prefix="cap-dk-", dir="/tmp"))
    (root / "daemon.json").write_text("{}")
    socket = f"unix://{root}/docker.sock"
    argv = [
        "dockerd", "--config-file", f"{root}/daemon.json", "--data-root", f"{root}/data",
        "--exec-root", f"{root}/x", "--pidfile", f"{root}/pid", "-H", socket,
        "--containerd-namespace", "capsule-test", "--containerd-plugins-namespace",
        "capsule-test-plugins", "--bridge=none", "--iptables=false", "--ip6tables=false",
    ]  # fmt: skip
    process = _started(argv, ["docker", "-H", socket, "info"], root)
    try:
        yield {"DOCKER_HOST": socket}
    finally:
        subprocess.run(["docker", "-H", socket, "system", "prune", "-af"], capture_output=True)
        _stopped(process)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def empty_podman() -> Iterator[dict[str, str]]:
    """A Podman service of its own (its own storage and run directories); yields the
    environment that points the CLI at it."""
    root = Path(tempfile.mkdtemp(prefix="cap-pm-", dir="/tmp"))
    storage = ["--root", f"{root}/data", "--runroot", f"{root}/run", "--tmpdir", f"{root}/tmp"]
    socket = f"unix://{root}/podman.sock"
    argv = ["podman", *storage, "system", "service", "--time=0", socket]
    process = _started(argv, ["podman", "--remote", "--url", socket, "version"], root)
    try:
        yield {"CAPSULE_PODMAN_HOST": socket}
    finally:
        _stopped(process)
        # not `system reset`: it also removes the host's networks and caches
        subprocess.run(["podman", *storage, "rmi", "-af"], capture_output=True)
        subprocess.run(["umount", "-R", f"{root}/data/overlay"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def images(engine: str, env: dict[str, str]) -> list[str]:
    """The IDs of every image in the engine `env` points at."""
    if engine == "docker":
        argv = ["docker", "-H", env["DOCKER_HOST"], "images", "-aq", "--no-trunc"]
    else:
        argv = ["podman", "--remote", "--url", env["CAPSULE_PODMAN_HOST"], "images", "-aq"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
