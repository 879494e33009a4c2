"""The code scan: a static nondeterminism check of a user's training code (read as text, never
imported or run). Its findings are stored with the runtime ones in the manifest's findings.

Each rule names a pattern the paper's remedies forbid: unseeded RNGs, data loading whose order
depends on worker timing, autotuned kernels. The rules about one framework's API live in its
wing (`frameworks/scan_rules.py`); this module walks the code and keeps NumPy's and Python's;
RNGs seeded from the clock are `scan_clock.py`'s (names resolved through the imports).
Findings carry the file and line, so `inspect` can point at them and `freeze --strict` can
refuse to freeze.
"""

from __future__ import annotations

import ast
from pathlib import Path

from builder.frameworks import scan_rules as framework_rules
from builder.records.run import Finding
from builder.scan_clock import RULE as CLOCK_RULE
from builder.scan_clock import clock_seeds
from builder.scan_names import dotted, import_aliases

LEGACY_NUMPY = {
    "seed",
    "rand",
    "randn",
    "randint",
    "random",
    "random_sample",
    "ranf",
    "sample",
    "shuffle",
    "permutation",
    "choice",
    "normal",
    "uniform",
    "binomial",
    "poisson",
    "exponential",
    "beta",
    "gamma",
    "standard_normal",
    "bytes",
    "multivariate_normal",
}


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords if k.arg is not None}


class _Scanner(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.first_seeding: int | None = None
        self.initializers: list[tuple[int, str]] = []

    def add(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(
            Finding(
                source="static",
                rule=rule,
                file=self.file,
                line=getattr(node, "lineno", 0),
                message=message,
            )
        )

    def visit_Call(self, node: ast.Call) -> None:
        name = dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        keywords = _keywords(node)
        found = framework_rules.call_rule(last, keywords)
        if found is not None:
            self.add(node, *found)
        if name.startswith(("np.random.", "numpy.random.")) and last in LEGACY_NUMPY:
            self.add(
                node,
                "legacy-numpy-random",
                f"{name}(): NumPy's legacy global RNG; draw from a seeded "
                "np.random.default_rng(seed) (or the run's seeds) instead",
            )
        if framework_rules.unseeded_initializer(name, last, keywords):
            self.initializers.append((node.lineno, name))
        if last in framework_rules.SEEDING_CALLS and self.first_seeding is None:
            self.first_seeding = node.lineno
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            found = framework_rules.assign_rule(dotted(target), node.value)
            if found is not None:
                self.add(node, *found)
        self.generic_visit(node)

    def finish(self) -> list[Finding]:
        for line, name in self.initializers:
            if self.first_seeding is None or line < self.first_seeding:
                self.findings.append(
                    Finding(
                        source="static",
                        rule=framework_rules.INITIALIZER_RULE,
                        file=self.file,
                        line=line,
                        message=framework_rules.initializer_message(name),
                    )
                )
        return sorted(self.findings, key=lambda f: (f.file, f.line, f.rule))


def scan_source(text: str, file: str) -> list[Finding]:
    """Findings in one Python source; a file that does not parse is itself a finding."""
    try:
        tree = ast.parse(text, filename=file)
    except SyntaxError as error:
        return [
            Finding(
                source="static",
                rule="syntax-error",
                file=file,
                line=error.lineno or 0,
                message=f"cannot be parsed: {error.msg}",
            )
        ]
    scanner = _Scanner(file)
    scanner.visit(tree)
    for call, message in clock_seeds(tree, import_aliases(tree)):
        scanner.add(call, CLOCK_RULE, message)
    return scanner.finish()


def scan_files(root: Path, files: list[Path]) -> list[Finding]:
    """Findings in every .py file given (paths reported relative to `root`)."""
    findings: list[Finding] = []
    for path in sorted(files):
        if path.suffix == ".py":
            findings += scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return findings
