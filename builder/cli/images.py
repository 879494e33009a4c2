"""Commands on a capsule's image: build, export, import."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from builder.cli.common import (
    EngineChoice,
    EngineOption,
    JsonFlag,
    app,
    emit,
    open_capsule,
    out,
    reported,
)


@app.command()
def build(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image already in the engine (default: the base the capsule "
            "carries; at its first build, Capsule's local Debian base, made once per engine "
            "with debootstrap). The base is stored in the capsule, so rebuilds need no network."
        ),
    ] = None,
    gpu: Annotated[
        bool, typer.Option(help="Build the CUDA image (framework CUDA wheels).")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(help="Rebuild without cache; exit 3 unless the image ID is the recorded one."),
    ] = False,
    engine: EngineOption = EngineChoice.docker,
    as_json: JsonFlag = False,
) -> None:
    """Make the capsule's wheelhouse and image offline; record the image in the capsule.

    The capsule keeps every input of its image: its wheels and its base image.
    A rebuild loads them into an engine that lacks them: no network, years later.
    Docker and Podman build the same image ID from the same capsule.
    """
    from builder.build import build as do_build
    from builder.cli.progress import LINES
    from builder.report.text import render_build

    with reported():
        result = do_build(open_capsule(capsule), base, gpu, check, LINES, engine.value)
    emit(result, as_json, lambda: render_build(out, result, capsule))


class ExportFormat(StrEnum):
    tar = "tar"
    ro_crate = "ro-crate"
    oci = "oci"


@app.command()
def export(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The file to write, or a folder to write NAME-DIGEST12.capsule.tar into; "
            "for ro-crate a directory, or NAME.zip; for oci a file, or a folder to write "
            "NAME-DIGEST12.oci.tar into.",
        ),
    ],
    with_image: Annotated[
        bool, typer.Option(help="Include the capsule's built images (docker save format, gzip).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing file at --out.")] = False,
    engine: EngineOption = EngineChoice.docker,
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="tar: Capsule's own, for `capsule import`; ro-crate: a Workflow Run RO-Crate "
            "(Process Run Crate) for archives such as Zenodo and WorkflowHub; oci: an OCI "
            "image layout archive (oci-archive, made with skopeo) of the image, with the "
            "capsule inside, for `podman load` and `apptainer build x.sif oci-archive://FILE`.",
        ),
    ] = ExportFormat.tar,
    as_json: JsonFlag = False,
) -> None:
    """Write the capsule, and optionally its image (from --engine), into one file."""
    from builder.cli.progress import LINES
    from builder.history import note
    from builder.report.text import render_export
    from builder.transfer import export as do_export

    with reported():
        if format_ is ExportFormat.ro_crate:
            from builder.crate import export_crate

            result = export_crate(open_capsule(capsule), out_file, with_image, force)
        elif format_ is ExportFormat.oci:
            from builder.oci import export_oci

            result = export_oci(open_capsule(capsule), out_file, LINES, force, engine.value)
        else:
            result = do_export(
                open_capsule(capsule), out_file, with_image, LINES, force, engine.value
            )
    image_from = engine.value if result.with_image else None
    path, size = str(Path(result.path).resolve()), result.bytes
    note(capsule, "export", path=path, format=format_.value, engine=image_from, bytes=size)
    emit(
        result,
        as_json,
        lambda: render_export(
            out, capsule, Path(result.path), result.files, result.with_image, result.bytes
        ),
    )


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="A file written by `capsule export`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to unpack the capsule into.")],
    force: Annotated[bool, typer.Option(help="Replace an existing capsule at --out.")] = False,
    engine: EngineOption = EngineChoice.docker,
    as_json: JsonFlag = False,
) -> None:
    """Unpack an export safely, verify every digest, and load its image into --engine."""
    from builder.cli.progress import LINES
    from builder.history import note
    from builder.report.text import render_import
    from builder.transfer import import_capsule

    with reported():
        result = import_capsule(source, out_dir, LINES, force, engine.value)
    image_to = engine.value if result.images else None
    size = source.stat().st_size
    note(out_dir, "import", path=str(source.resolve()), engine=image_to, bytes=size)
    emit(result, as_json, lambda: render_import(out, result.name, out_dir, result.images))
