"""The capsule's wheelhouse: every distribution a run imports, pinned to the versions the
capsule's fingerprint recorded, downloaded as wheels once and then stored in the capsule, so
every later build (on any engine) installs the very same files, offline."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder.engines.recipe import ROOT, SOURCE_DATE_EPOCH
from builder.errors import BadInput
from builder.observer import Log

TOOL_DISTRIBUTION = "capsule-builder"
WHEELHOUSE_DIR = {"cpu": "wheelhouse", "cuda": "wheelhouse-cuda"}  # folder in the capsule
# Capsule's dependencies that only the host's commands use (sign, verify --key, export
# --format ro-crate, report, build's base archive): an image replays and verifies without them,
# so neither they nor what only they require enter its wheelhouse (Capsule is installed there
# with --no-deps). One that the framework requires too (PyTorch requires jinja2) stays, as the
# framework's.
HOST_ONLY = frozenset(
    {"model-signing", "pyopenssl", "rocrate", "matplotlib", "jinja2", "zstandard"}
)


def requirement_closure(
    root: str, extras: set[str], skip: frozenset[str] = frozenset()
) -> list[str]:
    """Canonical names of `root` and everything it requires (with `extras`), from installed
    metadata: the distributions a run of this Capsule imports. `root`'s own requirements named
    in `skip` are not followed; reached through another distribution, they are."""
    root_key = str(canonicalize_name(root))
    seen: dict[str, None] = {}
    pending: list[tuple[str, set[str]]] = [(root, extras)]
    while pending:
        name, wanted = pending.pop()
        key = str(canonicalize_name(name))
        if key in seen and not wanted:
            continue
        seen[key] = None
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            raise BadInput(f"wheelhouse: '{name}' is required but not installed here") from None
        for text in requires:
            req = Requirement(text)
            env_extras = wanted or {""}
            applies = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in env_extras
            )
            child = str(canonicalize_name(req.name))
            if key == root_key and child in skip:
                continue
            if applies and child not in seen:
                pending.append((req.name, set(req.extras)))
    return sorted(seen)


def pinned_distributions(
    distributions: dict[str, str], framework: str, log: Log, requires: list[str] | None = None
) -> dict[str, str]:
    """name → version for the wheelhouse: the requirement closure of Capsule with its framework
    and of what the user's code `requires`, versions from the fingerprint.

    A distribution the fingerprint lacks (a dependency Capsule gained after the freeze) is
    taken at the version installed here, and said so."""
    names = [*requirement_closure(TOOL_DISTRIBUTION, {framework}, HOST_ONLY), "pip"]
    for extra in requires or []:
        names += [n for n in requirement_closure(extra, set()) if n not in names]
    from builder.frameworks import FRAMEWORKS

    framework_dist = FRAMEWORKS[framework].cpu_distribution
    if framework_dist not in names:
        raise BadInput(
            f"wheelhouse: Capsule's installed metadata has no '{framework}' extra; reinstall it "
            f"(pip install -e '.[{framework}]') before building"
        )
    pins = {}
    for name in names:
        if name == TOOL_DISTRIBUTION:
            continue
        if name in distributions:
            pins[name] = distributions[name]
        else:
            pins[name] = importlib.metadata.version(name)
            log(f"wheelhouse: {name} is not in the capsule's fingerprint; using {pins[name]} here")
    return pins


def download_wheels(pins: dict[str, str], into: Path, log: Log, with_deps: bool = False) -> None:
    """pip download each pinned distribution as a wheel. Without `with_deps` the pins are the
    whole set; with it (the CUDA variant) pip adds what the framework's CUDA build requires."""
    requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
    log(f"wheelhouse: downloading {len(requirements)} pinned wheels")
    deps = [] if with_deps else ["--no-deps"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        *deps,
        "--only-binary=:all:",
        "--dest",
        str(into),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [""]
        raise BadInput(f"wheelhouse: pip download failed: {last[-1] or result.stderr[-300:]}")


SOURCE_FILES = (
    "pyproject.toml",
    "README.md",
)  # beside the package: what the wheel's metadata reads


def build_tool_wheel(into: Path, log: Log) -> None:
    """Capsule's own wheel, built reproducibly (SOURCE_DATE_EPOCH fixes its zip timestamps)
    from a clean copy of the source: setuptools would otherwise reuse a `build/` directory in
    the checkout, carrying modules that no longer exist into the wheel (and the image)."""
    if not (ROOT / "pyproject.toml").is_file():
        raise BadInput(f"{ROOT}: Capsule's source is not here, so its wheel cannot be built")
    log("wheelhouse: building Capsule's own wheel")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    with tempfile.TemporaryDirectory(prefix="capsule-source-") as tmp:
        source = Path(tmp)
        for name in SOURCE_FILES:
            shutil.copy2(ROOT / name, source / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "builder", source / "builder", ignore=ignore)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
        command += ["--wheel-dir", str(into), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise BadInput(f"wheelhouse: building Capsule's wheel failed: {result.stderr[-300:]}")
