"""Seed and data-order sweeps: the capsule's experiment run again under many init and order
seeds, each run's outcome stored in the capsule (artifact "sweep").

Finished runs are appended to a journal in the capsule directory as they complete, so an
interrupted sweep (Ctrl-C, a killed worker) keeps them, and the next sweep — with the same or
more seeds — runs only what is missing. Workers stay warm: one process runs many runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from builder.errors import BadInput, EngineMissing
from builder.manifest import Manifest, Outcome
from builder.model_base import Strict
from builder.spec import Spec, UserSpec
from builder.store import read_artifact, read_tensors, store_json, verify_capsule

PRIME_FLOOR = 1_000_000
JOURNAL = ".sweep-journal.jsonl"
SWEEP_DIR = "sweeps"
Key = tuple[int, int]


class SweepRun(Strict):
    """One run of a sweep: its seeds, final metrics and a digest over all its weights."""

    init: int
    order: int
    final: dict[str, float | None]
    weights_sha256: str
    seconds: float


class SweepRecord(Strict):
    kind: Literal["sweep"] = "sweep"
    schema_version: Literal[1] = 1
    runs: list[SweepRun]

    def by_key(self) -> dict[Key, SweepRun]:
        return {(r.init, r.order): r for r in self.runs}


@dataclass(frozen=True)
class Failure:
    init: int
    order: int
    error: str


@dataclass(frozen=True)
class SweepResult:
    record: SweepRecord
    ran: int
    reused: int
    failures: list[Failure]


# ---------------------------------------------------------------- which seeds


def primes_above(floor: int, count: int) -> list[int]:
    """The `count` smallest primes greater than `floor` (trial division: a few thousand
    divisions per candidate at this size)."""
    found: list[int] = []
    candidate = floor + 1
    while len(found) < count:
        if candidate > 1 and all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
            found.append(candidate)
        candidate += 1
    return found


def parse_seeds(text: str, option: str) -> list[int]:
    """`N` → 1…N; `primes:N` → the N smallest primes above 1,000,000 (1000003, 1000033, …,
    the paper's "100 unique large primes"); `a,b,c` → those seeds."""
    text = text.strip()
    try:
        if text.startswith("primes:"):
            count = int(text.removeprefix("primes:"))
            if count < 1:
                raise ValueError
            return primes_above(PRIME_FLOOR, count)
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(1, count + 1))
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(
            f"{option} {text!r}: expected N, primes:N or a,b,c (non-negative integers)"
        ) from None
    if not seeds or any(s < 0 or s >= 2**63 for s in seeds):
        raise BadInput(f"{option} {text!r}: seeds must be integers in [0, 2**63)")
    return list(dict.fromkeys(seeds))


def plan(manifest: Manifest, seeds: list[int] | None, orders: list[int] | None) -> list[Key]:
    """Every (init, order) pair: the given seeds crossed with the given orders; an axis not
    given keeps the capsule's own seed."""
    inits = seeds or [manifest.spec.seeds.init]
    order_seeds = orders or [manifest.spec.seeds.order]
    return [(i, o) for i in inits for o in order_seeds]


# ---------------------------------------------------------------- one run (in a worker)

_LOADED: dict[str, tuple[Manifest, object]] = {}


def _load(capsule: str) -> tuple[Manifest, object]:
    """The capsule (verified once per worker process) and its dataset, kept warm."""
    if capsule not in _LOADED:
        from builder.data import Dataset

        path = Path(capsule)
        manifest = verify_capsule(path)
        dataset = None
        if isinstance(manifest.spec, Spec) and manifest.data is not None:
            dataset = Dataset.from_tensors(
                read_tensors(path, manifest, "data"), manifest.data.classes
            )
        _LOADED[capsule] = (manifest, dataset)
    return _LOADED[capsule]


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def run_one(capsule: str, init: int, order: int) -> SweepRun:
    """The capsule's experiment with init seed `init` and order seed `order`."""
    from builder.replay import replay_order
    from builder.run import execute
    from builder.verdict import final_metrics

    manifest, dataset = _load(capsule)
    seeds = manifest.spec.seeds.model_copy(update={"init": init, "order": order})
    spec = manifest.spec.model_copy(update={"seeds": seeds})
    path = Path(capsule)
    if isinstance(spec, Spec):
        permutation = replay_order(path, manifest, spec)
        result = execute(spec, dataset, permutation, lambda m: None)  # type: ignore[arg-type]
        outcome, weights = result.outcome, result.weights
    else:
        outcome, weights = _run_code(path, manifest, spec)
    return SweepRun(
        init=init,
        order=order,
        final=final_metrics(outcome),
        weights_sha256=weights_digest(weights),
        seconds=outcome.train_seconds,
    )


