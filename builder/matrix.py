"""The cross-device matrix (the paper's "Mismatched Architectures" table): train the capsule's
experiment on each configuration, then evaluate every trained model on every configuration.

Each training and each evaluation runs in a process of its own (`capsule replay`, `capsule
evaluate`, on the host or in the capsule's image), because thread pools and the cuBLAS
workspace can only be set when a process starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from builder.errors import BadInput, CapsuleError, EngineMissing, IntegrityError
from builder.observer import Log, Observer
from builder.records.enums import Device, Where
from builder.records.matrix import Cell, Config, MatrixRecord, Row
from builder.store import Capsule, StagedDir, load_record, read_tensors

CONFIG = re.compile(r"^(?:(host|docker|podman|oci):)?(cpu|cuda)(?::([1-9][0-9]*))?$")


def parse_devices(text: str) -> list[Config]:
    """`cpu:1,cpu:2,docker:cpu,podman:cpu,oci:cpu,cuda` → configurations (host unless an engine is
    named; threads as the spec says unless `:N`)."""
    configs = []
    for item in (part.strip() for part in text.split(",")):
        match = CONFIG.match(item)
        if not match:
            raise BadInput(
                f"--devices {item!r}: expected [host:|docker:|podman:|oci:]cpu|cuda[:THREADS], "
                "e.g. cpu:2"
            )
        on, device, threads = match.groups()
        configs.append(
            Config(
                label=item,
                on=Where(on or "host"),
                device=Device(device),
                threads=int(threads) if threads else None,
            )
        )
    if len({c.label for c in configs}) != len(configs):
        raise BadInput(f"--devices {text!r}: a configuration is named twice")
    return configs


def _slug(label: str) -> str:
    return label.replace(":", "-")


def _cli(args: list[str], log: Log) -> None:
    """Run a capsule command in a fresh process; its failure becomes the same error here."""
    result = subprocess.run(
        [sys.executable, "-m", "builder", *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1].removeprefix("capsule: error: ")
        kinds: dict[int, type[CapsuleError]] = {3: IntegrityError, 4: EngineMissing}
        raise kinds.get(result.returncode, BadInput)(f"capsule {args[0]}: {last}")


def _train(capsule: Path, config: Config, out: Path, log: Log) -> None:
    args = ["replay", str(capsule), "--out", str(out), "--on", config.on, "--opened"]
    args += ["--device", config.device]
    args += ["--threads", str(config.threads)] if config.threads else []
    log(f"matrix: training on {config.label}")
    _cli(args, log)


def _evaluate(
    capsule: Capsule, config: Config, trained: list[Path], work: Path, log: Log
) -> dict[str, dict[str, float | None]]:
    """Every trained model's metrics evaluated on `config`."""
    log(f"matrix: evaluating {len(trained)} model(s) on {config.label}")
    result_file = work / f"eval-{_slug(config.label)}.json"
    options = ["--device", config.device]
    options += ["--threads", str(config.threads)] if config.threads else []
    if config.on == Where.host:
        names = [str(t) for t in trained]
        args = ["evaluate", str(capsule.path), *names, *options, "--opened"]
        _cli([*args, "--out", str(result_file)], log)
        found = json.loads(result_file.read_text())
        return {Path(k).name: v for k, v in found.items()}
    from builder.engines import Job, Mount, open_engine
    from builder.engines.recipe import IMAGE_TREE
    from builder.replay import CONTAINER_USER

    image = capsule.manifest.images.get(config.device)
    if image is None:
        raise EngineMissing(
            f"{capsule.path}: no {config.device} image; run `capsule build {capsule.path}`"
        )
    engine = open_engine(config.on)
    if engine.has_image(image.image_id) is None:
        raise EngineMissing(f"image {image.image_id[:19]}… is not in {engine.label}")
    outbox = work / f"eval-{_slug(config.label)}"
    outbox.mkdir()
    os.chmod(outbox, 0o777)
    names = [f"/matrix/{t.name}" for t in trained]
    argv = [f"{IMAGE_TREE}/venv/bin/capsule", "evaluate", "/capsule", *names, *options]
    argv += ["--out", "/out/eval.json"]
    mounts = [Mount(capsule.path, "/capsule"), Mount(work, "/matrix"), Mount(outbox, "/out", True)]
    user = CONTAINER_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    job = Job(argv, mounts, {}, user, config.device == Device.cuda)
    code, last = engine.run(image.image_id, job, lambda line: None)
    if code != 0:
        from builder.replay import container_error

        raise container_error("evaluation", code, last)
    found = json.loads((outbox / "eval.json").read_text())
    return {Path(k).name: v for k, v in found.items()}


def matrix(
    capsule: Capsule, configs: list[Config], out: Path, observer: Observer, force: bool
) -> MatrixRecord:
    """Train on every configuration, evaluate every model on every configuration; the trained
    replays and `matrix.json` are kept in `out`. Each training and evaluation is a command of
    its own (a fresh process) on the capsule this command verified (`--opened`: its manifest's
    digest and what it reads are checked there, not the whole capsule again)."""
    from builder.evaluate import evaluation_spec

    log = observer.log
    evaluation_spec(capsule.manifest, None, None)  # refuses user code before any work
    baseline = capsule.tensors("weights")
    with StagedDir(out, force=force) as stage:
        trained = {c.label: stage.stage / f"train-{_slug(c.label)}" for c in configs}
        for config in configs:
            _train(capsule.path, config, trained[config.label], log)
        rows = []
        for config in configs:
            directory = trained[config.label]
            weights = read_tensors(directory, load_record(directory), "weights")
            deltas = [
                float(np.max(np.abs(weights[k].astype(np.float64) - baseline[k]))) for k in baseline
            ]
            rows.append(
                Row(
                    trained_on=config.label,
                    weights_identical_to_baseline=all(
                        weights[k].tobytes() == baseline[k].tobytes() for k in baseline
                    ),
                    max_abs_to_baseline=max(deltas, default=0.0),
                )
            )
        cells = []
        by_name = {trained[c.label].name: c.label for c in configs}
        for config in configs:
            found = _evaluate(capsule, config, list(trained.values()), stage.stage, log)
            for name, metrics in found.items():
                cells.append(
                    Cell(
                        trained_on=by_name[name],
                        evaluated_on=config.label,
                        train_error=metrics["train_error"],  # type: ignore[arg-type]
                        dev_error=metrics["dev_error"],
                        eval_error=metrics["eval_error"],
                        train_loss=metrics["train_loss"],  # type: ignore[arg-type]
                    )
                )
        result = MatrixRecord(capsule=str(capsule.path), configs=configs, rows=rows, cells=cells)
        (stage.stage / "matrix.json").write_text(result.model_dump_json(indent=2) + "\n")
        stage.commit(None)
    return result


def csv_text(result: MatrixRecord) -> str:
    lines = ["trained_on,evaluated_on,train_error,dev_error,eval_error,train_loss,identical"]
    identical = {r.trained_on: r.weights_identical_to_baseline for r in result.rows}
    for c in result.cells:
        dev = "" if c.dev_error is None else repr(c.dev_error)
        ev = "" if c.eval_error is None else repr(c.eval_error)
        lines.append(
            f"{c.trained_on},{c.evaluated_on},{c.train_error!r},{dev},{ev},{c.train_loss!r},"
            f"{str(identical[c.trained_on]).lower()}"
        )
    return "\n".join(lines) + "\n"
