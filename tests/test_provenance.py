"""Standard provenance out: `export --format ro-crate` (a Workflow Run RO-Crate, read back with
rocrate's own reader) and the in-toto / SLSA statement `build` stores for each image (its shape
from a manifest fixture without Docker; one image build checks the stored one end to end)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from rocrate.rocrate import ROCrate

from builder.crate import PROCESS_PROFILE, WFRUN_CONTEXT
from builder.provenance import BUILD_TYPE, image_statement, load_statement, record_provenance
from builder.records.enums import Device
from builder.records.manifest import ImageRecord
from builder.records.run import ArtifactRef
from builder.store import Capsule, capsule_digest, file_sha256, is_study, load_manifest
from builder.trust import content_digest
from tests.conftest import capsule, ok

IMAGE_ID = "sha256:" + "1" * 64
BASE_ID = "sha256:" + "2" * 64
WHEELS = ["idna-3.10-py3-none-any.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"]


def as_list(value: object) -> list:  # type: ignore[type-arg]
    return value if isinstance(value, list) else [value]


def ids(entities: object) -> set[str]:
    return {e.id for e in as_list(entities)}


def with_fake_image(frozen: Path, into: Path) -> Path:
    """A copy of a frozen capsule whose manifest records a built image and its wheelhouse, as
    `build` records them (the wheels are stand-in bytes: no Docker, no network)."""
    copy = into / frozen.name
    shutil.copytree(frozen, copy)
    handle = Capsule.open(copy)
    artifacts = dict(handle.manifest.artifacts)
    (copy / "wheelhouse").mkdir()
    for wheel in WHEELS:
        path = copy / "wheelhouse" / wheel
        path.write_bytes(f"stand-in for {wheel}".encode())
        artifacts[f"wheelhouse/{wheel}"] = ArtifactRef(
            path=f"wheelhouse/{wheel}",
            sha256=file_sha256(path),
            size=path.stat().st_size,
            media_type="application/x-wheel+zip",
        )
    manifest = handle.manifest.model_copy(update={"artifacts": artifacts})
    image = ImageRecord(
        engine="docker",
        image_id=IMAGE_ID,
        tag=f"capsule/{manifest.spec.name}:{capsule_digest(manifest)[:12]}-cpu",
        base_image="capsule-base:bookworm-test",
        base_id=BASE_ID,
        dockerfile_sha256="3" * 64,
        capsule_digest=capsule_digest(manifest),
        source_date_epoch=315532800,
        wheels=WHEELS,
        built="2026-01-02T03:04:05+00:00",
    )
    with handle.writing():
        handle.update(manifest.model_copy(update={"images": {Device.cpu: image}}))
    return copy


def read_crate(path: Path) -> ROCrate:
    return ROCrate(path)


def check_files(crate: ROCrate, capsule_dir: Path, files_at: Path) -> None:
    """Every file of the capsule is a data entity of the crate with the sha256 the manifest
    records, and the crate's copy has those bytes."""
    manifest = load_manifest(capsule_dir)
    expected = {ref.path: ref.sha256 for ref in manifest.artifacts.values()}
    expected["manifest.json"] = file_sha256(capsule_dir / "manifest.json")
    expected["manifest.sha256"] = file_sha256(capsule_dir / "manifest.sha256")
    parts = ids(crate.root_dataset["hasPart"])
    for path, sha256 in expected.items():
        entity = crate.get(quote(path))
        assert entity is not None, path
        assert quote(path) in parts, path
        assert entity["sha256"] == sha256, path
        assert file_sha256(files_at / path) == sha256, path


# ---------------------------------------------------------------- RO-Crate


@pytest.mark.parametrize("as_zip", [False, True], ids=["directory", "zip"])
def test_ro_crate_of_the_users_code_reads_back_as_a_process_run(
    frozen_small: Path, tmp_path: Path, as_zip: bool
) -> None:
    out = tmp_path / ("c.zip" if as_zip else "c")
    result = ok(capsule("export", frozen_small, "--format", "ro-crate", "--out", out, "--json"))
    assert json.loads(result.stdout)["path"] == str(out)
    crate = read_crate(out)
    files_at = Path(crate.source)  # the zip, unpacked by the reader
    raw = json.loads((files_at / "ro-crate-metadata.json").read_text())
    assert WFRUN_CONTEXT in raw["@context"]
    assert crate.version == "1.1"
    assert PROCESS_PROFILE in ids(crate.root_dataset["conformsTo"])
    assert crate.get(PROCESS_PROFILE).type == "CreativeWork"
    check_files(crate, frozen_small, files_at)

    actions = crate.get_by_type("CreateAction")
    assert len(actions) == 1
    action = actions[0]
    assert action.id in ids(crate.root_dataset["mentions"])
    manifest = load_manifest(frozen_small)
    assert action["endTime"] == manifest.created
    assert {"capsule.toml", "code/train.py"} <= ids(action["instrument"])
    objects = {e.id: e for e in as_list(action["object"])}
    assert "capsule.toml" in objects
    arrays = objects["#input-gaussians"]  # run.record_arrays: a digest, not a file
    assert arrays["sha256"] == manifest.inputs["gaussians"].sha256
    results = {e.id: e for e in as_list(action["result"])}
    weights = results["artifacts/weights.safetensors"]
    assert weights["sha256"] == manifest.artifacts["weights"].sha256
    final = manifest.outcome.final_values()
    assert results["#metric-train_error"]["value"] == final["train_error"]
    agent = action["agent"]
    assert agent.type == "SoftwareApplication" and agent["version"] == manifest.tool.version
    assert crate.get("code/train.py").type == ["File", "SoftwareSourceCode"]


