"""Runs in the capsule's image: a sweep with `--on docker|podman|oci` runs its runs in `jobs`
containers at once, each over its share (`in_image.run_share`: the capsule read-only, no
network, not root), each relaying the runs its container finishes into a journal part of its
own at once; this process reports each run as a part gains it, so an interrupted sweep keeps
what finished, as on the host.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from builder.errors import EngineMissing
from builder.executors import Executor, Failure, Key, OnDone
from builder.executors.in_image import image_of, run_share
from builder.executors.journal import part_name, read_journal
from builder.executors.work import worker_error
from builder.store import Capsule

POLL = 0.5  # seconds between looks at the journal parts


class ContainerRuns:
    """Not in EXECUTORS: `sweep --on ENGINE` picks it, with the engine's name."""

    name = "container"

    def __init__(self, engine_name: str) -> None:
        self.engine_name = engine_name

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        from builder.engines import open_engine

        image_of(capsule, self.engine_name)  # refused here, before any container, if absent
        if not todo:
            return []
        engine = open_engine(self.engine_name)
        chunks = [todo[i :: min(jobs, len(todo))] for i in range(min(jobs, len(todo)))]
        ended: dict[int, tuple[int, str]] = {}
        refused: list[EngineMissing] = []
        stopping = threading.Event()  # set on Ctrl-C: a share not started yet never starts
        names = [f"capsule-sweep-{uuid.uuid4().hex[:12]}" for _ in chunks]

        def work(index: int) -> None:
            if stopping.is_set():
                return
            part = part_name(journal, f"c{os.getpid()}-{index}")
            try:
                ended[index] = run_share(
                    capsule, self.engine_name, chunks[index], part, names[index]
                )
            except EngineMissing as error:  # no runtime, no image: said once, exit 4
                refused.append(error)
            except Exception as error:  # the engine failed this share: its runs fail
                ended[index] = (-1, worker_error(error))

        threads = [
            threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(chunks))
        ]
        for thread in threads:
            thread.start()
        wanted, seen = set(todo), set[Key]()

        def collect() -> None:
            for run in read_journal(capsule.path, journal):
                key = (run.init, run.order)
                if key in wanted and key not in seen:
                    seen.add(key)
                    on_done(run)

        try:
            while any(t.is_alive() for t in threads):
                time.sleep(POLL)
                collect()
            collect()
        except BaseException:
            stopping.set()
            for _ in range(2):  # again after the threads end: one may have started late
                for name in names:
                    engine.stop(name)
                for thread in threads:
                    thread.join(timeout=30)
            raise
        if refused and not seen:
            raise refused[0]
        failures = []
        for index, chunk in enumerate(chunks):
            code, last = ended.get(index, (-1, "the container did not report"))
            reason = f"the container ended with exit {code}: {last}" if code else "not journalled"
            failures += [Failure(i, o, reason) for i, o in chunk if (i, o) not in seen]
        return failures


EXECUTOR: Executor = ContainerRuns("docker")  # the annotation has mypy check the protocol
