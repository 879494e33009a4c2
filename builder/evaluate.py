"""evaluate: the error rates of trained weights (a capsule's, a replay's) computed on this
machine's device and thread count — one column of the cross-device matrix."""

from __future__ import annotations

from pathlib import Path

from builder.controls import seed_everything
from builder.data import Dataset
from builder.errors import BadInput
from builder.frameworks import get_framework, require_device
from builder.overrides import with_controls
from builder.records.manifest import Manifest
from builder.records.run import EpochMetrics
from builder.records.spec import Spec
from builder.store import Capsule, read_tensors, verify


def evaluation_spec(manifest: Manifest, device: str | None, threads: int | None) -> Spec:
    if not isinstance(manifest.spec, Spec):
        raise BadInput(
            f"{manifest.spec.name}: evaluate and matrix need a built-in experiment; the user's "
            "own code has no evaluation entry point"
        )
    spec = with_controls(manifest.spec, device, threads)
    assert isinstance(spec, Spec)
    return spec


def evaluate(
    capsule: Capsule, trained: list[Path], device: str | None, threads: int | None
) -> dict[str, EpochMetrics]:
    """Each trained directory's weights evaluated on the capsule's data here."""
    manifest = capsule.manifest
    spec = evaluation_spec(manifest, device, threads)
    assert manifest.data is not None
    dataset = Dataset.from_tensors(capsule.tensors("data"), manifest.data.classes)
    framework = get_framework(spec.framework)
    require_device(framework, spec)
    seed_everything(spec.seeds.init)
    framework.apply_controls(spec, spec.controls.device, spec.controls.threads)
    results = {}
    for directory in trained:
        record = verify(directory)
        if record.spec.name != manifest.spec.name:
            raise BadInput(f"{directory}: holds {record.spec.name}, not {manifest.spec.name}")
        weights = read_tensors(directory, record, "weights")
        results[str(directory)] = framework.evaluate(spec, dataset, weights, spec.controls.device)
    return results
