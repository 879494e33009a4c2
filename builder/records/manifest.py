"""The capsule's manifest (`manifest.json`): the product's long-lived on-disk contract.

Schema version 1. Fields are only ever added with defaults; anything else bumps the version.
"""

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from builder.model_base import Strict
from builder.records.enums import Device
from builder.records.replay import RunRecord, RunSetup
from builder.records.run import Sha256

Split = Literal["train", "dev", "eval"]


class SplitInfo(Strict):
    rows: int
    features: int
    sha256: Sha256 = Field(
        description="sha256 over the split's x and y arrays (dtype, shape, bytes)"
    )


class BuiltinRecipe(Strict):
    name: str
    recipe_version: int
    seed: int


class SourceFile(Strict):
    """A user data file as it was when frozen: its path as given and the digest of its bytes."""

    path: str
    sha256: Sha256


class DataRecord(Strict):
    source: Literal["builtin", "files"]
    builtin: BuiltinRecipe | None = None
    files: dict[Split, SourceFile] = Field(default={})
    classes: int
    splits: dict[Split, SplitInfo]


class BaseRecord(Strict):
    """The base image the capsule's image was built on, carried in the capsule so that a rebuild
    needs neither a network nor a registry (builder/base_image.py), and where it came from."""

    archive: str = Field(
        description="the artifact holding the base: the engine's `docker save` archive, zstd"
    )
    image_id: str = Field(description="the ID of the image in the archive (a load keeps it)")
    layers: list[str] = Field(description="the base's layer diff IDs (the image ID follows them)")
    unpacked_bytes: int = Field(
        description="the archive's size uncompressed (a load reads no more)"
    )
    release: str | None = Field(
        default=None, description="Debian release of Capsule's own base; None for a --base"
    )
    mirror: str | None = Field(default=None, description="the Debian mirror it was made from")
    packages_date: str | None = Field(
        default=None,
        description="the mirror's Release date: the package set, for snapshot.debian.org",
    )


class ImageRecord(Strict):
    """A container image built for the capsule, reproducible from its own wheelhouse; its ID
    does not depend on the engine that built it (`engine`, Docker in capsules made before)."""

    engine: Literal["docker", "podman"] = "docker"
    image_id: str
    tag: str
    base_image: str
    base_id: str
    dockerfile_sha256: Sha256
    capsule_digest: Sha256 = Field(description="sha256 of the manifest without `images`")
    source_date_epoch: int
    wheels: list[str]
    built: str
    base: BaseRecord | None = Field(
        default=None, description="None for images recorded before the base travelled along"
    )

    @model_serializer(mode="wrap")
    def _base_when_carried(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An image recorded before bases were carried is written as it was (same bytes)."""
        data: dict[str, Any] = write(self)
        if data.get("base") is None:
            data.pop("base", None)
        return data


class _CapsuleData(RunSetup):
    """The data a capsule was frozen with; it sits between the fingerprint and the inputs in
    `manifest.json`, so it is a base of its own (pydantic orders fields base first)."""

    data: DataRecord | None = Field(default=None, description="None for the user's own code")


class Manifest(RunRecord, _CapsuleData):
    """A capsule: its run (the shared base), its data and the images built for it."""

    kind: Literal["capsule"] = "capsule"
    images: dict[Device, ImageRecord] = Field(default={})
