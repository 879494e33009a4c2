"""Everything a report page shows, read from the capsule and the runs compared with it.

Read only, never run: records are loaded with their digests checked (`store`), verdicts come
from `verdict.compare` (the very judgement `capsule diff` prints), statistics from `stats`.
Nothing here trains, evaluates or starts an engine, so a report can be regenerated from the
capsules alone, years later. Loading someone else's capsule executes none of its code.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from builder.errors import BadInput
from builder.records import parse
from builder.records.manifest import Manifest
from builder.records.matrix import MatrixRecord
from builder.records.replay import ReplayRecord
from builder.records.report import (
    AxisStats,
    Compared,
    Curve,
    EnvRow,
    LabelledTost,
    Mark,
    MatrixStudy,
    ReportData,
    RunFacts,
    TracePoint,
    Variance,
)
from builder.records.sweep import SweepRecord
from builder.records.verdict import Tolerances
from builder.report.checklist import checklist
from builder.store import (
    MANIFEST,
    MAX_RECORD_BYTES,
    REPLAY,
    capsule_digest,
    load_manifest,
    load_record,
    read_artifact,
)

MATRIX = "matrix.json"  # what `capsule matrix --out M` writes into M
ACCEPTED = "a replay directory (replay.json), another capsule (manifest.json) or a matrix "
ACCEPTED += "directory (matrix.json)"
MIN_RUNS = 2  # a histogram, a confidence interval and TOST need two runs at least


@dataclass(frozen=True)
class Other:
    """One OTHER argument, told by what its directory holds."""

    path: Path
    kind: str  # replay, capsule, matrix
    label: str


def classify(paths: list[Path]) -> list[Other]:
    """Each OTHER's kind, and a label unique on the page (its directory's name)."""
    found, used = [], {"baseline"}
    for path in paths:
        if not path.is_dir():
            raise BadInput(f"{path}: not a directory; OTHER is {ACCEPTED}")
        if (path / REPLAY).is_file():
            kind = "replay"
        elif (path / MANIFEST).is_file():
            kind = "capsule"
        elif (path / MATRIX).is_file():
            kind = "matrix"
        else:
            files = f"{REPLAY}, {MANIFEST} or {MATRIX}"
            raise BadInput(f"{path}: holds no {files}; OTHER is {ACCEPTED}")
        label = path.resolve().name or str(path)
        base, n = label, 2
        while label in used:
            label, n = f"{base} ({n})", n + 1
        used.add(label)
        found.append(Other(path, kind, label))
    return found


# ---------------------------------------------------------------- facts


def facts(record: Manifest | ReplayRecord, path: Path, label: str) -> RunFacts:
    f, c, o = record.fingerprint, record.controls, record.outcome
    digest = None
    if isinstance(record, Manifest):
        from builder.trust import content_digest

        digest = content_digest(record)
    return RunFacts(
        label=label,
        path=str(path),
        kind="capsule" if isinstance(record, Manifest) else "replay",
        name=record.spec.name,
        description=record.spec.description,
        framework=f.framework,
        framework_version=f.framework_version,
        python=_python(f.python_implementation, f.python),
        os=f.os,
        cpu_model=f.cpu_model,
        cores=f.cores,
        gpus=[g.name for g in f.gpus],
        device=str(c.device),
        threads=c.threads,
        deterministic=c.deterministic,
        dtype=c.dtype,
        seeds=c.seeds.model_dump(),
        on=str(record.on) if isinstance(record, ReplayRecord) else "host",
        created=record.created,
        epochs=len(o.epochs),
        steps=o.steps,
        train_seconds=o.train_seconds,
        final=o.final_values(),
        overrides=record.overrides if isinstance(record, ReplayRecord) else {},
        digest=digest,
    )


def _python(implementation: str, version: str) -> str:
    """ "CPython 3.11.7" (fingerprints name the implementation with its version)."""
    return implementation if version in implementation else f"{implementation} {version}"


def data_lines(manifest: Manifest) -> list[str]:
    """The data the baseline read, each with its digest: the built-in recipe or the user's
    files (split by split), the inputs the user's code read, and the code itself."""
    lines = []
    data = manifest.data
    if data is not None and data.builtin is not None:
        b = data.builtin
        lines.append(f"built-in set {b.name} (recipe version {b.recipe_version}, seed {b.seed})")
    if data is not None:
        for split, source in data.files.items():
            lines.append(f"file {source.path} ({split}): sha256 {source.sha256}")
        for split, info in data.splits.items():
            lines.append(
                f"{split} split: {info.rows} rows x {info.features} features, sha256 {info.sha256}"
            )
    for key, item in sorted(manifest.inputs.items()):
        lines.append(f"input {key} ({item.kind}): sha256 {item.sha256}")
    for name, ref in sorted(manifest.artifacts.items()):
        if name.startswith("code/"):
            lines.append(f"code {name.removeprefix('code/')}: sha256 {ref.sha256}")
    return lines


