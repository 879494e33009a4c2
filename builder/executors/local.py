"""Executor `local`: this process (jobs = 1) or a pool of warm worker processes on this machine."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from multiprocessing.process import BaseProcess

from builder.executors import Executor, Failure, Key, OnDone
from builder.executors.journal import append_journal
from builder.executors.work import run_journalled, run_serially, worker_error, worker_start
from builder.records.sweep import SweepRun
from builder.store import Capsule

STOP_GRACE = 3.0  # seconds a worker has to end after SIGTERM before it is killed


class LocalPool:
    """`jobs` spawned workers (nothing forked from a process that may hold framework threads),
    each loading the capsule once and running many runs. Each worker journals every run it
    finishes itself (its part of the sweep's journal), so a run is kept even if this process
    dies before it hears of it; a worker dies with this process (`worker_start`), and Ctrl-C or
    SIGTERM here stops the workers at once rather than after the runs in flight."""

    name = "local"

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        if jobs == 1:

            def keep(run: SweepRun) -> None:
                append_journal(capsule.path, run, journal)
                on_done(run)

            return run_serially(str(capsule.path), todo, keep)
        failures: list[Failure] = []
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=get_context("spawn"),
            initializer=worker_start,
            initargs=(os.getpid(),),
        )
        try:
            pending: dict[Future[SweepRun], Key] = {
                pool.submit(run_journalled, str(capsule.path), i, o, journal): (i, o)
                for i, o in todo
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        on_done(future.result())  # the worker has journalled it
                    else:
                        failures.append(Failure(*key, worker_error(error)))
        except BaseException:
            stop(pool)
            raise
        pool.shutdown()
        return failures


def stop(pool: ProcessPoolExecutor) -> None:
    """End the pool now: its workers are sent SIGTERM (SIGKILL after STOP_GRACE); what they had
    finished is in their journals."""
    workers: list[BaseProcess] = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(STOP_GRACE)
        if worker.is_alive():
            worker.kill()
            worker.join(STOP_GRACE)


EXECUTOR: Executor = LocalPool()  # the annotation has mypy check the protocol
