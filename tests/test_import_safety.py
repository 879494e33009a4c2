"""Import refuses unsafe or altered exports and writes nothing (no Docker needed)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import pickle
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.conftest import CAPSULE_BIN, capsule, ok


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


# ------------------------------------------------ import = exactly the manifest (issue 13.3)

Members = list[tuple[tarfile.TarInfo, bytes]]
WEIGHTS = "capsule/artifacts/weights.safetensors"


@pytest.fixture(scope="module")
def export_2d(frozen_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    export = tmp_path_factory.mktemp("export") / "2d.capsule.tar"
    ok(capsule("export", frozen_2d, "--out", export))
    return export


def _members_of(export: Path) -> Members:
    with tarfile.open(export) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _write(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _forged_manifest(members: Members, edit: Callable[[dict[str, Any]], None]) -> Members:
    """The export's manifest changed by `edit`, with a sidecar that matches it (a sidecar is a
    digest, not a signature: anyone can forge both)."""
    document = json.loads(members[0][1])
    edit(document)
    text = json.dumps(document, indent=2).encode() + b"\n"
    sidecar = f"{hashlib.sha256(text).hexdigest()}  manifest.json\n".encode()
    return [_file("capsule/manifest.json", text), _file("capsule/manifest.sha256", sidecar)]


def _refused_import(
    export: Path, out: Path, *needles: str, code: int = 2, umask: int | None = None
) -> None:
    """`capsule import` exits `code` with one line naming the export and every needle, fast,
    and leaves nothing beside the export files (no --out, no staging directory)."""
    before = sorted(p.name for p in out.parent.iterdir())
    result = _import(export, out, umask)
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(export) in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == before


def _import(export: Path, out: Path, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CAPSULE_BIN), "import", str(export), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=None if umask is None else lambda: os.umask(umask),
    )


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("capsule/artifacts/model.pkl", pickle.dumps({"a": 1})),
        ("capsule/code/sitecustomize.py", b"import os; os.system('touch /tmp/pwned')\n"),
    ],
    ids=["pickle", "sitecustomize"],
)
def test_members_the_manifest_does_not_list_are_refused(
    export_2d: Path, tmp_path: Path, name: str, data: bytes
) -> None:
    members = _members_of(export_2d)
    bad = _write(tmp_path / "x.capsule.tar", [*members[:3], _file(name, data), *members[3:]])
    _refused_import(bad, tmp_path / "out", name, "not listed in the manifest")


def test_a_setuid_member_is_written_0644(export_2d: Path, tmp_path: Path) -> None:
    """Modes come from Capsule, not from the archive (nor from a permissive umask)."""
    members = [
        (info, data) if info.name != WEIGHTS else _file(WEIGHTS, data, 0o4777)
        for info, data in _members_of(export_2d)
    ]
    setuid = _write(tmp_path / "s.capsule.tar", members)
    with tarfile.open(setuid) as tar:
        assert tar.getmember(WEIGHTS).mode == 0o4777
    result = _import(setuid, tmp_path / "out", umask=0)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode for p in [out, *out.rglob("*")]}
    assert stat.S_IMODE(modes["artifacts/weights.safetensors"]) == 0o644
    for rel, mode in modes.items():
        assert stat.S_IMODE(mode) == (0o755 if stat.S_ISDIR(mode) else 0o644), rel
    ok(capsule("verify", out))


def test_twenty_thousand_small_files_are_refused_fast(export_2d: Path, tmp_path: Path) -> None:
    members = _members_of(export_2d)
    spam = [_file(f"capsule/artifacts/f{i:05}", b"x") for i in range(20_000)]
    bad = _write(tmp_path / "many.capsule.tar", [*members[:2], *spam, *members[2:]])
    started = time.monotonic()
    _refused_import(bad, tmp_path / "out", "capsule/artifacts/f00000", "not listed")
    assert time.monotonic() - started < 30


def _sparse_bomb(path: Path, head: Members, name: str, real_size: int) -> Path:
    """A plain tar of about 1 MiB (the capsule's other files) whose member `name` expands to
    `real_size` bytes (GNU sparse format 1.0 in PAX headers: a map block, 64 KiB of data, the
    rest a hole)."""
    data_size = 64 << 10
    sparse_map = f"1\n{real_size - data_size}\n{data_size}\n".encode().ljust(512, b"\0")
    info = tarfile.TarInfo(f"{PurePosixPath(name).parent}/GNUSparseFile.0/{Path(name).name}")
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(real_size),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in head:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        stored = sparse_map + b"\0" * data_size
        info.size = len(stored)
        tar.addfile(info, io.BytesIO(stored))
    with tarfile.open(path) as tar:  # the bomb is real: tarfile would expand it to 2 GiB
        assert tar.getmember(name).size == real_size and tar.getmember(name).issparse()
    assert path.stat().st_size < real_size // 1000
    return path


def test_a_tar_bomb_is_refused_without_writing_it(export_2d: Path, tmp_path: Path) -> None:
    members = _members_of(export_2d)
    head = [m for m in members if m[0].name != WEIGHTS]
    bomb = _sparse_bomb(tmp_path / "bomb.capsule.tar", head, WEIGHTS, 2 << 30)
    _refused_import(bomb, tmp_path / "out", WEIGHTS, "sparse")


def test_a_forged_size_beyond_the_file_is_refused(export_2d: Path, tmp_path: Path) -> None:
    """A manifest (and sidecar) forged to record a 2 GiB weights file: the export cannot hold
    it, so nothing is written."""
    members = _members_of(export_2d)

    def grow(document: dict[str, Any]) -> None:
        document["artifacts"]["weights"]["size"] = 2 << 30

    forged = _forged_manifest(members, grow)
    huge = tarfile.TarInfo(WEIGHTS)
    huge.size = 2 << 30
    bad = tmp_path / "forged.capsule.tar"
    with tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*forged, *(m for m in members[2:] if m[0].name != WEIGHTS)]:
            tar.addfile(info, io.BytesIO(data))
        tar.fileobj.write(huge.tobuf(tarfile.PAX_FORMAT) + b"\0" * (1 << 20))  # type: ignore[union-attr]
    _refused_import(bad, tmp_path / "out", "truncated export", "the manifest lists")


@pytest.mark.parametrize("kind", ["gzip", "xz", "bz2"])
def test_a_compressed_export_is_refused(export_2d: Path, tmp_path: Path, kind: str) -> None:
    compress = {"gzip": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}[kind]
    packed = tmp_path / f"2d.capsule.tar.{kind}"
    packed.write_bytes(compress(export_2d.read_bytes()))
    _refused_import(packed, tmp_path / "out", "compressed", "plain tar")


@pytest.mark.parametrize("where", ["half", "inside-last-member", "header"])
def test_a_truncated_export_is_refused(export_2d: Path, tmp_path: Path, where: str) -> None:
    data = export_2d.read_bytes()
    with tarfile.open(export_2d) as tar:
        last = tar.getmembers()[-1]
    cut = {
        "half": len(data) // 2,
        "inside-last-member": last.offset_data + last.size // 2,
        "header": last.offset + 100,
    }[where]
    short = tmp_path / "short.capsule.tar"
    short.write_bytes(data[:cut])
    _refused_import(short, tmp_path / "out", "truncated")


def test_a_six_thousand_character_name_is_refused(export_2d: Path, tmp_path: Path) -> None:
    name = "capsule/artifacts/" + "a" * 6000
    members = _members_of(export_2d)
    bad = _write(tmp_path / "long.capsule.tar", [*members, _file(name, b"x")])
    _refused_import(bad, tmp_path / "out", "name too long", "capsule/artifacts/aaa")
    result = _import(bad, tmp_path / "out")
    assert len(result.stderr) < 400


def test_a_second_manifest_is_refused(export_2d: Path, tmp_path: Path) -> None:
    """The first manifest.json is the real one; a second one after it (with a forged metric and
    a sidecar that matches) must not win."""
    members = _members_of(export_2d)

    def forge(document: dict[str, Any]) -> None:
        document["outcome"]["final"]["eval_error"] = 0.0

    bad = _write(tmp_path / "two.capsule.tar", [*members, *_forged_manifest(members, forge)])
    _refused_import(bad, tmp_path / "out", "capsule/manifest.json", "appears twice")


def test_a_sidecar_after_the_artifacts_is_refused(export_2d: Path, tmp_path: Path) -> None:
    members = _members_of(export_2d)
    bad = _write(tmp_path / "order.capsule.tar", [members[0], *members[2:], members[1]])
    _refused_import(bad, tmp_path / "out", "must follow capsule/manifest.json")


# ------------------------------------------------ verify and diff stay inside the capsule


def _replace_weights(copy: Path, how: str, tmp_path: Path) -> None:
    weights = copy / "artifacts" / "weights.safetensors"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(weights, outside / weights.name)  # the right bytes, but not in the capsule
    if how == "dir-symlink":
        shutil.copytree(copy / "artifacts", outside / "artifacts")
        shutil.rmtree(copy / "artifacts")
        (copy / "artifacts").symlink_to(outside / "artifacts")
        return
    weights.unlink()
    if how == "dev-zero":
        weights.symlink_to("/dev/zero")
    elif how == "outside":
        weights.symlink_to(outside / weights.name)
    elif how == "fifo":
        os.mkfifo(weights)
    elif how == "longer":
        weights.write_bytes((outside / weights.name).read_bytes() + b"\0")


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("dev-zero", "is a symlink"),
        ("outside", "is a symlink"),
        ("dir-symlink", "'artifacts' on its path is a symlink"),
        ("fifo", "not a regular file"),
        ("longer", "longer than its recorded"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "diff"])
def test_verify_and_diff_read_only_the_capsules_own_files(
    frozen_2d: Path, tmp_path: Path, how: str, needle: str, command: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(frozen_2d, copy)
    _replace_weights(copy, how, tmp_path)
    args = ("verify", copy) if command == "verify" else ("diff", frozen_2d, copy)
    result = capsule(*args, timeout=60)  # a FIFO or /dev/zero that is read never returns
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "artifacts/" in lines[0] and needle in lines[0], lines[0]
