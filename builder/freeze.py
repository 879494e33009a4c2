"""freeze: run a spec under full controls and write its capsule atomically."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import __version__
from builder.data import ORDER_LIMIT, DrawnOrder, load_dataset, write_order
from builder.errors import BadInput
from builder.frameworks import check_spec
from builder.observer import SILENT, Observer
from builder.overrides import with_controls
from builder.records.manifest import Manifest
from builder.records.run import ArtifactRef, Finding, ToolInfo
from builder.records.spec import Spec, UserSpec
from builder.run import RunResult, execute
from builder.scan import scan_files
from builder.spec import load_spec
from builder.store import SAFETENSORS, StagedDir

if TYPE_CHECKING:
    from builder.usercode import CodeResult

TOOL = ToolInfo(name="capsule", version=__version__)
CODE_DIR = "code"
OUTPUTS = "outputs"  # the user's code runs here; every file it leaves is stored
PYTHON = "text/x-python"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def spec_path(path: Path) -> Path:
    return path / "capsule.toml" if path.is_dir() else path


def freeze(
    path: Path,
    out: Path,
    observer: Observer = SILENT,
    force: bool = False,
    strict: bool = False,
    device: str | None = None,
    threads: int | None = None,
) -> Manifest:
    """Validate, then freeze the built-in experiment or the user's code the spec names
    (`device` / `threads` replace the spec's controls; the manifest's spec records them)."""
    path = spec_path(path)
    spec = with_controls(load_spec(path), device, threads)
    check_spec(spec, str(path))
    if isinstance(spec, UserSpec):
        return freeze_code(spec, path, out, observer, force, strict)
    return freeze_builtin(spec, path, out, observer, force)


def freeze_builtin(spec: Spec, path: Path, out: Path, observer: Observer, force: bool) -> Manifest:
    """Generate or read the data, draw and record the order, train, write the capsule."""
    dataset, data_record = load_dataset(spec.data, path.parent, str(path))
    rows = data_record.splits["train"].rows
    if rows * spec.train.epochs > ORDER_LIMIT:
        raise BadInput(
            f"{path}: train.epochs: {spec.train.epochs:,} epochs of {rows:,} training rows make a "
            f"recorded order of {rows * spec.train.epochs:,} row indices; at most "
            f"{ORDER_LIMIT:,} (8 GiB)"
        )
    order = DrawnOrder(rows, spec.train.epochs, spec.seeds.order)
    with StagedDir(out, force=force) as stage:
        result = execute(spec, dataset, order, observer)
        order_file = "artifacts/order.safetensors"
        order_sha256, order_size = write_order(order, stage.stage / order_file)
        artifacts = {
            "spec": stage.add_bytes("capsule.toml", path.read_bytes(), "application/toml"),
            "data": stage.add_tensors("artifacts/data.safetensors", dataset.tensors()),
            "order": ArtifactRef(
                path=order_file, sha256=order_sha256, size=order_size, media_type=SAFETENSORS
            ),
            "initial": stage.add_tensors("artifacts/initial.safetensors", result.initial),
            "weights": stage.add_tensors("artifacts/weights.safetensors", result.weights),
        }
        manifest = _manifest(spec, result, artifacts, data=data_record)
        stage.commit(manifest)
    return manifest


def refuse_findings(findings: list[Finding], source: str) -> None:
    """`--strict`: any nondeterminism finding stops the freeze (nothing is written)."""
    if findings:
        first = findings[0]
        raise BadInput(
            f"{source}: --strict: {len(findings)} nondeterminism finding(s); first: "
            f"{first.file}:{first.line}: [{first.rule}] {first.message}"
        )


def freeze_code(
    spec: UserSpec,
    path: Path,
    out: Path,
    observer: Observer,
    force: bool,
    strict: bool,
) -> Manifest:
    """Copy the code into the capsule, scan it, run `main(run)` from that copy, and store
    the code, the data it read, the orders it drew and the weights it saved."""
    from builder.usercode import code_files, execute_code

    files = code_files(spec, path.parent, str(path))
    with StagedDir(out, force=force) as stage:
        artifacts: dict[str, ArtifactRef] = {
            "spec": stage.add_bytes("capsule.toml", path.read_bytes(), "application/toml")
        }
        for name, file in files.items():
            media = PYTHON if name.endswith(".py") else "application/octet-stream"
            artifacts[f"{CODE_DIR}/{name}"] = stage.add_bytes(
                f"{CODE_DIR}/{name}", file.read_bytes(), media
            )
        code_dir = stage.stage / CODE_DIR
        static = scan_files(code_dir, [code_dir / name for name in files])
        if strict:
            refuse_findings(static, str(path))
        result = execute_code(
            spec,
            code_dir,
            path.parent,
            None,
            None,
            observer,
            shown_root=path.parent,
            outputs=stage.stage / OUTPUTS,
        )
        findings = static + result.findings
        if strict:
            refuse_findings(findings, str(path))
        for key, record in result.record.inputs.items():
            if record.artifact is None:
                continue
            ref = stage.add_bytes(
                record.artifact,
                result.record.files[record.artifact].read_bytes(),
                "application/octet-stream",
            )
            if ref.sha256 != record.sha256:
                raise BadInput(f"run.data({key!r}): the file changed while the code ran")
            artifacts[record.artifact] = ref
        if result.record.orders:
            artifacts["order"] = stage.add_tensors(
                "artifacts/order.safetensors", result.record.orders
            )
        artifacts.update(stored_outputs(stage, stage.stage / OUTPUTS))
        artifacts["weights"] = stage.add_tensors("artifacts/weights.safetensors", result.weights)
        manifest = _manifest(
            spec,
            result,
            artifacts,
            inputs=result.record.inputs,
            audit=findings,
            arguments=result.record.arguments,
        )
        stage.commit(manifest)
    return manifest


def stored_outputs(stage: StagedDir, outputs: Path) -> dict[str, ArtifactRef]:
    """The files the code left in its outputs folder, as artifacts named `outputs/NAME`
    (stored by digest where they lie; `diff` compares them)."""
    from builder.usercode import output_files

    if not outputs.is_dir():
        return {}
    refs = {}
    for name, file in output_files(outputs).items():
        relpath = f"{OUTPUTS}/{name}"
        refs[relpath] = stage.add_bytes(relpath, file.read_bytes(), "application/octet-stream")
    if not refs:
        shutil.rmtree(outputs)  # empty folders only: nothing to store
    return refs


def _manifest(
    spec: Spec | UserSpec,
    result: RunResult | CodeResult,
    artifacts: dict[str, ArtifactRef],
    **extra: Any,
) -> Manifest:
    """The manifest of a freeze: the tool, the time, the spec and what the run gave."""
    return Manifest(
        tool=TOOL,
        created=now(),
        spec=spec,
        controls=result.controls,
        fingerprint=result.fingerprint,
        outcome=result.outcome,
        artifacts=artifacts,
        **extra,
    )
