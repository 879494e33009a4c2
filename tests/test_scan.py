"""The code scan (static nondeterminism rules, issue 5): each rule on a real snippet, and its
negatives."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.scan import scan_files, scan_source
from tests.conftest import capsule
from tests.helpers.projects import project, tiny

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
kwargs = {"batch_size": 64}
kwargs.update({"num_workers": 1, "shuffle": True})
hidden = DataLoader(dataset, **kwargs)
"""

# Capsule seeds every RNG before the code runs: unseeded Keras initializers and DataLoader
# workers are deterministic under it (no finding); a DataLoader on run.sampler is recorded.
SAFE = """\
import numpy as np
import torch
from torch.utils.data import DataLoader
import keras

init = keras.initializers.GlorotUniform()
rng = np.random.default_rng(7)
loader = DataLoader(dataset, sampler=run.sampler(dataset), num_workers=4)
single = DataLoader(dataset, num_workers=0)
kwargs = {"batch_size": 64, "shuffle": False}
plain = DataLoader(dataset, **kwargs)
seeded = keras.initializers.GlorotUniform(seed=5)
torch.backends.cudnn.benchmark = False
"""


def test_each_rule_fires_with_its_line() -> None:
    found = {(f.rule, f.line) for f in scan_source(RISKY, "train.py")}
    assert found == {
        ("cudnn-benchmark", 8),
        ("dataloader-shuffle", 9),
        ("legacy-numpy-random", 10),
        ("seed-from-clock", 11),
        ("dataloader-shuffle", 16),  # shuffle=True passed through a **kwargs dict
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


# ---------------------------------------------------------------- seed-from-clock, by meaning

# (code whose last line seeds from a per-run value, the seeding call and the source it names)
CLOCK_SEEDED = [
    ("import torch, time\ntorch.manual_seed(int(time.time()))", "torch.manual_seed", "time.time"),
    ("import random, time\nrandom.seed(int(time.time()))", "random.seed", "time.time"),
    ("import random\nfrom time import time as now\nrandom.seed(now())", "random.seed", "time.time"),
    ("import numpy as np, time\nnp.random.seed(time.time_ns() % 2**32)", "numpy.random.seed",
     "time.time_ns"),
    ("import numpy as np\nimport time as t\n"
     "rng = np.random.default_rng(abs(hash(t.perf_counter())))", "numpy.random.default_rng",
     "time.perf_counter"),
    ("import numpy as np, os\nrs = np.random.RandomState(os.getpid())",
     "numpy.random.RandomState", "os.getpid"),
    ("from numpy.random import Generator, PCG64\nimport time\n"
     "g = Generator(PCG64(round(time.monotonic() * 1000)))", "numpy.random.Generator",
     "time.monotonic"),
    ("import torch as th\nfrom datetime import datetime as dt\n"
     "th.cuda.manual_seed_all(int(dt.now().timestamp()))", "torch.cuda.manual_seed_all",
     "datetime.datetime.now"),
    ("import torch, uuid\ng = torch.Generator().manual_seed(uuid.uuid4().int % 2**63)",
     "torch.Generator().manual_seed", "uuid.uuid4"),
    ("import tensorflow as tf, time\ntf.random.set_seed(int(f'{time.time():.0f}'))",
     "tensorflow.random.set_seed", "time.time"),
    ("import tensorflow as tf, secrets\ntf.keras.utils.set_random_seed(secrets.randbits(32))",
     "tensorflow.keras.utils.set_random_seed", "secrets.randbits"),
    ("import keras, os\nkeras.utils.set_random_seed(int.from_bytes(os.urandom(4), 'little'))",
     "keras.utils.set_random_seed", "os.urandom"),
    ("from datetime import date\nimport random\nrandom.seed(date.today().toordinal())",
     "random.seed", "datetime.date.today"),
    ("import datetime, random\nrandom.seed(datetime.datetime.utcnow().microsecond)",
     "random.seed", "datetime.datetime.utcnow"),
    ("import random, time\ns = int(time.time())\nrandom.seed(s)", "random.seed",
     "time.time() (through `s`)"),
    ("import torch, time\ndef main(run):\n    t0 = time.process_time()\n"
     "    seed = int(t0 * 1e6) + 1\n    torch.cuda.manual_seed(seed)", "torch.cuda.manual_seed",
     "time.process_time() (through `seed`)"),
    ("import random, time\nSEED = time.time_ns()\ndef main():\n    random.seed(SEED)",
     "random.seed", "(through `SEED`)"),
    ("import random, time\nif fresh:\n    s = time.time()\nelse:\n    s = 0\nrandom.seed(s)",
     "random.seed", "(through `s`)"),
]  # fmt: skip

# Seeded from a fixed or configured value, or a clock used for timing only: no finding.
NOT_CLOCK_SEEDED = [
    "import random\nrandom.seed(42)",
    "import torch\ntorch.manual_seed(args.seed)",
    "import numpy as np\nrng = np.random.default_rng(cfg['seed'])",
    "import random, time\nrandom.seed(0)\nstart = time.time()\ntrain()\n"
    "elapsed = time.time() - start\nprint(f'{elapsed:.1f}s', os.getpid())",
    "import random, time\ns = time.time()\ns = 7\nrandom.seed(s)",
    "import random, time\nseed = time.time()\ndef main(seed):\n    random.seed(seed)",
    "from datetime import time\nimport random\nrandom.seed(time(12).hour)",
]


@pytest.mark.parametrize(("code", "seeder", "source"), CLOCK_SEEDED)
def test_a_seed_from_the_clock_is_found_however_it_is_spelled(
    code: str, seeder: str, source: str
) -> None:
    found = [f for f in scan_source(code, "train.py") if f.rule == "seed-from-clock"]
    assert [f.line for f in found] == [len(code.splitlines())], found
    assert f"{seeder}() seeded from " in found[0].message and source in found[0].message


@pytest.mark.parametrize("code", NOT_CLOCK_SEEDED)
def test_fixed_seeds_and_timing_are_not_seeds_from_the_clock(code: str) -> None:
    assert [f for f in scan_source(code, "train.py") if f.rule == "seed-from-clock"] == []


def test_strict_refuses_to_freeze_a_torch_seed_from_the_clock(tmp_path: Path) -> None:
    script = tiny(extra="torch.manual_seed(int(time.time()))")
    line = 1 + script.splitlines().index("    torch.manual_seed(int(time.time()))")
    folder = project(tmp_path, script)
    result = capsule("freeze", folder, "--out", tmp_path / "cap", "--strict")
    assert result.returncode == 2, result.stderr
    assert f"train.py:{line}: [seed-from-clock] torch.manual_seed() seeded from time.time()" in (
        result.stderr
    )
    assert not (tmp_path / "cap").exists()
