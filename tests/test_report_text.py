"""The text reports (builder/report/text.py) render real records exactly as the CLI prints them.

Each renderer is fed the records of tests/fixtures/schema-v1 (a tiny capsule with a sweep and an
audit, a replay of it, a matrix) or the result a service returns for them, and its output is
compared with the `capsule` command's stdout for the same input, character for character, at
the same console width: the move of rendering out of the CLI changes nothing a user sees."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from builder.history import read_history
from builder.inspection import places
from builder.records import load
from builder.records.audit import AuditRecord, Trial, TrialVerdict
from builder.records.enums import Device
from builder.records.manifest import ImageRecord, Manifest
from builder.records.matrix import MatrixRecord
from builder.records.replay import ReplayRecord
from builder.records.run import EpochMetrics
from builder.records.sweep import Summary, SweepRecord
from builder.records.verdict import Tolerances
from builder.report import text
from builder.trust import content_digest
from tests.conftest import CAPSULE_BIN, CAPSULES, ROOT

V1 = ROOT / "tests" / "fixtures" / "schema-v1"
CAP, REP = V1 / "capsule", V1 / "replay"
WIDTH = 120
STYLED = {"FORCE_COLOR": "1", "COLORTERM": "truecolor", "TERM": "xterm-256color"}


def console(styled: bool = False) -> Console:
    """What the CLI prints on (configured as `builder.cli.common.out`), into a string."""
    if styled:
        return Console(
            file=io.StringIO(),
            width=WIDTH,
            highlight=False,
            soft_wrap=True,
            emoji=False,
            force_terminal=True,
            color_system="truecolor",
        )
    return Console(
        file=io.StringIO(),
        width=WIDTH,
        highlight=False,
        soft_wrap=True,
        emoji=False,
        force_terminal=False,
    )


def rendered(render: Callable[..., None], *args: Any, styled: bool = False, **kw: Any) -> str:
    target = console(styled)
    render(target, *args, **kw)
    assert isinstance(target.file, io.StringIO)
    return target.file.getvalue()


@dataclass(frozen=True)
class Failed:
    """A failed sweep run as the executors report one (init, order, error)."""

    init: int
    order: int
    error: str


def cli(*args: object, styled: bool = False) -> subprocess.CompletedProcess[str]:
    """The installed `capsule`, at the renderers' width; plain (a pipe) or in colour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "COLORTERM", "JUPYTER_COLUMNS")
    }
    env["COLUMNS"] = str(WIDTH)
    if styled:
        env.update(STYLED)
    return subprocess.run(
        [str(CAPSULE_BIN), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def stdout(*args: object, styled: bool = False, code: int = 0) -> str:
    result = cli(*args, styled=styled)
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def manifest_of(directory: Path) -> Manifest:
    record = load(directory / "manifest.json")
    assert isinstance(record, Manifest)
    return record


def replay_of(directory: Path) -> ReplayRecord:
    record = load(directory / "replay.json")
    assert isinstance(record, ReplayRecord)
    return record


def sweep_of(directory: Path, manifest: Manifest) -> SweepRecord:
    record = load(directory / manifest.artifacts["sweep"].path)
    assert isinstance(record, SweepRecord)
    return record


def audits_of(directory: Path, manifest: Manifest) -> list[AuditRecord]:
    found = [
        load(directory / ref.path)
        for name, ref in sorted(manifest.artifacts.items())
        if name.startswith("audit/")
    ]
    assert all(isinstance(a, AuditRecord) for a in found)
    return found  # type: ignore[return-value]


def summaries(sweep: SweepRecord) -> list[Summary]:
    from builder.stats import summarize

    return [summarize(metric, data) for metric, data in sweep.values().items()]


def write_record(path: Path, record: Manifest | ReplayRecord) -> None:
    """A record and its digest sidecar, as Capsule writes them."""
    import hashlib

    data = (record.model_dump_json(indent=2) + "\n").encode()
    path.write_bytes(data)
    path.with_suffix(".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


def describe(directory: Path) -> str:
    """`inspect`'s view of a capsule or replay, loaded here as the inspect service would."""
    if (directory / "manifest.json").is_file():
        manifest = manifest_of(directory)
        sweep = sweep_of(directory, manifest) if "sweep" in manifest.artifacts else None
        stats = summaries(sweep) if sweep is not None else []
        audits = audits_of(directory, manifest)
        digest = content_digest(manifest)
        history = read_history(directory)
        ran_on = places(sweep, history)
        return rendered(
            text.render_describe, manifest, sweep, stats, audits, digest, history, ran_on
        )
    return rendered(text.render_describe, replay_of(directory))


# ---------------------------------------------------------------- inspect


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy: a sweep metric with no spread
def test_describe_of_the_capsule_is_what_inspect_prints() -> None:
    words = describe(CAP)
    assert words == stdout("inspect", CAP)
    lines = words.splitlines()
    assert lines[0] == (
        "tiny-v1 (capsule, schema 1, created 2026-11-27T14:52:36+00:00 by capsule 0.1.0)"
    )
    assert lines[1] == f"digest     sha256:{content_digest(manifest_of(CAP))}"
    assert lines[2] == (
        "framework  torch 2.13.0+cpu on cpu, 1 thread(s), float32, deterministic=True"
    )
    assert lines[3] == (
        "model      mlp hidden=[8] tanh, init framework; adam lr=0.01 betas=[0.9, 0.999] "
        "eps=1e-08 (for-loop); 3 epochs, batch 16"
    )
    assert "seeds      init=11 order=13 PYTHONHASHSEED=0; data order: recorded" in lines
    assert (
        "data       train=train.csv, eval=eval.npz: train 240, eval 80 rows x 3 features, 2 classes"
    ) in lines
    outcome = lines.index("outcome")
    assert lines[outcome + 2] == "┃ epoch ┃ train loss ┃ train err ┃ dev err ┃ eval err ┃"
    assert lines[outcome + 6] == "│ 3     │ 0.37368    │ 16.25%    │ —       │ 17.50%   │"
    assert "trace      4 checkpoints over 45 steps" in lines
    assert "sweep: 2 init seed(s) x 1 order seed(s)" in lines
    assert "ran on     host" in lines  # a fixture of before: runs recorded no place
    assert "upgrade    2026-11-27T14:52:52+00:00 on host: numpy 2.4.6 → 2.4.5 → identical" in lines
    assert (
        "│ audit/2d0dec799724 │ audits/audit-2d0dec799724.json │ 629   │ 2d0dec7997249afe… │"
        in (lines)
    )


def test_describe_of_the_replay_is_what_inspect_prints() -> None:
    words = describe(REP)
    assert words == stdout("inspect", REP)
    lines = words.splitlines()
    assert lines[0].startswith("tiny-v1 (replay of tiny-v1, schema 1, created ")
    assert "replay     on host; overrides: none" in lines
    assert not any(line.startswith(("data ", "upgrade ", "sweep:")) for line in lines)


def test_describe_is_styled_as_inspect_prints_it() -> None:
    """The bold name and the tables' styles, not only the words (FORCE_COLOR)."""
    styled = rendered(text.render_describe, replay_of(REP), styled=True)
    assert styled == stdout("inspect", REP, styled=True)
    assert styled.startswith("\x1b[1mtiny-v1\x1b[0m (replay of tiny-v1")


def test_describe_ignores_a_sweep_and_audits_handed_with_a_replay() -> None:
    manifest = manifest_of(CAP)
    sweep = sweep_of(CAP, manifest)
    rest = (sweep, [], audits_of(CAP, manifest))
    assert rendered(text.render_describe, replay_of(REP), *rest) == describe(REP)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_images_and_transfer_lines_are_what_the_cli_prints(tmp_path: Path) -> None:
    """A capsule with an image recorded: inspect's image line, export's and import's lines."""
    copy = tmp_path / "capsule"
    shutil.copytree(CAP, copy)
    manifest = manifest_of(copy)
    image = ImageRecord(
        image_id="sha256:" + "ab" * 32,
        tag="capsule/tiny-v1:a3a067fd0cab-cpu",
        base_image="capsule/base:bookworm",
        base_id="sha256:" + "cd" * 32,
        dockerfile_sha256="ef" * 32,
        capsule_digest="a3a067fd0cab662dc3b9db34f6139b884322909427f9b3f0ef8bb08dccd0e691",
        source_date_epoch=0,
        wheels=["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", "pip-25.0-py3-none-any.whl"],
        built="2026-11-27T15:00:00+00:00",
    )
    write_record(
        copy / "manifest.json", manifest.model_copy(update={"images": {Device.cpu: image}})
    )

    words = describe(copy)
    assert words == stdout("inspect", copy)
    assert (
        f"image      cpu: sha256:{'ab' * 32} (capsule/tiny-v1:a3a067fd0cab-cpu, base "
        "capsule/base:bookworm, 2 wheels, built with docker)"
    ) in words.splitlines()

    tar_file = tmp_path / "tiny.capsule.tar"
    printed = stdout("export", copy, "--out", tar_file)
    with tarfile.open(tar_file) as tar:
        files = len(tar.getnames())  # the capsule's files (no image asked for)
    size = tar_file.stat().st_size
    assert rendered(text.render_export, copy, tar_file, files, False, size) == printed
    assert printed == f"exported {copy} → {tar_file} (9 files, 0.0 MiB)\n"
    assert rendered(text.render_export, copy, tar_file, files, True, 3 * 2**20).endswith(
        "(9 files + image, 3.0 MiB)\n"
    )

    unpacked = tmp_path / "imported"
    printed = stdout("import", tar_file, "--out", unpacked)
    imported = manifest_of(unpacked)
    images = {str(v): i.image_id for v, i in imported.images.items()}
    assert rendered(text.render_import, imported.spec.name, unpacked, images) == printed
    assert rendered(text.render_import, "x", unpacked, {}).endswith("images recorded: none\n")
    assert printed == (
        f"imported tiny-v1 → {unpacked}; verified; images recorded: cpu sha256:abababababab…\n"
    )


def test_verify_line_is_what_verify_prints() -> None:
    capsule_artifacts = len(manifest_of(CAP).artifacts)
    digest = content_digest(manifest_of(CAP))
    assert rendered(text.render_verify, CAP, capsule_artifacts, digest) == stdout("verify", CAP)
    words = rendered(text.render_verify, REP, len(replay_of(REP).artifacts))
    assert words == stdout("verify", REP)
    assert words == f"ok: {REP}: the record and 1 artifacts match their sha256\n"


# ---------------------------------------------------------------- diff


def test_identical_verdict_is_what_diff_prints() -> None:
    from builder.verdict import diff

    verdict = diff(CAP, REP, Tolerances())
    words = rendered(text.render_verdict, verdict)
    assert words == stdout("diff", CAP, REP)
    assert words.splitlines() == [
        "verdict: identical",
        "  - [identical] all 4 weight tensors and all metrics are bit-for-bit equal",
    ]
    styled = rendered(text.render_verdict, verdict, styled=True)
    assert styled == stdout("diff", CAP, REP, styled=True)
    assert styled.startswith("verdict: \x1b[1;32midentical\x1b[0m")


def _nudged_replay(tmp_path: Path, by: float) -> Path:
    """A copy of the replay whose final weights moved by `by` (record and digests rewritten)."""
    import hashlib

    import numpy as np
    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "replay"
    shutil.copytree(REP, copy)
    record = replay_of(copy)
    ref = record.artifacts["weights"]
    weights = load_file(copy / ref.path)
    name = sorted(weights)[0]
    weights[name] = (weights[name] + np.float32(by)).astype(weights[name].dtype)
    save_file(weights, copy / ref.path)
    data = (copy / ref.path).read_bytes()
    moved = ref.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    write_record(
        copy / "replay.json",
        record.model_copy(update={"artifacts": {**record.artifacts, "weights": moved}}),
    )
    return copy


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the equivalent tier's TOST (scipy)
@pytest.mark.parametrize(("by", "tier"), [(1e-7, "close"), (0.5, "diverged")])
def test_a_moved_verdict_with_its_tensor_table_is_what_diff_prints(
    tmp_path: Path, by: float, tier: str
) -> None:
    from builder.verdict import diff

    moved = _nudged_replay(tmp_path, by)
    verdict = diff(CAP, moved, Tolerances())
    assert verdict.verdict == tier
    result = cli("diff", CAP, moved)
    words = rendered(text.render_verdict, verdict)
    assert words == result.stdout
    lines = words.splitlines()
    assert lines[0] == f"verdict: {tier}"
    assert all(line.startswith("  - [") for line in lines[1 : len(verdict.reasons) + 1])
    assert "┃ tensor " in words and "┃ max |Δ| " in words and "┃ within tol ┃" in words
    expected_within = "yes" if tier == "close" else "no"
    assert any(line.rstrip("│ ").endswith(expected_within) for line in lines if "│" in line)
    styled = rendered(text.render_verdict, verdict, styled=True)
    assert styled == cli("diff", CAP, moved, styled=True).stdout
    colour = "\x1b[1;36m" if tier == "close" else "\x1b[1;31m"
    assert styled.startswith(f"verdict: {colour}{tier}")


# ---------------------------------------------------------------- stats, sweep


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_stats_table_and_tests_are_what_stats_prints() -> None:
    from builder.stats import margin_value, tost, welch

    manifest = manifest_of(CAP)
    sweep = sweep_of(CAP, manifest)
    sample = sweep.values()
    welch_tests = [welch(m, sample[m], sample[m], 0.05) for m in sample]
    tost_test = tost(
        "train_error", 0.1, sample["train_error"], margin_value("3sd", sample["train_error"]), 0.05
    )
    words = rendered(text.render_stats, sweep.runs, summaries(sweep), welch_tests, tost_test)
    assert words == stdout("stats", CAP, CAP, "--value", "0.1", "--metric", "train_error")
    lines = words.splitlines()
    assert lines[0] == "sweep: 2 init seed(s) x 1 order seed(s)"
    assert lines[2] == (
        "┃ metric      ┃ runs ┃ min    ┃ max    ┃ mean   ┃ std     ┃ 95% CI of mean   ┃"
    )
    assert "│ train_error │ 2    │ 15.42% │ 16.25% │ 15.83% │ 0.5893% │ [10.54%, 21.13%] │" in lines
    assert "│ train_loss  │ 2    │ 0.3747 │ 0.3997 │ 0.3872 │ 0.01763 │ [0.2288, 0.5456] │" in lines
    assert (
        "welch  eval_error: mean 0.1875 vs 0.1875, t = 0.000, p = 1 (not significant at 0.05)"
        in lines
    )
    assert lines[-1] == (
        "tost   train_error = 0.1 vs sweep mean 0.158333 (n = 2), margin ±0.0177: p = 0.967 "
        "→ not shown equivalent"
    )
    table_only = rendered(text.render_stats, sweep.runs, summaries(sweep))
    assert table_only == stdout("stats", CAP)
    assert table_only == rendered(text.render_stats_table, sweep.runs, summaries(sweep))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sweep_lines_are_what_sweep_prints(tmp_path: Path) -> None:
    """A sweep whose every run is stored already: nothing trains, everything is reused."""
    copy = tmp_path / "capsule"
    shutil.copytree(CAP, copy)
    printed = stdout("sweep", copy, "--seeds", "1,2")
    manifest = manifest_of(copy)
    sweep = sweep_of(copy, manifest)
    words = rendered(text.render_sweep, "tiny-v1", copy, 0, 2, sweep.runs, summaries(sweep))
    assert words == printed
    assert words.splitlines()[0] == f"sweep of tiny-v1: 0 run(s) now, 2 reused, 2 stored in {copy}"
    failures = [Failed(init=3, order=13, error="the worker process died")]
    assert rendered(text.render_sweep_failures, failures) == (
        "capsule: run init=3 order=13 failed: the worker process died\n"
    )


# ---------------------------------------------------------------- audit, matrix, evaluate


def test_audit_verdict_and_reasons() -> None:
    record = audits_of(CAP, manifest_of(CAP))[0]
    assert rendered(text.render_audit, record).splitlines() == [
        "audit on host: verdict identical",
        "  - audit: numpy 2.4.6 → 2.4.5",
        "  - all 4 weight tensors and all metrics are bit-for-bit equal",
        "  - installed packages differ: numpy 2.4.6 → 2.4.5",
    ]
    assert rendered(text.render_audit, record, styled=True).startswith(
        "audit on host: verdict \x1b[1midentical\x1b[0m"
    )
    control = Trial(changes=[], verdict=TrialVerdict.identical, reasons=[])
    bisected = record.model_copy(update={"trials": [control, *record.trials], "bisect": ["numpy"]})
    lines = rendered(text.render_audit, bisected).splitlines()
    assert lines[4] == "environments replayed"
    assert lines[6] == "┃ changes applied ┃ verdict   ┃"
    assert lines[8:10] == ["│ none            │ identical │", "│ numpy           │ identical │"]
    assert rendered(text.render_audit_lines, [bisected]) == (
        "upgrade    2026-11-27T14:52:52+00:00 on host: numpy 2.4.6 → 2.4.5 → identical; "
        "moves with numpy\n"
    )


def test_matrix_table() -> None:
    record = load(V1 / "matrix.json")
    assert isinstance(record, MatrixRecord)
    lines = rendered(text.render_matrix, record).splitlines()
    assert lines[0].strip() == "matrix"
    assert (
        lines[2]
        == "┃ trained on ↓ / evaluated on → ┃ cpu:1                      ┃ weights = baseline ┃"
    )
    assert (
        lines[4]
        == "│ cpu:1                         │ train 16.25% / eval 17.50% │ yes                │"
    )
    moved = record.model_copy(
        update={
            "rows": [
                record.rows[0].model_copy(
                    update={"weights_identical_to_baseline": False, "max_abs_to_baseline": 0.00123}
                )
            ]
        }
    )
    assert "│ no (≤ 0.0012)      │" in rendered(text.render_matrix, moved)


def test_evaluation_lines_are_what_evaluate_prints() -> None:
    printed = stdout("evaluate", CAP, CAP, REP)
    document = json.loads(stdout("evaluate", CAP, CAP, REP, "--json"))
    results = {name: EpochMetrics(epoch=0, **m) for name, m in document.items()}
    words = rendered(text.render_evaluation, results)
    assert words == printed
    assert words.splitlines()[1] == f"{REP}: train 16.25%, dev —, eval 17.50% (loss 0.37368)"


# ---------------------------------------------------------------- freeze, replay, build


def test_replay_summary_is_what_replay_prints(tmp_path: Path) -> None:
    out = tmp_path / "replay"
    shutil.copytree(CAP, tmp_path / "cap")  # a replay adds to the capsule's history
    printed = stdout("replay", tmp_path / "cap", "--out", out)
    record = replay_of(out)
    words = rendered(text.render_summary, record, out, "replayed")
    assert words == printed
    assert words.startswith(f"replayed tiny-v1 → {out}: train 16.25%, dev —, eval 17.50% (45 ")


def test_user_code_freeze_summary_findings_and_describe(tmp_path: Path) -> None:
    """User code: the summary of `freeze` and inspect's code/params/metrics/audit lines."""
    out = tmp_path / "numpy-softmax"
    printed = stdout("freeze", CAPSULES / "numpy-softmax", "--out", out)
    manifest = manifest_of(out)
    words = rendered(text.render_summary, manifest, out, "froze", content_digest(manifest))
    assert words == printed
    assert words.startswith(f"froze numpy-softmax → {out}: ")
    described = describe(out)
    assert described == stdout("inspect", out)
    lines = described.splitlines()
    assert lines[1] == "  Softmax regression in plain NumPy: the user's own code, no framework"
    assert "code       train.py:main; files: train.py" in lines
    assert "params     epochs=5, batch_size=16, lr=0.1, rows=600" in lines
    assert "findings   none (code scan and run)" in lines
    assert "┃ metric" in described and "┃ values logged ┃ last step ┃ final" in described


def test_findings_and_progress_lines() -> None:
    from builder.records.run import Finding

    findings = [
        Finding(source="static", rule="unseeded-random", file="train.py", line=3, message="m"),
        Finding(source="runtime", rule="torch-nondeterministic-op", file="t.py", line=9,
                message="index_add_", count=4),
    ]  # fmt: skip
    assert rendered(text.render_findings, findings).splitlines() == [
        "  static  train.py:3  [unseeded-random] m",
        "  runtime t.py:9  [torch-nondeterministic-op] (4x) index_add_",
    ]
    epochs = manifest_of(CAP).outcome.epochs
    assert rendered(text.render_epoch, epochs[0], len(epochs)) == (
        "epoch 1/3  loss 0.4774  train 19.17%  eval 27.50%\n"
    )
    assert rendered(text.render_metric, "loss", 0.123456789, 7) == "step 7  loss 0.123457\n"
    assert rendered(text.render_metric, "acc[0]", 1.0, None) == "acc[0] 1\n"


def test_build_lines() -> None:
    from builder.records.results import BuildResult

    image = ImageRecord(
        image_id="sha256:" + "ab" * 32,
        tag="capsule/tiny-v1:a3a067fd0cab-cpu",
        base_image="capsule/base:bookworm",
        base_id="sha256:" + "cd" * 32,
        dockerfile_sha256="ef" * 32,
        capsule_digest="a3a067fd0cab662dc3b9db34f6139b884322909427f9b3f0ef8bb08dccd0e691",
        source_date_epoch=0,
        wheels=["a.whl", "b.whl", "pip.whl"],
        built="2026-11-27T15:00:00+00:00",
    )
    built = BuildResult(variant="cpu", image=image, checked=False, matches=None, rebuilt_id=None)
    assert rendered(text.render_build, built, CAP) == (
        f"built capsule/tiny-v1:a3a067fd0cab-cpu = sha256:{'ab' * 32} (3 wheels); "
        f"recorded in {CAP / 'manifest.json'}\n"
    )
    checked = BuildResult(
        variant="cpu", image=image, checked=True, matches=True, rebuilt_id=image.image_id
    )
    assert rendered(text.render_build, checked, CAP) == (
        f"rebuilt without cache: image ID sha256:{'ab' * 32} matches the recorded one\n"
    )


def test_importing_the_text_reports_stays_light() -> None:
    heavy = ("numpy", "scipy", "torch", "tensorflow", "docker", "safetensors", "typer")
    probe = (
        "import sys, builder.report.text; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
