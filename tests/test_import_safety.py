"""Import refuses unsafe or altered exports and writes nothing (no Docker needed)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.conftest import capsule, ok


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (_member("/etc/evil"), "leaves the archive"),
        (_member("capsule/../../evil"), "leaves the archive"),
        (_member("capsule/link", tarfile.SYMTYPE, "/etc/passwd"), "links and devices"),
        (_member("capsule/hard", tarfile.LNKTYPE, "capsule/manifest.json"), "links and devices"),
        (_member("capsule/dev", tarfile.CHRTYPE), "links and devices"),
        (_member("other/file"), "not part of a capsule export"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device", "stray"],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, needle: str) -> None:
    export = tmp_path / "bad.capsule.tar"
    _tar_with(export, member, b"x")
    result = capsule("import", export, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and member.name in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.capsule.tar"]


def test_an_altered_artifact_in_an_export_is_refused(frozen_2d: Path, tmp_path: Path) -> None:
    export = tmp_path / "c.capsule.tar"
    ok(capsule("export", frozen_2d, "--out", export))
    tampered = tmp_path / "t.capsule.tar"
    with tarfile.open(export) as src, tarfile.open(tampered, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name == "capsule/artifacts/weights.safetensors":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data))
    result = capsule("import", tampered, "--out", tmp_path / "out")
    assert result.returncode == 3
    assert "weights" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_export_without_image_round_trips(frozen_2d: Path, tmp_path: Path) -> None:
    export = tmp_path / "c.capsule.tar"
    exported = json.loads(ok(capsule("export", frozen_2d, "--out", export, "--json")).stdout)
    assert exported["with_image"] is False and exported["bytes"] == export.stat().st_size
    imported = json.loads(
        ok(capsule("import", export, "--out", tmp_path / "back", "--json")).stdout
    )
    assert imported["verified"] is True and imported["name"] == "paper-2d-torch"
    ok(capsule("verify", tmp_path / "back"))
    shutil.rmtree(tmp_path / "back")
    assert "already exists" in capsule("export", frozen_2d, "--out", export).stderr
