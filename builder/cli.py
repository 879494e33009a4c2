"""The `capsule` command line: argument parsing and rendering only.

Every command calls one service function; CapsuleError becomes one line on stderr and the
contract's exit code (2 bad input, 3 integrity, 4 engine missing), never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from builder import __version__
from builder.errors import BadInput, CapsuleError
from builder.records.enums import Device, RecordKind, Tier, Where
from builder.records.manifest import Manifest
from builder.records.replay import ReplayRecord
from builder.records.run import EpochMetrics, Finding
from builder.records.spec import Spec, UserSpec
from builder.records.verdict import Tolerances

DEFAULT_TOLERANCES = Tolerances()

if TYPE_CHECKING:
    from builder.records.audit import AuditRecord
    from builder.records.sweep import Summary, SweepRecord, SweepRun
    from builder.sweep import SweepResult

MetricCallback = Callable[[str, float, int | None], None]


class BadUsage(BadInput):
    """Options that do not go together (exit 2)."""


app = typer.Typer(
    name="capsule",
    help="Freeze an ML experiment into a reproducibility capsule, replay it, and judge the replay.",
    epilog="Exit codes: 0 ok; 1 verdict below --require; 2 bad usage or input; "
    "3 integrity failure (a digest does not match); 4 an engine is missing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


class EngineChoice(StrEnum):
    docker = "docker"
    podman = "podman"


EngineOption = Annotated[
    EngineChoice,
    typer.Option(
        "--engine",
        help="Container engine: docker, or podman (its Docker-compatible service). The image "
        "ID is the same on both.",
    ),
]


class Executor(StrEnum):
    local = "local"
    slurm = "slurm"


def say(line: str) -> None:
    """Progress of long engine work (builds, containers, transfers), on stderr."""
    err.print(line, markup=False)


def fail(error: CapsuleError) -> NoReturn:
    details = getattr(error, "details", "")
    if details:  # the user's own frames, when their training code failed
        err.print("Traceback (the training code's frames):\n" + details.rstrip(), markup=False)
    err.print(f"capsule: error: {error}", markup=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def reported() -> Iterator[None]:
    """Turn CapsuleError into its exit code; SIGTERM and Ctrl-C unwind cleanly (no half capsule)."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except CapsuleError as error:
        fail(error)
    except KeyboardInterrupt:
        err.print("capsule: interrupted; nothing was written")
        raise typer.Exit(130) from None


@contextmanager
def epoch_progress(total: int, label: str) -> Iterator[Callable[[EpochMetrics], None]]:
    """A progress bar with ETA on stderr, and one line per finished epoch."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def on_epoch(m: EpochMetrics) -> None:
            parts = [
                f"epoch {m.epoch}/{total}",
                f"loss {m.train_loss:.4f}",
                f"train {_pct(m.train_error)}",
            ]
            parts += [
                f"{k} {_pct(v)}"
                for k, v in (("dev", m.dev_error), ("eval", m.eval_error))
                if v is not None
            ]
            progress.console.print("  ".join(parts))
            progress.advance(task)

        yield on_epoch


@contextmanager
def metric_progress(label: str) -> Iterator[MetricCallback]:
    """User code has no epochs Capsule knows of: a spinner, and each `run.log` as a line."""
    with err.status(label):

        def on_metric(name: str, value: float, step: int | None) -> None:
            at = "" if step is None else f"step {step}  "
            err.print(f"{at}{name} {value:.6g}", markup=False)

        yield on_metric


@contextmanager
def run_progress(
    spec: Spec | UserSpec, label: str
) -> Iterator[tuple[Callable[[EpochMetrics], None], MetricCallback]]:
    """Progress for either kind of experiment: epochs for built-in ones, metrics for code."""
    if isinstance(spec, Spec):
        with epoch_progress(spec.train.epochs, label) as on_epoch:
            yield on_epoch, lambda name, value, step: None
    else:
        with metric_progress(f"{label}: running {spec.entrypoint}") as on_metric:
            yield lambda m: None, on_metric


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def version_callback(value: bool) -> None:
    if value:
        out.print(f"capsule {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Exit codes: 0 ok, 1 verdict below requirement, 2 bad input, 3 integrity, 4 no engine."""


