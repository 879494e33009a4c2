"""Library-upgrade audits (issue 7): real releases from PyPI swapped into a throwaway venv on the
host, replayed and diffed; conflicts and missing releases refused; bisection of a planted case.
(The docker variant is in test_image.py, beside the other image tests.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import capsule, fingerprint_version, ok, previous_release
from tests.helpers.projects import SPEC, tiny


def test_numpy_one_release_back_is_audited_end_to_end(frozen_2d: Path, tmp_path: Path) -> None:
    copy = tmp_path / "paper-2d-torch"
    shutil.copytree(frozen_2d, copy)
    current = fingerprint_version(copy, "numpy")
    older = previous_release("numpy", current)
    # python-dateutil is new to the capsule and needs six, which the version check adds
    audit = capsule(
        "audit", copy, "--with", f"numpy=={older}", "--with", "python-dateutil==2.9.0.post0",
        "--on", "host", "--json",
    )  # fmt: skip
    result = json.loads(ok(audit).stdout)
    assert result["changes"] == [
        {"name": "numpy", "old": current, "new": older},
        {"name": "python-dateutil", "old": None, "new": "2.9.0.post0"},
    ]
    assert result["reasons"][0] == f"audit: numpy {current} → {older}"
    assert result["reasons"][1] == "audit: python-dateutil absent → 2.9.0.post0"
    assert list(result["added"]) == ["six"]
    assert result["reasons"][2].startswith("audit: six ")
    # the replay really ran with the older numpy: its fingerprint says so
    assert f"numpy {current} → {older}" in " ".join(result["reasons"][1:])
    # PyTorch draws the initial weights and does the arithmetic; the data is checked against
    # its recorded digest and the order is recorded: the previous numpy changes no number
    assert result["verdict"] == "identical", result["reasons"]
    assert len(result["trials"]) == 1
    ok(capsule("verify", copy))
    described = ok(capsule("inspect", copy)).stdout
    changes = f"numpy {current} → {older}, python-dateutil absent → 2.9.0.post0"
    assert f"{changes} → {result['verdict']}" in described
    artifacts = json.loads((copy / "manifest.json").read_text())["artifacts"]
    assert [n for n in artifacts if n.startswith("audit/")]


def test_bad_versions_are_refused_before_anything_runs(frozen_2d: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(frozen_2d, copy)
    before = (copy / "manifest.json").read_bytes()
    current = fingerprint_version(copy, "numpy")
    cases = {
        "numpy": "--with numpy: expected PKG==VERSION",
        f"numpy=={current}": f"the capsule already has numpy {current}",
        "numpy==1.0.99": "--with numpy==1.0.99: cannot be had from the package index",
        # torch and pydantic need a newer typing-extensions: a real conflict, from metadata
        "typing-extensions==4.0.0": "the versions conflict: ",
    }
    for value, message in cases.items():
        result = capsule("audit", copy, "--with", value, "--on", "host")
        assert result.returncode == 2, (value, result.stderr)
        assert message in result.stderr, (value, result.stderr)
        if "conflict" in message:
            assert (
                "requires typing-extensions>=" in result.stderr and ", not 4.0.0" in result.stderr
            )
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("capsule: error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert (copy / "manifest.json").read_bytes() == before


# six decides the learning rate: one change (six) moves the result, the other (idna) does not.
PLANTED = """\
import six
lr = 0.1 if six.__version__ == "1.17.0" else 0.05
for group in optimizer.param_groups:
    group["lr"] = lr
"""


def test_bisect_names_the_one_change_that_moves_the_result(tmp_path: Path) -> None:
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "capsule.toml").write_text(
        SPEC.format(name="planted", framework="torch", include='["train.py"]').replace(
            "[code]\n", '[code]\nrequires = ["six", "idna"]\n'
        )
    )
    script = tiny().replace(
        "    step = 0\n", "    step = 0\n" + "".join(f"    {ln}\n" for ln in PLANTED.splitlines())
    )
    (folder / "train.py").write_text(script)
    ok(capsule("freeze", folder, "--out", tmp_path / "c"))
    six, idna = (fingerprint_version(tmp_path / "c", n) for n in ("six", "idna"))
    assert six == "1.17.0"
    old_six, old_idna = previous_release("six", six), previous_release("idna", idna)
    result = json.loads(
        ok(
            capsule(
                "audit", tmp_path / "c", "--on", "host", "--bisect", "--json",
                "--with", f"six=={old_six}", "--with", f"idna=={old_idna}",
            )
        ).stdout
    )  # fmt: skip
    assert result["verdict"] == "diverged", result["reasons"]
    assert result["bisect"] == ["six"]
    assert result["reasons"][0] == "bisect: the result moves with six"
    tried = {tuple(t["changes"]): t["verdict"] for t in result["trials"]}
    assert tried[()] == "identical"  # the control: no change reproduces the capsule here
    assert tried[("idna", "six")] == "diverged"
    assert tried.get(("idna",)) in (None, "identical")
    assert len(tried) <= 4  # all, none, and at most both halves
    strict = capsule(
        "audit", tmp_path / "c", "--on", "host", "--with", f"idna=={old_idna}",
        "--require", "identical",
    )  # fmt: skip
    assert strict.returncode == 0, strict.stderr  # idna alone: identical, meets the requirement
