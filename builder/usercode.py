"""The user's own training code: collect the included files, import the entry point from the
capsule's copy, call `main(run)` — or run a plain script as `__main__` with its command line
built from [params] — under controls, and collect its nondeterminism findings.

Freeze and replay both import the code from a copy whose bytes the manifest names, so the two
runs execute the very same source. `inspect`, `verify` and `diff` never import it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import runpy
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.api import InputFile, Recorder, Run, RunUsageError, Seeds, active
from builder.controls import applied_controls, seed_everything
from builder.errors import BadInput
from builder.fingerprint import capture
from builder.frameworks import FRAMEWORKS, Framework, get_framework, require_device
from builder.observer import SILENT, Observer
from builder.records.run import AppliedControls, Finding, Fingerprint, Outcome
from builder.records.spec import ParamValue, UserSpec
from builder.run import tensor_digest
from builder.watch import Watched, order_finding, parsed_arguments, reseed_findings, seeding_calls

SKIPPED = ("__pycache__", ".pyc", ".pyo")


class UserCodeError(BadInput):
    """The user's code raised or misused the Run object; `details` is its traceback (the
    user's own frames), shown above the one-line error."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class CodeResult:
    controls: AppliedControls
    fingerprint: Fingerprint
    outcome: Outcome
    record: Recorder
    weights: dict[str, np.ndarray]
    findings: list[Finding]


# ---------------------------------------------------------------- the files


def code_files(spec: UserSpec, root: Path, source: str) -> dict[str, Path]:
    """relative path → file for every file `code.include` names (directories recursively,
    bytecode skipped); refuses what is missing or lies outside the spec's directory."""
    base = root.resolve()
    found: dict[str, Path] = {}
    for entry in spec.code.include:
        path = (root / entry).resolve()
        if not path.is_relative_to(base):
            raise BadInput(f"{source}: code.include: '{entry}' lies outside the spec's directory")
        if not path.exists():
            raise BadInput(f"{source}: code.include: '{entry}' not found in {root}")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            resolved = file.resolve()
            if not resolved.is_relative_to(base):
                raise BadInput(
                    f"{source}: code.include: '{file}' links outside the spec's directory"
                )
            name = resolved.relative_to(base).as_posix()
            if not any(part in SKIPPED or part.endswith(SKIPPED) for part in Path(name).parts):
                found[name] = resolved
    if not found:
        raise BadInput(f"{source}: code.include: names no files")
    return dict(sorted(found.items()))


def script_argv(params: Mapping[str, ParamValue]) -> list[str]:
    """A script's command line from [params], in their order: `key = v` → `--key v`;
    `true` → `--key`, `false` → nothing; a list → `--key a b c`. Keys are used as written
    (`batch-size = 64` → `--batch-size 64`)."""
    argv: list[str] = []
    for key, value in params.items():
        if value is False:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        items = value if isinstance(value, list) else [value]
        argv.extend("true" if v is True else "false" if v is False else str(v) for v in items)
    return argv


def _load_entry(spec: UserSpec, code_dir: Path) -> Callable[[Run], object]:
    """The entry point as a callable taking the Run: the spec's function (imported from
    `code_dir`, no bytecode written into the capsule), or a plain script run as `__main__`."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(code_dir))
    if spec.function is None:
        return lambda run: _run_script(code_dir / spec.module_file, script_argv(run.params))
    module_name = spec.module_file.removesuffix(".py").replace("/", ".")
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise _user_error(error, code_dir, f"importing {spec.module_file}") from None
    main = getattr(module, spec.function, None)
    if not callable(main):
        raise BadInput(f"entrypoint: {spec.module_file} has no function '{spec.function}' to call")
    return main  # type: ignore[no-any-return]


def _run_script(script: Path, argv: list[str]) -> None:
    """Run `script` as `python script ARGV` would: as `__main__`, its directory first on
    sys.path, `sys.argv[0]` its own name (what argparse prints as the program)."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script.name, *argv]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _shown(file: str, code_dir: Path, shown_root: Path, here: Path) -> str:
    """A frame's file as the user knows it: under `shown_root` (on freeze the spec's
    directory, not the capsule's hidden staging copy), relative to `here` (where Capsule was
    started: the code itself runs in its outputs folder)."""
    rel = Path(file).resolve().relative_to(code_dir.resolve())
    path = (here / shown_root / rel).resolve()
    try:
        return path.relative_to(here).as_posix()
    except ValueError:
        return str(path)


