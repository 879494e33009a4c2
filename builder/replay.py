"""replay: run a capsule again from its own recorded data, order, seeds and controls,
on this host or inside the capsule's image."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from builder.api import InputFile
from builder.data import Dataset, DrawnOrder, Order, StoredOrder
from builder.errors import BadInput, CapsuleError, EngineMissing, IntegrityError
from builder.freeze import CODE_DIR, OUTPUTS, TOOL, now, stored_outputs
from builder.observer import SILENT, Observer
from builder.overrides import apply_changes, changed, parse_sets, with_controls
from builder.records.enums import Device, Where
from builder.records.manifest import Manifest
from builder.records.replay import CapsuleRef, ReplayRecord
from builder.records.spec import Spec, UserSpec
from builder.run import execute
from builder.store import (
    MANIFEST,
    Capsule,
    StagedDir,
    capsule_digest,
    check_artifact,
    file_sha256,
    load_record,
    sha256_bytes,
)
from builder.usercode import CodeResult, execute_code

IMAGE_ENV = "CAPSULE_IMAGE_ID"  # set by `replay --on ENGINE` inside the container it starts
ENGINE_ENV = "CAPSULE_ENGINE"  # which engine that container runs on
CODE_ENV = "CAPSULE_CODE_DIR"  # where the image holds the capsule's code
CONTAINER_USER = "65534:65534"  # nobody: the replay never runs as root in the container


def replay_spec(
    manifest: Manifest,
    threads: int | None,
    device: str | None,
    sets: list[str] | None = None,
) -> tuple[Spec | UserSpec, dict[str, str]]:
    """The capsule's spec with the caller's overrides (`--threads`, `--device`, `--set`)
    applied, and the values that changed, in words."""
    changes = parse_sets(sets or [])
    spec = apply_changes(manifest.spec, changes) if changes else manifest.spec
    spec = with_controls(spec, device, threads)
    return spec, changed(manifest.spec, spec)


def replay_order(capsule: Capsule, spec: Spec) -> Order:
    """The recorded order, unless the replay changed what it was drawn from (the order seed
    or the number of epochs): then the order those values draw. Either is read or drawn an
    epoch at a time; the recorded one after checking its digest."""
    manifest = capsule.manifest
    assert isinstance(manifest.spec, Spec) and manifest.data is not None
    rows = manifest.data.splits["train"].rows
    same = (spec.seeds.order, spec.train.epochs) == (
        manifest.spec.seeds.order,
        manifest.spec.train.epochs,
    )
    if not same:
        return DrawnOrder(rows, spec.train.epochs, spec.seeds.order)
    ref = manifest.artifacts.get("order")
    if ref is None:
        raise BadInput(f"{capsule.path}: artifacts.order: not in this record")
    check_artifact(capsule.path, "order", ref)  # refuses a path that leaves the capsule
    return StoredOrder(capsule.path / ref.path, rows, spec.train.epochs)


def replay_on_host(
    capsule: Capsule,
    out: Path,
    observer: Observer = SILENT,
    threads: int | None = None,
    device: str | None = None,
    force: bool = False,
    sets: list[str] | None = None,
) -> ReplayRecord:
    manifest = capsule.manifest
    spec, overrides = replay_spec(manifest, threads, device, sets)
    image_id = os.environ.get(IMAGE_ENV)
    with StagedDir(out, force=force) as stage:
        if isinstance(spec, UserSpec):
            code = replay_code(capsule, spec, observer, stage.stage / OUTPUTS)
            controls, fingerprint, outcome = code.controls, code.fingerprint, code.outcome
            outputs = stored_outputs(stage, stage.stage / OUTPUTS)
            weights, inputs = code.weights, code.record.inputs
            audit = [f for f in manifest.audit if f.source == "static"] + code.findings
            arguments = code.record.arguments
        else:
            assert manifest.data is not None
            dataset = Dataset.from_tensors(capsule.tensors("data"), manifest.data.classes)
            result = execute(spec, dataset, replay_order(capsule, spec), observer)
            controls, fingerprint, outcome = result.controls, result.fingerprint, result.outcome
            weights, inputs, audit, arguments, outputs = result.weights, {}, [], None, {}
        record = ReplayRecord(
            tool=TOOL,
            created=now(),
            capsule=CapsuleRef(
                name=manifest.spec.name,
                path=str(capsule.path.resolve()),
                manifest_sha256=sha256_bytes((capsule.path / MANIFEST).read_bytes()),
                source_digest=capsule_digest(manifest),
            ),
            on=Where(os.environ.get(ENGINE_ENV, Where.docker)) if image_id else Where.host,
            image_id=image_id,
            overrides=overrides,
            spec=spec,
            controls=controls,
            fingerprint=fingerprint,
            inputs=inputs,
            audit=audit,
            outcome=outcome,
            artifacts={
                "weights": stage.add_tensors("artifacts/weights.safetensors", weights),
                **outputs,
            },
            arguments=arguments,
        )
        stage.commit(record)
    return record


def code_directory(capsule: Capsule) -> Path:
    """The capsule's code, or inside its image the copy the image holds (CODE_ENV), after
    checking that copy against the manifest's digests."""
    in_image = os.environ.get(CODE_ENV)
    if not in_image:
        return capsule.path / CODE_DIR
    root = Path(in_image)
    for name, ref in capsule.manifest.artifacts.items():
        if name.startswith(f"{CODE_DIR}/"):
            copy = root / name.removeprefix(f"{CODE_DIR}/")
            if not copy.is_file() or file_sha256(copy) != ref.sha256:
                raise IntegrityError(f"{copy}: the image's copy of {name} differs from the capsule")
    return root


