"""Execute one spec under controls → applied controls, fingerprint, outcome and weights.

Shared by freeze, replay and (later) sweep, so every path applies controls the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from builder.controls import applied_controls, seed_everything
from builder.data import Dataset
from builder.fingerprint import capture
from builder.frameworks import get_framework, require_device
from builder.observer import SILENT, Observer
from builder.records.run import AppliedControls, FinalMetrics, Fingerprint, Outcome, TensorDigest
from builder.records.spec import Spec


@dataclass(frozen=True)
class RunResult:
    controls: AppliedControls
    fingerprint: Fingerprint
    outcome: Outcome
    initial: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]


def tensor_digest(array: np.ndarray) -> TensorDigest:
    data = np.ascontiguousarray(array)
    return TensorDigest(
        shape=list(data.shape),
        dtype=str(data.dtype),
        sha256=hashlib.sha256(data.tobytes()).hexdigest(),
    )


def execute(
    spec: Spec, dataset: Dataset, order: Iterable[np.ndarray], observer: Observer = SILENT
) -> RunResult:
    """Train `spec` on `dataset` in the recorded `order`, on the device and threads it names."""
    framework = get_framework(spec.framework)
    device, threads = spec.controls.device, spec.controls.threads
    gpus, cuda, cudnn = require_device(framework, spec)
    seed_everything(spec.seeds.init)
    switches = framework.apply_controls(spec, device, threads)
    trained = framework.train(spec, dataset, order, device, observer.epoch)
    last = trained.epochs[-1]
    outcome = Outcome(
        final=FinalMetrics(
            train_loss=last.train_loss,
            train_error=last.train_error,
            dev_error=last.dev_error,
            eval_error=last.eval_error,
        ),
        epochs=trained.epochs,
        trace=trained.trace,
        weights={k: tensor_digest(v) for k, v in trained.weights.items()},
        steps=trained.steps,
        train_seconds=round(trained.train_seconds, 4),
    )
    controls = applied_controls(spec, switches, spec.train.dtype, spec.controls.adam_impl)
    fingerprint = capture(spec.framework, framework.version(), gpus, cuda, cudnn)
    return RunResult(
        controls=controls,
        fingerprint=fingerprint,
        outcome=outcome,
        initial=trained.initial,
        weights=trained.weights,
    )
