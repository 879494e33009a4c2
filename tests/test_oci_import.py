"""`capsule import` of an OCI export into the daemonless engine's store, and what it refuses.

The image here is a real OCI image of one small layer, written as `docker save` would and laid
out by Capsule's own exporter (`oci._write_layout`), so these tests need runc and umoci on
PATH (scripts/oci-up.sh) but no container engine; the full round trip with a built image
(export on Docker, import and replay with runc, daemons absent) is in tests/test_image.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.engines.layout import json_blob
from builder.oci import _write_layout
from tests.conftest import capsule, ok

DAY = "2026-11-27T00:00:00+00:00"


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def saved_image(folder: Path) -> tuple[Path, str]:
    """A `docker save` archive of a one-layer image, and its image ID."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        _member(tar, "hello.txt", b"hello from the layer\n")
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json_blob(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    )
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    archive = folder / "image.docker.tar"
    with tarfile.open(archive, "w") as tar:
        _member(tar, f"{image_id[7:]}.json", config)
        _member(tar, "layer/layer.tar", layer.getvalue())
        manifest = [
            {"Config": f"{image_id[7:]}.json", "RepoTags": None, "Layers": ["layer/layer.tar"]}
        ]
        _member(tar, "manifest.json", json.dumps(manifest).encode())
    return archive, image_id


def with_image(cap: Path, image_id: str) -> None:
    """Record `image_id` as the capsule's cpu image (as `build` would)."""
    data = json.loads((cap / "manifest.json").read_text())
    data["images"] = {
        "cpu": {
            "engine": "docker",
            "image_id": image_id,
            "tag": "capsule/tiny:test-cpu",
            "base_image": "none",
            "base_id": image_id,
            "dockerfile_sha256": "0" * 64,
            "capsule_digest": "0" * 64,
            "source_date_epoch": 315532800,
            "wheels": [],
            "built": DAY,
        }
    }
    text = json.dumps(data, indent=2).encode() + b"\n"
    (cap / "manifest.json").write_bytes(text)
    (cap / "manifest.sha256").write_text(f"{hashlib.sha256(text).hexdigest()}  manifest.json\n")


def oci_export(cap: Path, saved: Path, out: Path, extra: bytes | None = None) -> Path:
    """The file `export --format oci` writes: the capsule's members first, then the layout."""
    data = json.loads((cap / "manifest.json").read_text())
    names = [
        "manifest.json",
        "manifest.sha256",
        *sorted(a["path"] for a in data["artifacts"].values()),
    ]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            tar.add(cap / name, f"capsule/{name}")
        _write_layout(tar, {"cpu": saved}, {"cpu": data["images"]["cpu"]["image_id"]})
        if extra is not None:
            _member(tar, f"blobs/sha256/{hashlib.sha256(extra).hexdigest()}", extra)
    return out


@pytest.fixture
def exported(tiny_spec: Callable[..., Path], tmp_path: Path) -> tuple[Path, str]:
    cap = tmp_path / "cap"
    ok(capsule("freeze", tiny_spec(), "--out", cap))
    saved, image_id = saved_image(tmp_path)
    with_image(cap, image_id)
    return oci_export(cap, saved, tmp_path / "cap.oci.tar"), image_id


def test_an_oci_export_imports_into_the_store_and_exports_back(
    exported: tuple[Path, str], tmp_path: Path
) -> None:
    archive, image_id = exported
    node = {"CAPSULE_OCI_STORE": str(tmp_path / "store")}
    result = capsule(
        "import", archive, "--engine", "oci", "--out", tmp_path / "in", "--json", env=node
    )
    assert json.loads(ok(result).stdout)["images"] == {"cpu": image_id}
    index = json.loads((tmp_path / "store" / "layout" / "index.json").read_text())
    tags = [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]]
    assert tags == [image_id.replace(":", "-")]
    ok(capsule("verify", tmp_path / "in"))
    history = json.loads(ok(capsule("inspect", tmp_path / "in", "--json")).stdout)["history"]
    assert [(e["command"], e["engine"]) for e in history] == [("import", "oci")]
    # and back out of the store (`save`), into a second store: the same image ID
    out = tmp_path / "again.tar"
    ok(
        capsule(
            "export", tmp_path / "in", "--with-image", "--engine", "oci", "--out", out, env=node
        )
    )
    other = {"CAPSULE_OCI_STORE": str(tmp_path / "store2")}
    ok(capsule("import", out, "--engine", "oci", "--out", tmp_path / "in2", env=other))
    assert (tmp_path / "store2" / "layout" / "blobs" / "sha256" / image_id[7:]).is_file()
    refused = capsule("build", tmp_path / "in", "--engine", "oci", env=node)
    assert refused.returncode == 2 and "does not build" in refused.stderr


def _rewritten(archive: Path, out: Path, change: Callable[[str, bytes], tuple[str, bytes]]) -> Path:
    with tarfile.open(archive) as source, tarfile.open(out, "w") as tar:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.isdir():
                tar.addfile(member)
                continue
            name, data = change(member.name, data)
            _member(tar, name, data)
    return out


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("flipped layer byte", 3, "was altered"),
        ("unused blob", 3, "not used by the images"),
        ("another tag", 2, "tags ['gpu']"),
        ("odd blob name", 2, "not listed in the manifest"),
    ],
)
def test_a_tampered_oci_export_is_refused_and_leaves_nothing(
    exported: tuple[Path, str], tmp_path: Path, case: str, code: int, words: str
) -> None:
    archive, image_id = exported

    def change(name: str, data: bytes) -> tuple[str, bytes]:
        if case == "flipped layer byte" and name.startswith("blobs/") and b"hello from" in data:
            return name, data.replace(b"hello from", b"jello from")
        if case == "another tag" and name == "index.json":
            return name, data.replace(b'"cpu"', b'"gpu"')
        if case == "odd blob name" and name.endswith(image_id[7:]):
            return name[:-1] + "X", data
        return name, data

    if case == "unused blob":
        cap, saved = tmp_path / "cap", tmp_path / "image.docker.tar"
        bad = oci_export(cap, saved, tmp_path / "bad.tar", extra=b"nobody refers to me")
    else:
        bad = _rewritten(archive, tmp_path / "bad.tar", change)
    node = {"CAPSULE_OCI_STORE": str(tmp_path / "store")}
    result = capsule("import", bad, "--engine", "oci", "--out", tmp_path / "in", env=node)
    assert result.returncode == code, result.stderr
    assert words in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "in").exists()
    assert not (tmp_path / "store" / "layout" / "index.json").exists()


def test_a_store_others_can_write_is_refused(exported: tuple[Path, str], tmp_path: Path) -> None:
    """runc runs as root what the store holds: a store anyone else can write is refused."""
    archive, _ = exported
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)
    node = {"CAPSULE_OCI_STORE": str(store)}
    result = capsule("import", archive, "--engine", "oci", "--out", tmp_path / "in", env=node)
    assert result.returncode == 2 and "writable by no one else" in result.stderr
    assert not (tmp_path / "in").exists()