def _run_code(
    path: Path, manifest: Manifest, spec: Spec | UserSpec
) -> tuple[Outcome, dict[str, np.ndarray]]:
    """The user's code, imported afresh for each run (its module state must not carry over)."""
    from builder.replay import code_directory, replay_code

    assert isinstance(spec, UserSpec)
    code_dir = code_directory(path, manifest)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(code_dir.resolve()):
            del sys.modules[name]
    result = replay_code(path, manifest, spec, lambda n, v, s: None)
    return result.outcome, result.weights


# ---------------------------------------------------------------- journal and storage


def load_sweep(capsule: Path, manifest: Manifest) -> SweepRecord | None:
    ref = manifest.artifacts.get("sweep")
    if ref is None:
        return None
    try:
        return SweepRecord.model_validate_json(read_artifact(capsule, "sweep", ref))
    except ValidationError as error:
        message = error.errors()[0]["msg"]
        raise BadInput(f"{capsule / ref.path}: not a sweep record: {message}") from None


def journals(capsule: Path) -> list[Path]:
    """The sweep's journals: the command's own, and one per Slurm task."""
    return sorted(capsule.glob(".sweep-journal*.jsonl"))


def read_journal(capsule: Path) -> list[SweepRun]:
    """Finished runs of an interrupted sweep; a torn last line (a crash mid-write) is skipped."""
    runs = []
    for path in journals(capsule):
        for line in path.read_text().splitlines():
            try:
                runs.append(SweepRun.model_validate_json(line))
            except ValidationError:
                continue
    return runs


