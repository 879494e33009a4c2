"""Commands on one capsule: freeze, replay, verify, inspect, diff, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from builder.cli.common import (
    DeviceChoice,
    JsonFlag,
    KindChoice,
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
        DeviceChoice | None,
        typer.Option(help="Device to train on (default: the spec's controls.device)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: the spec's controls.threads).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run SPEC under full controls and write the capsule (manifest + artifacts) atomically.

    SPEC is a built-in experiment, or the user's own code (`entrypoint = "train.py:main"` or a
    plain script `entrypoint = "main.py"`, with `\\[code] include = \\[...]`): the code is copied
    into the capsule, scanned for nondeterminism, and `main(run)` is called with a
    `builder.Run` — or the script runs as `__main__` with its command line built from
    \\[params] (`--key value`). With `\\[controls] numerics = "portable"` the built-in MLP
    trains to the same bits on any CPU or GPU, in PyTorch and TensorFlow.
    """
    from builder.cli.progress import training
    from builder.controls import ensure_process_env
    from builder.freeze import freeze as do_freeze
    from builder.freeze import spec_path
    from builder.overrides import with_controls
    from builder.records.results import RunSummary
    from builder.records.spec import UserSpec
    from builder.report.text import render_findings, render_summary
    from builder.spec import load_spec
    from builder.trust import content_digest

    chosen = device.value if device else None
    with reported():
        parsed = with_controls(load_spec(spec_path(spec)), chosen, threads)
        ensure_process_env(parsed)
        with training(parsed, f"freeze {parsed.name}") as observer:
            manifest = do_freeze(
                spec, out_dir, observer, force=force, strict=strict, device=chosen, threads=threads
            )
    if isinstance(parsed, UserSpec) and manifest.audit and not as_json:
        render_findings(err, manifest.audit)
    digest = content_digest(manifest)
    emit(
        RunSummary.of(manifest, out_dir, digest),
        as_json,
        lambda: render_summary(out, manifest, out_dir, "froze", digest),
    )


