"""build: the capsule's wheelhouse and image (on a container engine), recorded in its manifest.

`--check` rebuilds without cache and says whether the image ID is the recorded one.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from pathlib import Path

from builder.base_image import Carried, carried, carry, restore
from builder.base_image import record as keep_base
from builder.engines import Engine, open_engine
from builder.engines.recipe import (
    build_context,
    code_in_image,
    created_label,
    render_dockerfile,
)
from builder.engines.wheelhouse import (
    WHEELHOUSE_DIR,
    build_tool_wheel,
    download_wheels,
    pinned_distributions,
)
from builder.errors import BadInput, EngineMissing, IntegrityError
from builder.frameworks import FRAMEWORKS
from builder.freeze import now
from builder.observer import SILENT, Log, Observer
from builder.provenance import ensure_provenance, record_provenance
from builder.records.enums import Device
from builder.records.manifest import BaseRecord, ImageRecord
from builder.records.results import BuildResult
from builder.records.run import ArtifactRef
from builder.records.spec import UserSpec
from builder.store import Capsule, capsule_digest, file_sha256, sha256_bytes


def wheelhouse(capsule: Capsule, variant: str, log: Log) -> list[str]:
    """The capsule's wheelhouse for `variant`, made once and then stored in the capsule as
    artifacts (one sha256 per wheel), so every later build installs the very same files."""
    manifest = capsule.manifest
    folder = WHEELHOUSE_DIR[variant]
    stored = _stored_wheels(manifest.artifacts, folder)
    if stored:
        return stored
    requires = manifest.spec.code.requires if isinstance(manifest.spec, UserSpec) else []
    pins = pinned_distributions(
        manifest.fingerprint.distributions, manifest.spec.framework, log, requires
    )
    if variant == "cuda":
        # the framework's CUDA build at the same version, without a local "+cpu" tag
        entry = FRAMEWORKS[manifest.spec.framework]
        assert entry.cuda_requirement is not None  # build() refuses --gpu without GPU support
        cuda_requirement = entry.cuda_requirement
        pins[cuda_requirement] = pins.pop(entry.cpu_distribution).split("+")[0]
        log(f"wheelhouse: the CUDA build {cuda_requirement}=={pins[cuda_requirement]}")
    staging = capsule.path / f".{folder}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        download_wheels(pins, staging, log, with_deps=variant == "cuda")
        if variant == "cuda":
            _require_cuda_build(staging, manifest.spec.framework)
        build_tool_wheel(staging, log)
        wheels = sorted(p.name for p in staging.glob("*.whl"))
        refs = {
            f"{folder}/{name}": ArtifactRef(
                path=f"{folder}/{name}",
                sha256=file_sha256(staging / name),
                size=(staging / name).stat().st_size,
                media_type="application/x-wheel+zip",
            )
            for name in wheels
        }
        final = capsule.path / folder
        with capsule.writing() as manifest:  # as it is now: another build may have stored it
            stored = _stored_wheels(manifest.artifacts, folder)
            if stored:
                shutil.rmtree(staging, ignore_errors=True)
                return stored
            if final.exists():
                shutil.rmtree(final)  # left by an interrupted build; not named by the manifest
            staging.rename(final)
            artifacts = {**manifest.artifacts, **refs}
            capsule.update(manifest.model_copy(update={"artifacts": artifacts}))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"wheelhouse: {len(wheels)} wheels stored in {final}")
    return wheels


def _stored_wheels(artifacts: dict[str, ArtifactRef], folder: str) -> list[str]:
    return sorted(
        ref.path.split("/", 1)[1]
        for name, ref in artifacts.items()
        if name.startswith(f"{folder}/")
    )


def build(
    capsule: Capsule,
    base: str | None,
    gpu: bool,
    check: bool,
    observer: Observer = SILENT,
    engine_name: str = "docker",
) -> BuildResult:
    manifest, log, where = capsule.manifest, observer.log, capsule.path
    variant = Device.cuda if gpu else Device.cpu
    if gpu and FRAMEWORKS[manifest.spec.framework].cuda_requirement is None:
        raise BadInput(
            f"{where}: spec.framework: '{manifest.spec.framework}' has no CUDA build; "
            "build without --gpu"
        )
    recorded = manifest.images.get(variant)
    if check and recorded is None:
        raise BadInput(
            f"{where}: images.{variant}: no image recorded yet; run `capsule build` first"
        )
    engine = open_engine(engine_name)
    if not engine.builds:
        raise BadInput(
            f"--engine {engine.name}: {engine.label} runs images but does not build them; "
            "build with docker or podman"
        )
    wheels = wheelhouse(capsule, variant, log)
    if not any(w.startswith("pip-") for w in wheels):
        raise BadInput(f"{where}: {WHEELHOUSE_DIR[variant]}: has no pip wheel to install with")
    carrying: Carried | None = None  # a base staged for the capsule, if it lacks it
    try:
        if check:
            assert recorded is not None
            base_name, base_record = recorded.base_image, recorded.base
            base_from = recorded_base(capsule, recorded, variant, engine, log)
        else:
            base_name, carrying = chosen_base(capsule, base, variant, engine, log)
            base_record, base_from = carrying.base, carrying.base.image_id
        return _build(
            capsule, variant, check, recorded, engine, wheels, base_name, base_from,
            base_record, carrying, log,
        )  # fmt: skip
    finally:
        if carrying is not None:
            carrying.discard()


def _build(
    capsule: Capsule,
    variant: Device,
    check: bool,
    recorded: ImageRecord | None,
    engine: Engine,
    wheels: list[str],
    base_name: str,
    base_from: str,
    base_record: BaseRecord | None,
    carrying: Carried | None,
    log: Log,
) -> BuildResult:
    """The build proper, on the base `base_from` (the carried base's image ID; the recorded
    reference for a `--check` of an image recorded before bases were carried)."""
    manifest, where = capsule.manifest, capsule.path
    pip_wheel = next(w for w in wheels if w.startswith("pip-"))
    dockerfile = render_dockerfile(variant == Device.cuda, base_from, pip_wheel)
    if check and recorded and recorded.dockerfile_sha256 != sha256_bytes(dockerfile.encode()):
        raise BadInput(
            f"{where}: images.{variant}.dockerfile_sha256: the recorded image was built from "
            "another Dockerfile (an earlier version of Capsule), so a rebuild cannot match it; "
            "run `capsule build` to record an image of this version's recipe"
        )
    digest = capsule_digest(manifest)
    tag = f"capsule/{manifest.spec.name.lower()}:{digest[:12]}-{variant}"
    if (
        not check
        and recorded is not None
        and (recorded.base_id, recorded.capsule_digest) == (base_from, digest)
        and recorded.dockerfile_sha256 == sha256_bytes(dockerfile.encode())
        and recorded.wheels == wheels
        and recorded.base == base_record  # else: recorded again, carrying its base
        and engine.has_image(recorded.image_id) is not None
    ):
        log(
            f"build: {tag} is built already in {engine.label} (same base, Dockerfile and "
            "wheels); --check rebuilds"
        )
        ensure_provenance(capsule, variant)  # an image recorded before statements were written
        return BuildResult(
            variant=variant, checked=False, matches=None, rebuilt_id=None, image=recorded
        )
    folder = capsule.path / WHEELHOUSE_DIR[variant]
    code = code_in_image(capsule.path, manifest)
    context = build_context(dockerfile, {w: folder / w for w in wheels}, code)
    epoch = recorded.source_date_epoch if check and recorded else freeze_epoch(manifest.created)
    labels = {
        "org.capsule.digest": digest,
        "org.capsule.name": manifest.spec.name,
        "org.capsule.variant": variant,
        **created_label(epoch),
    }
    started = now()
    shown = base_name if base_from == base_name else f"{base_name} ({base_from[:19]}…)"
    log(f"build: {tag} from {shown} with {engine.name}{' (no cache)' if check else ''}")
    image_id = engine.build(context, None if check else tag, labels, base_from, check, log)
    if check:
        assert recorded is not None
        if image_id != recorded.image_id:
            engine.remove(image_id)  # untagged: the recorded image keeps its tag
            raise IntegrityError(
                f"{where}: images.{variant}.image_id: rebuilt image {image_id[:19]}… "
                f"differs from the recorded {recorded.image_id[:19]}…"
            )
        engine.tag(image_id, recorded.tag)  # the recorded image, made again: not left untagged
        return BuildResult(
            variant=variant, checked=True, matches=True, rebuilt_id=image_id, image=recorded
        )
    record = ImageRecord(
        engine=engine.name,  # type: ignore[arg-type]
        image_id=image_id,
        tag=tag,
        base_image=base_name,
        base_id=base_from,
        dockerfile_sha256=sha256_bytes(dockerfile.encode()),
        capsule_digest=digest,
        source_date_epoch=epoch,
        wheels=wheels,
        built=now(),
        base=base_record,
    )
    with capsule.writing() as latest:  # the manifest as it is now: what others recorded stays
        images = {**latest.images, variant: record}
        keep_base(capsule, latest.model_copy(update={"images": images}), carrying)
        record_provenance(capsule, variant, started)  # provenance/<variant>: in-toto, SLSA v1
    return BuildResult(variant=variant, checked=False, matches=None, rebuilt_id=None, image=record)


def chosen_base(
    capsule: Capsule, base: str | None, variant: Device, engine: Engine, log: Log
) -> tuple[str, Carried]:
    """The base to build on, by name: the one the capsule carries (unless --base names
    another), else `--base`, the base of an image recorded before bases were carried (if the
    engine has it: the image keeps its ID), or Capsule's local base, then saved for the capsule."""
    image = carried(capsule.manifest, variant)
    if image is not None and image.base is not None and base in (None, image.base_image):
        restore(capsule, image.base, engine, log)
        return image.base_image, Carried(image.base)
    earlier = capsule.manifest.images.get(variant)
    if base is None and earlier is not None and engine.has_image(earlier.base_image):
        base = earlier.base_image
    ref, image_id = engine.base(base, log)
    for other in capsule.manifest.images.values():  # carried already, under another name
        if other.base is not None and other.base.image_id == image_id:
            return ref, Carried(other.base)
    return ref, carry(capsule, engine, ref, image_id, log)


