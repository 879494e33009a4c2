"""One share of a sweep's runs in a container of the capsule's image: what `sweep --on ENGINE`
runs per container here and what each Slurm task runs on its node (`--executor slurm --on
ENGINE`), so the runs use the capsule's frozen environment, not the machine's Python.

The container runs `capsule sweep-runs /capsule --runs I:O,... --journal /out/runs.jsonl`
(the capsule read-only, under the engines' confinement); this process relays every line the
container journals into the capsule's own journal part at once, stamped with where it ran (the
engine and this machine's name), so an interrupted share keeps what finished.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
from pathlib import Path

from builder.executors import Failure, Key
from builder.executors.journal import append_journal, read_journal
from builder.records.enums import Device, Where
from builder.records.sweep import SweepRun
from builder.store import Capsule

POLL = 0.5  # seconds between looks at the container's journal


def image_of(capsule: Capsule, engine_name: str) -> str:
    """The image ID the capsule's runs use on this engine; EngineMissing (exit 4) if it is not
    there."""
    from builder.engines import open_engine
    from builder.errors import EngineMissing

    engine = open_engine(engine_name)
    variant = Device(capsule.manifest.spec.controls.device)
    image = capsule.manifest.images.get(variant)
    if image is None or engine.has_image(image.image_id) is None:
        hint = engine.missing_hint or f"run `capsule build {capsule.path} --engine {engine.name}`"
        raise EngineMissing(f"{capsule.path}: no {variant} image in {engine.label}; {hint}")
    if variant == Device.cuda and engine.name == "podman":
        raise EngineMissing("GPU containers under Podman need NVIDIA's CDI set-up (not yet)")
    return image.image_id


def run_share(
    capsule: Capsule, engine_name: str, keys: list[Key], journal: str, name: str
) -> tuple[int, str]:
    """Run `keys` in one container named `name`; each run it finishes joins the capsule's
    journal `journal` as it appears. Returns the container's (exit code, last line)."""
    from builder.engines import Job, Mount, open_engine
    from builder.engines.recipe import CODE_IN_IMAGE, IMAGE_TREE
    from builder.records.spec import UserSpec
    from builder.replay import CODE_ENV, CONTAINER_USER

    engine = open_engine(engine_name)
    image_id = image_of(capsule, engine_name)
    gpu = capsule.manifest.spec.controls.device == Device.cuda
    user = CONTAINER_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    env = {CODE_ENV: CODE_IN_IMAGE} if isinstance(capsule.manifest.spec, UserSpec) else {}
    stamp = {"on": Where(engine.name), "node": socket.gethostname()}
    relayed: set[Key] = set()
    with tempfile.TemporaryDirectory(prefix="capsule-share-") as tmp:
        outbox = Path(tmp)
        if os.getuid() == 0:  # the container's user alone may write its journal here
            os.chown(outbox, *(int(part) for part in CONTAINER_USER.split(":")))

        def relay() -> None:
            path = outbox / "runs.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                try:
                    run = SweepRun.model_validate_json(line)
                except ValueError:
                    continue  # a line being written
                if (run.init, run.order) not in relayed:
                    relayed.add((run.init, run.order))
                    append_journal(capsule.path, run.model_copy(update=stamp), journal)

        runs = ",".join(f"{i}:{o}" for i, o in keys)
        argv = [f"{IMAGE_TREE}/venv/bin/capsule", "sweep-runs", "/capsule", "--runs", runs]
        argv += ["--journal", "/out/runs.jsonl"]
        mounts = [Mount(capsule.path, "/capsule"), Mount(outbox, "/out", writable=True)]
        done = threading.Event()

        def poll() -> None:
            while not done.wait(POLL):
                relay()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            ended = engine.run(
                image_id, Job(argv, mounts, env, user, gpu, name=name), lambda _: None
            )
        finally:
            done.set()
            poller.join()
            relay()
    return ended


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that the engine's clean-up stops and removes the container


def run_chunk_in_image(
    capsule: str, engine_name: str, keys: list[Key], journal: str
) -> list[Failure]:
    """One Slurm task with `--on ENGINE`: its share in one container of the capsule's image on
    this node; the runs the container did not journal are failures. Slurm ends a cancelled or
    timed-out task with SIGTERM: the container is stopped and removed then, not left running
    (it is not a child of the task)."""
    signal.signal(signal.SIGTERM, _interrupted)
    handle = Capsule.trusted(Path(capsule))
    name = f"capsule-sweep-{socket.gethostname()}-{os.getpid()}"
    code, last = run_share(handle, engine_name, keys, journal, name)
    done = {(r.init, r.order) for r in read_journal(handle.path, journal)}
    reason = f"the container ended with exit {code}: {last}" if code else "not journalled"
    return [Failure(i, o, reason) for i, o in keys if (i, o) not in done]
