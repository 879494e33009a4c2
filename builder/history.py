"""The history of a capsule directory (records/history.py): appended by the commands that use
the capsule, read by `inspect`.

Appending is best effort: a capsule on a read-only file system, or someone else's, is used all
the same and gains no line. Each line is one write on an O_APPEND descriptor (no lock needed);
reading takes the last MAX_BYTES (the newest events) and skips lines that do not parse (a torn
line, a hand edit).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.records.enums import Where
from builder.records.history import HistoryEvent

HISTORY = "history.jsonl"
MAX_BYTES = 1 << 20


def note(capsule: Path, command: str, on: str | None = None, **fields: Any) -> None:
    """Append one event (now, this machine) to the capsule's history, if it can be written."""
    event = HistoryEvent(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command,  # type: ignore[arg-type]
        on=Where(on) if on else None,
        node=socket.gethostname(),
        **{k: v for k, v in fields.items() if v is not None},
    )
    line = (event.model_dump_json(exclude_none=True) + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        fd = os.open(capsule / HISTORY, flags, 0o644)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):  # never into a FIFO or a device
                os.write(fd, line)
        finally:
            os.close(fd)


def read_history(capsule: Path) -> list[HistoryEvent]:
    """The events recorded in this directory, oldest first (none if there is no history)."""
    try:
        fd = os.open(capsule / HISTORY, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device is never read
            return []
        if info.st_size > MAX_BYTES:  # the newest events: the last MAX_BYTES, whole lines
            f.seek(info.st_size - MAX_BYTES)
            f.readline()
        data = f.read(MAX_BYTES)
    events = []
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(HistoryEvent.model_validate_json(line))
    return events
