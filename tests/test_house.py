"""The house's rules (docs/architecture.md): each plug-in point is reached only through its
wing, and each wing's registry names modules that implement its protocol."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "builder"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files_outside(wing: str) -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(PACKAGE / wing)]


@pytest.mark.parametrize(
    ("wing", "roots"),
    [("frameworks", {"torch", "tensorflow", "keras"}), ("engines", {"docker", "podman"})],
)
def test_only_its_wing_imports_a_plug_in(wing: str, roots: set[str]) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in roots
        )
        for path in files_outside(wing)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_every_registered_engine_executor_and_framework_implements_its_protocol() -> None:
    from builder.engines import ENGINES, Engine
    from builder.executors import EXECUTORS
    from builder.frameworks import FRAMEWORKS

    for name, target in ENGINES.items():
        module, _, cls = target.partition(":")
        engine = getattr(importlib.import_module(module), cls)
        assert engine.name == name
        for method in ("has_image", "base", "build", "save", "load", "tag", "run", "remove"):
            assert callable(getattr(engine, method)), (name, method)
        assert set(Engine.__annotations__) <= set(dir(engine)), name
    for name, module in EXECUTORS.items():
        executor = importlib.import_module(module).EXECUTOR
        assert executor.name == name and callable(executor.run)
    for name, entry in FRAMEWORKS.items():
        spec = importlib.util.find_spec(entry.module)
        assert spec is not None and spec.origin, name
        source = Path(spec.origin).read_text()  # not imported: importing torch takes seconds
        for method in ("nondeterministic_op", "refused_nondeterminism", "as_array",
                       "named_weights", "apply_base_controls", "train", "evaluate"):  # fmt: skip
            assert f"def {method}(" in source, (name, method)


def test_every_report_format_implements_its_protocol() -> None:
    """A report page format is one module of builder/report/ with a `FORMAT`, named in
    `FORMATS`; the service asks it only for what the protocol says."""
    from builder.report.formats import FORMATS, get_format

    for name, module in FORMATS.items():
        fmt = get_format(name)
        assert fmt is importlib.import_module(module).FORMAT
        assert fmt.name == name and fmt.suffix.startswith(".") and fmt.figures in ("svg", "png")
        assert callable(fmt.render) and callable(fmt.folders)


def test_the_command_line_choices_are_the_records_closed_sets() -> None:
    """cli/common.py keeps its own StrEnums (so --help needs no pydantic models): they must
    hold exactly the values of the records' enums and registries."""
    from builder.cli import common
    from builder.engines import ENGINES
    from builder.executors import EXECUTORS
    from builder.records.enums import Device, RecordKind, Tier, Where
    from builder.report.formats import FORMATS

    pairs = [
        (common.DeviceChoice, [d.value for d in Device]),
        (common.WhereChoice, [w.value for w in Where]),
        (common.TierChoice, [t.value for t in Tier]),
        (common.KindChoice, [k.value for k in RecordKind]),
        (common.EngineChoice, list(ENGINES)),
        (common.ExecutorChoice, list(EXECUTORS)),
        (common.FormatChoice, list(FORMATS)),
    ]
    for choice, values in pairs:
        assert [c.value for c in choice] == values, choice


def test_diff_help_states_the_default_tolerances() -> None:
    import os
    import subprocess

    from builder.records.verdict import Tolerances
    from tests.conftest import CAPSULE_BIN

    wide = {**os.environ, "COLUMNS": "400"}  # one line per option: nothing wraps
    shown = subprocess.run(
        [str(CAPSULE_BIN), "diff", "--help"], capture_output=True, text=True, env=wide, check=True
    ).stdout
    defaults = Tolerances()
    for value in (defaults.atol, defaults.rtol, defaults.metric_atol):
        assert f"[default: ({value})]" in shown, value
