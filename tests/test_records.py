"""The records (builder/records/): one union on `kind` loads every stored record, the format of
existing files is kept byte for byte, and `capsule schema` covers every kind.

tests/fixtures/schema-v1 was written by Capsule before the records moved (commit 2ccb029): a
tiny capsule with a sweep and an audit, a replay of it and a matrix of it."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import BadInput
from builder.records import json_schema, load, record_models
from builder.records.audit import AuditRecord
from builder.records.enums import RecordKind
from builder.records.manifest import Manifest
from builder.records.matrix import MatrixRecord
from builder.records.replay import ReplayRecord
from builder.records.sweep import SweepRecord
from builder.records.verdict import ReasonKind
from tests.conftest import ROOT, assert_refused, capsule, ok

V1 = ROOT / "tests" / "fixtures" / "schema-v1"
V1_DIGEST = "a3a067fd0cab662dc3b9db34f6139b884322909427f9b3f0ef8bb08dccd0e691"  # capsule_digest
STORED = {
    V1 / "capsule" / "manifest.json": (Manifest, 2),
    V1 / "replay" / "replay.json": (ReplayRecord, 2),
    next((V1 / "capsule" / "sweeps").glob("*.json")): (SweepRecord, 1),
    next((V1 / "capsule" / "audits").glob("*.json")): (AuditRecord, 1),
    V1 / "matrix.json": (MatrixRecord, 2),
}
ADDED = {
    AuditRecord: {"schema_version"},
    MatrixRecord: {"kind", "schema_version"},
    SweepRecord: {"summaries"},
}


def _write_with_sidecar(path: Path, text: str) -> None:
    path.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")


@pytest.mark.parametrize("path", list(STORED), ids=[p.name for p in STORED])
def test_the_union_loads_each_kind_and_writes_it_as_before(path: Path) -> None:
    model, indent = STORED[path]
    record = load(path)
    assert type(record) is model
    written = record.model_dump_json(indent=indent) + "\n"
    before = json.loads(path.read_text())
    if model not in ADDED:
        assert written == path.read_text()  # byte for byte: order, enums, numbers
        return
    # a record that gained kind/schema_version writes them, and everything else as before
    after = json.loads(written)
    assert set(after) - set(before) == ADDED[model]
    assert {k: v for k, v in after.items() if k in before} == before
    assert [k for k in after if k in before] == list(before)
    assert after["schema_version"] == 1 and after["kind"] == record.kind


def test_every_stored_record_carries_kind_and_schema_version() -> None:
    for kind, model in record_models().items():
        assert model.model_fields["kind"].default == kind
        assert model.model_fields["schema_version"].default == 1
    assert set(record_models()) == set(RecordKind)


def test_field_order_of_manifest_and_replay_is_the_format() -> None:
    head = ["schema_version", "kind", "tool", "created"]
    run = ["spec", "controls", "fingerprint"]
    tail = ["inputs", "audit", "outcome", "artifacts", "arguments"]
    assert list(Manifest.model_fields) == [*head, *run, "data", *tail, "images"]
    replay_own = ["capsule", "on", "image_id", "overrides"]
    assert list(ReplayRecord.model_fields) == [*head, *replay_own, *run, *tail]


@pytest.mark.parametrize(
    ("document", "needles"),
    [
        ({"kind": "bogus", "schema_version": 1}, ("kind", "'bogus'", "capsule, replay")),
        ({"schema_version": 1, "runs": []}, ("kind", "required field is missing")),
        ({"kind": "sweep", "schema_version": 1, "runs": [{"init": "x"}]}, ("runs.0.init",)),
        ([1, 2], ("not a record",)),
    ],
    ids=["unknown-kind", "no-kind", "bad-field", "not-an-object"],
)
def test_the_union_refuses_with_one_line_naming_the_file(
    tmp_path: Path, document: object, needles: tuple[str, ...]
) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(document))
    with pytest.raises(BadInput) as caught:
        load(path)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_capsule_whose_manifest_has_an_unknown_kind_exits_2(tmp_path: Path) -> None:
    copy = tmp_path / "capsule"
    shutil.copytree(V1 / "capsule", copy)
    text = (copy / "manifest.json").read_text().replace('"kind": "capsule"', '"kind": "bogus"', 1)
    _write_with_sidecar(copy / "manifest.json", text)
    for command in ("inspect", "verify"):
        assert_refused(capsule(command, copy), "manifest.json", "kind", "'bogus'")


def test_a_record_of_another_kind_in_manifest_json_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "capsule"
    shutil.copytree(V1 / "capsule", copy)
    _write_with_sidecar(copy / "manifest.json", (V1 / "replay" / "replay.json").read_text())
    assert_refused(capsule("inspect", copy), "manifest.json", "kind", "'replay'")


def test_schema_lists_every_stored_record_kind() -> None:
    schema = json.loads(ok(capsule("schema")).stdout)
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(mapping) == {"capsule", "replay", "sweep", "audit", "matrix"}
    assert [one["$ref"] for one in schema["oneOf"]] == list(mapping.values())
    for kind, ref in mapping.items():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["kind"]["const"] == kind
        assert "schema_version" in definition["properties"]
    assert json.loads(ok(capsule("schema", "--kind", "audit")).stdout)["title"] == "AuditRecord"
    assert json_schema(RecordKind.capsule)["title"] == "Manifest"


@pytest.mark.parametrize("kind", [None, *RecordKind], ids=lambda kind: kind or "records")
def test_the_shipped_schema_files_are_what_the_models_generate(kind: RecordKind | None) -> None:
    from builder.records.published import generated, schema_file

    assert schema_file(kind).read_text() == generated(kind), (
        f"{schema_file(kind)} is out of date: run `python -m builder.records.published`"
    )


def test_a_capsule_written_before_the_records_moved_still_verifies_and_diffs(
    tmp_path: Path,
) -> None:
    from builder.store import capsule_digest, load_manifest

    cap, rep = V1 / "capsule", V1 / "replay"
    ok(capsule("verify", cap))
    ok(capsule("verify", rep))
    shown = json.loads(ok(capsule("inspect", cap, "--json")).stdout)
    stored = json.loads((cap / "manifest.json").read_text())
    added = ("sweep", "audits", "digest", "history", "ran_on")
    assert {k: v for k, v in shown.items() if k not in added} == stored
    assert shown["history"] == [] and shown["ran_on"] == ["host"]  # runs recorded no place
    assert [r["init"] for r in shown["sweep"]["record"]["runs"]] == [1, 2]  # what text shows
    assert shown["sweep"]["stats"] and len(shown["audits"]) == 1
    assert ok(capsule("inspect", rep, "--json")).stdout == (rep / "replay.json").read_text()
    assert capsule_digest(load_manifest(cap)) == V1_DIGEST
    words = ok(capsule("inspect", cap)).stdout
    assert "sweep: 2 init seed(s)" in words and "upgrade " in words
    ok(capsule("diff", cap, rep, "--require", "identical"))
    stats = json.loads(ok(capsule("stats", cap, "--json")).stdout)
    assert {s["metric"] for s in stats["stats"]} >= {"train_error", "eval_error"}


def test_reason_kinds_are_an_enum_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### For scripts") : readme.index("### Exit codes")]
    documented = set(re.findall(r"^- `([a-z]+)`", section, re.M))
    assert documented == {k.value for k in ReasonKind}


def test_importing_the_records_imports_no_numerics_nor_engine() -> None:
    code = (
        "import sys, builder.records; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'torch', 'tensorflow', 'scipy', 'docker', 'safetensors'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_no_import_cycle_among_builder_modules() -> None:
    """Every import, at the top or inside a function (TYPE_CHECKING blocks included)."""
    package = ROOT / "builder"
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges.update(next(([t] for t in targets if t in modules), []))
        graph[name] = edges - {name}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, cycles[0]


def test_an_image_record_is_written_as_before_unless_it_carries_its_base() -> None:
    """An image recorded before bases were carried keeps its bytes; the base a capsule carries
    round-trips, and does not change the capsule digest its images are labelled with."""
    from builder.records.enums import Device
    from builder.records.manifest import BaseRecord, ImageRecord
    from builder.records.run import ArtifactRef
    from builder.store import capsule_digest

    manifest = load(V1 / "capsule" / "manifest.json")
    assert isinstance(manifest, Manifest)
    image = ImageRecord(
        image_id="sha256:" + "1" * 64, tag="capsule/x:1-cpu", base_image="capsule-base:b",
        base_id="sha256:" + "2" * 64, dockerfile_sha256="3" * 64, capsule_digest=V1_DIGEST,
        source_date_epoch=315532800, wheels=["pip-26.3-py3-none-any.whl"], built="2026-11-28",
    )  # fmt: skip
    assert "base" not in json.loads(image.model_dump_json())
    base = BaseRecord(
        archive="base/222222222222.docker.tar.zst", image_id="sha256:" + "2" * 64,
        layers=["sha256:" + "4" * 64], unpacked_bytes=2, release="bookworm",
        mirror="http://deb.debian.org/debian",
        packages_date="2026-07-11T10:16:37Z",
    )  # fmt: skip
    stored = ArtifactRef(path=base.archive, sha256="5" * 64, size=1, media_type="x")
    carrying = manifest.model_copy(
        update={
            "images": {Device.cpu: image.model_copy(update={"base": base})},
            "artifacts": {**manifest.artifacts, base.archive: stored},
        }
    )
    again = Manifest.model_validate_json(carrying.model_dump_json())
    assert again == carrying and again.images[Device.cpu].base == base
    assert capsule_digest(carrying) == capsule_digest(manifest) == V1_DIGEST
