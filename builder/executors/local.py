"""Executor `local`: this process (jobs = 1) or a pool of warm worker processes on this machine."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

from builder.executors import Executor, Failure, Key, OnDone
from builder.executors.journal import append_journal
from builder.executors.work import run_one, run_serially, worker_error
from builder.records.sweep import SweepRun
from builder.store import Capsule


class LocalPool:
    """`jobs` spawned workers (nothing forked from a process that may hold framework threads),
    each loading the capsule once and running many runs; every finished run is journalled in
    the command's own journal and reported at once."""

    name = "local"

    def run(self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone) -> list[Failure]:
        def keep(run: SweepRun) -> None:
            append_journal(capsule.path, run)
            on_done(run)

        if jobs == 1:
            return run_serially(str(capsule.path), todo, keep)
        failures: list[Failure] = []
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            pending: dict[Future[SweepRun], Key] = {
                pool.submit(run_one, str(capsule.path), i, o): (i, o) for i, o in todo
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        key = pending.pop(future)
                        error = future.exception()
                        if error is None:
                            keep(future.result())
                        else:
                            failures.append(Failure(*key, worker_error(error)))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return failures


EXECUTOR: Executor = LocalPool()  # the annotation has mypy check the protocol
