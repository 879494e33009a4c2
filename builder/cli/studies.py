"""Commands that study a capsule with many runs: sweep, stats, evaluate, matrix, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from builder.cli.common import (
    BadUsage,
    DeviceChoice,
    ExecutorChoice,
    JsonFlag,
    OpenedFlag,
    TierChoice,
    WhereChoice,
    app,
    emit,
    err,
    open_capsule,
    out,
    reported,
)

if TYPE_CHECKING:
    from builder.records.sweep import SweepRun


@app.command()
def sweep(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Init seeds: N (1…N), primes:N (the N smallest primes above 1,000,000, "
            "as the paper's 100 large primes), or a,b,c (one seed: 'a,').",
        ),
    ] = None,
    orders: Annotated[
        str | None, typer.Option(help="Data-order seeds: N (1…N), primes:N, or a,b,c.")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Runs at a time: worker processes (local) or array tasks (slurm); with "
            "--batched, the threads of the one program.",
        ),
    ] = 1,
    executor: Annotated[
        ExecutorChoice,
        typer.Option(
            help="local: a pool of warm processes here; slurm: one Slurm job array (submitit); "
            "batched: all runs as one program here (as --batched)."
        ),
    ] = ExecutorChoice.local,
    on: Annotated[
        WhereChoice,
        typer.Option(
            help="Where the runs execute: this host's (or each Slurm node's) Python, or "
            "containers of the capsule's image on docker, podman or oci (runc, no daemon): "
            "--jobs containers at once, or one per Slurm task with --executor slurm."
        ),
    ] = WhereChoice.host,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 when a metric (or the weights) did not vary although the seeds did.",
        ),
    ] = False,
    batched: Annotated[
        bool,
        typer.Option(
            "--batched",
            help="Train all the runs at once, in this process, as one program with a run axis "
            "(a capsule with controls.numerics = 'portable'; each run is bit-identical to its "
            "solo replay, and many times faster than a pool).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the capsule's experiment under many init and/or order seeds; store every run's
    outcome in the capsule (artifact "sweep").

    Seeds crossed with orders; an axis not given keeps the capsule's own seed. Finished runs
    are kept as they complete: an interrupted sweep resumes, and a larger one reuses them.
    Exit 1 if any run failed (the others are kept), or with --strict if the sweep has zero
    spread (warned on stderr in any case).
    """
    from builder.cli.progress import sweeping
    from builder.controls import ensure_process_env
    from builder.history import note
    from builder.records.enums import Where
    from builder.report.text import render_sweep, render_sweep_failures
    from builder.store import load_manifest
    from builder.sweep import parse_seeds
    from builder.sweep import sweep as do_sweep

    with reported():
        if seeds is None and orders is None:
            raise BadUsage("give --seeds and/or --orders")
        if batched and executor == ExecutorChoice.slurm:
            raise BadUsage("--batched runs here, as one program: leave out --executor slurm")
        if (batched or executor == ExecutorChoice.batched) and on != WhereChoice.host:
            raise BadUsage("--batched runs here, on the host: leave out --on")
        manifest = load_manifest(capsule)  # its digest only: the process may re-execute
        seed_list = parse_seeds(seeds, "--seeds") if seeds else None
        order_list = parse_seeds(orders, "--orders") if orders else None
        if on == WhereChoice.host:
            ensure_process_env(manifest.spec)
        handle = open_capsule(capsule)
        with sweeping() as observer:
            try:
                name = ExecutorChoice.batched.value if batched else executor.value
                result = do_sweep(handle, seed_list, order_list, jobs, observer, name, Where(on))
            except KeyboardInterrupt:
                err.print("capsule: interrupted; finished runs are kept — run again to resume")
                raise typer.Exit(130) from None
    if result.ran:
        note(capsule, "sweep", on.value, runs=result.ran, executor=executor.value)
    name = manifest.spec.name
    emit(
        result,
        as_json,
        lambda: render_sweep(
            out, name, capsule, result.ran, result.reused, result.runs, result.stats
        ),
    )
    render_sweep_failures(err, result.failures)
    for warning in result.warnings:
        err.print(f"capsule: warning: {warning}", markup=False)
    if result.failures or (strict and result.warnings):
        raise typer.Exit(1)


@app.command("sweep-runs", hidden=True)
def sweep_runs(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    runs: Annotated[str, typer.Option(help="INIT:ORDER pairs, comma-separated.")],
    journal: Annotated[Path, typer.Option(help="The journal file each finished run joins.")],
) -> None:
    """Inside a capsule's image (`sweep --on ENGINE`): run these runs, journal each at once."""
    from builder.controls import ensure_process_env
    from builder.executors.journal import append_journal
    from builder.executors.work import run_serially
    from builder.report.text import render_sweep_failures
    from builder.store import load_manifest

    with reported():
        try:
            keys = [(int(i), int(o)) for i, _, o in (p.partition(":") for p in runs.split(","))]
        except ValueError:
            raise BadUsage(f"--runs {runs!r}: expected INIT:ORDER,...") from None
        ensure_process_env(load_manifest(capsule).spec)

        def keep(run: SweepRun) -> None:
            append_journal(journal.parent, run, journal.name)

        failures = run_serially(str(capsule), keys, keep)
    render_sweep_failures(err, failures)
    if failures:
        raise typer.Exit(1)