@app.command()
def freeze(
    spec: Annotated[Path, typer.Argument(help="capsule.toml, or a directory holding one.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the capsule to.")],
    force: Annotated[bool, typer.Option(help="Replace an existing capsule at --out.")] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="Refuse to freeze (exit 2, nothing written) if the code scan (static "
            "nondeterminism rules) or the run finds anything in the user's code."
        ),
    ] = False,
    device: Annotated[
        Device | None,
        typer.Option(help="Device to train on (default: the spec's controls.device)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: the spec's controls.threads).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run SPEC under full controls and write the capsule (manifest + artifacts) atomically.

    SPEC is a built-in experiment, or the user's own code (`entrypoint = "train.py:main"` with
    `[code] include = [...]`): the code is copied into the capsule, scanned for
    nondeterminism, and `main(run)` is called with a `builder.Run`.
    """
    from builder.controls import ensure_process_env
    from builder.freeze import freeze as do_freeze
    from builder.freeze import spec_path
    from builder.overrides import with_controls
    from builder.records.spec import UserSpec
    from builder.spec import load_spec

    chosen = device.value if device else None
    with reported():
        parsed = with_controls(load_spec(spec_path(spec)), chosen, threads)
        ensure_process_env(parsed)
        with run_progress(parsed, f"freeze {parsed.name}") as (on_epoch, on_metric):
            manifest = do_freeze(
                spec,
                out_dir,
                on_epoch,
                force=force,
                strict=strict,
                on_metric=on_metric,
                device=chosen,
                threads=threads,
            )
    if isinstance(parsed, UserSpec) and manifest.audit and not as_json:
        _print_findings(manifest.audit, err)
    _summary(manifest, out_dir, "froze", as_json)


@app.command()
def replay(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the replay to.")],
    on: Annotated[
        Where,
        typer.Option(
            help="Where to replay: this host, or the capsule's image on docker or podman."
        ),
    ] = Where.host,
    device: Annotated[
        Device | None, typer.Option(help="Device to train on (default: as recorded).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: as recorded).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="What-if: change one spec value for this replay (repeatable), e.g. "
            "--set seeds.order=7 --set train.lr=0.005; recorded, and listed first by diff.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing replay at --out.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the capsule again with its recorded data, order, seeds and controls; write RDIR.

    --on docker|podman runs it in the image `capsule build` made: the capsule mounted
    read-only, no network, an unprivileged user without capabilities or new privileges, bounded
    processes and memory; --device cuda asks the engine for the GPUs (docker).
    """
    from builder.controls import ensure_process_env
    from builder.replay import replay_in_image, replay_on_host, replay_spec
    from builder.store import load_manifest

    chosen = device.value if device else None
    with reported():
        manifest = load_manifest(capsule)
        if on != Where.host:
            record = replay_in_image(
                capsule,
                out_dir,
                say,
                on.value,
                threads=threads,
                device=chosen,
                force=force,
                sets=sets,
            )
        else:
            spec_now = replay_spec(manifest, threads, chosen, sets)[0]
            ensure_process_env(spec_now)
            label = f"replay {manifest.spec.name}"
            with run_progress(spec_now, label) as (on_epoch, on_metric):
                record = replay_on_host(
                    capsule,
                    out_dir,
                    on_epoch,
                    threads=threads,
                    device=chosen,
                    force=force,
                    on_metric=on_metric,
                    sets=sets,
                )
    _summary(record, out_dir, "replayed" if on == Where.host else f"replayed in {on}", as_json)


@app.command()
def build(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image already in the engine (default: Capsule's local Debian "
            "base, built once with debootstrap)."
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

    Docker and Podman build the same image ID from the same capsule and base image.
    """
    from builder.build import build as do_build

    with reported():
        result = do_build(capsule, base, gpu, check, say, engine.value)
    if as_json:
        print(
            json.dumps(
                {
                    "variant": result.variant,
                    "checked": result.checked,
                    "matches": result.matches,
                    **result.image.model_dump(),
                },
                indent=2,
            )
        )
    elif result.checked:
        out.print(f"rebuilt without cache: image ID {result.rebuilt_id} matches the recorded one")
    else:
        out.print(
            f"built {result.image.tag} = {result.image.image_id} "
            f"({len(result.image.wheels)} wheels); recorded in {capsule / 'manifest.json'}"
        )


@app.command()
def diff(
    capsule: Annotated[Path, typer.Argument(help="The capsule (baseline).")],
    other: Annotated[Path, typer.Argument(help="A replay directory, or another capsule.")],
    as_json: JsonFlag = False,
    require: Annotated[
        Tier, typer.Option(help="Exit 1 unless the verdict is at least this tier.")
    ] = Tier.equivalent,
    atol: Annotated[
        float, typer.Option(help="Absolute weight tolerance for 'close'.")
    ] = DEFAULT_TOLERANCES.atol,
    rtol: Annotated[
        float, typer.Option(help="Relative weight tolerance for 'close'.")
    ] = DEFAULT_TOLERANCES.rtol,
    metric_atol: Annotated[
        float,
        typer.Option(help="Largest change of a final metric (error rate, loss) still 'close'."),
    ] = DEFAULT_TOLERANCES.metric_atol,
    margin: Annotated[
        str,
        typer.Option(
            help="'equivalent' tier: TOST margin per metric, a number or Ksd (K times the "
            "sweep's standard deviation of that metric)."
        ),
    ] = "3sd",
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="'equivalent' tier: significance level.")
    ] = 0.05,
) -> None:
    """Compare OTHER with the capsule's baseline: identical, close, equivalent or diverged.

    'equivalent' needs a sweep in the capsule (`capsule sweep`): a replay that is neither
    identical nor close is equivalent when every final metric passes an equivalence test
    (TOST) against the sweep's runs.
    """
    from builder.verdict import diff as do_diff

    with reported():
        tolerances = Tolerances(
            atol=atol, rtol=rtol, metric_atol=metric_atol, margin=margin, alpha=alpha
        )
        verdict = do_diff(capsule, other, tolerances)
    if as_json:
        print(verdict.model_dump_json(indent=2))
    else:
        colour = {"identical": "green", "close": "cyan", "equivalent": "yellow"}.get(
            verdict.verdict, "red"
        )
        out.print(f"verdict: [bold {colour}]{verdict.verdict}[/]")
        for reason in verdict.reasons:
            out.print(f"  - [{reason.kind}] {reason.message}", markup=False)
        if verdict.verdict != "identical":
            table = Table("tensor", "shape", "max |Δ|", "max ULP", "within tol")
            for t in verdict.tensors:
                table.add_row(
                    t.name,
                    str(t.shape),
                    f"{t.max_abs:.3g}" if t.max_abs is not None else "—",
                    f"{t.max_ulp:.0f}" if t.max_ulp is not None else "—",
                    "yes" if t.within_tolerance else "no",
                )
            out.print(table)
    if not verdict.verdict.meets(require):
        raise typer.Exit(1)


@app.command()
def verify(
    capsule: Annotated[Path, typer.Argument(help="A capsule or replay directory.")],
    as_json: JsonFlag = False,
) -> None:
    """Re-hash the manifest and every artifact; exit 3 naming the first one that was altered."""
    from builder.errors import IntegrityError
    from builder.store import verify as do_verify

    with reported():
        try:
            record = do_verify(capsule)
        except IntegrityError as error:
            if as_json:
                print(json.dumps({"ok": False, "path": str(capsule), "error": str(error)}))
            raise
    if as_json:
        print(json.dumps({"ok": True, "path": str(capsule), "artifacts": len(record.artifacts)}))
    else:
        out.print(
            f"ok: {capsule}: the record and {len(record.artifacts)} artifacts match their sha256"
        )


@app.command()
def inspect(
    capsule: Annotated[Path, typer.Argument(help="A capsule or replay directory.")],
    as_json: JsonFlag = False,
) -> None:
    """Show what a capsule holds: spec, controls, environment, outcome and artifacts."""
    from builder.store import load_record

    with reported():
        record = load_record(capsule)
    if as_json:
        print(record.model_dump_json(indent=2))
        return
    with reported():
        _describe(record, capsule)


@app.command()
def export(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    out_file: Annotated[Path, typer.Option("--out", help="The file to write (NAME.capsule.tar).")],
    with_image: Annotated[
        bool, typer.Option(help="Include the capsule's built images (docker save format, gzip).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing file at --out.")] = False,
    engine: EngineOption = EngineChoice.docker,
    as_json: JsonFlag = False,
) -> None:
    """Write the capsule, and optionally its image (from --engine), into one file for another
    machine."""
    from builder.transfer import export as do_export

    with reported():
        names = do_export(capsule, out_file, with_image, say, force, engine.value)
    size = out_file.stat().st_size / 2**20
    if as_json:
        print(
            json.dumps(
                {
                    "path": str(out_file),
                    "files": len(names),
                    "with_image": with_image,
                    "bytes": out_file.stat().st_size,
                }
            )
        )
        return
    out.print(
        f"exported {capsule} → {out_file} ({len(names)} files"
        f"{' + image' if with_image else ''}, {size:,.1f} MiB)"
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
    from builder.transfer import import_capsule

    with reported():
        manifest = import_capsule(source, out_dir, say, force, engine.value)
    if as_json:
        print(
            json.dumps(
                {
                    "name": manifest.spec.name,
                    "path": str(out_dir),
                    "verified": True,
                    "images": {v: i.image_id for v, i in manifest.images.items()},
                }
            )
        )
        return
    loaded = ", ".join(f"{v} {i.image_id[:19]}…" for v, i in manifest.images.items()) or "none"
    out.print(f"imported {manifest.spec.name} → {out_dir}; verified; images recorded: {loaded}")


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
            min=1, help="Runs at a time: worker processes (local) or array tasks (slurm)."
        ),
    ] = 1,
    executor: Annotated[
        Executor,
        typer.Option(
            help="local: a pool of warm processes here; slurm: one Slurm job array (submitit)."
        ),
    ] = Executor.local,
    as_json: JsonFlag = False,
) -> None:
    """Run the capsule's experiment under many init and/or order seeds; store every run's
    outcome in the capsule (artifact "sweep").

    Seeds crossed with orders; an axis not given keeps the capsule's own seed. Finished runs
    are kept as they complete: an interrupted sweep resumes, and a larger one reuses them.
    Exit 1 if any run failed (the others are kept).
    """
    from builder.controls import ensure_process_env
    from builder.store import load_manifest
    from builder.sweep import parse_seeds
    from builder.sweep import sweep as do_sweep

    with reported():
        if seeds is None and orders is None:
            raise BadUsage("give --seeds and/or --orders")
        manifest = load_manifest(capsule)
        seed_list = parse_seeds(seeds, "--seeds") if seeds else None
        order_list = parse_seeds(orders, "--orders") if orders else None
        ensure_process_env(manifest.spec)
        result = _run_sweep(do_sweep, capsule, seed_list, order_list, jobs, executor.value)
    if as_json:
        print(
            json.dumps(
                {
                    "path": str(capsule),
                    "ran": result.ran,
                    "reused": result.reused,
                    "failures": [f.__dict__ for f in result.failures],
                    "stats": [s.model_dump() for s in _summaries(result.record)],
                    "runs": [r.model_dump() for r in result.record.runs],
                },
                indent=2,
            )
        )
    else:
        out.print(
            f"sweep of {manifest.spec.name}: {result.ran} run(s) now, {result.reused} reused, "
            f"{len(result.record.runs)} stored in {capsule}"
        )
        _stats_table(result.record)
    for failure in result.failures:
        err.print(
            f"capsule: run init={failure.init} order={failure.order} failed: {failure.error}",
            markup=False,
        )
    if result.failures:
        raise typer.Exit(1)


def _run_sweep(
    do_sweep: Callable[..., SweepResult],
    capsule: Path,
    seeds: list[int] | None,
    orders: list[int] | None,
    jobs: int,
    executor: str,
) -> SweepResult:
    """The sweep with a progress bar (ETA) on stderr; Ctrl-C keeps the finished runs."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("sweep", total=None)

        def on_start(todo: int, reused: int) -> None:
            progress.update(task, total=todo, description=f"sweep ({reused} reused)")

        def on_done(run: SweepRun) -> None:
            progress.advance(task)

        try:
            return do_sweep(capsule, seeds, orders, jobs, on_start, on_done, executor)
        except KeyboardInterrupt:
            progress.stop()
            err.print("capsule: interrupted; finished runs are kept — run again to resume")
            raise typer.Exit(130) from None


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
    from builder.stats import margin_value, tost, welch

    with reported():
        record = _sweep_of(capsule)
        sample = record.values()
        welch_tests = []
        if other is not None:
            theirs = _sweep_of(other).values()
            welch_tests = [welch(m, sample[m], theirs[m], alpha) for m in sample if m in theirs]
        tost_test = None
        if value is not None:
            if metric is None or metric not in sample:
                raise BadUsage(f"--metric: give one of {', '.join(sample)} with --value")
            bound = margin_value(margin, sample[metric])
            tost_test = tost(metric, value, sample[metric], bound, alpha)
    if as_json:
        document = {
            "path": str(capsule),
            "stats": [s.model_dump() for s in _summaries(record)],
            "welch": [w.model_dump() for w in welch_tests],
            "tost": tost_test.model_dump() if tost_test else None,
        }
        print(json.dumps(document, indent=2))
        return
    _stats_table(record)
    for w in welch_tests:
        verdict = "significant" if w.significant else "not significant"
        out.print(
            f"welch  {w.metric}: mean {w.mean_a:.6g} vs {w.mean_b:.6g}, t = {w.t:.3f}, "
            f"p = {w.p:.3g} ({verdict} at {w.alpha})",
            markup=False,
        )
    if tost_test is not None:
        t = tost_test
        outcome = "equivalent" if t.equivalent else "not shown equivalent"
        out.print(
            f"tost   {t.metric} = {t.value:.6g} vs sweep mean {t.mean:.6g} (n = {t.n}), "
            f"margin ±{t.margin:.3g}: p = {t.p:.3g} → {outcome}",
            markup=False,
        )


@app.command()
def evaluate(
    capsule: Annotated[Path, typer.Argument(help="The capsule (its data and spec).")],
    trained: Annotated[
        list[Path], typer.Argument(help="Capsule or replay directories whose weights to evaluate.")
    ],
    device: Annotated[Device | None, typer.Option(help="Device to evaluate on.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON document to this file.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Error rates of trained weights computed here (one column of the device matrix)."""
    from builder.controls import ensure_process_env
    from builder.evaluate import evaluate as do_evaluate
    from builder.evaluate import evaluation_spec
    from builder.store import load_manifest

    chosen = device.value if device else None
    with reported():
        ensure_process_env(evaluation_spec(load_manifest(capsule), chosen, threads))
        results = do_evaluate(capsule, trained, chosen, threads)
    document = {name: m.model_dump(exclude={"epoch"}) for name, m in results.items()}
    if out_file is not None:
        out_file.write_text(json.dumps(document, indent=2) + "\n")
    if as_json:
        print(json.dumps(document, indent=2))
        return
    for name, m in results.items():
        out.print(
            f"{name}: train {_pct(m.train_error)}, dev {_pct(m.dev_error)}, "
            f"eval {_pct(m.eval_error)} (loss {m.train_loss:.5f})",
            markup=False,
        )


@app.command()
def matrix(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory (a built-in experiment).")],
    devices: Annotated[
        str,
        typer.Option(
            help="Configurations: [host:|docker:|podman:]cpu|cuda[:THREADS], comma-separated, "
            "e.g. cpu:1,cpu:2,docker:cpu,podman:cpu,cuda."
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
    from builder.matrix import csv_text, parse_devices
    from builder.matrix import matrix as do_matrix

    with reported():
        result = do_matrix(capsule, parse_devices(devices), out_dir, say, force=False)
    if csv is not None:
        csv.write_text(csv_text(result))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    labels = [c.label for c in result.configs]
    table = Table("trained on ↓ / evaluated on →", *labels, "weights = baseline", title="matrix")
    for row in result.rows:
        cells = []
        for label in labels:
            c = result.cell(row.trained_on, label)
            cells.append(f"train {_pct(c.train_error)} / eval {_pct(c.eval_error)}")
        same = (
            "yes" if row.weights_identical_to_baseline else f"no (≤ {row.max_abs_to_baseline:.2g})"
        )
        table.add_row(row.trained_on, *cells, same)
    out.print(table)


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
        Where,
        typer.Option(
            help="docker or podman: an image of its own with the swapped wheelhouse; host: a "
            "throwaway venv holding the swapped wheels in front of Capsule's own."
        ),
    ] = Where.docker,
    bisect: Annotated[
        bool,
        typer.Option(
            "--bisect",
            help="When the result moved, find the smallest set of the changes that moves it "
            "(delta debugging; one replay per environment tried).",
        ),
    ] = False,
    require: Annotated[
        Tier | None,
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
    from builder.upgrade import audit as do_audit
    from builder.upgrade import parse_with

    with reported():
        record = do_audit(capsule, parse_with(with_), on, bisect, say, keep_images)
    if as_json:
        print(record.model_dump_json(indent=2))
    else:
        _print_audit(record)
    if require is not None and not record.verdict.meets(require):
        raise typer.Exit(1)


def _print_audit(record: AuditRecord) -> None:
    out.print(f"audit on {record.on}: verdict [bold]{record.verdict}[/]")
    for reason in record.reasons:
        out.print(f"  - {reason}", markup=False)
    if len(record.trials) > 1:
        table = Table("changes applied", "verdict", title="environments replayed")
        for t in record.trials:
            table.add_row(", ".join(t.changes) or "none", t.verdict)
        out.print(table)


@app.command()
def schema(
    kind: Annotated[
        RecordKind | None,
        typer.Option(help="Only this record's schema (default: every stored record's)."),
    ] = None,
    replay: Annotated[bool, typer.Option("--replay", hidden=True)] = False,
) -> None:
    """Print the JSON schema of every stored record (schema_version 1): one document whose
    `oneOf` is told apart by `kind` (capsule, replay, sweep, audit, matrix)."""
    from builder.records import json_schema

    print(json.dumps(json_schema(RecordKind.replay if replay else kind), indent=2))


# ---------------------------------------------------------------- rendering


def _summary(record: Manifest | ReplayRecord, where: Path, verb: str, as_json: bool) -> None:
    final = record.outcome.final_values()
    if as_json:
        print(
            json.dumps(
                {
                    "kind": record.kind,
                    "name": record.spec.name,
                    "path": str(where),
                    "final": final,
                    "steps": record.outcome.steps,
                    "train_seconds": record.outcome.train_seconds,
                    "audit": [f.model_dump() for f in record.audit],
                    "artifacts": {name: ref.sha256 for name, ref in record.artifacts.items()},
                },
                indent=2,
            )
        )
        return
    if record.outcome.final is not None:
        f = record.outcome.final
        figures = f"train {_pct(f.train_error)}, dev {_pct(f.dev_error)}, eval {_pct(f.eval_error)}"
    else:
        figures = ", ".join(f"{k} {v:.6g}" for k, v in final.items() if v is not None)
        figures = figures or "no metrics logged"
        if record.audit:
            figures += f"; {len(record.audit)} nondeterminism finding(s)"
    out.print(
        f"{verb} {record.spec.name} → {where}: {figures} "
        f"({record.outcome.steps} steps, {record.outcome.train_seconds:.1f} s training)"
    )


def _sweep_of(capsule: Path) -> SweepRecord:
    from builder.store import load_sweep, verify_capsule

    record = load_sweep(capsule, verify_capsule(capsule))
    if record is None:
        raise BadUsage(f"{capsule}: artifacts.sweep: no sweep yet; run `capsule sweep` first")
    return record


def _summaries(record: SweepRecord) -> list[Summary]:
    from builder.stats import summarize

    return [summarize(metric, data) for metric, data in record.values().items()]


def _stats_table(record: SweepRecord) -> None:
    """The paper's Statistical Analysis table: one row per metric."""
    seeds = sorted({r.init for r in record.runs})
    orders = sorted({r.order for r in record.runs})
    table = Table(
        "metric",
        "runs",
        "min",
        "max",
        "mean",
        "std",
        "95% CI of mean",
        title=f"sweep: {len(seeds)} init seed(s) x {len(orders)} order seed(s)",
    )
    for s in _summaries(record):
        scale, unit = (100, "%") if s.metric.endswith("error") else (1, "")

        def f(x: float, scale: float = scale, unit: str = unit) -> str:
            return f"{x * scale:.4g}{unit}"

        table.add_row(
            s.metric,
            str(s.n),
            f(s.min),
            f(s.max),
            f(s.mean),
            f(s.std),
            f"[{f(s.ci_low)}, {f(s.ci_high)}]",
        )
    out.print(table)


def _print_findings(findings: list[Finding], console: Console) -> None:
    for f in findings:
        times = f" ({f.count}x)" if f.count > 1 else ""
        console.print(
            f"  {f.source:7} {f.file}:{f.line}  [{f.rule}]{times} {f.message}", markup=False
        )


def _describe(record: Manifest | ReplayRecord, path: Path) -> None:
    spec, fp, ctl, outcome = record.spec, record.fingerprint, record.controls, record.outcome
    kind = "capsule" if isinstance(record, Manifest) else f"replay of {record.capsule.name}"
    out.print(
        f"[bold]{spec.name}[/] ({kind}, schema {record.schema_version}, "
        f"created {record.created} by capsule {record.tool.version})"
    )
    if spec.description:
        out.print(f"  {spec.description}", markup=False)
    out.print(
        f"framework  {fp.framework} {fp.framework_version} on {ctl.device}, "
        f"{ctl.threads} thread(s), {ctl.dtype}, deterministic={ctl.deterministic}"
    )
    if isinstance(spec, Spec):
        t = spec.train
        out.print(
            f"model      mlp hidden={spec.model.hidden} {spec.model.activation}; adam lr={t.lr} "
            f"betas={t.betas} eps={t.eps} ({ctl.adam_impl}); {t.epochs} epochs, "
            f"batch {t.batch_size}"
        )
    else:
        code = [n.removeprefix("code/") for n in record.artifacts if n.startswith("code/")]
        files = f"; files: {', '.join(code)}" if code else " (the capsule's code)"
        out.print(f"code       {spec.entrypoint}{files}", markup=False)
        if spec.code.requires:
            out.print(f"requires   {', '.join(spec.code.requires)}", markup=False)
        if spec.params:
            params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
            out.print(f"params     {params}", markup=False)
        for key, item in record.inputs.items():
            what = f"file → {item.artifact}" if item.kind == "file" else f"arrays {item.detail}"
            out.print(f"input      {key}: {what} (sha256 {item.sha256[:16]}…)", markup=False)
    out.print(
        f"seeds      init={ctl.seeds.init} order={ctl.seeds.order} "
        f"PYTHONHASHSEED={ctl.seeds.pythonhashseed}; data order: recorded"
    )
    if isinstance(record, Manifest) and record.data is not None:
        d = record.data
        source = (
            d.builtin.name if d.builtin else ", ".join(f"{k}={v.path}" for k, v in d.files.items())
        )
        sizes = ", ".join(f"{k} {v.rows}" for k, v in d.splits.items())
        out.print(
            f"data       {source}: {sizes} rows x {d.splits['train'].features} features, "
            f"{d.classes} classes"
        )
    if isinstance(record, Manifest):
        for variant, image in record.images.items():
            out.print(
                f"image      {variant}: {image.image_id} ({image.tag}, base {image.base_image}, "
                f"{len(image.wheels)} wheels, built with {image.engine})"
            )
    else:
        overrides = ", ".join(f"{k}={v}" for k, v in record.overrides.items()) or "none"
        where = f"{record.on} image {record.image_id}" if record.image_id else record.on
        out.print(f"replay     on {where}; overrides: {overrides}")
    gpus = ", ".join(g.name for g in fp.gpus) or "none"
    out.print(
        f"machine    {fp.cpu_model} ({fp.cores} cores), GPU: {gpus}, CUDA {fp.cuda or '—'}, "
        f"cuDNN {fp.cudnn or '—'}; {fp.os}; Python {fp.python}; "
        f"{len(fp.distributions)} distributions"
    )
    if outcome.epochs:
        table = Table("epoch", "train loss", "train err", "dev err", "eval err", title="outcome")
        for m in outcome.epochs:
            table.add_row(
                str(m.epoch),
                f"{m.train_loss:.5f}",
                _pct(m.train_error),
                _pct(m.dev_error),
                _pct(m.eval_error),
            )
        out.print(table)
    if outcome.metrics:
        table = Table("metric", "values logged", "last step", "final", title="outcome")
        for name, points in outcome.metrics.items():
            last = points[-1]
            table.add_row(
                name,
                str(len(points)),
                "—" if last.step is None else str(last.step),
                f"{last.value:.6g}",
            )
        out.print(table)
    if record.audit:
        out.print(f"audit      {len(record.audit)} nondeterminism finding(s):")
        _print_findings(record.audit, out)
    elif isinstance(spec, UserSpec):
        out.print("audit      no nondeterminism findings")
    out.print(f"trace      {len(outcome.trace)} checkpoints over {outcome.steps} steps")
    if isinstance(record, Manifest) and "sweep" in record.artifacts:
        from builder.store import load_sweep

        sweep_record = load_sweep(path, record)
        if sweep_record is not None:
            _stats_table(sweep_record)
    if isinstance(record, Manifest):
        from builder.store import load_audits

        for found in load_audits(path, record):
            changes = ", ".join(str(c) for c in found.changes)
            moved = f"; moves with {', '.join(found.bisect)}" if found.bisect else ""
            out.print(
                f"upgrade    {found.created} on {found.on}: {changes} → {found.verdict}{moved}",
                markup=False,
            )
    arts = Table("artifact", "path", "size", "sha256")
    for name, ref in record.artifacts.items():
        arts.add_row(name, ref.path, f"{ref.size:,}", ref.sha256[:16] + "…")
    out.print(arts)


def main() -> None:
    from builder.frameworks import quiet_logs

    quiet_logs()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
