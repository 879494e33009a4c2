"""replay: run a capsule again from its own recorded data, order, seeds and controls."""

from __future__ import annotations

from pathlib import Path

from builder.data import Dataset
from builder.errors import BadInput
from builder.frameworks import EpochCallback
from builder.freeze import TOOL, now
from builder.manifest import CapsuleRef, Manifest, ReplayRecord
from builder.run import execute
from builder.spec import Spec
from builder.store import MANIFEST, StagedDir, read_tensors, sha256_bytes, verify


def replay_spec(
    manifest: Manifest, threads: int | None, device: str | None
) -> tuple[Spec, dict[str, str]]:
    """The capsule's spec with the caller's overrides applied, and those overrides in words."""
    changes: dict[str, object] = {}
    if threads is not None and threads != manifest.spec.controls.threads:
        changes["threads"] = threads
    if device is not None and device != manifest.spec.controls.device:
        changes["device"] = device
    controls = manifest.spec.controls.model_copy(update=changes)
    spec = manifest.spec.model_copy(update={"controls": controls})
    return spec, {f"controls.{k}": str(v) for k, v in changes.items()}


def replay(
    capsule: Path,
    out: Path,
    on_epoch: EpochCallback,
    threads: int | None = None,
    device: str | None = None,
    on: str = "host",
    force: bool = False,
) -> ReplayRecord:
    if on != "host":
        raise BadInput(f"--on {on}: only 'host' replay is available in this version of Capsule")
    manifest = verify(capsule)
    if not isinstance(manifest, Manifest):
        raise BadInput(f"{capsule}: is a replay, not a capsule")
    spec, overrides = replay_spec(manifest, threads, device)
    dataset = Dataset.from_tensors(read_tensors(capsule, manifest, "data"), manifest.data.classes)
    order = read_tensors(capsule, manifest, "order")["order"]
    with StagedDir(out, force=force) as stage:
        result = execute(spec, dataset, order, on_epoch)
        record = ReplayRecord(
            tool=TOOL,
            created=now(),
            capsule=CapsuleRef(
                name=manifest.spec.name,
                path=str(capsule.resolve()),
                manifest_sha256=sha256_bytes((capsule / MANIFEST).read_bytes()),
            ),
            on="host",
            overrides=overrides,
            spec=spec,
            controls=result.controls,
            fingerprint=result.fingerprint,
            outcome=result.outcome,
            artifacts={
                "weights": stage.add_tensors("artifacts/weights.safetensors", result.weights)
            },
        )
        stage.commit(record)
    return record