def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def environment(a: Manifest | ReplayRecord, b: Manifest | ReplayRecord) -> list[EnvRow]:
    """Two runs' fingerprints and controls side by side, fact by fact (differences first
    within each group, as the page highlights them and folds the rest)."""
    rows: list[EnvRow] = []

    def add(group: str, name: str, x: object, y: object) -> None:
        tx, ty = _text(x), _text(y)
        rows.append(EnvRow(group=group, field=name, baseline=tx, other=ty, differs=tx != ty))

    fa, fb, ca, cb = a.fingerprint, b.fingerprint, a.controls, b.controls
    add(
        "framework",
        "framework",
        f"{fa.framework} {fa.framework_version}",
        f"{fb.framework} {fb.framework_version}",
    )
    add(
        "framework",
        "Python",
        _python(fa.python_implementation, fa.python),
        _python(fb.python_implementation, fb.python),
    )
    for field in ("os", "kernel", "machine", "cpu_model", "cores", "cuda", "cudnn"):
        add("machine", field.replace("_", " "), getattr(fa, field), getattr(fb, field))
    add("machine", "GPUs", [g.name for g in fa.gpus], [g.name for g in fb.gpus])
    flags_a, flags_b = set(fa.cpu_flags), set(fb.cpu_flags)
    add(
        "machine",
        "CPU flags",
        f"{len(flags_a)} flags",
        f"{len(flags_b)} flags"
        + (f" (+{len(flags_b - flags_a)} -{len(flags_a - flags_b)})" if flags_a != flags_b else ""),
    )
    add(
        "controls",
        "where",
        "host" if isinstance(a, Manifest) else a.on,
        "host" if isinstance(b, Manifest) else b.on,
    )
    for field in ("device", "threads", "interop_threads", "deterministic", "dtype", "adam_impl"):
        add("controls", field.replace("_", " "), getattr(ca, field), getattr(cb, field))
    seeds_a, seeds_b = ca.seeds.model_dump(), cb.seeds.model_dump()
    for key in seeds_a:
        add("controls", f"seed {key}", seeds_a[key], seeds_b.get(key))
    overrides = b.overrides if isinstance(b, ReplayRecord) else {}
    for key, value in overrides.items():
        add("controls", f"replay --set {key}", "as frozen", value)
    for key in sorted(set(ca.framework_switches) | set(cb.framework_switches)):
        add("switches", key, ca.framework_switches.get(key), cb.framework_switches.get(key))
    for key in sorted(set(fa.env) | set(fb.env)):
        add("environment", f"${key}", fa.env.get(key) or "unset", fb.env.get(key) or "unset")
    da, db = fa.distributions, fb.distributions
    for name in sorted(set(da) | set(db)):
        add("packages", name, da.get(name, "absent"), db.get(name, "absent"))
    order = {g: i for i, g in enumerate(dict.fromkeys(r.group for r in rows))}
    return sorted(rows, key=lambda r: (order[r.group], not r.differs))


def curve(record: Manifest | ReplayRecord, label: str, divergent: int | None = None) -> Curve:
    o = record.outcome
    per_epoch = o.steps / len(o.epochs) if o.epochs and o.steps else None
    return Curve(
        label=label,
        epochs=o.epochs,
        metrics=o.metrics,
        trace=[TracePoint(step=p.step, loss=p.loss) for p in o.trace],
        steps_per_epoch=per_epoch,
        first_divergent_step=divergent,
    )


# ---------------------------------------------------------------- studies


def _judged(metric: str, manifest: Manifest) -> bool:
    """The metrics the variance figures and the equivalent tier judge: error rates for the
    built-in experiment (the paper's measure), every logged metric for user code."""
    return manifest.outcome.final is None or metric.endswith("_error")


