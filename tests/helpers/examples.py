"""The two public examples re-typed on scikit-learn's digits (capsules/mnist-*): their names and
a copy cut to two epochs, shared by the host tests and the image tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import CAPSULES

EXAMPLES = ["mnist-example-torch", "mnist-convnet-keras"]


def small_copy(name: str, into: Path) -> Path:
    """The example with fewer epochs, so a test takes seconds (the script is otherwise as
    shipped: Keras's has its epochs in the code, PyTorch's on its command line)."""
    copy = into / name
    shutil.copytree(CAPSULES / name, copy)
    main = copy / "main.py"
    main.write_text(main.read_text().replace("epochs = 15", "epochs = 2"))
    spec = copy / "capsule.toml"
    spec.write_text(spec.read_text().replace("epochs = 3", "epochs = 2"))
    return copy
