"""The code scan's seed-from-clock rule: an RNG seeded from a value that differs on every run
(the clock, the process id, OS entropy) draws other numbers each time, however the seed is
wrapped (`int(...)`, `% 2**32`, an f-string) or spelled (aliases are resolved through the
module's imports, builder/scan_names.py) and whether it passes through a local variable first.

A clock read that never reaches a seeding call (timing a loop) is not a finding.
"""

from __future__ import annotations

import ast

from builder.frameworks.scan_rules import SEEDING_FUNCTIONS
from builder.scan_names import qualified

RULE = "seed-from-clock"

# Calls whose value differs from run to run, by qualified name (and any `secrets.*`).
CLOCKS = {
    "time.time",
    "time.time_ns",
    "time.perf_counter",
    "time.perf_counter_ns",
    "time.monotonic",
    "time.monotonic_ns",
    "time.process_time",
    "time.process_time_ns",
    "time.thread_time",
    "time.thread_time_ns",
    "time.localtime",
    "time.gmtime",
    "time.ctime",
    "time.strftime",
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
    "os.urandom",
    "os.getpid",
    "uuid.uuid1",
    "uuid.uuid4",
}
# Python's and NumPy's seeding functions and seeded constructors (the frameworks' are theirs).
SEEDERS = SEEDING_FUNCTIONS | {
    "random.seed",
    "random.Random",
    "numpy.random.seed",
    "numpy.random.default_rng",
    "numpy.random.RandomState",
    "numpy.random.Generator",
    "numpy.random.SeedSequence",
    "numpy.random.PCG64",
    "numpy.random.PCG64DXSM",
    "numpy.random.MT19937",
    "numpy.random.Philox",
    "numpy.random.SFC64",
    "jax.random.PRNGKey",
    "jax.random.key",
}
# Seeding methods of an RNG object the scan cannot name (`torch.Generator().manual_seed(...)`,
# `rng.seed(...)`), and of libraries it does not list (`seed_everything`).
SEED_METHODS = {
    "seed",
    "manual_seed",
    "manual_seed_all",
    "set_seed",
    "set_random_seed",
    "seed_everything",
    "from_seed",
}

Scope = dict[str, str | None]  # a variable → the clock call its value derives from; None: not


def _merge(scope: Scope, other: Scope) -> None:
    """After a branch: a variable holds a clock value if it does on either path."""
    for name, clock in other.items():
        scope[name] = scope.get(name) or clock


class _ClockSeeds(ast.NodeVisitor):
    """Walks statements in order, tracking which variables hold a clock value; function bodies
    are walked after their enclosing scope, so they see its variables as assigned at the end."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self.scopes: list[Scope] = [{}]
        self.deferred: list[tuple[list[Scope], ast.FunctionDef | ast.AsyncFunctionDef]] = []
        self.found: list[tuple[ast.Call, str]] = []

    def run(self, tree: ast.AST) -> list[tuple[ast.Call, str]]:
        self.visit(tree)
        while self.deferred:
            chain, function = self.deferred.pop(0)
            params = function.args
            names = [*params.posonlyargs, *params.args, *params.kwonlyargs]
            names += [a for a in (params.vararg, params.kwarg) if a is not None]
            self.scopes = [*chain, {a.arg: None for a in names}]
            self.block(function.body)
        return self.found

    # ------------------------------------------------------------ what a value derives from

    def lookup(self, name: str) -> str | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def clock_in(self, expr: ast.AST) -> tuple[str, str | None] | None:
        """(the clock call, the variable it came through) an expression's value derives from."""
        for node in ast.walk(expr):
            if isinstance(node, ast.Call):
                name = qualified(node.func, self.aliases)
                if name in CLOCKS or name.startswith("secrets."):
                    return name, None
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                held = self.lookup(node.id)
                if held is not None:
                    return held, node.id
        return None

    def seeder(self, call: ast.Call) -> str | None:
        """The seeding call's name as the message shows it, or None for another call."""
        name = qualified(call.func, self.aliases)
        last = call.func.attr if isinstance(call.func, ast.Attribute) else name.rpartition(".")[2]
        if name in SEEDERS or last in SEED_METHODS:
            return name or ast.unparse(call.func)
        return None

    # ------------------------------------------------------------ the walk

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.visit(statement)

    def bind(self, target: ast.AST, clock: str | None) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                self.scopes[-1][node.id] = clock

    def visit_Call(self, node: ast.Call) -> None:
        seeder = self.seeder(node)
        if seeder is not None:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                found = self.clock_in(arg)
                if found is not None:
                    clock, via = found
                    source = f"{clock}()" + (f" (through `{via}`)" if via else "")
                    self.found.append(
                        (
                            node,
                            f"{seeder}() seeded from {source}, which differs from run to "
                            "run: every run draws other numbers; seed from a fixed value",
                        )
                    )
                    return  # the outermost seeding call is the finding
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        found = self.clock_in(node.value)
        for target in node.targets:
            self.bind(target, found[0] if found else None)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            found = self.clock_in(node.value)
            self.bind(node.target, found[0] if found else None)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        found = self.clock_in(node.value)
        if found is not None:
            self.bind(node.target, found[0])

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        found = self.clock_in(node.value)
        self.bind(node.target, found[0] if found else None)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        scope = self.scopes[-1]
        before = dict(scope)
        self.block(node.body)
        taken = dict(scope)
        scope.clear()
        scope.update(before)
        self.block(node.orelse)
        _merge(scope, taken)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.bind(node.target, None)
        self.loop(node.body, node.orelse)

    visit_AsyncFor = visit_For

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        self.loop(node.body, node.orelse)

    def loop(self, body: list[ast.stmt], orelse: list[ast.stmt]) -> None:
        """A loop body may run or not: what it assigns joins what held before."""
        scope = self.scopes[-1]
        before = dict(scope)
        self.block(body)
        _merge(scope, before)
        self.block(orelse)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.visit(node.args)  # defaults are evaluated where the function is defined
        self.deferred.append(([*self.scopes], node))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.scopes.append({})
        self.block(node.body)
        self.scopes.pop()


def clock_seeds(tree: ast.AST, aliases: dict[str, str]) -> list[tuple[ast.Call, str]]:
    """Each seeding call whose seed derives from the clock (or another per-run value), with
    the finding's message naming the call and the source."""
    return _ClockSeeds(aliases).run(tree)
