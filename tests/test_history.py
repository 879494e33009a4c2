"""A capsule directory's history (`history.jsonl`): what was done with it here and where it
ran, shown by `inspect`; outside the digest, never in the way."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from tests.conftest import capsule, ok


def inspected(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(ok(capsule("inspect", path, "--json")).stdout)


def test_inspect_lists_every_export_and_every_place_the_capsule_ran(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    cap = tmp_path / "cap"
    ok(capsule("freeze", tiny_spec(), "--out", cap))
    digest = inspected(cap)["digest"]
    assert inspected(cap)["history"] == [] and inspected(cap)["ran_on"] == ["host"]
    ok(capsule("replay", cap, "--out", tmp_path / "r"))
    ok(capsule("export", cap, "--out", tmp_path / "c.tar"))
    ok(capsule("sweep", cap, "--seeds", "2"))
    ok(capsule("matrix", cap, "--devices", "cpu:1", "--out", tmp_path / "m"))
    document = inspected(cap)
    events = document["history"]
    assert [e["command"] for e in events] == ["replay", "export", "sweep", "matrix"]
    assert {e["node"] for e in events} == {socket.gethostname()}
    assert events[0]["on"] == "host" and events[0]["path"] == str((tmp_path / "r").resolve())
    assert events[1]["format"] == "tar"
    assert events[1]["bytes"] == (tmp_path / "c.tar").stat().st_size
    assert events[2]["runs"] == 2 and events[2]["executor"] == "local"
    assert document["ran_on"] == ["host"]
    assert {r["on"] for r in document["sweep"]["record"]["runs"]} == {"host"}
    shown = ok(capsule("inspect", cap)).stdout
    assert "ran on     host" in shown and "history (this directory)" in shown
    assert "tar → " in shown and "2 run(s), local" in shown
    # the history is not the capsule's: the digest, verify and an export ignore it
    ok(capsule("verify", cap))
    ok(capsule("import", tmp_path / "c.tar", "--out", tmp_path / "copy"))
    copied = inspected(tmp_path / "copy")
    assert [e["command"] for e in copied["history"]] == ["import"]
    assert copied["history"][0]["path"] == str((tmp_path / "c.tar").resolve())
    assert copied["digest"] == digest != inspected(cap)["digest"]  # the sweep is content


def test_a_history_that_cannot_be_written_or_read_is_passed_over(
    tiny_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """A history that is a link or a FIFO is never followed, written nor read (the command
    goes on, without a line); lines that do not parse are skipped."""
    cap = tmp_path / "cap"
    ok(capsule("freeze", tiny_spec(), "--out", cap))
    target = tmp_path / "elsewhere.jsonl"
    (cap / "history.jsonl").symlink_to(target)
    ok(capsule("replay", cap, "--out", tmp_path / "r1"))
    assert not target.exists() and inspected(cap)["history"] == []
    (cap / "history.jsonl").unlink()
    os.mkfifo(cap / "history.jsonl")
    ok(capsule("replay", cap, "--out", tmp_path / "r2", timeout=120))  # no wait for a reader
    assert inspected(cap)["history"] == []  # nor for a writer
    (cap / "history.jsonl").unlink()
    (cap / "history.jsonl").write_text('{"at": "x"}\nnot json\n')
    assert inspected(cap)["history"] == []
