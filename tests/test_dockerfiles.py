"""Dockerfile templates and the pieces of a build that need no engine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from builder.engines.recipe import (
    SOURCE_DATE_EPOCH,
    build_context,
    canonical_layer,
    deterministic_tar,
    render_dockerfile,
)
from builder.engines.wheelhouse import HOST_ONLY, requirement_closure


def test_cuda_template_asks_for_the_nvidia_runtime() -> None:
    text = render_dockerfile(True, "capsule-base:x", "pip-23.2.1-py3-none-any.whl")
    assert "FROM capsule-base:x" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in text
    assert "--no-index" in text and "{" not in text.replace("{}", "")


def test_cpu_template_installs_offline_and_resets_time_stamps() -> None:
    text = render_dockerfile(False, "base:1", "pip-23.2.1-py3-none-any.whl")
    assert "NVIDIA" not in text
    assert f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}" in text
    assert f"touch -h -d @{SOURCE_DATE_EPOCH}" in text
    assert "unchecked-hash" in text


def test_context_tar_is_byte_identical_and_normalised(tmp_path: Path) -> None:
    wheel = tmp_path / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    one = build_context("FROM x\n", {wheel.name: wheel})
    wheel.touch()  # a new mtime on disk must not change the context
    assert build_context("FROM x\n", {wheel.name: wheel}) == one
    with tarfile.open(fileobj=io.BytesIO(one)) as outer:
        data = outer.extractfile("wheelhouse.tar").read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
        members = inner.getmembers()
    assert [m.name for m in members][:3] == ["opt", "opt/capsule", "opt/capsule/wheelhouse"]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(SOURCE_DATE_EPOCH, 0, 0)}


def test_deterministic_tar_sorts_names() -> None:
    out = io.BytesIO()
    deterministic_tar({"b/2": b"2", "a/1": b"1"}, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == ["a", "b", "a/1", "b/2"]


def test_wheelhouse_closure_holds_the_framework_and_no_dev_tools() -> None:
    names = requirement_closure("capsule-builder", {"torch"})
    assert {"torch", "numpy", "pydantic", "safetensors", "typer"} <= set(names)
    assert not {"pytest", "ruff", "hypothesis"} & set(names)


def test_host_only_dependencies_stay_out_of_the_image_wheelhouse() -> None:
    """sign / verify --key / ro-crate / report run on the host: their libraries (and what only
    they require: sigstore, cryptography, pillow, …) are not installed into images; one the
    framework requires too (PyTorch requires jinja2) stays, as the framework's."""
    everything = set(requirement_closure("capsule-builder", {"torch"}))
    pinned = set(requirement_closure("capsule-builder", {"torch"}, HOST_ONLY))
    assert everything >= HOST_ONLY and HOST_ONLY & pinned == {"jinja2"}
    assert {"sigstore", "cryptography", "matplotlib", "pillow"} <= everything - pinned
    assert {"torch", "numpy", "pydantic", "typer", "jinja2", "markupsafe"} <= pinned
    numpy_only = set(requirement_closure("capsule-builder", {"numpy"}, HOST_ONLY))
    assert not HOST_ONLY & numpy_only and "markupsafe" not in numpy_only


def _engine_archive(path: Path, owner_names: bool, order: list[str]) -> None:
    """An archive of /opt/capsule as one engine might write it (order, owners, times vary)."""
    link = "/usr/bin/python3"
    files = {"capsule/": None, "capsule/venv/": None, "capsule/venv/a.py": b"a = 1\n",
             "capsule/venv/b.py": b"b = 2\n", "capsule/venv/python": link}  # fmt: skip
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in order:
            info = tarfile.TarInfo(name)
            info.mtime = SOURCE_DATE_EPOCH + (0 if owner_names else 12345)
            info.uname = info.gname = "root" if owner_names else ""
            content = files[name]
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))


def test_the_capsule_layer_does_not_depend_on_the_engines_tar_writer(tmp_path: Path) -> None:
    """Same files, archived with and without owner names, in two orders, at other times: one
    layer digest, entries under opt/ in walk order with owner root and the fixed time."""
    names = ["capsule/", "capsule/venv/", "capsule/venv/a.py", "capsule/venv/b.py",
             "capsule/venv/python"]  # fmt: skip
    digests, layers = [], []
    for i, (owners, order) in enumerate([(True, names), (False, names[::-1])]):
        _engine_archive(tmp_path / f"engine{i}.tar", owners, order)
        (tmp_path / str(i)).mkdir()
        with (tmp_path / f"engine{i}.tar").open("rb") as f:
            layer, digest = canonical_layer(iter(lambda: f.read(4096), b""), tmp_path / str(i))
        digests.append(digest)
        layers.append(layer.read_bytes())
    assert digests[0] == digests[1] and layers[0] == layers[1]
    with tarfile.open(fileobj=io.BytesIO(layers[0])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["opt", *(f"opt/{n.rstrip('/')}" for n in names)]
    assert {(m.uname, m.uid, m.mtime) for m in members} == {("root", 0, SOURCE_DATE_EPOCH)}
    assert members[-1].issym() and members[-1].linkname == "/usr/bin/python3"


def test_a_hard_link_becomes_its_own_copy_in_the_capsule_layer(tmp_path: Path) -> None:
    """Sorted anew, a hard link could come before the file it names; written as a regular
    file with its target's bytes, no entry depends on the engine's order."""
    archive = tmp_path / "engine.tar"
    with tarfile.open(archive, "w") as tar:
        directory = tarfile.TarInfo("capsule")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        target = tarfile.TarInfo("capsule/z.py")
        target.size = 3
        tar.addfile(target, io.BytesIO(b"z=1"))
        link = tarfile.TarInfo("capsule/a.py")
        link.type, link.linkname = tarfile.LNKTYPE, "capsule/z.py"
        tar.addfile(link)
    with archive.open("rb") as f:
        layer, _ = canonical_layer(iter(lambda: f.read(4096), b""), tmp_path)
    with tarfile.open(layer) as tar:
        copy = tar.getmember("opt/capsule/a.py")
        assert copy.isreg() and tar.extractfile(copy).read() == b"z=1"  # type: ignore[union-attr]


def test_capsules_own_wheel_holds_exactly_the_package_as_it_is(tmp_path: Path) -> None:
    """Built from a clean copy: a stale build/ directory in the checkout (modules since
    removed) never reaches the wheel, and so never an image."""
    import zipfile

    from builder.engines.recipe import ROOT
    from builder.engines.wheelhouse import build_tool_wheel

    stale = ROOT / "build" / "lib" / "builder" / "removed_long_ago.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("raise SystemExit('stale')\n")
    try:
        build_tool_wheel(tmp_path, lambda line: None)
    finally:
        stale.unlink()
    (wheel,) = tmp_path.glob("capsule_builder-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("builder/")}
    package = {
        p.relative_to(ROOT).as_posix()
        # the modules, the shipped schemas and the report's page template
        for pattern in ("*.py", "records/schema/*.json", "report/templates/*.j2")
        for p in (ROOT / "builder").rglob(pattern)
        if "__pycache__" not in p.parts
    }
    assert shipped == package
