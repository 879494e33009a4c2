"""Executor `slurm`: one Slurm job array through submitit, each task a warm process — on the
node's Python, or (`--on docker|podman|oci`) one container of the capsule's image per task
(executors/in_image.py), so the runs use the capsule's frozen environment.

Without slurmdbd submitit cannot tell a crashed task from a queued one and would wait forever,
so the queue is polled (`squeue -r`) and a task that left it without a result is reported.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid

from builder.errors import EngineMissing
from builder.executors import Executor, Failure, Key, OnDone
from builder.executors.in_image import image_of, run_chunk_in_image
from builder.executors.journal import part_name, read_journal
from builder.executors.work import run_chunk, worker_error
from builder.store import Capsule


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


class SlurmArray:
    """Up to four tasks per parallel slot, each a warm process over its share that journals
    every finished run itself; the command reports runs as the task journals gain them."""

    name = "slurm"
    poll = 0.5  # seconds between looks at the journals and the queue

    def __init__(self, on: str = "host") -> None:
        self.on = on  # "host": the node's Python; else the engine each task runs its image on

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        if shutil.which("sbatch") is None or shutil.which("squeue") is None:
            raise EngineMissing("executor slurm: sbatch/squeue not found (no Slurm here)")
        import submitit

        if self.on != "host":
            image_of(capsule, self.on)  # refused here, before any task, if the image is absent
        folder = capsule.path / ".slurm" / uuid.uuid4().hex[:8]  # fresh: job IDs restart with Slurm
        executor = submitit.SlurmExecutor(folder=folder)
        threads = capsule.manifest.spec.controls.threads
        executor.update_parameters(
            time=24 * 60, cpus_per_task=threads, array_parallelism=jobs, job_name="capsule-sweep"
        )
        # a multiple of the slots (balanced), up to four tasks per slot (a crash loses little),
        # but at least four runs per task where there are enough (each task pays its imports once)
        count = min(len(todo), jobs * max(1, min(4, len(todo) // (4 * jobs))))
        chunks = [todo[i::count] for i in range(count)]
        names = [part_name(journal, f"task{i}") for i in range(count)]
        try:
            if self.on == "host":
                tasks = executor.map_array(run_chunk, [str(capsule.path)] * count, chunks, names)
            else:
                where = [str(capsule.path)] * count, [self.on] * count
                tasks = executor.map_array(run_chunk_in_image, *where, chunks, names)
        except EngineMissing:
            raise
        except Exception as error:  # sbatch refused, or Slurm is down
            raise EngineMissing(f"executor slurm: submitting failed: {error}") from None
        wanted, seen = set(todo), set[Key]()
        failures: list[Failure] = []
        pending = dict(enumerate(tasks))

        def report_new() -> set[Key]:
            """Report the runs the tasks' journals gained; return every finished key."""
            done = {(r.init, r.order): r for r in read_journal(capsule.path, journal)}
            for key, run in done.items():
                if key in wanted and key not in seen:
                    seen.add(key)
                    on_done(run)
            return set(done)

        try:
            while pending:
                time.sleep(self.poll)
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
                            reason = worker_error(error)
                    else:
                        reason = (
                            f"Slurm task {task.job_id} ended without a result (killed or "
                            f"crashed); its log: {task.paths.stderr}"
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


EXECUTOR: Executor = SlurmArray()  # the annotation has mypy check the protocol
