"""The code scan: a static nondeterminism check of a user's training code (read as text, never
imported or run). Its findings are stored with the runtime ones in the manifest's findings.

Each rule names a pattern the paper's remedies forbid and that goes wrong under Capsule (which
seeds every RNG before the code runs): NumPy's legacy global RNG, a data order drawn outside
the run (a DataLoader's own shuffle, followed through `**kwargs` dicts), autotuned kernels.
The rules about one framework's API live in its
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


def _string_pairs(keys: list[ast.expr | None], values: list[ast.expr]) -> dict[str, ast.expr]:
    return {
        k.value: v
        for k, v in zip(keys, values, strict=True)
        if isinstance(k, ast.Constant) and isinstance(k.value, str)
    }


def keyword_dicts(tree: ast.AST) -> dict[str, dict[str, ast.expr]]:
    """name → the keys and values the file gives a dict of that name: `kw = {"shuffle":
    True}`, `kw.update({...})`, `kw.update(k=v)`, `kw["k"] = v` (all of them, flow aside:
    what a `**kw` call may receive)."""
    found: dict[str, dict[str, ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict):
                    pairs = _string_pairs(node.value.keys, node.value.values)
                    found.setdefault(target.id, {}).update(pairs)
                elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                    pairs = _string_pairs([target.slice], [node.value])
                    found.setdefault(target.value.id, {}).update(pairs)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
        ):
            into = found.setdefault(node.func.value.id, {})
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    into.update(_string_pairs(arg.keys, arg.values))
            into.update({k.arg: k.value for k in node.keywords if k.arg is not None})
    return found


class _Scanner(ast.NodeVisitor):
    def __init__(self, file: str, dicts: dict[str, dict[str, ast.expr]]) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.dicts = dicts

    def keywords(self, call: ast.Call) -> dict[str, ast.expr]:
        """The call's keyword arguments, with those a `**name` of a known dict passes."""
        found: dict[str, ast.expr] = {}
        for k in call.keywords:
            if k.arg is not None:
                found[k.arg] = k.value
            elif isinstance(k.value, ast.Name):
                found.update(self.dicts.get(k.value.id, {}))
            elif isinstance(k.value, ast.Dict):
                found.update(_string_pairs(k.value.keys, k.value.values))
        return found

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
        found = framework_rules.call_rule(last, self.keywords(node))
        if found is not None:
            self.add(node, *found)
        if name.startswith(("np.random.", "numpy.random.")) and last in LEGACY_NUMPY:
            self.add(
                node,
                "legacy-numpy-random",
                f"{name}(): NumPy's legacy global RNG; draw from a seeded "
                "np.random.default_rng(seed) (or the run's seeds) instead",
            )
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            found = framework_rules.assign_rule(dotted(target), node.value)
            if found is not None:
                self.add(node, *found)
        self.generic_visit(node)

    def finish(self) -> list[Finding]:
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
    scanner = _Scanner(file, keyword_dicts(tree))
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