@app.command()
def replay(
    capsule: Annotated[Path, typer.Argument(help="The capsule directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the replay to.")],
    on: Annotated[
        WhereChoice,
        typer.Option(
            help="Where to replay: this host, or the capsule's image (docker, podman, oci)."
        ),
    ] = WhereChoice.host,
    device: Annotated[
        DeviceChoice | None, typer.Option(help="Device to train on (default: as recorded).")
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
    opened: OpenedFlag = False,
) -> None:
    """Run the capsule again with its recorded data, order, seeds and controls; write RDIR.

    --on docker|podman|oci runs it in the image `capsule build` made (oci: no daemon; runc
    runs the image `capsule import --engine oci` stored): the capsule mounted read-only, no
    network, an unprivileged user without capabilities or new privileges, bounded processes and
    memory; --device cuda asks the engine for the GPUs (docker; oci: NVIDIA's toolkit or CDI).
    """
    from builder.cli.progress import LINES, training
    from builder.controls import ensure_process_env
    from builder.history import note
    from builder.records.results import RunSummary
    from builder.replay import replay_in_image, replay_on_host, replay_spec
    from builder.report.text import render_summary
    from builder.store import load_manifest

    chosen = device.value if device else None
    with reported():
        if on != WhereChoice.host:
            record = replay_in_image(
                open_capsule(capsule, opened),
                out_dir,
                LINES,
                on.value,
                threads=threads,
                device=chosen,
                force=force,
                sets=sets,
            )
        else:
            manifest = load_manifest(capsule)  # its digest only: the process may re-execute
            spec_now = replay_spec(manifest, threads, chosen, sets)[0]
            ensure_process_env(spec_now)
            handle = open_capsule(capsule, opened)
            with training(spec_now, f"replay {manifest.spec.name}") as observer:
                record = replay_on_host(
                    handle,
                    out_dir,
                    observer,
                    threads=threads,
                    device=chosen,
                    force=force,
                    sets=sets,
                )
    if not opened:  # a matrix's step: the matrix is what the history records
        note(capsule, "replay", on.value, path=str(out_dir.resolve()))
    verb = "replayed" if on == WhereChoice.host else f"replayed in {on}"
    emit(
        RunSummary.of(record, out_dir), as_json, lambda: render_summary(out, record, out_dir, verb)
    )


@app.command()
def diff(
    capsule: Annotated[Path, typer.Argument(help="The capsule (baseline).")],
    other: Annotated[Path, typer.Argument(help="A replay directory, or another capsule.")],
    as_json: JsonFlag = False,
    require: Annotated[
        TierChoice, typer.Option(help="Exit 1 unless the verdict is at least this tier.")
    ] = TierChoice.equivalent,
    atol: Annotated[
        float | None,
        typer.Option(help="Absolute weight tolerance for 'close'.", show_default="1e-05"),
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(help="Relative weight tolerance for 'close'.", show_default="0.0001"),
    ] = None,
    metric_atol: Annotated[
        float | None,
        typer.Option(
            help="Largest change of a final metric (error rate, loss) still 'close'.",
            show_default="0.0025",
        ),
    ] = None,
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
    from builder.records.enums import Tier
    from builder.report.text import render_verdict
    from builder.verdict import Tolerances
    from builder.verdict import diff as do_diff

    with reported():
        given = {"atol": atol, "rtol": rtol, "metric_atol": metric_atol}
        tolerances = Tolerances(
            **{k: v for k, v in given.items() if v is not None}, margin=margin, alpha=alpha
        )
        verdict = do_diff(capsule, other, tolerances)
    emit(verdict, as_json, lambda: render_verdict(out, verdict))
    if not Tier(verdict.verdict).meets(Tier(require.value)):
        raise typer.Exit(1)


@app.command()
def verify(
    capsule: Annotated[Path, typer.Argument(help="A capsule or replay directory.")],
    digest: Annotated[
        str | None,
        typer.Option(
            help="The capsule's digest as published (a paper, a README): exit 3 unless equal."
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="A public key (PEM): exit 3 unless the capsule is signed by its owner."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-hash the manifest and every artifact; exit 3 naming the first one that was altered.

    A capsule's digest is printed; a signature stored in it must be over that digest (exit 3
    if the capsule changed since it was signed). See README, "Trust".
    """
    from builder.errors import IntegrityError
    from builder.records.results import VerifyResult
    from builder.report.text import render_verify
    from builder.store import verify as do_verify
    from builder.trust import check_trust

    with reported():
        try:
            record = do_verify(capsule)
            found = check_trust(capsule, record, digest, key)
        except IntegrityError as error:
            failed = VerifyResult(ok=False, path=str(capsule), error=str(error))
            emit(failed, as_json, lambda: None)
            raise
    result = VerifyResult(
        ok=True,
        path=str(capsule),
        artifacts=len(record.artifacts),
        digest=found,
        signed=True if key is not None else None,
    )
    emit(result, as_json, lambda: render_verify(out, capsule, len(record.artifacts), found, key))


@app.command()
def sign(
    capsule: Annotated[Path, typer.Argument(help="The capsule to sign.")],
    key: Annotated[Path, typer.Option(help="Your elliptic-curve private key (PEM).")],
    password: Annotated[
        str | None,
        typer.Option(envvar="CAPSULE_KEY_PASSWORD", help="The key's password, if it has one."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Sign the capsule's digest (Sigstore's model-signing, offline, with your key); the
    signature is stored in the capsule as capsule.sig and checked by `verify --key PUB`."""
    from builder.records.results import SignResult
    from builder.report.text import render_sign
    from builder.trust import content_digest
    from builder.trust import sign as do_sign

    with reported():
        handle = open_capsule(capsule)
        with handle.writing() as manifest:  # no study lands between digest and signature
            found = content_digest(manifest)
            signature = do_sign(capsule, found, key, password)
    result = SignResult(path=str(capsule), digest=found, signature=str(signature))
    emit(result, as_json, lambda: render_sign(out, result))


@app.command()
def inspect(
    capsule: Annotated[Path, typer.Argument(help="A capsule or replay directory.")],
    as_json: JsonFlag = False,
) -> None:
    """Show what a capsule holds: spec, controls, environment, outcome, sweep, audits, artifacts.

    --json prints the record as stored and, for a capsule, `sweep` (its runs and statistics)
    and `audits` (its library-upgrade audits).
    """
    from builder.inspection import as_document
    from builder.inspection import inspect as do_inspect
    from builder.records.manifest import Manifest
    from builder.report.text import render_describe
    from builder.trust import content_digest

    with reported():
        record, studies = do_inspect(capsule)
    digest = content_digest(record) if isinstance(record, Manifest) else None

    def render() -> None:
        sweep = studies.sweep if studies else None
        render_describe(
            out,
            record,
            sweep.record if sweep else None,
            sweep.stats if sweep else (),
            studies.audits if studies else (),
            digest,
            studies.history if studies else (),
            studies.ran_on if studies else (),
        )

    emit(as_document(record, studies, digest) if studies else record, as_json, render)


@app.command()
def schema(
    kind: Annotated[
        KindChoice | None,
        typer.Option(help="Only this record's schema (default: every stored record's)."),
    ] = None,
    replay: Annotated[bool, typer.Option("--replay", hidden=True)] = False,
) -> None:
    """Print the JSON schema of every record Capsule stores (schema_version 1), keyed on `kind`."""
    from builder.records.enums import RecordKind
    from builder.records.published import schema_file

    chosen = RecordKind.replay if replay else (RecordKind(kind.value) if kind else None)
    print(schema_file(chosen).read_text(), end="")
