"""freeze: run a spec under full controls and write its capsule atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from builder import __version__
from builder.data import load_dataset, make_order
from builder.frameworks import EpochCallback, check_spec
from builder.manifest import Manifest, ToolInfo
from builder.run import execute
from builder.spec import Spec, load_spec
from builder.store import StagedDir

TOOL = ToolInfo(name="capsule", version=__version__)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def spec_path(path: Path) -> Path:
    return path / "capsule.toml" if path.is_dir() else path


def freeze(path: Path, out: Path, on_epoch: EpochCallback, force: bool = False) -> Manifest:
    """Validate, generate or read the data, draw and record the order, train, write the capsule."""
    path = spec_path(path)
    spec: Spec = load_spec(path)
    check_spec(spec, str(path))
    dataset, data_record = load_dataset(spec.data, path.parent, str(path))
    order = make_order(data_record.splits["train"].rows, spec.train.epochs, spec.seeds.order)
    with StagedDir(out, force=force) as stage:
        result = execute(spec, dataset, order, on_epoch)
        artifacts = {
            "spec": stage.add_bytes("capsule.toml", path.read_bytes(), "application/toml"),
            "data": stage.add_tensors("artifacts/data.safetensors", dataset.tensors()),
            "order": stage.add_tensors("artifacts/order.safetensors", {"order": order}),
            "initial": stage.add_tensors("artifacts/initial.safetensors", result.initial),
            "weights": stage.add_tensors("artifacts/weights.safetensors", result.weights),
        }
        manifest = Manifest(
            tool=TOOL,
            created=now(),
            spec=spec,
            controls=result.controls,
            fingerprint=result.fingerprint,
            data=data_record,
            outcome=result.outcome,
            artifacts=artifacts,
        )
        stage.commit(manifest)
    return manifest
