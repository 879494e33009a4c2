"""What a name in the scanned code stands for. The code's imports bind aliases (`import numpy as
np`, `from time import time as now`), so a rule asks for `numpy.random.seed` or `time.time` and
matches every spelling of it, not the one spelling its author thought of."""

from __future__ import annotations

import ast


def dotted(node: ast.AST) -> str:
    """`np.random.seed` for the expression it names; '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Each name the module's imports bind (at the top or in a function) → the qualified name
    it stands for: `np` → `numpy`, `now` → `time.time`, `dt` → `datetime.datetime`."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # `import os.path` binds `os`
                    head = alias.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def qualified(node: ast.AST, aliases: dict[str, str]) -> str:
    """`numpy.random.seed` for `np.random.seed` after `import numpy as np`; '' for what is not
    a dotted name. A name no import binds keeps its spelling (a star import, a snippet)."""
    name = dotted(node)
    if not name:
        return ""
    head, dot, rest = name.partition(".")
    return aliases.get(head, head) + dot + rest