def variance(
    manifest: Manifest, sweep: SweepRecord, compared: list[Compared], tol: Tolerances
) -> Variance | None:
    from builder.stats import summaries, summarize

    if len(sweep.runs) < MIN_RUNS:
        return None
    init, order = manifest.spec.seeds.init, manifest.spec.seeds.order
    axes = []
    for axis, chosen, fixed in (
        ("seeds", [r for r in sweep.runs if r.order == order], f"order seed {order}"),
        ("orders", [r for r in sweep.runs if r.init == init], f"init seed {init}"),
    ):
        if len({(r.init, r.order) for r in chosen}) >= MIN_RUNS:
            keys = [(r.init, r.order) for r in chosen]
            values = sweep.values(keys)
            axes.append(
                AxisStats(
                    axis=axis,  # type: ignore[arg-type]
                    fixed=fixed,
                    runs=len(chosen),
                    values=values,
                    summaries=[summarize(m, v) for m, v in values.items()],
                )
            )
    if not axes:  # a grid that holds neither of the capsule's seeds: every run at once
        values = sweep.values()
        axes.append(
            AxisStats(
                axis="runs",
                fixed="every run of the sweep",
                runs=len(sweep.runs),
                values=values,
                summaries=[summarize(m, v) for m, v in values.items()],
            )
        )
    marks = [
        Mark(label="baseline", metric=m, value=v)
        for m, v in manifest.outcome.final_values().items()
        if v is not None and _judged(m, manifest)
    ]
    tests = []
    for c in compared:
        marks += [
            Mark(label=c.facts.label, metric=m, value=v)
            for m, v in c.facts.final.items()
            if v is not None and _judged(m, manifest)
        ]
        if c.equivalence is not None:
            tests += [LabelledTost(label=c.facts.label, tost=t) for t in c.equivalence.tests]
    return Variance(
        runs=len(sweep.runs),
        init_seeds=len({r.init for r in sweep.runs}),
        order_seeds=len({r.order for r in sweep.runs}),
        seconds=sum(r.seconds for r in sweep.runs),
        summaries=summaries(sweep),
        axes=axes,
        marks=marks,
        tests=tests,
        margin=tol.margin,
        alpha=tol.alpha,
    )


def _read_matrix(directory: Path) -> MatrixRecord:
    """`matrix.json`: a regular file of bounded size, parsed by its `kind`."""
    path = directory / MATRIX
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{path}: not a regular file (a symlink, FIFO or device); refused")
    if info.st_size > MAX_RECORD_BYTES:
        raise BadInput(f"{path}: larger than {MAX_RECORD_BYTES} bytes; refused")
    record = parse(path.read_bytes(), str(path))
    if not isinstance(record, MatrixRecord):
        raise BadInput(f"{path}: kind: {record.kind!r}, but {MATRIX} holds a matrix record")
    return record


def matrix_study(directory: Path, manifest: Manifest) -> MatrixStudy:
    """A matrix with the cells that are bit for bit the baseline's marked. A matrix whose
    trainings were replays of another capsule is said so, and marks nothing."""
    from builder.verdict import same

    record = _read_matrix(directory)
    cells = record.cells
    metric = next(
        (m for m in ("eval_error", "dev_error") if all(getattr(c, m) is not None for c in cells)),
        "train_error",
    )
    note = None
    frozen = capsule_digest(manifest)
    for row in record.rows:
        trained = directory / f"train-{row.trained_on.replace(':', '-')}"
        if (trained / REPLAY).is_file():
            source = load_record(trained).capsule  # type: ignore[union-attr]
            if source.source_digest is not None and source.source_digest != frozen:
                note = (
                    f"{directory}: trained from capsule {source.name} (frozen digest "
                    f"{source.source_digest[:12]}…), not this one ({frozen[:12]}…): no cell "
                    "is marked identical"
                )
            break
    final = manifest.outcome.final_values()
    identical_rows = {r.trained_on for r in record.rows if r.weights_identical_to_baseline}
    identical = [
        [c.trained_on, c.evaluated_on]
        for c in cells
        if note is None
        and c.trained_on in identical_rows
        and all(same(getattr(c, m), final.get(m)) for m in final)
    ]
    return MatrixStudy(
        path=str(directory), metric=metric, record=record, identical_cells=identical, note=note
    )