def _argparse_exit(error: BaseException) -> bool:
    return isinstance(error, SystemExit) and any(
        Path(f.filename).name == "argparse.py" for f in traceback.extract_tb(error.__traceback__)
    )


def _user_error(
    error: BaseException,
    code_dir: Path,
    doing: str,
    shown_root: Path | None = None,
    here: Path | None = None,
) -> UserCodeError:
    """One line naming the user's file and line where it failed, plus their frames."""
    shown_root = shown_root or code_dir
    here = here or Path.cwd()
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if Path(f.filename).resolve().is_relative_to(code_dir.resolve())
    ]
    for f in frames:
        f.filename = _shown(f.filename, code_dir, shown_root, here)
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{Path(error.filename).name}:{error.lineno}"
    elif frames:
        where = f"{frames[-1].filename}:{frames[-1].lineno}"
    else:
        where = doing
    hint = ""
    if isinstance(error, ModuleNotFoundError):
        hint = " (install it here and list it in code.requires so the image gets it too)"
    details = "".join(traceback.format_list(frames)) if frames else ""
    if _argparse_exit(error):
        return UserCodeError(
            f"the training code's argparse refused its command line at {where} (exit "
            f"{error.code}); Capsule builds it from [params] as '--key value' — name each key "  # type: ignore[attr-defined]
            "after one of the script's options",
            details,
        )
    message = f"{where}: {type(error).__name__}: {error}{hint}".splitlines()[0]
    return UserCodeError(f"the training code failed at {message}", details)


