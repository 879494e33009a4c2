"""export --format ro-crate: the capsule as a Workflow Run RO-Crate (Process Run Crate 0.5), the
packaging archives such as Zenodo and WorkflowHub read.

Every file of the capsule (the manifest, its digest, every artifact) is a data entity at the
path it has in the capsule, with `sha256`, `contentSize` and `encodingFormat`. The freeze is
one CreateAction: `object` the spec and the data the run read (stored files, and the digests of
source files and arrays it did not store), `result` the weights and the final metrics,
`instrument` the code (the spec, the user's files), the images the manifest records (engine,
image ID, the wheels they install) and the wheelhouse's wheels, `agent` Capsule at the version
that froze it, `endTime` the manifest's `created` (a capsule does not record when the run
began). The root's `identifier` is the capsule digest (`sha256:…`). The root conforms to the
Process Run Crate profile; `sha256`, `ContainerImage` and friends come from the workflow-run
terms, whose context the crate names.

A directory is written, or one zip file when `--out` ends in `.zip`; either appears only once
complete.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from builder.errors import BadInput
from builder.provenance import builder_id, image_wheels
from builder.records.results import ExportResult
from builder.records.spec import Spec, UserSpec
from builder.store import (
    AUDIT_PREFIX,
    BASE_PREFIX,
    MANIFEST,
    PROVENANCE_PREFIX,
    SWEEP,
    Capsule,
    file_sha256,
)
from builder.trust import content_digest

if TYPE_CHECKING:
    from rocrate.model.entity import Entity
    from rocrate.rocrate import ROCrate

    from builder.records.manifest import Manifest
    from builder.records.run import ArtifactRef

RO_CRATE_VERSION = "1.1"  # what Process Run Crate 0.5 builds on, and archives read
PROCESS_PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
DOCKER_IMAGE = "https://w3id.org/ro/terms/workflow-run#DockerImage"
METADATA = "ro-crate-metadata.json"
SIDECAR = "manifest.sha256"
WHEEL = "application/x-wheel+zip"


def export_crate(
    capsule: Capsule, out: Path, with_image: bool = False, force: bool = False
) -> ExportResult:
    """Write the capsule as an RO-Crate directory at `out`, or a zip when it ends in .zip."""
    if with_image:
        raise BadInput(
            "--with-image: an RO-Crate names the capsule's images (engine, ID) but does not "
            "carry them; export --format tar --with-image carries them"
        )
    if out.exists() and not force:
        raise BadInput(f"{out}: already exists (pass --force to replace it)")
    if out.is_dir() and not (out / METADATA).is_file():
        raise BadInput(f"{out}: exists and is not an RO-Crate; refusing to replace it")
    if out.resolve().is_relative_to(capsule.path.resolve()):
        raise BadInput(f"{out}: inside the capsule; write the crate elsewhere")
    crate = build_crate(capsule)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        if out.suffix == ".zip":
            crate.write_zip(partial)
            size = partial.stat().st_size
        else:
            crate.write(partial)
            size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
        _replace(partial, out)
    except BaseException:
        _remove(partial)
        raise
    files = 2 + len(capsule.manifest.artifacts)  # as the tar counts: manifest, sidecar, artifacts
    return ExportResult(
        path=str(out),
        files=files,
        with_image=False,
        bytes=size,
        digest=content_digest(capsule.manifest),
    )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(partial: Path, out: Path) -> None:
    trash = None
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(trash)
    partial.rename(out)
    if trash is not None:
        _remove(trash)


def build_crate(capsule: Capsule) -> ROCrate:
    """The capsule's RO-Crate in memory (files are copied from the capsule when written)."""
    from rocrate.rocrate import ROCrate

    manifest, where = capsule.manifest, capsule.path
    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_contexts.append(WFRUN_CONTEXT)
    root = crate.root_dataset
    root["name"] = f"Capsule {manifest.spec.name}"
    root["description"] = (
        manifest.spec.description
        or f"Reproducibility capsule of the training run {manifest.spec.name}"
    )
    root["datePublished"] = manifest.created
    root["identifier"] = f"sha256:{content_digest(manifest)}"  # `capsule verify --digest`
    root["conformsTo"] = _context(
        crate,
        PROCESS_PROFILE,
        {"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
    )

    manifest_sha256 = file_sha256(where / MANIFEST)
    record = _file(
        crate,
        where / MANIFEST,
        MANIFEST,
        manifest_sha256,
        "application/json",
        "Capsule manifest: the run's spec, controls, machine fingerprint, outcome and the "
        "sha256 of every file",
    )
    _file(
        crate,
        where / SIDECAR,
        SIDECAR,
        file_sha256(where / SIDECAR),
        "text/plain",
        "sha256 of manifest.json",
    )
    files = {
        name: _artifact_file(crate, where, name, ref)
        for name, ref in sorted(manifest.artifacts.items(), key=lambda item: item[1].path)
    }

    agent = _context(
        crate,
        builder_id(manifest.tool.version),
        {
            "@type": "SoftwareApplication",
            "name": "Capsule",
            "description": "freezes ML experiments into reproducibility capsules",
            "version": manifest.tool.version,
            "softwareVersion": manifest.tool.version,
        },
    )
    images = _images(crate, manifest, files)
    wheels = [files[n] for n, ref in sorted(manifest.artifacts.items()) if ref.media_type == WHEEL]
    code = [files[n] for n in sorted(manifest.artifacts) if n.startswith("code/")]
    spec = [files["spec"]] if "spec" in files else []
    instrument = [*spec, *code, *images, *wheels]

    action = _context(
        crate,
        f"#run-{manifest_sha256[:12]}",
        {
            "@type": "CreateAction",
            "name": f"Training run of {manifest.spec.name}, frozen by Capsule",
            "description": _describe_run(manifest),
            "endTime": manifest.created,
        },
    )
    action["agent"] = agent
    action["instrument"] = instrument
    action["object"] = _inputs(crate, manifest, files)
    action["result"] = _results(crate, manifest, files)
    record["about"] = action
    root["mentions"] = action
    return crate


# ---------------------------------------------------------------- entities


def _context(crate: ROCrate, identifier: str, properties: dict[str, Any]) -> Entity:
    from rocrate.model.contextentity import ContextEntity

    entity: Entity = crate.add(ContextEntity(crate, identifier, properties=properties))
    return entity


def _file(
    crate: ROCrate,
    source: Path,
    path: str,
    sha256: str,
    media_type: str,
    description: str | None = None,
    types: tuple[str, ...] = (),
    **extra: Any,
) -> Entity:
    properties: dict[str, Any] = {
        "name": PurePosixPath(path).name,
        "encodingFormat": media_type,
        "contentSize": str(source.stat().st_size),
        "sha256": sha256,
        **extra,
    }
    if types:
        properties["@type"] = ["File", *types]
    if description:
        properties["description"] = description
    entity: Entity = crate.add_file(source, path, properties=properties)
    return entity


def _artifact_file(crate: ROCrate, where: Path, name: str, ref: ArtifactRef) -> Entity:
    """One artifact as a data entity: typed and described by what the capsule uses it for."""

    def entity(description: str | None, types: tuple[str, ...] = (), **extra: Any) -> Entity:
        return _file(
            crate, where / ref.path, ref.path, ref.sha256, ref.media_type, description, types,
            **extra,
        )  # fmt: skip

    if name == "spec":
        return entity("The spec the run was frozen from (capsule.toml)")
    if name.startswith("code/"):
        if not name.endswith(".py"):
            return entity("A file of the user's code", ("SoftwareSourceCode",))
        if "#python" not in crate:
            _context(
                crate,
                "#python",
                {"@type": "ComputerLanguage", "name": "Python", "url": "https://www.python.org/"},
            )
        return entity(
            "The user's training code",
            ("SoftwareSourceCode",),
            programmingLanguage={"@id": "#python"},
        )
    if ref.media_type == WHEEL:
        wheel = PurePosixPath(ref.path).name
        try:
            distribution, version, _, _ = parse_wheel_filename(wheel)
            about = {"name": str(distribution), "softwareVersion": str(version)}
        except InvalidWheelFilename:
            about = {}
        return entity(
            f"Wheel installed in the capsule's image: {wheel}", ("SoftwareApplication",), **about
        )
    if name.startswith(PROVENANCE_PREFIX):
        variant = name.removeprefix(PROVENANCE_PREFIX)
        return entity(
            f"in-toto Statement (SLSA Provenance v1) of the {variant} image's build",
            conformsTo={"@id": "https://slsa.dev/provenance/v1"},
        )
    if name.startswith(BASE_PREFIX):
        return entity(
            "The base image the capsule's images were built on (`docker save` archive, zstd): "
            "a rebuild loads it, so it needs no network"
        )
    return entity(_ARTIFACT_ROLES.get(name) or _study(name))


_ARTIFACT_ROLES = {
    "data": "The data the run trained and evaluated on (safetensors)",
    "order": "The recorded order of the training rows, per epoch (safetensors)",
    "initial": "The weights before the first training step (safetensors)",
    "weights": "The trained weights (safetensors)",
}


def _study(name: str) -> str | None:
    if name == SWEEP:
        return "A seed/order sweep made after the freeze (Capsule sweep record)"
    if name.startswith(AUDIT_PREFIX):
        return "A library-upgrade audit made after the freeze (Capsule audit record)"
    if name.startswith("inputs/"):
        return "A data file the user's code read (run.data)"
    return None


def _images(crate: ROCrate, manifest: Manifest, files: dict[str, Entity]) -> list[Entity]:
    """Each recorded image as a ContainerImage (workflow-run terms): tag, ID, engine, base."""
    images = []
    for variant, image in sorted(manifest.images.items()):
        repository, _, tag = image.tag.rpartition(":")
        entity = _context(
            crate,
            f"#image-{variant}",
            {
                "@type": "ContainerImage",
                "additionalType": {"@id": DOCKER_IMAGE},
                "name": repository,
                "tag": tag,
                "sha256": image.image_id.rpartition(":")[2],
                "identifier": image.image_id,
                "description": (
                    f"The capsule's {variant} image, built offline by {image.engine} from "
                    f"{image.base_image} ({image.base_id}) and the capsule's wheelhouse; "
                    f"built {image.built}"
                ),
            },
        )
        entity["softwareRequirements"] = [files[n] for n in sorted(image_wheels(manifest, variant))]
        statement = files.get(f"{PROVENANCE_PREFIX}{variant}")
        if statement is not None:
            statement["about"] = entity
            entity["subjectOf"] = statement
        images.append(entity)
    return images


def _inputs(crate: ROCrate, manifest: Manifest, files: dict[str, Entity]) -> list[Entity]:
    """The spec, the stored data, and the digests of data the capsule does not store."""
    inputs = [files[name] for name in ("spec", "data", "order") if name in files]
    if manifest.data is not None:
        for split, source in sorted(manifest.data.files.items()):
            inputs.append(
                _context(
                    crate,
                    f"#source-{split}",
                    {
                        "@type": "PropertyValue",
                        "name": f"{split} data file",
                        "value": source.path,
                        "sha256": source.sha256,
                        "description": "The data file as it was frozen (its sha256); the "
                        "capsule stores its arrays in artifacts/data.safetensors",
                    },
                )
            )
    for key, item in sorted(manifest.inputs.items()):
        if item.artifact is not None and item.artifact in files:
            inputs.append(files[item.artifact])
            continue
        inputs.append(
            _context(
                crate,
                f"#input-{key}",
                {
                    "@type": "PropertyValue",
                    "name": key,
                    "value": item.detail or item.kind,
                    "sha256": item.sha256,
                    "description": "Arrays the user's code loaded itself (digest only)",
                },
            )
        )
    return inputs


def _results(crate: ROCrate, manifest: Manifest, files: dict[str, Entity]) -> list[Entity]:
    """The weights (and initial weights), and the outcome's final metrics."""
    results = [files[name] for name in ("weights", "initial") if name in files]
    for metric, value in manifest.outcome.final_values().items():
        if value is None:
            continue
        results.append(
            _context(
                crate,
                f"#metric-{metric}",
                {"@type": "PropertyValue", "name": metric, "value": value},
            )
        )
    return results


def _describe_run(manifest: Manifest) -> str:
    spec, outcome, controls = manifest.spec, manifest.outcome, manifest.controls
    what = (
        f"the user's code {spec.entrypoint}"
        if isinstance(spec, UserSpec)
        else f"Capsule's {spec.model.kind} on {spec.data.builtin or 'the user data'}"
        if isinstance(spec, Spec)
        else spec.name
    )
    return (
        f"capsule freeze: {what} ({spec.framework}, "
        f"{manifest.fingerprint.framework_version}) on {controls.device}, seeds init "
        f"{spec.seeds.init} order {spec.seeds.order}, deterministic={controls.deterministic}, "
        f"threads {controls.threads}; {outcome.steps} steps in {outcome.train_seconds:.1f} s"
    )
