"""Runs in the capsule's image: a sweep with `--on docker|podman` runs its runs in `jobs`
containers at once, each over its share, under the engines' confinement (the capsule
read-only, no network, not root).

Each container runs `capsule sweep-runs /capsule --runs I:O,... --journal /out/runs.jsonl`;
every run it finishes is a line of that journal at once. This process copies the lines into
the capsule's own journal and reports each run as it appears, so an interrupted sweep keeps
what finished, as on the host.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from builder.errors import EngineMissing
from builder.executors import Executor, Failure, Key, OnDone
from builder.executors.journal import append_journal
from builder.executors.work import worker_error
from builder.records.enums import Device
from builder.records.sweep import SweepRun
from builder.store import Capsule

POLL = 0.5  # seconds between looks at the containers' journals


class ContainerRuns:
    """Not in EXECUTORS: `sweep --on ENGINE` picks it, with the engine's name."""

    name = "container"

    def __init__(self, engine_name: str) -> None:
        self.engine_name = engine_name

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        from builder.engines import Job, Mount, open_engine
        from builder.engines.recipe import CODE_IN_IMAGE, IMAGE_TREE
        from builder.records.spec import UserSpec
        from builder.replay import CODE_ENV, CONTAINER_USER

        engine = open_engine(self.engine_name)
        manifest = capsule.manifest
        variant = Device(manifest.spec.controls.device)
        image = manifest.images.get(variant)
        if image is None or engine.has_image(image.image_id) is None:
            raise EngineMissing(
                f"{capsule.path}: no {variant} image in {engine.label}; run `capsule build "
                f"{capsule.path} --engine {engine.name}`"
            )
        if not todo:
            return []
        if variant == Device.cuda and engine.name == "podman":
            raise EngineMissing("GPU containers under Podman need NVIDIA's CDI set-up (not yet)")
        chunks = [todo[i :: min(jobs, len(todo))] for i in range(min(jobs, len(todo)))]
        user = CONTAINER_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        env = {CODE_ENV: CODE_IN_IMAGE} if isinstance(manifest.spec, UserSpec) else {}
        ended: dict[int, tuple[int, str]] = {}
        refused: list[EngineMissing] = []
        stopping = threading.Event()  # set on Ctrl-C: a share not started yet never starts
        with tempfile.TemporaryDirectory(prefix="capsule-sweep-") as tmp:
            outbox = Path(tmp)
            os.chmod(outbox, 0o777)  # the containers' unprivileged user writes its journal here
            names = [f"capsule-sweep-{uuid.uuid4().hex[:12]}" for _ in chunks]

            def work(index: int) -> None:
                runs = ",".join(f"{i}:{o}" for i, o in chunks[index])
                argv = [f"{IMAGE_TREE}/venv/bin/capsule", "sweep-runs", "/capsule", "--runs", runs]
                argv += ["--journal", f"/out/runs-{index}.jsonl"]
                mounts = [Mount(capsule.path, "/capsule"), Mount(outbox, "/out", writable=True)]
                job = Job(argv, mounts, env, user, variant == Device.cuda, name=names[index])
                if stopping.is_set():
                    return
                try:
                    ended[index] = engine.run(image.image_id, job, lambda line: None)
                except EngineMissing as error:  # no runtime, no image: said once, exit 4
                    refused.append(error)
                except Exception as error:  # the engine failed this share: its runs fail
                    ended[index] = (-1, worker_error(error))

            threads = [
                threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(chunks))
            ]
            for thread in threads:
                thread.start()
            seen: dict[Key, SweepRun] = {}

            def collect() -> None:
                for path in sorted(outbox.glob("runs-*.jsonl")):
                    for line in path.read_text().splitlines():
                        try:
                            run = SweepRun.model_validate_json(line)
                        except ValueError:
                            continue  # a line being written
                        key = (run.init, run.order)
                        if key not in seen:
                            seen[key] = run
                            append_journal(capsule.path, run, journal)
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