def licences(path: Path, manifest: Manifest) -> dict[str, str]:
    """The licence of the framework and of NumPy, from the METADATA of their wheels in the
    capsule's wheelhouse (stored by `capsule build`; each wheel re-hashed as it is read).
    Empty when no wheelhouse is stored: the fingerprint records versions, not licences."""
    from builder.frameworks import FRAMEWORKS

    entry = FRAMEWORKS.get(manifest.spec.framework)
    wanted = {"numpy"} | ({entry.cpu_distribution} if entry else set())
    found: dict[str, str] = {}
    for name, ref in sorted(manifest.artifacts.items()):
        wheel = name.rsplit("/", 1)[-1]
        project = wheel.split("-", 1)[0].lower().replace("_", "-")
        if not name.startswith("wheelhouse") or not wheel.endswith(".whl") or project in found:
            continue
        if project not in wanted:
            continue
        try:
            with zipfile.ZipFile(io.BytesIO(read_artifact(path, name, ref))) as archive:
                meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                headers = HeaderParser().parsestr(archive.read(meta).decode("utf-8", "replace"))
        except (zipfile.BadZipFile, StopIteration, KeyError):
            continue
        text = headers.get("License-Expression") or headers.get("License") or ""
        classifiers = [
            c.split("::")[-1].strip()
            for c in headers.get_all("Classifier") or []
            if c.startswith("License ::")
        ]
        text = text.strip().splitlines()[0] if text.strip() else ", ".join(classifiers)
        if text:
            found[project] = f"{text[:80]} (wheel {wheel})"
    return found


# ---------------------------------------------------------------- the whole page


def gather(capsule: Path, others: list[Path], tol: Tolerances | None = None) -> ReportData:
    """The page's data: the capsule's facts, a verdict and the environments side by side for
    each replay or capsule given, curves, drift, the sweep's variance, matrices, audits and
    the reproducibility checklist."""
    tol = tol or Tolerances()
    with warnings.catch_warnings():
        # scipy warns (on stderr) of precision loss over runs with equal values; the numbers
        # are the ones `capsule stats` prints, and a page has no place for the warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return _gather(capsule, others, tol)


def _gather(capsule: Path, others: list[Path], tol: Tolerances) -> ReportData:
    from builder.store import load_audits
    from builder.verdict import compare, judge_equivalence, load_side

    manifest = load_manifest(capsule)  # a replay as CAPSULE is refused here, exit 2
    chosen = classify(others)
    base = load_side(capsule)
    compared, curves, matrices = [], [curve(manifest, "baseline")], []
    for other in chosen:
        if other.kind == "matrix":
            matrices.append(matrix_study(other.path, manifest))
            continue
        record = load_record(other.path)
        side = load_side(other.path)
        verdict = compare(base, side, tol)
        equivalence = verdict.equivalence
        if equivalence is None and base.sweep is not None and len(base.sweep.runs) >= MIN_RUNS:
            equivalence = judge_equivalence(base.sweep, side.outcome, tol)
        compared.append(
            Compared(
                facts=facts(record, other.path, other.label),
                verdict=verdict,
                environment=environment(manifest, record),
                equivalence=equivalence,
            )
        )
        curves.append(curve(record, other.label, verdict.first_divergent_step))
    study = variance(manifest, base.sweep, compared, tol) if base.sweep is not None else None
    audits = load_audits(capsule, manifest)
    baseline = facts(manifest, capsule, "baseline")
    sections = ["summary"]
    sections += ["environment"] if compared else []
    has_history = any(c.epochs or c.metrics or c.trace for c in curves)
    sections += ["curves"] if has_history else []
    sections += ["drift"] if any(c.verdict.tensors for c in compared) else []
    sections += ["variance"] if study is not None else []
    sections += ["matrix"] if matrices else []
    sections += ["audits"] if audits else []
    sections += ["checklist"]
    return ReportData(
        capsule=baseline,
        data=data_lines(manifest),
        compared=compared,
        curves=curves if has_history else [],
        variance=study,
        matrices=matrices,
        audits=audits,
        checklist=checklist(manifest, baseline, compared, study, licences(capsule, manifest)),
        sections=sections,
    )