def replay_code(capsule: Capsule, spec: UserSpec, observer: Observer, outputs: Path) -> CodeResult:
    """Run the capsule's code with its recorded orders and its copies of the data files, in
    the folder `outputs` (what it writes there is its outputs)."""
    manifest = capsule.manifest
    inputs = {
        key: InputFile(
            source=capsule.path / manifest.artifacts[r.artifact].path, artifact=r.artifact
        )
        for key, r in manifest.inputs.items()
        if r.artifact is not None
    }
    orders: dict[str, np.ndarray] | None = (
        capsule.tensors("order") if "order" in manifest.artifacts else {}
    )
    if spec.seeds.order != manifest.spec.seeds.order:
        orders = None  # a what-if order seed: the code's run.order draws from it
    directory = code_directory(capsule)
    return execute_code(spec, directory, capsule.path, orders, inputs, observer, outputs=outputs)


def replay_in_image(
    capsule: Capsule,
    out: Path,
    observer: Observer = SILENT,
    engine_name: str = "docker",
    threads: int | None = None,
    device: str | None = None,
    force: bool = False,
    sets: list[str] | None = None,
    image_id: str | None = None,
) -> ReplayRecord:
    """Replay inside the capsule's image (or `image_id`, an upgrade audit's image with other
    library versions) on the named engine: capsule mounted read-only, under the engines'
    confinement (no network, not root, ...); the container is removed whatever happens."""
    from builder.engines import Job, Mount, open_engine
    from builder.engines.recipe import CODE_IN_IMAGE, IMAGE_TREE

    manifest = capsule.manifest
    spec, _ = replay_spec(manifest, threads, device, sets)  # bad --set values fail here, early
    gpu = spec.controls.device == "cuda"
    variant = Device.cuda if gpu else Device.cpu
    if image_id is None:
        image = manifest.images.get(variant)
        if image is None:
            flag = " --gpu" if gpu else ""
            raise EngineMissing(
                f"{capsule.path}: no {variant} image built for this capsule; run "
                f"`capsule build {capsule.path}{flag}`"
            )
        image_id = image.image_id
        where = f"({image.tag}) "
    else:
        where = ""
    engine = open_engine(engine_name)
    if engine.has_image(image_id) is None:
        hint = engine.missing_hint or (
            f"run `capsule build {capsule.path} --engine {engine.name}` or `capsule import` the "
            "capsule's export with its image"
        )
        raise EngineMissing(f"image {image_id[:19]}… {where}is not in {engine.label}; {hint}")
    argv = [f"{IMAGE_TREE}/venv/bin/capsule", "replay", "/capsule", "--out", "/out/replay"]
    argv += ["--on", "host"]
    argv += ["--threads", str(threads)] if threads else []
    argv += ["--device", device] if device else []
    for item in sets or []:
        argv += ["--set", item]
    with StagedDir(out, force=force) as stage:
        work = stage.stage / "work"
        work.mkdir()
        os.chmod(work, 0o777)  # the container's unprivileged user writes its replay here
        user = CONTAINER_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        env = {IMAGE_ENV: image_id, ENGINE_ENV: engine.name}
        if isinstance(manifest.spec, UserSpec):
            env[CODE_ENV] = CODE_IN_IMAGE
        mounts = [Mount(capsule.path, "/capsule"), Mount(work, "/out", writable=True)]
        code, last = engine.run(image_id, Job(argv, mounts, env, user, gpu), observer.log)
        if code != 0:
            raise container_error("replay", code, last)
        for produced in (work / "replay").iterdir():
            produced.rename(stage.stage / produced.name)
        shutil.rmtree(work)
        record = load_record(stage.stage)
        if not isinstance(record, ReplayRecord):
            raise IntegrityError("the container wrote something other than a replay record")
        stage.commit(None)
    return record


def container_error(what: str, code: int, last: str) -> CapsuleError:
    """A command that failed in a container, as the same kind of error here (exit 3 and 4
    keep their meaning; anything else is bad input)."""
    message = (
        f"{what} in the container failed (exit {code}): {last.removeprefix('capsule: error: ')}"
    )
    kinds: dict[int, type[CapsuleError]] = {3: IntegrityError, 4: EngineMissing}
    return kinds.get(code, BadInput)(message)
