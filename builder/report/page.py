"""`capsule report`: the service. Gathers the page's data (gather.py), draws its figures
(figures.py), renders it in the chosen format (formats.py) and writes the result atomically.

A pure function of the capsules: no training, no evaluation, no engine, no clock. The same
capsules give the same bytes, so a report can be regenerated, and checked, years later.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import suppress
from pathlib import Path

from builder import locks
from builder.errors import BadInput
from builder.records.report import ReportResult
from builder.records.verdict import Tolerances
from builder.report.formats import FORMATS, Rendered, get_format


def _refuse_existing(out: Path, folders: list[str], force: bool) -> None:
    if out.is_dir():
        raise BadInput(f"{out}: is a directory; --out names the report's file")
    for path in [out, *(out.parent / f for f in folders)]:
        if (path.exists() or path.is_symlink()) and not force:
            raise BadInput(f"{path}: already exists (pass --force to replace it)")


def _write(out: Path, rendered: Rendered) -> None:
    """Files beside the page first, each folder swapped in whole; the page last, by one
    rename: a reader sees the old report or the new one, never half of one. Staging names
    start with `.NAME.partial-`, which a later command writing NAME cleans up if this one was
    killed (locks.remove_leftovers)."""
    parent = out.parent
    folders: dict[str, dict[str, bytes]] = {}
    for relpath, content in rendered.beside.items():
        folder, _, rest = relpath.partition("/")
        folders.setdefault(folder, {})[rest] = content
    for folder, files in folders.items():
        stage = parent / f".{out.name}.partial-{folder}-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        try:
            for name, content in files.items():
                (stage / name).write_bytes(content)
            final = parent / folder
            trash = parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            if final.is_dir() and not final.is_symlink():
                final.rename(trash)
            elif final.exists() or final.is_symlink():
                final.unlink()
            stage.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    temporary = parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        temporary.write_bytes(rendered.page)
        os.replace(temporary, out)
    except BaseException:
        with suppress(OSError):
            temporary.unlink()
        raise


def _need_host_libraries() -> None:
    """matplotlib and jinja2 are host-only (engines.wheelhouse.HOST_ONLY): an image or an
    audit environment has neither, and says so instead of failing with a traceback."""
    from importlib.util import find_spec

    missing = [name for name in ("matplotlib", "jinja2") if find_spec(name) is None]
    if missing:
        raise BadInput(
            f"capsule report needs {' and '.join(missing)}, which Capsule installs on the host "
            "only (not in images): run it where Capsule was installed with pip"
        )


def report(
    capsule: Path,
    others: list[Path],
    out: Path,
    fmt: str = "html",
    force: bool = False,
    tol: Tolerances | None = None,
) -> ReportResult:
    """Write the report of CAPSULE against each OTHER (replays, capsules, matrices) to OUT."""
    from builder.report.figures import draw
    from builder.report.gather import gather

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _need_host_libraries()
    chosen = get_format(fmt)
    folders = chosen.folders(out.name)
    _refuse_existing(out, folders, force)  # before any work; again under the claim
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"{out.parent}: cannot be made ({error.strerror})") from None
    with locks.claimed(out):
        _refuse_existing(out, folders, force)
        locks.remove_leftovers(out.parent, out.name)
        data = gather(capsule, others, tol)
        figures = draw(data, chosen.figures)
        rendered = chosen.render(data, figures, out.name)
        try:
            _write(out, rendered)
        except OSError as error:
            raise BadInput(f"{out}: cannot be written ({error.strerror})") from None
    return ReportResult(
        path=str(out),
        format=chosen.name,
        sections=data.sections,
        figures=len(figures),
        files=[str(out.parent / name) for name in rendered.beside],
        data=data,
    )
