"""The two public examples of issue 15, frozen as they are: PyTorch's official MNIST example
and Keras's "Simple MNIST convnet", re-typed on scikit-learn's digits (capsules/mnist-*).
Each keeps its argparse, DataLoader shuffle or fit(shuffle, validation_split) and differs from
its upstream re-type in at most three lines; each replays identically and an order sweep of
it varies its metric."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from tests.conftest import CAPSULES, capsule, ok
from tests.helpers.examples import EXAMPLES, small_copy


def changed_lines(folder: Path) -> tuple[list[str], list[str]]:
    """(lines main.py adds or changes, lines of upstream.py it removes or changes)."""
    upstream = (folder / "upstream.py").read_text().splitlines()
    main = (folder / "main.py").read_text().splitlines()
    diff = list(difflib.unified_diff(upstream, main, lineterm="", n=0))[2:]
    added = [line[1:] for line in diff if line.startswith("+")]
    removed = [line[1:] for line in diff if line.startswith("-")]
    return added, removed


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_differs_from_upstream_in_at_most_three_lines(name: str) -> None:
    folder = CAPSULES / name
    added, removed = changed_lines(folder)
    assert 0 < len(added) <= 3 and len(removed) <= len(added), (added, removed)
    readme = (folder / "README.md").read_text()
    for line in added + removed:  # the README shows the very diff
        assert line.strip() in readme, line


def test_the_pytorch_example_freezes_replays_identically_and_its_order_sweep_varies(
    tmp_path: Path,
) -> None:
    folder = small_copy("mnist-example-torch", tmp_path)
    cap = tmp_path / "cap"
    ok(capsule("freeze", folder, "--out", cap))
    manifest = json.loads((cap / "manifest.json").read_text())
    # the defaults the spec never copied into [params] are recorded
    assert manifest["arguments"]["lr"] == 1.0 and manifest["arguments"]["gamma"] == 0.7
    assert manifest["arguments"]["batch_size"] == 64 and manifest["arguments"]["epochs"] == 2
    assert "outputs/mnist_cnn.pt" in manifest["artifacts"]  # its file, kept in the capsule
    # its own torch.manual_seed(args.seed) cancels the init seed: said, at its line
    lines = (folder / "main.py").read_text().splitlines()
    assert [(f["rule"], lines[f["line"] - 1].strip()) for f in manifest["audit"]] == [
        ("reseeded", "torch.manual_seed(args.seed)")
    ]
    assert not (folder / "mnist_cnn.pt").exists() and not Path("mnist_cnn.pt").exists()
    ok(capsule("replay", cap, "--out", tmp_path / "replay"))
    result = json.loads(capsule("diff", cap, tmp_path / "replay", "--json").stdout)
    assert result["verdict"] == "identical", result["reasons"]
    sweep = json.loads(ok(capsule("sweep", cap, "--orders", "1,2", "--json")).stdout)
    stats = {s["metric"]: s for s in sweep["stats"]}
    assert stats["test_loss"]["std"] > 0


def test_the_keras_example_freezes_replays_identically_and_its_order_sweep_varies(
    tmp_path: Path,
) -> None:
    folder = small_copy("mnist-convnet-keras", tmp_path)
    cap = tmp_path / "cap"
    ok(capsule("freeze", folder, "--out", cap))
    manifest = json.loads((cap / "manifest.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(manifest["outcome"]["metrics"])
    assert manifest["audit"] == []
    ok(capsule("replay", cap, "--out", tmp_path / "replay"))
    result = json.loads(capsule("diff", cap, tmp_path / "replay", "--json").stdout)
    assert result["verdict"] == "identical", result["reasons"]
    sweep = json.loads(ok(capsule("sweep", cap, "--orders", "1,2", "--json")).stdout)
    stats = {s["metric"]: s for s in sweep["stats"]}
    assert stats["val_loss"]["std"] > 0
