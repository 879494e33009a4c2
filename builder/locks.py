"""Locks: one writer at a time in a capsule, one command per output path, and what killed
commands left behind cleaned.

Every lock here is an `fcntl.flock` lock, which the kernel drops when its process ends, however
it ends (SIGKILL included): no pid file can go stale, and a live holder is never taken for a
dead one.

- `writing(capsule)`: `CAPSULE/.lock`, exclusive, around every read-modify-write of the
  manifest (a sweep's merge, an audit, a build's image or wheelhouse, later `sign`). A second
  writer WAITS, saying once on stderr whom it waits for; `CAPSULE_LOCK_TIMEOUT` (seconds)
  bounds the wait (then exit 2). The holder writes "pid N (command)" into the file.
- `reading(capsule)`: the same file, shared, while the manifest and its digest are read and
  artifacts re-hashed, so no reader sees a manifest half replaced or a study being swapped.
- `claimed(final)`: `.NAME.claim` beside an output path, exclusive and never waited for: held
  from before the work starts until the result has its name; a second command for the same
  path is refused (exit 2) before it does any work.
- `clean_stale(parent)`: a claim file nobody holds belongs to a command that was killed; its
  `.NAME.partial-*` staging is removed (and `.NAME.old-*`, once NAME exists again).
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BadInput

LOCK = ".lock"  # in a capsule: its write lock (verify and export ignore it: not an artifact)
CLAIM = ".claim"  # beside an output path: `.NAME.claim`
TIMEOUT_ENV = "CAPSULE_LOCK_TIMEOUT"
POLL = 0.1  # seconds between tries of a held lock
CLAIM_GRACE = 1.0  # a claim held this briefly is a cleaner's, not a command's: try again


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


notify: Callable[[str], None] = _to_stderr  # the command line routes it to its console


class _Taken(Exception):
    def __init__(self, holder: str) -> None:
        self.holder = holder


@dataclass
class _Held:
    fd: int
    exclusive: bool
    depth: int


_held: dict[str, _Held] = {}  # this process's capsule locks, by real path (so they nest)


def _who() -> str:
    command = " ".join(["capsule", *sys.argv[1:]])
    return f"pid {os.getpid()} ({command[:160]})"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another command"


def _mark(fd: int, text: str) -> None:
    with suppress(OSError):
        os.ftruncate(fd, 0)
        if text:
            os.pwrite(fd, f"{text}\n".encode(), 0)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _open(path: Path, create: bool) -> int | None:
    """The lock file, for reading and writing where we may; None if it is not there (and
    `create` is false) or cannot be opened at all (a read-only copy nobody writes)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError:
        if create:
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def timeout() -> float | None:
    """`CAPSULE_LOCK_TIMEOUT` in seconds, or None: wait as long as it takes."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise BadInput(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds (0 or more)")
    return value


def _acquire(
    path: Path, exclusive: bool, *, wait: float | None, subject: str, create: bool
) -> int | None:
    """flock `path`; a lock file that was replaced while we waited is locked afresh.

    `wait`: None waits as long as it takes (with one notice); a number of seconds waits that
    long quietly, then raises _Taken with the holder."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    limit = timeout() if wait is None else wait
    deadline = None if limit is None else time.monotonic() + limit
    told = False
    while True:
        fd = _open(path, create)
        if fd is None:
            return None
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _holder(fd)
                    if deadline is not None and time.monotonic() >= deadline:
                        raise _Taken(holder) from None
                    if wait is None and not told:
                        notify(f"capsule: waiting for {holder} to finish writing {subject}")
                        told = True
                    time.sleep(POLL)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed or replaced while we waited: lock the one there now


def _wait_for(capsule: Path, exclusive: bool, create: bool) -> int | None:
    try:
        return _acquire(capsule / LOCK, exclusive, wait=None, subject=str(capsule), create=create)
    except _Taken as taken:
        raise BadInput(
            f"{capsule}: {taken.holder} is still writing it after {timeout():g} s "
            f"({TIMEOUT_ENV}); nothing was written"
        ) from None


def holds(capsule: Path) -> bool:
    """Whether this process holds the capsule's write lock."""
    held = _held.get(os.path.realpath(capsule))
    return held is not None and held.exclusive


@contextmanager
def writing(capsule: Path) -> Iterator[bool]:
    """The capsule's write lock (waiting for another writer); yields True where this call took
    it, False where this process held it already (nested)."""
    key = os.path.realpath(capsule)
    held = _held.get(key)
    if held is not None:
        if not held.exclusive:
            raise RuntimeError(f"{capsule}: a write inside a read of the same capsule")
        held.depth += 1
        try:
            yield False
        finally:
            held.depth -= 1
        return
    try:
        fd = _wait_for(capsule, exclusive=True, create=True)
    except OSError as error:
        raise BadInput(f"{capsule}: cannot be written ({error.strerror})") from None
    assert fd is not None
    _mark(fd, _who())
    _held[key] = _Held(fd, exclusive=True, depth=1)
    try:
        yield True
    finally:
        del _held[key]
        _mark(fd, "")
        os.close(fd)


@contextmanager
def reading(directory: Path) -> Iterator[None]:
    """A shared hold on the capsule's lock, if it has one (waiting while a writer writes); a
    no-op where this process holds it already, or where there is no lock file."""
    key = os.path.realpath(directory)
    held = _held.get(key)
    if held is not None:
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return
    fd = _wait_for(directory, exclusive=False, create=False)
    if fd is None:
        yield
        return
    _held[key] = _Held(fd, exclusive=False, depth=1)
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)


def claim_file(final: Path) -> Path:
    return final.parent / f".{final.name}{CLAIM}"


@contextmanager
def claimed(final: Path) -> Iterator[None]:
    """Hold `final`'s claim for as long as the work runs: refused (exit 2) while another live
    command holds it. The claim file is removed while still held, so a later command locks a
    fresh one (and checks it locked the file that is there)."""
    path = claim_file(final)
    try:
        fd = _acquire(path, True, wait=CLAIM_GRACE, subject=str(final), create=True)
    except _Taken as taken:
        raise BadInput(
            f"{final}: {taken.holder} is writing it now; wait for it to finish or choose "
            "another --out"
        ) from None
    except OSError as error:
        raise BadInput(f"{final.parent}: cannot be written ({error.strerror})") from None
    assert fd is not None
    _mark(fd, _who())
    try:
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        os.close(fd)


def remove_leftovers(parent: Path, name: str) -> list[Path]:
    """What a killed command writing `parent/name` left: its staging directories, and the
    previous version it had moved aside (only once `name` exists again). Call it only while
    holding the claim of `name`."""
    pattern = glob.escape(f".{name}")
    found = sorted(parent.glob(f"{pattern}.partial-*"))
    if (parent / name).exists():
        found += sorted(parent.glob(f"{pattern}.old-*"))
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(OSError):
                path.unlink()
    return found


def clean_stale(parent: Path, keep: str | None = None) -> list[Path]:
    """Remove what killed commands left in `parent`: for each claim file nobody holds, its
    output's leftovers, then the claim file. A live command's claim is never taken."""
    removed: list[Path] = []
    for path in sorted(parent.glob(f".*{CLAIM}")):
        name = path.name[1 : -len(CLAIM)]
        if not name or name == keep:
            continue
        try:
            fd = _acquire(path, True, wait=0, subject=str(parent / name), create=False)
        except (_Taken, OSError):
            continue
        if fd is None:
            continue
        _mark(fd, f"{_who()} cleaning up")
        try:
            removed += remove_leftovers(parent, name)
        finally:
            with suppress(OSError):
                path.unlink()
            os.close(fd)
    return removed
