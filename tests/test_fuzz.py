"""Property-based fuzzing (hypothesis) of what Capsule reads from others: the spec, the manifest
and an export. No input may produce a traceback, an exit code outside the contract, a hang, or
a write outside `--out`.

The commands run in this process (typer's runner: fast enough for hundreds of inputs), so an
unexpected exception surfaces as `result.exception` rather than as text on stderr. Each input
runs under an alarm: a hang fails the test instead of stalling the suite. The budget is bounded
and the inputs derandomized (CI sees the same inputs every time); `CAPSULE_FUZZ_EXAMPLES=N`
runs N inputs per property, drawn afresh, for a longer hunt.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from builder.cli import app
from builder.errors import CapsuleError
from builder.spec import load_spec, parse_spec
from tests.conftest import CAPSULES, capsule, ok

EXAMPLES = int(os.environ.get("CAPSULE_FUZZ_EXAMPLES", "0"))
CONTRACT = {0, 2, 3}  # ok, bad input, integrity (no engine is reached here: 4 would be a defect)
LIMIT_S = 20  # one input's time; any real one takes well under a second


def budget(default: int) -> Any:
    return settings(
        max_examples=EXAMPLES or default,
        derandomize=not EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@contextlib.contextmanager
def time_limit(seconds: int = LIMIT_S) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"hung: no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(*args: object) -> tuple[int, str]:
    """One command in this process: (exit code, stderr); a traceback is a test failure."""
    with time_limit():
        result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"capsule {' '.join(map(str, args))}: traceback") from (
            result.exception
        )
    assert result.exit_code in CONTRACT, (args, result.exit_code, result.stderr)
    event(f"{args[0]}: exit {result.exit_code}")
    if result.exit_code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr  # one line, naming what is wrong
    return result.exit_code, result.stderr


# ---------------------------------------------------------------- values and mutations

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON-like value (dict keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `document` with the value at `path` replaced (or, at the root, the value)."""
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return copy


