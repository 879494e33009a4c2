"""The command that writes a study's report page: report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from builder.cli.common import FormatChoice, JsonFlag, app, emit, out, reported


@app.command()
def report(
    capsule: Annotated[Path, typer.Argument(help="The capsule (the baseline).")],
    out_file: Annotated[
        Path, typer.Option("--out", help="The report's file, e.g. report.html or report.md.")
    ],
    others: Annotated[
        list[Path] | None,
        typer.Argument(
            help="What to compare with it, any number: a replay directory (replay.json, from "
            "`capsule replay`), another capsule (manifest.json: another framework's, say) or a "
            "matrix directory (matrix.json, from `capsule matrix`).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        FormatChoice,
        typer.Option(
            "--format",
            help="html: one self-contained page (figures inline, no network); md: Markdown, "
            "its figures as PNG files in NAME-files/ beside it.",
        ),
    ] = FormatChoice.html,
    force: Annotated[bool, typer.Option(help="Replace an existing report at --out.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write the study's report: one self-contained page (or Markdown) from the capsules.

    Sections, each present when the capsules hold its data: summary with a verdict per OTHER,
    environments side by side, training curves, per-layer drift, the sweep's variance,
    cross-device matrices, upgrade audits, reproducibility checklist. Read only: nothing is
    trained or run, no code from a capsule is executed, and the same capsules give the same
    file. --json prints the sections, the figure count and the page's data (also embedded in
    the page as JSON, #capsule-data).
    """
    from builder.report.page import report as do_report
    from builder.report.text import render_report

    with reported():
        result = do_report(capsule, others or [], out_file, fmt.value, force)
    emit(result, as_json, lambda: render_report(out, result))
