"""Build provenance: an in-toto Statement with SLSA Provenance v1 for each image `capsule build`
records, stored in the capsule as artifact `provenance/<variant>` (a study-like artifact, so it
does not change the capsule digest the image is labelled with).

subject: the image (its tag, and its ID as the sha256 digest). buildDefinition: Capsule's image
build type; externalParameters: the capsule (name, digest), variant, engine and the base asked
for; internalParameters: the Dockerfile's digest and SOURCE_DATE_EPOCH; resolvedDependencies:
the base image (its ID), every wheel of the wheelhouse and every file of the user's code, each
with its sha256. runDetails: Capsule (and its version) as the builder, start and finish times.
"""

from __future__ import annotations

from pydantic import ValidationError

from builder import __version__
from builder.engines.wheelhouse import WHEELHOUSE_DIR
from builder.errors import BadInput
from builder.records.attestation import (
    BuildDefinition,
    Builder,
    BuildMetadata,
    Provenance,
    ResourceDescriptor,
    RunDetails,
    Statement,
)
from builder.records.enums import Device
from builder.records.manifest import Manifest
from builder.records.run import ArtifactRef
from builder.store import PROVENANCE_PREFIX, Capsule, read_artifact, store_json

PROVENANCE_DIR = PROVENANCE_PREFIX.rstrip("/")
# Capsule's own identifiers (URNs: the project has no web home to resolve them yet)
CAPSULE_URN = "urn:capsule-builder"
BUILD_TYPE = f"{CAPSULE_URN}:build-type:image:v1"


def builder_id(version: str) -> str:
    """Capsule, at one version, as the builder of an image (and the agent of a crate)."""
    return f"{CAPSULE_URN}:capsule@{version}"


def artifact_name(variant: Device | str) -> str:
    return f"{PROVENANCE_PREFIX}{variant}"


def sha256_digest(image_id: str) -> dict[str, str]:
    """An engine's image ID (`sha256:<hex>`) as an in-toto digest set."""
    algorithm, _, hexdigest = image_id.rpartition(":")
    return {algorithm or "sha256": hexdigest}


def image_wheels(manifest: Manifest, variant: Device | str) -> dict[str, ArtifactRef]:
    """The wheels an image was built from, as the capsule stores them (artifact name → ref)."""
    folder = WHEELHOUSE_DIR[variant]
    image = manifest.images[Device(variant)]
    return {
        f"{folder}/{wheel}": manifest.artifacts[f"{folder}/{wheel}"]
        for wheel in image.wheels
        if f"{folder}/{wheel}" in manifest.artifacts
    }


def image_statement(
    manifest: Manifest, variant: Device | str, started: str | None = None
) -> Statement:
    """The statement for the image the manifest records for `variant`."""
    image = manifest.images[Device(variant)]
    dependencies = [
        ResourceDescriptor(
            name=image.base_image,
            digest=sha256_digest(image.base_id),
            annotations={"role": "base image"},
        )
    ]
    archive = manifest.artifacts.get(image.base.archive) if image.base else None
    if image.base is not None and archive is not None:  # the base as the capsule carries it
        facts = image.base.model_dump(include={"release", "mirror", "packages_date"})
        dependencies.append(
            ResourceDescriptor(
                name=archive.path,
                digest={"sha256": archive.sha256},
                mediaType=archive.media_type,
                annotations={"role": "base image archive"}
                | {k: v for k, v in facts.items() if v is not None},
            )
        )
    for name, ref in sorted(image_wheels(manifest, variant).items()):
        dependencies.append(
            ResourceDescriptor(name=name, digest={"sha256": ref.sha256}, mediaType=ref.media_type)
        )
    for name, ref in sorted(manifest.artifacts.items()):
        if name.startswith("code/"):
            dependencies.append(
                ResourceDescriptor(
                    name=ref.path, digest={"sha256": ref.sha256}, mediaType=ref.media_type
                )
            )
    return Statement(
        subject=[ResourceDescriptor(name=image.tag, digest=sha256_digest(image.image_id))],
        predicate=Provenance(
            buildDefinition=BuildDefinition(
                buildType=BUILD_TYPE,
                externalParameters={
                    "capsule": {"name": manifest.spec.name, "digest": image.capsule_digest},
                    "variant": str(variant),
                    "engine": image.engine,
                    "baseImage": image.base_image,
                },
                internalParameters={
                    "dockerfileSha256": image.dockerfile_sha256,
                    "sourceDateEpoch": image.source_date_epoch,
                },
                resolvedDependencies=dependencies,
            ),
            runDetails=RunDetails(
                builder=Builder(
                    id=builder_id(__version__),
                    version={"capsule": __version__, "engine": image.engine},
                ),
                metadata=BuildMetadata(startedOn=started, finishedOn=image.built),
            ),
        ),
    )


def record_provenance(
    capsule: Capsule, variant: Device | str, started: str | None = None
) -> ArtifactRef:
    """Store the statement for the recorded image of `variant` (replacing an earlier one)."""
    name = artifact_name(variant)
    data = image_statement(capsule.manifest, variant, started).dump()
    previous = store_json(capsule, name, PROVENANCE_DIR, str(variant), data)
    ref = capsule.manifest.artifacts[name]
    if previous is not None and previous.path != ref.path:
        (capsule.path / previous.path).unlink(missing_ok=True)
    return ref


def ensure_provenance(capsule: Capsule, variant: Device | str) -> None:
    """A statement for an image recorded before Capsule wrote them (its start time unknown)."""
    if artifact_name(variant) not in capsule.manifest.artifacts:
        record_provenance(capsule, variant)


def load_statement(capsule: Capsule, variant: Device | str) -> Statement | None:
    """The stored statement for `variant`'s image (re-hashed as it is read), if any."""
    name = artifact_name(variant)
    ref = capsule.manifest.artifacts.get(name)
    if ref is None:
        return None
    data = read_artifact(capsule.path, name, ref)
    try:
        return Statement.model_validate_json(data)
    except ValidationError as error:
        raise BadInput(f"{capsule.path / ref.path}: not an in-toto statement: {error}") from None