def test_ro_crate_of_a_builtin_experiment_names_its_data_files(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    frozen = tmp_path / "tiny"
    ok(capsule("freeze", tiny_spec(), "--out", frozen))
    ok(capsule("export", frozen, "--format", "ro-crate", "--out", tmp_path / "crate"))
    crate = read_crate(tmp_path / "crate")
    check_files(crate, frozen, tmp_path / "crate")
    manifest = load_manifest(frozen)
    assert manifest.data is not None
    action = crate.get_by_type("CreateAction")[0]
    objects = {e.id: e for e in as_list(action["object"])}
    assert {"capsule.toml", "artifacts/data.safetensors", "artifacts/order.safetensors"} <= set(
        objects
    )
    for split, source in manifest.data.files.items():  # the source files, by their digest
        assert objects[f"#source-{split}"]["sha256"] == source.sha256
    assert {"artifacts/weights.safetensors", "artifacts/initial.safetensors"} <= ids(
        action["result"]
    )
    assert ids(action["instrument"]) == {"capsule.toml"}  # Capsule's own trainer: the spec


def test_ro_crate_names_the_image_its_wheels_and_its_statement(
    frozen_small: Path, tmp_path: Path
) -> None:
    copy = with_fake_image(frozen_small, tmp_path)
    record_provenance(Capsule.open(copy), "cpu")
    ok(capsule("export", copy, "--format", "ro-crate", "--out", tmp_path / "crate"))
    crate = read_crate(tmp_path / "crate")
    check_files(crate, copy, tmp_path / "crate")
    action = crate.get_by_type("CreateAction")[0]
    instrument = ids(action["instrument"])
    image = crate.get("#image-cpu")
    assert image.id in instrument and image.type == "ContainerImage"
    assert image["sha256"] == IMAGE_ID.removeprefix("sha256:") and image["identifier"] == IMAGE_ID
    wheels = {f"wheelhouse/{w}" for w in WHEELS}
    assert wheels <= instrument
    assert ids(image["softwareRequirements"]) == wheels
    numpy = crate.get(f"wheelhouse/{WHEELS[1]}")
    assert numpy["name"] == "numpy" and numpy["softwareVersion"] == "2.4.6"
    statement = image["subjectOf"]
    assert statement.id.startswith("provenance/cpu-") and statement["about"] is image


def test_ro_crate_refuses_with_image_and_a_directory_that_is_not_a_crate(
    frozen_small: Path, tmp_path: Path
) -> None:
    result = capsule(
        "export", frozen_small, "--format", "ro-crate", "--with-image", "--out", tmp_path / "c"
    )
    assert result.returncode == 2 and "--with-image" in result.stderr
    (tmp_path / "other").mkdir()
    result = capsule(
        "export", frozen_small, "--format", "ro-crate", "--force", "--out", tmp_path / "other"
    )
    assert result.returncode == 2 and "not an RO-Crate" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


# ---------------------------------------------------------------- in-toto statement


def test_the_statement_of_an_image_from_a_manifest(frozen_small: Path, tmp_path: Path) -> None:
    copy = with_fake_image(frozen_small, tmp_path)
    manifest = load_manifest(copy)
    image = manifest.images[Device.cpu]
    statement = json.loads(image_statement(manifest, "cpu", "2026-01-02T03:00:00+00:00").dump())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": image.tag, "digest": {"sha256": IMAGE_ID.removeprefix("sha256:")}}
    ]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {
        "capsule": {"name": "numpy-softmax", "digest": image.capsule_digest},
        "variant": "cpu",
        "engine": "docker",
        "baseImage": "capsule-base:bookworm-test",
    }
    deps = {d["name"]: d["digest"]["sha256"] for d in definition["resolvedDependencies"]}
    assert deps["capsule-base:bookworm-test"] == BASE_ID.removeprefix("sha256:")
    for wheel in WHEELS:
        assert deps[f"wheelhouse/{wheel}"] == file_sha256(copy / "wheelhouse" / wheel)
    assert deps["code/train.py"] == manifest.artifacts["code/train.py"].sha256
    details = statement["predicate"]["runDetails"]
    assert details["builder"]["id"].endswith(f"capsule@{manifest.tool.version}")
    assert details["metadata"] == {
        "startedOn": "2026-01-02T03:00:00+00:00",
        "finishedOn": image.built,
    }


def test_a_stored_statement_is_a_study_and_keeps_the_capsule_digest(
    frozen_small: Path, tmp_path: Path
) -> None:
    copy = with_fake_image(frozen_small, tmp_path)
    handle = Capsule.open(copy)
    before = capsule_digest(handle.manifest)
    assert before == handle.manifest.images[Device.cpu].capsule_digest
    published = content_digest(handle.manifest)
    first = record_provenance(handle, "cpu", "2026-01-02T03:00:00+00:00")
    assert re.fullmatch(r"provenance/cpu-[0-9a-f]{12}\.json", first.path)
    assert is_study("provenance/cpu")
    assert capsule_digest(load_manifest(copy)) == before
    # nor the published digest (a signature survives a build, as it survives the image record)
    assert content_digest(load_manifest(copy)) == published
    second = record_provenance(handle, "cpu", "2026-01-02T03:00:01+00:00")  # a rebuild
    assert second.path != first.path and not (copy / first.path).exists()
    assert list((copy / "provenance").iterdir()) == [copy / second.path]
    statement = load_statement(Capsule.open(copy), "cpu")
    assert statement is not None
    assert statement.subject[0].name == handle.manifest.images[Device.cpu].tag
    ok(capsule("verify", copy))
