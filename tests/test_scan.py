"""The code scan (static nondeterminism rules, issue 5): each rule on a real snippet, and its
negatives."""

from __future__ import annotations

from pathlib import Path

from builder.scan import scan_files, scan_source

RISKY = """\
import random, time
import numpy as np
import torch
from torch.utils.data import DataLoader
import keras

init = keras.initializers.GlorotUniform()
torch.backends.cudnn.benchmark = True
loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=4)
noise = np.random.randn(3)
random.seed(time.time())
keras.utils.set_random_seed(1)
late = keras.initializers.HeNormal()
"""

SAFE = """\
import numpy as np
import torch
from torch.utils.data import DataLoader
import keras

keras.utils.set_random_seed(1)
rng = np.random.default_rng(7)
g = torch.Generator().manual_seed(3)
loader = DataLoader(dataset, shuffle=True, num_workers=4, generator=g)
single = DataLoader(dataset, shuffle=True, num_workers=0)
seeded = keras.initializers.GlorotUniform(seed=5)
torch.backends.cudnn.benchmark = False
"""


def test_each_rule_fires_with_its_line() -> None:
    found = {(f.rule, f.line) for f in scan_source(RISKY, "train.py")}
    assert found == {
        ("keras-initializer-unseeded", 7),
        ("cudnn-benchmark", 8),
        ("dataloader-workers-unseeded", 9),
        ("legacy-numpy-random", 10),
        ("seed-from-clock", 11),
    }


def test_seeded_code_has_no_findings() -> None:
    assert scan_source(SAFE, "train.py") == []


def test_unparsable_file_is_a_finding_not_a_crash() -> None:
    (finding,) = scan_source("def broken(:\n", "bad.py")
    assert finding.rule == "syntax-error" and finding.line == 1


def test_scan_files_reports_paths_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("import numpy as np\nnp.random.seed(0)\n")
    (tmp_path / "notes.txt").write_text("np.random.seed(0)\n")
    findings = scan_files(tmp_path, [tmp_path / "models/net.py", tmp_path / "notes.txt"])
    assert [(f.file, f.line, f.rule) for f in findings] == [
        ("models/net.py", 2, "legacy-numpy-random")
    ]
