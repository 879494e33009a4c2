"""The JSON schemas `capsule schema` prints, written once into schema/ (shipped with the
package) so that printing one builds no model: generating them all takes longer than the
whole command may (issue 12's start-up target). tests/test_records.py keeps every file equal to
what the models generate; `python -m builder.records.published` rewrites them."""

from __future__ import annotations

import json
from pathlib import Path

from builder.records.enums import RecordKind

FOLDER = Path(__file__).parent / "schema"


def schema_file(kind: RecordKind | None = None) -> Path:
    """The file holding one kind's schema, or (None) every stored record's."""
    return FOLDER / f"{kind.value if kind else 'records'}.json"


def generated(kind: RecordKind | None = None) -> str:
    """The text a schema file must hold, generated from the models."""
    from builder.records import json_schema

    return json.dumps(json_schema(kind), indent=2) + "\n"


def write_all() -> list[Path]:
    """Rewrite every schema file from the models."""
    FOLDER.mkdir(exist_ok=True)
    written = []
    for kind in [None, *RecordKind]:
        path = schema_file(kind)
        path.write_text(generated(kind))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path)