def append_journal(capsule: Path, run: SweepRun, name: str = JOURNAL) -> None:
    with (capsule / name).open("a") as f:
        f.write(run.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def store_sweep(capsule: Path, manifest: Manifest, record: SweepRecord) -> Manifest:
    """Store the record as artifact "sweep", then remove the previous one and the journals."""
    data = (record.model_dump_json(indent=1) + "\n").encode()
    manifest, previous = store_json(capsule, manifest, "sweep", SWEEP_DIR, "sweep", data)
    if previous is not None and previous.path != manifest.artifacts["sweep"].path:
        (capsule / previous.path).unlink(missing_ok=True)
    for path in journals(capsule):
        path.unlink(missing_ok=True)
    return manifest


# ---------------------------------------------------------------- the sweep


def _worker_error(error: BaseException) -> str:
    if isinstance(error, BrokenProcessPool):
        return "the worker process died (killed or crashed) during this run"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def run_local(
    capsule: Path,
    todo: list[Key],
    jobs: int,
    on_done: Callable[[SweepRun], None],
) -> list[Failure]:
    """Run `todo` in this process (jobs = 1) or in a pool of `jobs` warm worker processes
    (spawned, so no framework state is forked); every finished run goes to `on_done` at once."""
    if jobs == 1:
        return run_serially(str(capsule), todo, on_done)
    failures: list[Failure] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        pending: dict[Future[SweepRun], Key] = {
            pool.submit(run_one, str(capsule), i, o): (i, o) for i, o in todo
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        on_done(future.result())
                    else:
                        failures.append(Failure(*key, _worker_error(error)))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return failures


def run_serially(
    capsule: str, keys: list[Key], on_done: Callable[[SweepRun], None]
) -> list[Failure]:
    """The runs one after another in this process; a run that raises is a failure, not the end."""
    failures = []
    for init, order in keys:
        try:
            run = run_one(capsule, init, order)
        except Exception as error:
            failures.append(Failure(init, order, _worker_error(error)))
            continue
        on_done(run)
    return failures


def run_chunk(capsule: str, keys: list[Key], journal: str) -> list[Failure]:
    """One Slurm task: its share of the runs in one warm process, each finished run appended
    to the task's own journal at once (so a task that crashes later keeps it)."""
    return run_serially(capsule, keys, lambda run: append_journal(Path(capsule), run, journal))


def _queued_tasks(array_id: str) -> set[str] | None:
    """Task IDs (`<array>_<index>`) Slurm still lists as pending or running; None if squeue
    does not answer."""
    try:
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-j", array_id, "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        # an array that has fully left the queue is "Invalid job id" for squeue
        return set() if "Invalid job id" in listed.stderr else None
    return set(listed.stdout.split())


def run_slurm(
    capsule: Path,
    todo: list[Key],
    jobs: int,
    on_done: Callable[[SweepRun], None],
    poll: float = 0.5,
) -> list[Failure]:
    """Run `todo` as one Slurm job array through submitit: up to four tasks per parallel slot,
    each a warm process over its share. A task that leaves the queue without a result (killed,
    crashed: without slurmdbd submitit cannot tell) is reported, never waited on."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise EngineMissing("executor slurm: sbatch/squeue not found (no Slurm here)")
    import submitit

    folder = capsule / ".slurm" / uuid.uuid4().hex[:8]  # fresh: job IDs restart with Slurm
    executor = submitit.SlurmExecutor(folder=folder)
    threads = verify_capsule(capsule).spec.controls.threads
    executor.update_parameters(
        time=24 * 60, cpus_per_task=threads, array_parallelism=jobs, job_name="capsule-sweep"
    )
    # a multiple of the slots (balanced), up to four tasks per slot (a crash loses little), but
    # at least four runs per task where there are enough (each task pays its imports once)
    count = min(len(todo), jobs * max(1, min(4, len(todo) // (4 * jobs))))
    chunks = [todo[i::count] for i in range(count)]
    names = [f".sweep-journal.task{i}.jsonl" for i in range(count)]
    try:
        tasks = executor.map_array(run_chunk, [str(capsule)] * count, chunks, names)
    except Exception as error:  # sbatch refused, or Slurm is down
        raise EngineMissing(f"executor slurm: submitting failed: {error}") from None
    wanted, seen = set(todo), set[Key]()
    failures: list[Failure] = []
    pending = dict(enumerate(tasks))

    def report_new() -> set[Key]:
        """Report the runs the tasks' journals gained; return every finished key."""
        done = {(r.init, r.order): r for r in read_journal(capsule)}
        for key, run in done.items():
            if key in wanted and key not in seen:
                seen.add(key)
                on_done(run)
        return set(done)

    try:
        while pending:
            time.sleep(poll)
            report_new()
            queued = _queued_tasks(tasks[0].job_id.split("_")[0])
            for index, task in list(pending.items()):
                finished = task.paths.result_pickle.exists()
                if not finished and (queued is None or task.job_id in queued):
                    continue
                del pending[index]
                if finished:
                    try:
                        failures += task.result()
                        continue
                    except Exception as error:
                        reason = _worker_error(error)
                else:
                    reason = (
                        f"Slurm task {task.job_id} ended without a result (killed or crashed); "
                        f"its log: {task.paths.stderr}"
                    )
                done = report_new()  # what it finished before it ended is kept
                failures += [Failure(*k, reason) for k in chunks[index] if k not in done]
        report_new()
    except BaseException:
        for task in pending.values():
            with contextlib.suppress(Exception):
                task.cancel(check=False)
        raise
    if not failures:  # a failed task's folder stays: its log is named in the failure
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()
    return failures


def sweep(
    capsule: Path,
    seeds: list[int] | None,
    orders: list[int] | None,
    jobs: int,
    on_start: Callable[[int, int], None],
    on_done: Callable[[SweepRun], None],
    executor: Literal["local", "slurm"] = "local",
) -> SweepResult:
    """Run what is missing of the plan, keep every finished run, store the record."""
    manifest = verify_capsule(capsule)
    wanted = plan(manifest, seeds, orders)
    stored = load_sweep(capsule, manifest)
    finished = stored.by_key() if stored else {}
    finished.update({(r.init, r.order): r for r in read_journal(capsule)})
    todo = [key for key in wanted if key not in finished]
    on_start(len(todo), len(wanted) - len(todo))

    def keep(run: SweepRun) -> None:
        append_journal(capsule, run)
        finished[(run.init, run.order)] = run
        on_done(run)

    def finished_by(run: SweepRun, report: Callable[[SweepRun], None]) -> None:
        finished[(run.init, run.order)] = run  # a Slurm task already wrote its journal
        report(run)

    failures: list[Failure] = []
    try:
        if executor == "slurm":
            failures = run_slurm(capsule, todo, jobs, lambda run: finished_by(run, on_done))
        else:
            failures = run_local(capsule, todo, jobs, keep)
    finally:
        finished.update({(r.init, r.order): r for r in read_journal(capsule)})
        runs = sorted(finished.values(), key=lambda r: (r.init, r.order))
        if runs and (stored is None or runs != stored.runs):
            store_sweep(capsule, verify_capsule(capsule), SweepRecord(runs=runs))
    record = SweepRecord(runs=sorted(finished.values(), key=lambda r: (r.init, r.order)))
    ran = len(todo) - len(failures)
    return SweepResult(record=record, ran=ran, reused=len(wanted) - len(todo), failures=failures)


def values(record: SweepRecord, keys: list[Key] | None = None) -> dict[str, list[float]]:
    """metric → the values of the sweep's runs (those of `keys` only, when given)."""
    chosen = record.runs if keys is None else [r for r in record.runs if (r.init, r.order) in keys]
    out: dict[str, list[float]] = {}
    for run in chosen:
        for metric, value in run.final.items():
            if value is not None:
                out.setdefault(metric, []).append(value)
    return out