def recorded_base(
    capsule: Capsule, recorded: ImageRecord, variant: Device, engine: Engine, log: Log
) -> str:
    """What the recorded image was built FROM, in the engine, for `--check`: the base the
    capsule carries (its ID; loaded if the engine lacks it), or, for an image recorded before
    bases were carried, its base's name, which the engine must have."""
    if recorded.base is not None:
        restore(capsule, recorded.base, engine, log)
        return recorded.base.image_id
    if engine.has_image(recorded.base_image) is None:
        raise EngineMissing(
            f"{capsule.path}: images.{variant}.base: {recorded.base_image} is not in "
            f"{engine.label} and the capsule does not carry it (recorded before bases were "
            f"stored); `{engine.name} load` that base, or `capsule build` again to record an "
            "image whose base travels with the capsule"
        )
    return recorded.base_image


def freeze_epoch(created: str) -> int:
    """The freeze time (the manifest's `created`) in seconds: the image's creation date, so
    `docker images` says when the experiment was frozen, not 1980 ("46 years ago")."""
    return int(datetime.fromisoformat(created).timestamp())


def _require_cuda_build(folder: Path, framework: str) -> None:
    """`FRAMEWORK==X` also matches a local `X+cpu` build: refuse a CUDA wheelhouse that got one."""
    cpu_builds = [p.name for p in folder.glob(f"{framework}-*+cpu-*.whl")]
    if cpu_builds:
        raise BadInput(
            f"wheelhouse-cuda: pip chose a CPU build ({cpu_builds[0]}); point pip at an index "
            "with the CUDA build (PIP_INDEX_URL / PIP_FIND_LINKS) and build --gpu again"
        )
