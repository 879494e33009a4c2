"""The foundation slice through the real CLI: freeze → verify → replay → diff on the host."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import capsule, ok


def test_freeze_writes_a_complete_manifest(frozen_2d: Path) -> None:
    manifest = json.loads((frozen_2d / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["spec"]["name"] == "paper-2d-torch"
    assert set(manifest["artifacts"]) == {"spec", "data", "order", "initial", "weights"}
    assert manifest["data"]["splits"]["train"]["rows"] == 10_000
    assert manifest["controls"]["seeds"]["pythonhashseed"] == "0"
    switches = manifest["controls"]["framework_switches"]
    assert switches["torch.use_deterministic_algorithms"] is True
    assert switches["torch.backends.cuda.matmul.allow_tf32"] is False  # off unless asked
    assert switches["torch.backends.cudnn.allow_tf32"] is False
    assert manifest["fingerprint"]["distributions"]["torch"].startswith("2.13.0")
    assert manifest["fingerprint"]["gpus"] == []
    outcome = manifest["outcome"]
    assert len(outcome["epochs"]) == 10
    assert outcome["steps"] == 10 * 313
    assert len(outcome["trace"]) == outcome["steps"] // 100
    assert set(outcome["weights"]) == {
        "hidden.0.weight",
        "hidden.0.bias",
        "output.weight",
        "output.bias",
    }
    # the paper's 2D set: about 8-9 % error
    assert 0.06 < outcome["final"]["eval_error"] < 0.11
    assert not list(frozen_2d.parent.glob(".*partial*"))


def test_replay_is_identical(frozen_2d: Path, tmp_path: Path) -> None:
    ok(capsule("replay", frozen_2d, "--out", tmp_path / "replay"))
    result = ok(capsule("diff", frozen_2d, tmp_path / "replay", "--json", "--require", "identical"))
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "identical"
    assert verdict["reasons"][0]["kind"] == "identical"
    assert all(t["equal"] and t["max_ulp"] == 0 for t in verdict["tensors"])


def test_replay_with_two_threads_names_the_thread_count(frozen_2d: Path, tmp_path: Path) -> None:
    ok(capsule("replay", frozen_2d, "--out", tmp_path / "r2", "--threads", "2"))
    record = json.loads((tmp_path / "r2" / "replay.json").read_text())
    assert record["controls"]["threads"] == 2
    assert record["controls"]["framework_switches"]["torch.get_num_threads"] == 2
    verdict = json.loads(capsule("diff", frozen_2d, tmp_path / "r2", "--json").stdout)
    messages = [r["message"] for r in verdict["reasons"]]
    assert "threads: 1 → 2" in messages
    assert messages[0] == "replay overrode controls.threads = 2"
    words = ok(capsule("diff", frozen_2d, tmp_path / "r2")).stdout
    assert "threads: 1 → 2" in words


def test_verify_passes_on_a_fresh_capsule(frozen_2d: Path) -> None:
    assert "5 artifacts" in ok(capsule("verify", frozen_2d)).stdout
    document = json.loads(ok(capsule("verify", frozen_2d, "--json")).stdout)
    assert len(document.pop("digest")) == 64  # the capsule digest (tests/test_trust.py)
    assert document == {"ok": True, "path": str(frozen_2d), "artifacts": 5}


def test_json_output_of_freeze_and_replay(tiny_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frozen = json.loads(
        ok(capsule("freeze", tiny_spec(), "--out", tmp_path / "c", "--json")).stdout
    )
    assert frozen["kind"] == "capsule" and frozen["name"] == "tiny"
    assert set(frozen["artifacts"]) == {"spec", "data", "order", "initial", "weights"}
    replayed = json.loads(
        ok(capsule("replay", tmp_path / "c", "--out", tmp_path / "r", "--json")).stdout
    )
    assert replayed["kind"] == "replay"
    assert replayed["final"] == frozen["final"]
    assert replayed["artifacts"]["weights"] == frozen["artifacts"]["weights"]


def test_tf32_is_applied_and_recorded_only_when_the_spec_asks(tiny_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = tiny_spec()
    spec.write_text(spec.read_text() + "\n[controls]\ntf32 = true\n")
    ok(capsule("freeze", spec, "--out", tmp_path / "c"))
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    assert manifest["spec"]["controls"]["tf32"] is True
    switches = manifest["controls"]["framework_switches"]
    assert switches["torch.backends.cuda.matmul.allow_tf32"] is True
    assert switches["torch.backends.cudnn.allow_tf32"] is True


@pytest.mark.parametrize(
    "relpath",
    [
        "capsule.toml",
        "artifacts/data.safetensors",
        "artifacts/order.safetensors",
        "artifacts/initial.safetensors",
        "artifacts/weights.safetensors",
        "manifest.json",
    ],
)
def test_one_flipped_byte_fails_verify(frozen_2d: Path, tmp_path: Path, relpath: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(frozen_2d, copy)
    target = copy / relpath
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = capsule("verify", copy)
    assert result.returncode == 3, result.stderr
    as_json = capsule("verify", copy, "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["ok"] is False
    assert relpath in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_replay_refuses_an_altered_capsule(frozen_2d: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(frozen_2d, copy)
    weights = copy / "artifacts/weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x80
    weights.write_bytes(bytes(data))
    result = capsule("replay", copy, "--out", tmp_path / "r")
    assert result.returncode == 3
    assert "weights" in result.stderr
    assert not (tmp_path / "r").exists()


def test_inspect_in_words_and_json(frozen_2d: Path) -> None:
    words = ok(capsule("inspect", frozen_2d)).stdout
    assert "paper-2d-torch" in words and "gaussian-2d" in words and "init=1000003" in words
    as_json = json.loads(ok(capsule("inspect", frozen_2d, "--json")).stdout)
    assert as_json["spec"]["train"]["lr"] == 0.0005


def test_schema_is_json_schema_of_the_manifest() -> None:
    schema = json.loads(ok(capsule("schema", "--kind", "capsule")).stdout)
    assert schema["title"] == "Manifest"
    assert {"spec", "controls", "fingerprint", "outcome", "artifacts"} <= set(schema["required"])
