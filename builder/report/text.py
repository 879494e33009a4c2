"""Text reports: what the command line prints for each result, with rich.

One `render_<thing>(console, ...)` per result. Each prints onto the console it is given (the
command line passes its stdout console, `cli.common.out`; progress and failures go to its
stderr console) and does nothing else: every value it shows is handed
to it, loaded and computed by a service beforehand. Importing this module imports rich and
the records only (no NumPy, SciPy, framework or engine SDK): the services' result types are
named for type checking alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.table import Table

from builder.records.manifest import ImageRecord, Manifest
from builder.records.spec import Spec, UserSpec

if TYPE_CHECKING:
    from builder.records.audit import AuditRecord
    from builder.records.history import HistoryEvent
    from builder.records.matrix import MatrixRecord
    from builder.records.replay import ReplayRecord
    from builder.records.report import ReportResult
    from builder.records.results import BuildResult, SignResult
    from builder.records.run import EpochMetrics, Finding
    from builder.records.sweep import Summary, SweepRecord, SweepRun, Tost, Welch
    from builder.records.verdict import Verdict

VERDICT_COLOURS = {"identical": "green", "close": "cyan", "equivalent": "yellow"}  # else red


class FailedRun(Protocol):
    """A sweep run that did not finish (the executors' `Failure`): its seeds and why."""

    @property
    def init(self) -> int: ...
    @property
    def order(self) -> int: ...
    @property
    def error(self) -> str: ...


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


# ---------------------------------------------------------------- progress (stderr)


def render_epoch(console: Console, metrics: EpochMetrics, total: int) -> None:
    """One finished epoch (of `total`) of a built-in experiment, under the progress bar
    (freeze, replay)."""
    m = metrics
    parts = [
        f"epoch {m.epoch}/{total}",
        f"loss {m.train_loss:.4f}",
        f"train {_pct(m.train_error)}",
    ]
    parts += [
        f"{k} {_pct(v)}" for k, v in (("dev", m.dev_error), ("eval", m.eval_error)) if v is not None
    ]
    console.print("  ".join(parts))


def render_metric(console: Console, name: str, value: float, step: int | None) -> None:
    """One `run.log` of the user's code, under the spinner (freeze, replay)."""
    at = "" if step is None else f"step {step}  "
    console.print(f"{at}{name} {value:.6g}", markup=False)


# ---------------------------------------------------------------- freeze, replay


def render_summary(
    console: Console,
    record: Manifest | ReplayRecord,
    where: Path,
    verb: str,
    digest: str | None = None,
) -> None:
    """The line after `freeze` (verb "froze") and `replay` ("replayed", or "replayed in
    docker"): the record written at `where` and its final figures; then a capsule's digest."""
    final = record.outcome.final_values()
    if record.outcome.final is not None:
        f = record.outcome.final
        figures = f"train {_pct(f.train_error)}, dev {_pct(f.dev_error)}, eval {_pct(f.eval_error)}"
    else:
        figures = ", ".join(f"{k} {v:.6g}" for k, v in final.items() if v is not None)
        figures = figures or "no metrics logged"
        if record.audit:
            figures += f"; {len(record.audit)} nondeterminism finding(s)"
    console.print(
        f"{verb} {record.spec.name} → {where}: {figures} "
        f"({record.outcome.steps} steps, {record.outcome.train_seconds:.1f} s training)"
    )
    if digest is not None:
        console.print(f"digest: sha256:{digest}")


def render_findings(console: Console, findings: Sequence[Finding]) -> None:
    """Nondeterminism findings (code scan and runtime), one line each: after a freeze of the
    user's code (on stderr) and in `inspect`."""
    for f in findings:
        times = f" ({f.count}x)" if f.count > 1 else ""
        console.print(
            f"  {f.source:7} {f.file}:{f.line}  [{f.rule}]{times} {f.message}", markup=False
        )


# ---------------------------------------------------------------- build, transfer, verify


def _base_line(manifest: Manifest, image: ImageRecord) -> str:
    """Whether the capsule carries the image's base (so a rebuild needs no network), and where
    the base came from."""
    base = image.base
    if base is None:
        return (
            f"{image.base_image}, not carried (recorded before bases were stored): a rebuild "
            "needs it in the engine"
        )
    stored = manifest.artifacts.get(base.archive)
    size = f", {stored.size / 1e6:.0f} MB" if stored else ""
    origin = (
        f"; Debian {base.release}, packages of {base.packages_date} from {base.mirror}"
        if base.release
        else ""
    )
    return f"{image.base_image}, carried ({base.archive}{size}){origin}"


def render_build(console: Console, result: BuildResult, capsule: Path) -> None:
    """`build`: the image built and recorded in CAPSULE's manifest, or (`--check`) that the
    rebuild without cache gave the recorded image ID."""
    if result.checked:
        console.print(
            f"rebuilt without cache: image ID {result.rebuilt_id} matches the recorded one"
        )
    else:
        console.print(
            f"built {result.image.tag} = {result.image.image_id} "
            f"({len(result.image.wheels)} wheels); recorded in {capsule / 'manifest.json'}"
        )


def render_export(
    console: Console, capsule: Path, out_file: Path, files: int, with_image: bool, size: int
) -> None:
    """`export`: `files` files of the capsule (the names `transfer.export` returns) written
    to `out_file`, with its images or not; `size` is the file's size in bytes."""
    mib = size / 2**20
    console.print(
        f"exported {capsule} → {out_file} ({files} files"
        f"{' + image' if with_image else ''}, {mib:,.1f} MiB)"
    )


def render_import(console: Console, name: str, out_dir: Path, images: Mapping[str, str]) -> None:
    """`import`: the capsule `name` unpacked at `out_dir` (verified), and the images its
    manifest records (variant → image ID: `{v: i.image_id for v, i in manifest.images.items()}`)."""
    loaded = ", ".join(f"{v} {image_id[:19]}…" for v, image_id in images.items()) or "none"
    console.print(f"imported {name} → {out_dir}; verified; images recorded: {loaded}")


def render_verify(
    console: Console,
    capsule: Path,
    artifacts: int,
    digest: str | None = None,
    key: Path | None = None,
) -> None:
    """`verify`, when the record and its `artifacts` artifacts all matched their digests (a
    mismatch is an error: the CLI prints it), with a capsule's digest and whose key signed it."""
    console.print(f"ok: {capsule}: the record and {artifacts} artifacts match their sha256")
    if digest is not None:
        console.print(f"digest: sha256:{digest}")
    if key is not None:
        console.print(f"signed: by the owner of {key}")


def render_sign(console: Console, result: SignResult) -> None:
    """`sign`: the digest that was signed and where the signature went."""
    console.print(f"signed {result.path}: sha256:{result.digest} → {result.signature}")


# ---------------------------------------------------------------- diff, audit


def render_verdict(console: Console, verdict: Verdict) -> None:
    """`diff`: the tier (coloured), every reason, and the per-tensor table unless identical."""
    colour = VERDICT_COLOURS.get(verdict.verdict, "red")
    console.print(f"verdict: [bold {colour}]{verdict.verdict}[/]")
    for reason in verdict.reasons:
        console.print(f"  - [{reason.kind}] {reason.message}", markup=False)
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
        console.print(table)


def render_audit(console: Console, record: AuditRecord) -> None:
    """`audit`: the verdict with the swapped versions, its reasons, and (when more than one
    environment was replayed, as `--bisect` does) every environment tried."""
    console.print(f"audit on {record.on}: verdict [bold]{record.verdict}[/]")
    for reason in record.reasons:
        console.print(f"  - {reason}", markup=False)
    if len(record.trials) > 1:
        table = Table("changes applied", "verdict", title="environments replayed")
        for t in record.trials:
            table.add_row(", ".join(t.changes) or "none", t.verdict)
        console.print(table)


def render_audit_lines(console: Console, audits: Sequence[AuditRecord]) -> None:
    """The capsule's stored audits, one line each (in `inspect`)."""
    for found in audits:
        changes = ", ".join(str(c) for c in found.changes)
        moved = f"; moves with {', '.join(found.bisect)}" if found.bisect else ""
        console.print(
            f"upgrade    {found.created} on {found.on}: {changes} → {found.verdict}{moved}",
            markup=False,
        )


# ---------------------------------------------------------------- sweep, stats


def render_stats_table(
    console: Console, runs: Sequence[SweepRun], summaries: Sequence[Summary]
) -> None:
    """The paper's Statistical Analysis table, one row per metric: `summaries` are the stats
    service's (`builder.stats.summarize` over the sweep's values), the sweep's `runs` give
    the title (how many init and order seeds)."""
    seeds = sorted({r.init for r in runs})
    orders = sorted({r.order for r in runs})
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
    for s in summaries:
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
    console.print(table)


def render_sweep(
    console: Console,
    name: str,
    capsule: Path,
    ran: int,
    reused: int,
    runs: Sequence[SweepRun],
    summaries: Sequence[Summary],
) -> None:
    """`sweep` of the capsule `name`: how many runs ran now and were reused, then the
    statistics table over every run now stored (`runs`, and `summaries` from
    `builder.stats.summarize` over their values). Failed runs: `render_sweep_failures`."""
    console.print(
        f"sweep of {name}: {ran} run(s) now, {reused} reused, {len(runs)} stored in {capsule}"
    )
    render_stats_table(console, runs, summaries)


def render_sweep_failures(console: Console, failures: Sequence[FailedRun]) -> None:
    """A sweep's failed runs, one line each (the CLI prints them on stderr)."""
    for failure in failures:
        console.print(
            f"capsule: run init={failure.init} order={failure.order} failed: {failure.error}",
            markup=False,
        )


def render_stats(
    console: Console,
    runs: Sequence[SweepRun],
    summaries: Sequence[Summary],
    welch_tests: Sequence[Welch] = (),
    tost_test: Tost | None = None,
) -> None:
    """`stats`: the statistics table, then a line per Welch's t-test against another sweep
    and the TOST of one value (all computed by `builder.stats`) over the sweep's `runs`."""
    render_stats_table(console, runs, summaries)
    for w in welch_tests:
        verdict = "significant" if w.significant else "not significant"
        console.print(
            f"welch  {w.metric}: mean {w.mean_a:.6g} vs {w.mean_b:.6g}, t = {w.t:.3f}, "
            f"p = {w.p:.3g} ({verdict} at {w.alpha})",
            markup=False,
        )
    if tost_test is not None:
        t = tost_test
        outcome = "equivalent" if t.equivalent else "not shown equivalent"
        console.print(
            f"tost   {t.metric} = {t.value:.6g} vs sweep mean {t.mean:.6g} (n = {t.n}), "
            f"margin ±{t.margin:.3g}: p = {t.p:.3g} → {outcome}",
            markup=False,
        )


# ---------------------------------------------------------------- evaluate, matrix


def render_evaluation(console: Console, results: Mapping[str, EpochMetrics]) -> None:
    """`evaluate`: each trained directory's error rates and loss computed here."""
    for name, m in results.items():
        console.print(
            f"{name}: train {_pct(m.train_error)}, dev {_pct(m.dev_error)}, "
            f"eval {_pct(m.eval_error)} (loss {m.train_loss:.5f})",
            markup=False,
        )


def render_matrix(console: Console, matrix: MatrixRecord) -> None:
    """`matrix`: trained on (rows) by evaluated on (columns), and whether each training's
    weights are the capsule's."""
    labels = [c.label for c in matrix.configs]
    table = Table("trained on ↓ / evaluated on →", *labels, "weights = baseline", title="matrix")
    for row in matrix.rows:
        cells = []
        for label in labels:
            c = matrix.cell(row.trained_on, label)
            cells.append(f"train {_pct(c.train_error)} / eval {_pct(c.eval_error)}")
        same = (
            "yes" if row.weights_identical_to_baseline else f"no (≤ {row.max_abs_to_baseline:.2g})"
        )
        table.add_row(row.trained_on, *cells, same)
    console.print(table)


def render_report(console: Console, result: ReportResult) -> None:
    """`report`: the file written, its sections and figures, and each compared run's verdict."""
    beside = f" and {len(result.files)} file(s) beside it" if result.files else ""
    console.print(
        f"wrote {result.path}{beside}: {len(result.sections)} sections "
        f"({', '.join(result.sections)}), {result.figures} figure(s)",
        markup=False,
    )
    for compared in result.data.compared:
        verdict = compared.verdict.verdict
        colour = VERDICT_COLOURS.get(verdict, "red")
        console.print(f"  {compared.facts.label}: [{colour}]{verdict}[/]", highlight=False)


# ---------------------------------------------------------------- inspect


def _order_state(record: Manifest | ReplayRecord) -> str:
    """A capsule of user code holds an order only if the code drew one through the run."""
    user_code = isinstance(record, Manifest) and isinstance(record.spec, UserSpec)
    if user_code and "order" not in record.artifacts:
        return "not recorded (the code drew none through the run)"
    return "recorded"


def render_describe(
    console: Console,
    record: Manifest | ReplayRecord,
    sweep: SweepRecord | None = None,
    summaries: Sequence[Summary] = (),
    audits: Sequence[AuditRecord] = (),
    digest: str | None = None,
    history: Sequence[HistoryEvent] = (),
    ran_on: Sequence[str] = (),
) -> None:
    """`inspect`: what a capsule or replay holds — spec, controls, environment, outcome,
    findings, its sweep's statistics and its upgrade audits, where it ran and its history
    here, and the artifacts.

    Renders only: `builder.inspection.inspect` loads a capsule's sweep and audits (each
    artifact's digest checked) and summarizes the sweep as `stats` does; a replay has neither,
    and they are ignored for one.
    """
    spec, fp, ctl, outcome = record.spec, record.fingerprint, record.controls, record.outcome
    kind = "capsule" if isinstance(record, Manifest) else f"replay of {record.capsule.name}"
    console.print(
        f"[bold]{spec.name}[/] ({kind}, schema {record.schema_version}, "
        f"created {record.created} by capsule {record.tool.version})"
    )
    if spec.description:
        console.print(f"  {spec.description}", markup=False)
    if digest is not None:
        console.print(f"digest     sha256:{digest}")
    console.print(
        f"framework  {fp.framework} {fp.framework_version} on {ctl.device}, "
        f"{ctl.threads} thread(s), {ctl.dtype}, deterministic={ctl.deterministic}"
        + (", portable numerics" if ctl.numerics == "portable" else "")
    )
    if isinstance(spec, Spec):
        t = spec.train
        impl = "portable" if ctl.numerics == "portable" else ctl.adam_impl
        console.print(
            f"model      mlp hidden={spec.model.hidden} {spec.model.activation}, "
            f"init {spec.model.init}; adam lr={t.lr} betas={t.betas} eps={t.eps} ({impl}); "
            f"{t.epochs} epochs, batch {t.batch_size}"
        )
    else:
        code = [n.removeprefix("code/") for n in record.artifacts if n.startswith("code/")]
        files = f"; files: {', '.join(code)}" if code else " (the capsule's code)"
        console.print(f"code       {spec.entrypoint}{files}", markup=False)
        if spec.code.requires:
            console.print(f"requires   {', '.join(spec.code.requires)}", markup=False)
        if spec.params:
            params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
            console.print(f"params     {params}", markup=False)
        for key, item in record.inputs.items():
            what = f"file → {item.artifact}" if item.kind == "file" else f"arrays {item.detail}"
            console.print(f"input      {key}: {what} (sha256 {item.sha256[:16]}…)", markup=False)
    if record.arguments:
        arguments = ", ".join(f"{k}={v}" for k, v in record.arguments.items())
        console.print(f"arguments  {arguments}", markup=False)
    console.print(
        f"seeds      init={ctl.seeds.init} order={ctl.seeds.order} "
        f"PYTHONHASHSEED={ctl.seeds.pythonhashseed}; data order: {_order_state(record)}"
    )
    if isinstance(record, Manifest) and record.data is not None:
        d = record.data
        source = (
            d.builtin.name if d.builtin else ", ".join(f"{k}={v.path}" for k, v in d.files.items())
        )
        sizes = ", ".join(f"{k} {v.rows}" for k, v in d.splits.items())
        console.print(
            f"data       {source}: {sizes} rows x {d.splits['train'].features} features, "
            f"{d.classes} classes"
        )
    if isinstance(record, Manifest):
        for variant, image in record.images.items():
            console.print(
                f"image      {variant}: {image.image_id} ({image.tag}, base {image.base_image}, "
                f"{len(image.wheels)} wheels, built with {image.engine})"
            )
            console.print(f"base       {variant}: {_base_line(record, image)}")
    else:
        overrides = ", ".join(f"{k}={v}" for k, v in record.overrides.items()) or "none"
        where = f"{record.on} image {record.image_id}" if record.image_id else record.on
        console.print(f"replay     on {where}; overrides: {overrides}")
    gpus = ", ".join(g.name for g in fp.gpus) or "none"
    console.print(
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
        console.print(table)
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
        console.print(table)
    if record.audit:
        console.print(f"findings   {len(record.audit)} nondeterminism finding(s):")
        render_findings(console, record.audit)
    elif isinstance(spec, UserSpec):
        console.print("findings   none (code scan and run)")
    console.print(f"trace      {len(outcome.trace)} checkpoints over {outcome.steps} steps")
    if isinstance(record, Manifest):
        if sweep is not None:
            render_stats_table(console, sweep.runs, summaries)
        render_audit_lines(console, audits)
        if ran_on:
            console.print(f"ran on     {', '.join(ran_on)}")
        render_history(console, history)
    arts = Table("artifact", "path", "size", "sha256")
    for name, ref in record.artifacts.items():
        arts.add_row(name, ref.path, f"{ref.size:,}", ref.sha256[:16] + "…")
    console.print(arts)


HISTORY_SHOWN = 20  # the newest events; --json has them all


def render_history(console: Console, history: Sequence[HistoryEvent]) -> None:
    """The capsule directory's history: each import, export, replay, sweep and matrix, where
    it ran and what it wrote (newest last)."""
    if not history:
        return
    table = Table("when (UTC)", "command", "on", "node", "what", title="history (this directory)")
    for event in history[-HISTORY_SHOWN:]:
        what = event.path or ""
        if event.command == "export":
            what = f"{event.format} → {what}"
            what += f" (image from {event.engine})" if event.engine else ""
        elif event.command == "import":
            what = f"from {what}"
            what += f" (image into {event.engine})" if event.engine else ""
        elif event.command == "sweep":
            what = f"{event.runs} run(s), {event.executor}"
        if event.bytes is not None:
            what += f", {event.bytes / 2**20:,.1f} MiB"
        when = event.at.replace("+00:00", "").replace("T", " ")
        table.add_row(when, event.command, event.on or "", event.node, what)
    console.print(table)
    if len(history) > HISTORY_SHOWN:
        console.print(f"           … and {len(history) - HISTORY_SHOWN} earlier (inspect --json)")