@app.command()
def stats(
    capsule: Annotated[Path, typer.Argument(help="A capsule with a sweep.")],
    other: Annotated[
        Path | None,
        typer.Argument(help="Another capsule with a sweep: Welch's t-test per metric."),
    ] = None,
    value: Annotated[
        float | None,
        typer.Option(help="A value to test for equivalence (TOST) with the sweep (with --metric)."),
    ] = None,
    metric: Annotated[str | None, typer.Option(help="The metric --value is a value of.")] = None,
    margin: Annotated[
        str,
        typer.Option(
            help="TOST equivalence margin: a number, or Ksd (K times the sweep's standard "
            "deviation), e.g. 3sd."
        ),
    ] = "3sd",
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5, help="Significance level.")] = 0.05,
    as_json: JsonFlag = False,
) -> None:
    """The paper's statistics over a capsule's sweep: min, max, mean, standard deviation and 95 %
    confidence interval per metric; Welch's t-test against another sweep; TOST of one value."""
    from builder.report.text import render_stats
    from builder.stats import statistics

    with reported():
        result = statistics(capsule, other, value, metric, margin, alpha)
    emit(
        result,
        as_json,
        lambda: render_stats(out, result.runs, result.stats, result.welch, result.tost),
    )


@app.command()
def evaluate(
    capsule: Annotated[Path, typer.Argument(help="The capsule (its data and spec).")],
    trained: Annotated[
        list[Path], typer.Argument(help="Capsule or replay directories whose weights to evaluate.")
    ],
    device: Annotated[DeviceChoice | None, typer.Option(help="Device to evaluate on.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON document to this file.")
    ] = None,
    as_json: JsonFlag = False,
    opened: OpenedFlag = False,
) -> None:
    """Error rates of trained weights computed here (one column of the device matrix)."""
    from builder.controls import ensure_process_env
    from builder.evaluate import evaluate as do_evaluate
    from builder.evaluate import evaluation_spec
    from builder.report.text import render_evaluation
    from builder.store import load_manifest

    chosen = device.value if device else None
    with reported():
        ensure_process_env(evaluation_spec(load_manifest(capsule), chosen, threads))
        results = do_evaluate(open_capsule(capsule, opened), trained, chosen, threads)
    document = {name: m.model_dump(exclude={"epoch"}) for name, m in results.items()}
    if out_file is not None:
        out_file.write_text(json.dumps(document, indent=2) + "\n")
    emit(document, as_json, lambda: render_evaluation(out, results))


@app.command()
def matrix(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory (a built-in experiment).")],
    devices: Annotated[
        str,
        typer.Option(
            help="Configurations: [host:|docker:|podman:|oci:]cpu|cuda[:THREADS], "
            "comma-separated, e.g. cpu:1,cpu:2,docker:cpu,podman:cpu,oci:cpu,cuda."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the trained replays and matrix.json.")
    ],
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The paper's "Mismatched Architectures" table: train on each configuration, evaluate every
    trained model on every configuration; says whether each training is bit-identical to the
    capsule's baseline."""
    from builder.cli.progress import LINES
    from builder.history import note
    from builder.matrix import csv_text, parse_devices
    from builder.matrix import matrix as do_matrix
    from builder.report.text import render_matrix

    with reported():
        configs = parse_devices(devices)
        result = do_matrix(open_capsule(capsule), configs, out_dir, LINES, force=False)
    for where in sorted({c.on for c in configs}):
        note(capsule, "matrix", where, path=str(out_dir.resolve()))
    if csv is not None:
        csv.write_text(csv_text(result))
    emit(result, as_json, lambda: render_matrix(out, result))


@app.command()
def audit(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    with_: Annotated[
        list[str],
        typer.Option(
            "--with",
            help="A version to swap in, PKG==VERSION (repeatable), e.g. --with numpy==2.3.5.",
        ),
    ],
    on: Annotated[
        WhereChoice,
        typer.Option(
            help="docker or podman: an image of its own with the swapped wheelhouse; host: a "
            "throwaway venv holding the swapped wheels in front of Capsule's own."
        ),
    ] = WhereChoice.docker,
    bisect: Annotated[
        bool,
        typer.Option(
            "--bisect",
            help="When the result moved, find the smallest set of the changes that moves it "
            "(delta debugging; one replay per environment tried).",
        ),
    ] = False,
    require: Annotated[
        TierChoice | None,
        typer.Option(help="Exit 1 unless the verdict is at least this tier."),
    ] = None,
    keep_images: Annotated[
        bool, typer.Option("--keep-images", help="Keep the audit's images (docker, podman).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Replay the capsule with some library versions swapped and diff it against the baseline
    (e.g. an upgrade of TensorFlow): the verdict, with the version changes among the reasons.

    Wheels are downloaded on the host (kept in ~/.cache/capsule/wheels); a version that cannot
    be had, or that conflicts with the rest of the environment, is refused before anything runs.
    The result is stored in the capsule (artifact audit/<sha12>, listed by `inspect`)."""
    from builder.cli.progress import LINES
    from builder.records.enums import Tier, Where
    from builder.report.text import render_audit
    from builder.upgrade import audit as do_audit
    from builder.upgrade import parse_with

    with reported():
        wanted = parse_with(with_)
        record = do_audit(open_capsule(capsule), wanted, Where(on), bisect, LINES, keep_images)
    emit(record, as_json, lambda: render_audit(out, record))
    if require is not None and not Tier(record.verdict).meets(Tier(require.value)):
        raise typer.Exit(1)