@contextmanager
def working_directory(folder: Path | None) -> Iterator[None]:
    """Run the code in `folder` (its outputs), or where Capsule runs when None."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def output_files(outputs: Path) -> dict[str, Path]:
    """relative name → file for every regular file the code left in its outputs folder (links
    are removed: a capsule holds files, not pointers out of it)."""
    found: dict[str, Path] = {}
    for path in sorted(outputs.rglob("*")):
        if path.is_symlink():
            path.unlink()
        elif path.is_file():
            found[path.relative_to(outputs).as_posix()] = path
    return found


def weights_from_outputs(
    run: Run, framework: Framework, outputs: Path
) -> dict[str, np.ndarray] | None:
    """The weights of the one model file the code wrote (`torch.save(model.state_dict(),
    "mnist_cnn.pt")`), for a script that never calls `run.save_weights`."""
    found = {
        name: named
        for name, file in output_files(outputs).items()
        if (named := framework.weights_file(file)) is not None
    }
    if len(found) != 1:
        return None
    ((name, named),) = found.items()
    run.save_weights(named)
    run.record.weights_file = name
    return run.record.weights


# ---------------------------------------------------------------- findings at run time


def runtime_findings(
    caught: list[warnings.WarningMessage], code_dir: Path, framework: Framework
) -> list[Finding]:
    """The framework's nondeterminism alerts (warn-only) grouped by op and the line that ran
    it; every other warning is shown to the user as usual."""
    counts: dict[tuple[str, str, int], int] = {}
    for w in caught:
        op = framework.nondeterministic_op(str(w.message))
        if op is None:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            continue
        file = Path(w.filename).resolve()
        name = (
            file.relative_to(code_dir.resolve()).as_posix()
            if file.is_relative_to(code_dir.resolve())
            else str(w.filename)
        )
        counts[(op, name, w.lineno)] = counts.get((op, name, w.lineno), 0) + 1
    title = FRAMEWORKS[framework.name].title
    return [
        Finding(
            source="runtime",
            rule=f"{framework.name}-nondeterministic-op",
            file=file,
            line=line,
            message=f"{op} has no deterministic implementation on this device "
            f"({title} warned {count} time(s))",
            count=count,
        )
        for (op, file, line), count in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][2]))
    ]


def _determinism_refusal(
    error: BaseException, code_dir: Path, title: str, shown_root: Path, here: Path
) -> UserCodeError:
    """A framework with no warn-only mode raises when its determinism switch meets an op it
    cannot run deterministically: say so, and what to do."""
    base = _user_error(error, code_dir, "running the code", shown_root, here)
    return UserCodeError(
        f"{base}; {title} refused a nondeterministic op under op determinism "
        "(give the op a seed, or set controls.deterministic = false to freeze without it)",
        base.details,
    )


# ---------------------------------------------------------------- one run of the code


def execute_code(
    spec: UserSpec,
    code_dir: Path,
    data_root: Path,
    recorded_orders: dict[str, np.ndarray] | None,
    input_files: Mapping[str, InputFile] | None,
    observer: Observer = SILENT,
    shown_root: Path | None = None,
    outputs: Path | None = None,
) -> CodeResult:
    """Seed and switch the framework, then call the entry point with a Run.

    `recorded_orders` / `input_files` are None on freeze (draw and record) and the capsule's
    on replay (hand back). Errors name files under `shown_root` (default: `code_dir`). The
    code runs in `outputs` (a fresh folder: what it writes there is kept) when given."""
    # absolute: the code runs in `outputs`, where relative paths would point elsewhere
    code_dir, data_root = code_dir.resolve(), data_root.resolve()
    outputs = outputs.resolve() if outputs is not None else None
    shown, here = shown_root or code_dir, Path.cwd()
    framework = get_framework(spec.framework)
    device, threads = spec.controls.device, spec.controls.threads
    gpus, cuda, cudnn = require_device(framework, spec)
    seed_everything(spec.seeds.init)
    switches = framework.apply_base_controls(spec, device, threads, warn_only=True)
    run = Run(
        seeds=Seeds(init=spec.seeds.init, order=spec.seeds.order),
        device=device,
        params=spec.params,
        recorded_orders=recorded_orders,
        input_files=input_files,
        data_root=data_root,
        framework=framework,
        on_metric=observer.metric,
        outputs=outputs,
    )
    watched = Watched()
    main = _load_entry(spec, code_dir)
    started = time.perf_counter()
    with (
        warnings.catch_warnings(record=True) as caught,
        active(run),
        parsed_arguments(watched),
        seeding_calls(watched, code_dir, framework.seeding_functions()),
        working_directory(outputs),
        contextlib.redirect_stdout(sys.stderr),  # stdout is the commands' (--json)
    ):
        warnings.simplefilter("always")
        try:
            main(run)
        except SystemExit as error:
            if error.code not in (0, None):  # `sys.exit(main())` of a script that succeeded
                raise _user_error(error, code_dir, spec.entrypoint, shown, here) from None
        except RunUsageError as error:
            raise _user_error(error, code_dir, spec.entrypoint, shown, here) from None
        except Exception as error:
            if framework.refused_nondeterminism(error):
                title = FRAMEWORKS[spec.framework].title
                raise _determinism_refusal(error, code_dir, title, shown, here) from None
            raise _user_error(error, code_dir, spec.entrypoint, shown, here) from None
    seconds = time.perf_counter() - started
    run.record.arguments = watched.arguments
    findings = runtime_findings(caught, code_dir, framework)
    findings += reseed_findings(watched, spec.seeds.init)
    findings += order_finding(spec.module_file, bool(run.record.orders))
    weights = run.record.weights
    if weights is None and outputs is not None:
        weights = weights_from_outputs(run, framework, outputs)
    if weights is None:
        raise UserCodeError(
            f"{spec.entrypoint} returned without calling run.save_weights(...) and wrote no "
            "model file Capsule can read (a state dict saved with torch.save as .pt/.pth, or "
            "arrays as .npz, in its working directory); a capsule needs the trained weights"
        )
    trace = run.record.trace
    outcome = Outcome(
        metrics=run.record.metrics,
        trace=trace,
        weights={k: tensor_digest(v) for k, v in weights.items()},
        steps=max((p.step for p in trace), default=0),
        train_seconds=round(seconds, 4),
    )
    controls = applied_controls(spec, switches, "set by the code", "set by the code")
    fingerprint = capture(spec.framework, framework.version(), gpus, cuda, cudnn)
    return CodeResult(controls, fingerprint, outcome, run.record, weights, findings)
