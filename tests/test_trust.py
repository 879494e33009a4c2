"""Trust: the capsule digest, signatures (model-signing, offline keys) and the forged-baseline
cases of issue 13 — a metric edited in manifest.json with its sidecar recomputed must fail
`verify --digest` and `verify --key` (exit 3), and `diff` must name a replay made from the
capsule before the edit."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import CAPSULES, assert_refused, capsule, ok


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "numpy-softmax"
    ok(capsule("freeze", CAPSULES / "numpy-softmax", "--out", out))
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two elliptic-curve key pairs (P-256, as `openssl ecparam` makes them)."""
    folder = tmp_path_factory.mktemp("keys")
    made: dict[str, Path] = {}
    for who in ("author", "other"):
        private, public = folder / f"{who}.pem", folder / f"{who}.pub"
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", private],
            check=True,
        )
        subprocess.run(
            ["openssl", "ec", "-in", private, "-pubout", "-out", public],
            check=True,
            capture_output=True,
        )
        made[who], made[f"{who}.pub"] = private, public
    return made


def copy_of(frozen: Path, into: Path) -> Path:
    target = into / "copy"
    shutil.copytree(frozen, target)
    return target


def forge_metric(directory: Path) -> None:
    """What a forger does: better final test error in manifest.json, sidecar recomputed."""
    manifest = directory / "manifest.json"
    data = json.loads(manifest.read_text())
    data["outcome"]["metrics"]["test_error"][-1]["value"] = 0.01
    text = (json.dumps(data, indent=2) + "\n").encode()
    manifest.write_bytes(text)
    (directory / "manifest.sha256").write_text(
        f"{hashlib.sha256(text).hexdigest()}  manifest.json\n"
    )


def digest_of(directory: Path) -> str:
    document = json.loads(ok(capsule("verify", directory, "--json")).stdout)
    return str(document["digest"])


def test_freeze_verify_inspect_and_export_agree_on_the_digest(frozen: Path, tmp_path: Path) -> None:
    digest = digest_of(frozen)
    assert len(digest) == 64
    assert json.loads(ok(capsule("inspect", frozen, "--json")).stdout)["digest"] == digest
    assert f"digest     sha256:{digest}" in ok(capsule("inspect", frozen)).stdout
    assert f"digest: sha256:{digest}" in ok(capsule("verify", frozen)).stdout
    exported = json.loads(ok(capsule("export", frozen, "--out", tmp_path, "--json")).stdout)
    assert exported["digest"] == digest
    assert Path(exported["path"]).name == f"numpy-softmax-{digest[:12]}.capsule.tar"
    ok(capsule("verify", frozen, "--digest", f"sha256:{digest}"))


def test_the_digest_is_the_sorted_list_of_file_digests(frozen: Path) -> None:
    """Checkable without Capsule: sha256 of the sorted `sha256  path` lines (the manifest
    without its image records, then every artifact)."""
    data = json.loads((frozen / "manifest.json").read_text())
    assert data.get("images", {}) == {}
    lines = {"manifest.json": hashlib.sha256((frozen / "manifest.json").read_bytes()).hexdigest()}
    lines |= {ref["path"]: ref["sha256"] for ref in data["artifacts"].values()}
    text = "".join(f"{sha}  {path}\n" for path, sha in sorted(lines.items()))
    assert hashlib.sha256(text.encode()).hexdigest() == digest_of(frozen)


def test_a_signed_capsule_verifies_with_its_key_and_not_with_another(
    frozen: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    signed = copy_of(frozen, tmp_path)
    result = json.loads(ok(capsule("sign", signed, "--key", keys["author"], "--json")).stdout)
    assert result["digest"] == digest_of(frozen)
    assert (signed / "capsule.sig").is_file()
    verified = json.loads(
        ok(capsule("verify", signed, "--key", keys["author.pub"], "--json")).stdout
    )
    assert verified["ok"] and verified["signed"]
    other = capsule("verify", signed, "--key", keys["other.pub"])
    assert other.returncode == 3, other.stderr
    assert "does not verify" in other.stderr and "Traceback" not in other.stderr
    unsigned = capsule("verify", frozen, "--key", keys["author.pub"])
    assert unsigned.returncode == 3 and "not signed" in unsigned.stderr


def test_a_forged_metric_with_a_recomputed_sidecar_is_detected(
    frozen: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    published = digest_of(frozen)
    signed = copy_of(frozen, tmp_path)
    ok(capsule("sign", signed, "--key", keys["author"]))
    forge_metric(signed)
    for check in (
        ("verify", signed),  # the stored signature is over another digest
        ("verify", signed, "--digest", published),
        ("verify", signed, "--key", keys["author.pub"]),
    ):
        result = capsule(*check)
        assert result.returncode == 3, (check, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "changed since it was signed" in capsule("verify", signed).stderr
    # unsigned, the forgery passes a plain verify; the published digest still catches it
    (signed / "capsule.sig").unlink()
    ok(capsule("verify", signed))
    caught = capsule("verify", signed, "--digest", published)
    assert caught.returncode == 3 and published in caught.stderr


def test_diff_names_a_replay_made_before_the_baseline_was_changed(
    frozen: Path, tmp_path: Path
) -> None:
    edited = copy_of(frozen, tmp_path)
    replay = tmp_path / "replay"
    ok(capsule("replay", edited, "--out", replay))
    clean = json.loads(capsule("diff", edited, replay, "--json").stdout)
    assert "capsule" not in [r["kind"] for r in clean["reasons"]]
    forge_metric(edited)
    forged = json.loads(capsule("diff", edited, replay, "--json").stdout)
    (reason,) = [r for r in forged["reasons"] if r["kind"] == "capsule"]
    assert "changed since" in reason["message"]
    assert "the capsule changed since" in capsule("diff", edited, replay).stdout


def test_export_carries_the_signature_and_import_checks_it(
    frozen: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    signed = copy_of(frozen, tmp_path)
    ok(capsule("sign", signed, "--key", keys["author"]))
    exported = tmp_path / "signed.capsule.tar"
    ok(capsule("export", signed, "--out", exported))
    with tarfile.open(exported) as tar:
        assert "capsule/capsule.sig" in tar.getnames()
    ok(capsule("import", exported, "--out", tmp_path / "imported"))
    ok(capsule("verify", tmp_path / "imported", "--key", keys["author.pub"]))
    # a signature over another capsule's digest is refused on import
    forge_metric(signed)
    forged = tmp_path / "forged.capsule.tar"
    ok(capsule("export", signed, "--out", forged))
    result = capsule("import", forged, "--out", tmp_path / "refused")
    assert result.returncode == 3, result.stderr
    assert not (tmp_path / "refused").exists()


def test_bad_digest_and_key_arguments_exit_2(frozen: Path, tmp_path: Path) -> None:
    assert_refused(capsule("verify", frozen, "--digest", "xyz"), "--digest", "64 hex")
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello\n")
    assert_refused(capsule("sign", copy_of(frozen, tmp_path), "--key", not_a_key), "key.pem")