@st.composite
def mutated_document(draw: st.DrawFn, document: Any) -> Any:
    """One to three replacements at paths of the document, or a key removed."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(document)))
        if path and draw(st.booleans()) and isinstance(_at(document, path[:-1]), dict):
            document = json.loads(json.dumps(document))
            del _at(document, path[:-1])[path[-1]]
        else:
            document = replaced(document, path, draw(json_values))
    return document


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """A slice of the bytes replaced by random bytes (or cut), as a damaged file would be."""
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 64)))
    return data[:start] + draw(st.binary(max_size=64)) + data[end:]


# ---------------------------------------------------------------- the spec

SPECS = [CAPSULES / "numpy-softmax" / "capsule.toml", CAPSULES / "paper-2d-torch" / "capsule.toml"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
@budget(150)
@given(data=st.data())
def test_a_mutated_spec_is_a_spec_or_one_line_naming_the_file(
    spec: Path, data: st.DataObject
) -> None:
    document = tomllib.loads(spec.read_text())
    mutated = data.draw(mutated_document(document))
    try:
        with time_limit():
            parse_spec(mutated if isinstance(mutated, dict) else {"x": mutated}, str(spec))
        event("a valid spec")
    except CapsuleError as error:
        event("refused")
        assert error.exit_code == 2
        assert str(spec) in str(error) and "\n" not in str(error), error


@budget(100)
@given(data=st.data())
def test_a_damaged_spec_file_is_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    text = SPECS[1].read_bytes()
    path = tmp_path_factory.mktemp("spec") / "capsule.toml"
    path.write_bytes(data.draw(mutated_bytes(text)))
    try:
        with time_limit():
            load_spec(path)
        event("a valid spec")
    except CapsuleError as error:
        event("refused")
        assert error.exit_code == 2 and str(path) in str(error) and "\n" not in str(error)


# ---------------------------------------------------------------- the manifest


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "numpy-softmax"
    ok(capsule("freeze", CAPSULES / "numpy-softmax", "--out", out))
    return out


def write_manifest(directory: Path, text: bytes, sidecar: bool) -> None:
    """The manifest as given; with `sidecar`, its digest recomputed (as a forger would), so the
    loader gets past the integrity check and must cope with the content itself."""
    (directory / "manifest.json").write_bytes(text)
    if sidecar:
        digest = hashlib.sha256(text).hexdigest()
        (directory / "manifest.sha256").write_text(f"{digest}  manifest.json\n")


@budget(120)
@given(data=st.data())
def test_a_mutated_manifest_never_gives_a_traceback(
    frozen: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    copy = tmp_path_factory.mktemp("manifest") / "capsule"
    shutil.copytree(frozen, copy)
    original = (frozen / "manifest.json").read_bytes()
    if data.draw(st.booleans()):
        document = data.draw(mutated_document(json.loads(original)))
        text = json.dumps(document, indent=2).encode()
    else:
        text = data.draw(mutated_bytes(original))
    write_manifest(copy, text, sidecar=data.draw(st.sampled_from([True, True, True, False])))
    for command in (("verify", copy), ("inspect", copy, "--json"), ("diff", copy, copy)):
        run_cli(*command)


# ---------------------------------------------------------------- import


@pytest.fixture(scope="module")
def export(frozen: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("export") / "capsule.tar"
    ok(capsule("export", frozen, "--out", out))
    return out.read_bytes()


MEMBER_TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                tarfile.FIFOTYPE, tarfile.CHRTYPE]  # fmt: skip
NAMES = ["capsule/manifest.json", "capsule/manifest.sha256", "capsule/code/sitecustomize.py",
         "capsule/artifacts/x.pkl", "../escape", "/etc/escape", "capsule/../../escape",
         "capsule/capsule.sig", "images/cpu.tar.gz", "capsule", "capsule/" + "a" * 300]  # fmt: skip
names = st.one_of(
    st.sampled_from(NAMES),
    st.text(min_size=1, max_size=30).map(lambda s: "capsule/" + s),
)


@st.composite
def crafted_member(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(draw(names))
    info.type = draw(st.sampled_from(MEMBER_TYPES))
    info.mode = draw(st.sampled_from([0o644, 0o4755, 0o777]))
    body = draw(st.binary(max_size=64)) if info.type == tarfile.REGTYPE else b""
    info.size = len(body)
    if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = draw(st.sampled_from(["/etc/passwd", "../../x", "capsule/manifest.json"]))
    return info, body


@st.composite
def mutated_export(draw: st.DrawFn, export: bytes) -> bytes:
    """The export re-packed with members dropped, repeated, added or reordered; or its bytes
    damaged (a truncated, flipped or compressed file)."""
    how = draw(st.sampled_from(["members", "bytes", "truncated"]))
    if how == "bytes":
        return draw(mutated_bytes(export))
    if how == "truncated":
        return export[: draw(st.integers(0, len(export)))]
    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]  # type: ignore[union-attr]
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["drop", "repeat", "add", "swap"]))
        index = draw(st.integers(0, len(members) - 1))
        if change == "drop" and len(members) > 1:
            members.pop(index)
        elif change == "repeat":
            members.insert(draw(st.integers(0, len(members))), members[index])
        elif change == "add":
            members.insert(draw(st.integers(0, len(members))), draw(crafted_member()))
        else:
            other = draw(st.integers(0, len(members) - 1))
            members[index], members[other] = members[other], members[index]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, body in members:
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return buffer.getvalue()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@budget(150)
@given(data=st.data())
def test_a_mutated_export_imports_exactly_or_is_refused_without_a_trace(
    export: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("import")
    (root / "work" / "deeper").mkdir(parents=True)
    source = root / "export.tar"
    source.write_bytes(data.draw(mutated_export(export)))
    before = tree(root)
    out = root / "work" / "deeper" / "imported"
    code, _ = run_cli("import", source, "--out", out)
    created = tree(root) - before
    if code == 0:
        ok(capsule("verify", out))
        assert all(name.startswith("work/deeper/imported") for name in created), created
    else:
        assert not created, created  # no partial, no claim, nothing outside --out
