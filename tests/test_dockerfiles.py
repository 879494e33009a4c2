"""Dockerfile templates and the pieces of a build that need no engine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from builder.image import (
    SOURCE_DATE_EPOCH,
    build_context,
    deterministic_tar,
    render_dockerfile,
    requirement_closure,
)


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
