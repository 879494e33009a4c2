"""Batched sweeps (`capsule sweep --batched`): the runs of a portable capsule trained together,
in this process, as one program with a leading run axis (`builder.portable.train`).

Portable numerics computes every element by the same operations in the same order whatever
stands beside it, so each run's weights and metrics are bit-identical to its solo replay — and
a hundred runs of a small MLP cost little more than one, where a pool pays a process and a
framework start per worker and a kernel launch per run and operation.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from builder.errors import BadInput
from builder.executors import Failure, Key, OnDone
from builder.executors.journal import append_journal, part_name
from builder.records.enums import Where
from builder.records.run import METRICS
from builder.records.spec import Spec
from builder.records.sweep import SweepRun
from builder.store import Capsule

RUNS_AT_ONCE = 128  # runs stacked into one program; more go in turns


class BatchedRuns:
    name = "batched"

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        spec = capsule.manifest.spec
        if not isinstance(spec, Spec) or spec.controls.numerics != "portable":
            raise BadInput(
                f"{capsule.path}: --batched trains a built-in experiment with controls.numerics "
                "= 'portable' (each run then comes out as its solo replay, bit for bit); this "
                "capsule's is not one — sweep it without --batched"
            )
        if not todo:
            return []
        from builder.controls import seed_everything
        from builder.data import Dataset
        from builder.executors.work import weights_digest
        from builder.frameworks import get_framework, require_device
        from builder.portable.train import train
        from builder.replay import replay_order

        framework = get_framework(spec.framework)
        require_device(framework, spec)
        seed_everything(spec.seeds.init)
        # threads change no bit of portable numerics: --jobs N lends the program N cores
        threads = max(jobs, spec.controls.threads)
        framework.apply_controls(spec, spec.controls.device, threads)
        ops, layout = framework.portable(spec.controls.device)
        assert capsule.manifest.data is not None
        dataset = Dataset.from_tensors(capsule.tensors("data"), capsule.manifest.data.classes)
        node = socket.gethostname()
        part = part_name(journal, "batched")
        failures: list[Failure] = []
        for start in range(0, len(todo), RUNS_AT_ONCE):
            keys = todo[start : start + RUNS_AT_ONCE]
            orders = [
                replay_order(capsule, spec.model_copy(update={"seeds": _seeds(spec, i, o)}))
                for i, o in keys
            ]
            began = time.perf_counter()
            try:
                runs = train(ops, spec, dataset, [i for i, _ in keys], orders)
            except Exception as error:  # e.g. out of memory (each framework names it its own way)
                reason = f"{type(error).__name__}: {error}".splitlines()[0]
                failures.extend(Failure(init=i, order=o, error=reason) for i, o in keys)
                continue
            seconds = round((time.perf_counter() - began) / len(keys), 4)
            for (init, order), trained in zip(keys, runs, strict=True):
                last = trained.epochs[-1]
                run = SweepRun(
                    init=init,
                    order=order,
                    final={name: getattr(last, name) for name in METRICS},
                    weights_sha256=weights_digest(layout(trained.weights)),
                    seconds=seconds,
                    on=Where.host,
                    node=node,
                )
                append_journal(Path(capsule.path), run, part)
                on_done(run)
        return failures


def _seeds(spec: Spec, init: int, order: int) -> object:
    return spec.seeds.model_copy(update={"init": init, "order": order})


EXECUTOR = BatchedRuns()
