"""Datasets: the paper's three built-in sets, the user's CSV/NPZ files, digests, recorded order.

The built-in sets are synthetic and generated from a documented recipe (docs/datasets.md) and a
fixed seed; a capsule stores the generated arrays themselves, so a replay never regenerates them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.errors import BadInput
from builder.records.manifest import BuiltinRecipe, DataRecord, SourceFile, SplitInfo
from builder.records.spec import SPLITS, DataSpec
from builder.store import file_sha256

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """Features (float32) and integer labels per split; dev may be absent (eeg-26d has none)."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: int

    @property
    def features(self) -> int:
        return int(self.arrays["train"][0].shape[1])

    def tensors(self) -> dict[str, np.ndarray]:
        """Flat name → array map, the layout of the capsule's data artifact."""
        flat: dict[str, np.ndarray] = {}
        for split, (x, y) in self.arrays.items():
            flat[f"x_{split}"] = x
            flat[f"y_{split}"] = y
        return flat

    @classmethod
    def from_tensors(cls, flat: dict[str, np.ndarray], classes: int) -> Dataset:
        arrays = {s: (flat[f"x_{s}"], flat[f"y_{s}"]) for s in SPLITS if f"x_{s}" in flat}
        return cls(arrays=arrays, classes=classes)


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 over dtype, shape and C-order bytes: independent of any file format."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- built-in recipes


def _ar1_cov(dim: int, rho: float, scales: np.ndarray) -> np.ndarray:
    """EEG-like covariance: neighbouring channels correlate, decaying with distance."""
    idx = np.arange(dim)
    corr = rho ** np.abs(idx[:, None] - idx[None, :])
    return corr * np.outer(scales, scales)


def _two_gaussians(
    rng: np.random.Generator,
    sizes: dict[str, int],
    means: tuple[np.ndarray, np.ndarray],
    covs: tuple[np.ndarray, np.ndarray],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Balanced two-class Gaussian data, rows shuffled within each split."""
    out = {}
    for split, n in sizes.items():
        half = n // 2
        counts = (half, n - half)
        x = np.concatenate(
            [rng.multivariate_normal(means[c], covs[c], size=counts[c]) for c in (0, 1)]
        )
        y = np.concatenate([np.full(counts[c], c, dtype=np.int64) for c in (0, 1)])
        perm = rng.permutation(n)
        out[split] = (x[perm].astype(np.float32), y[perm])
    return out


def _gaussian_2d(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    means = (np.array([0.0, 0.0]), np.array([2.1, 1.95]))
    covs = (np.array([[1.0, 0.3], [0.3, 1.0]]), np.array([[1.2, -0.2], [-0.2, 0.9]]))
    return _two_gaussians(rng, {"train": 10_000, "dev": 2_000, "eval": 2_000}, means, covs)


def _gaussian_5d(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    scales = np.array([1.0, 1.3, 0.8, 1.1, 0.9])
    cov = _ar1_cov(5, 0.7, scales)
    shift = np.array([0.22, -0.15, 0.18, 0.07, -0.11])
    means = (np.zeros(5), shift)
    covs = (cov, _ar1_cov(5, 0.65, scales * 1.05))
    return _two_gaussians(rng, {"train": 100_000, "dev": 10_000, "eval": 10_000}, means, covs)


def _eeg_26d(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stand-in for TUH seizure features: 26 correlated, heavy-tailed, barely separable features."""
    dim = 26
    scales = np.exp(rng.normal(0.0, 0.3, size=dim))
    covs = (_ar1_cov(dim, 0.8, scales), _ar1_cov(dim, 0.8, scales * 1.01))
    means = (np.zeros(dim), 0.13 * scales)
    out = _two_gaussians(rng, {"train": 18_936, "eval": 1_154}, means, covs)
    for split, (x, y) in out.items():
        # Heavy tails, as in band-power features: scale each row by a chi-square mixing variable.
        w = np.sqrt(5.0 / rng.chisquare(5.0, size=(x.shape[0], 1)))
        out[split] = ((x * w).astype(np.float32), y)
    return out


BUILTINS = {
    "gaussian-2d": (_gaussian_2d, 20191031),
    "gaussian-5d": (_gaussian_5d, 20191105),
    "eeg-26d": (_eeg_26d, 20191126),
}


def generate_builtin(name: str) -> Dataset:
    recipe, seed = BUILTINS[name]
    return Dataset(arrays=recipe(np.random.Generator(np.random.PCG64(seed))), classes=2)


# ---------------------------------------------------------------- user files


def _read_csv(path: Path, field: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        try:  # one header row is allowed
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, skiprows=1)
        except ValueError as error:
            raise BadInput(f"{path}: data.{field}: not a numeric CSV: {error}") from None
    if table.shape[1] < 2:
        raise BadInput(f"{path}: data.{field}: needs a label column and at least one feature")
    return table[:, 1:], table[:, 0]


def _read_npz(path: Path, field: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise BadInput(f"{path}: data.{field}: NPZ has no array '{missing[0]}'")
            return np.asarray(npz["x"]), np.asarray(npz["y"])
    except (ValueError, OSError) as error:
        raise BadInput(f"{path}: data.{field}: not a readable NPZ: {error}") from None


def _labels(y: np.ndarray, path: Path, field: str) -> np.ndarray:
    if y.ndim != 1 or not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or np.any(y < 0):
        raise BadInput(f"{path}: data.{field}: labels must be non-negative integers")
    return y.astype(np.int64)


def load_files(spec: DataSpec, base: Path, source: str) -> tuple[Dataset, dict[str, SourceFile]]:
    """Read the user's split files, checking each against the digest the spec declares.

    Problems with a file's presence or digest name the spec (`source`) and its field; problems
    with a file's contents name the data file.
    """
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sources: dict[str, SourceFile] = {}
    for split in SPLITS:
        given = getattr(spec, split)
        if given is None:
            continue
        path = (base / given).resolve()
        if not path.is_file():
            raise BadInput(f"{source}: data.{split}: data file not found: {path}")
        digest = file_sha256(path)
        expected = spec.sha256.get(split)  # type: ignore[call-overload]
        if expected is not None and expected != digest:
            raise BadInput(
                f"{source}: data.sha256.{split}: digest mismatch for {path} "
                f"(spec says {expected[:12]}…, file is {digest[:12]}…)"
            )
        reader = _read_npz if path.suffix.lower() == ".npz" else _read_csv
        x, y = reader(path, split)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise BadInput(f"{path}: data.{split}: x must be 2-D with one label per row")
        arrays[split] = (x.astype(np.float32), _labels(y, path, split))
        sources[split] = SourceFile(path=given, sha256=digest)
    widths = {s: x.shape[1] for s, (x, _) in arrays.items()}
    if len(set(widths.values())) != 1:
        raise BadInput(f"{source}: data: splits have different feature counts {widths}")
    classes = int(max(int(y.max()) for _, y in arrays.values()) + 1)
    return Dataset(arrays=arrays, classes=max(classes, 2)), sources


def load_dataset(spec: DataSpec, base: Path, source: str) -> tuple[Dataset, DataRecord]:
    """The dataset a spec names, and the record of it that goes into the manifest."""
    if spec.builtin is not None:
        dataset = generate_builtin(spec.builtin)
        recipe = BuiltinRecipe(
            name=spec.builtin, recipe_version=RECIPE_VERSION, seed=BUILTINS[spec.builtin][1]
        )
        return dataset, describe(dataset, builtin=recipe)
    dataset, sources = load_files(spec, base, source)
    return dataset, describe(dataset, files=sources)


def describe(
    dataset: Dataset,
    builtin: BuiltinRecipe | None = None,
    files: dict[str, SourceFile] | None = None,
) -> DataRecord:
    splits = {
        s: SplitInfo(rows=int(x.shape[0]), features=int(x.shape[1]), sha256=array_digest(x, y))
        for s, (x, y) in dataset.arrays.items()
    }
    return DataRecord(
        source="builtin" if builtin else "files",
        builtin=builtin,
        files=files or {},  # type: ignore[arg-type]
        classes=dataset.classes,
        splits=splits,  # type: ignore[arg-type]
    )


class Order:
    """The training rows' order: one permutation per epoch, handed out an epoch at a time (as
    int64 arrays), so no more than one epoch's permutation is ever held. Iterable again."""

    def __init__(self, rows: int, epochs: int) -> None:
        self.rows = rows
        self.epochs = epochs

    def __len__(self) -> int:
        return self.epochs

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError


class DrawnOrder(Order):
    """The order an order seed draws: the epochs' permutations in turn from one PCG64 stream
    (the same numbers as drawing them all at once)."""

    def __init__(self, rows: int, epochs: int, seed: int) -> None:
        super().__init__(rows, epochs)
        self.seed = seed

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.Generator(np.random.PCG64(self.seed))
        for _ in range(self.epochs):
            yield rng.permutation(self.rows).astype(np.int64, copy=False)


class StoredOrder(Order):
    """A recorded order read an epoch at a time from its safetensors file (`order`: int64
    [epochs, rows]). The caller has checked the file's digest; its layout is checked here."""

    def __init__(self, path: Path, rows: int, epochs: int) -> None:
        super().__init__(rows, epochs)
        self.path = path
        self.offset = _order_offset(path, rows, epochs)

    def __iter__(self) -> Iterator[np.ndarray]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for _ in range(self.epochs):
                perm = np.fromfile(f, dtype="<i8", count=self.rows)
                if perm.shape[0] != self.rows:
                    raise BadInput(f"{self.path}: the recorded order ends early")
                yield perm.astype(np.int64, copy=False)


ORDER_KEY = "order"
ORDER_LIMIT = 2**30  # row indices in a recorded order (8 GiB): epochs times training rows


def _order_header(rows: int, epochs: int) -> bytes:
    """The safetensors header of an order, byte for byte as `safetensors.numpy.save` writes it
    (JSON without spaces, padded with spaces to a multiple of 8, after its length)."""
    info = {"dtype": "I64", "shape": [epochs, rows], "data_offsets": [0, epochs * rows * 8]}
    text = json.dumps({ORDER_KEY: info}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _order_offset(path: Path, rows: int, epochs: int) -> int:
    """Where the rows of a stored order start, after checking it holds `order` int64
    [epochs, rows] and nothing else (BadInput naming the file if not)."""
    problem = f"{path}: not the recorded order of {epochs} epochs of {rows} rows"
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 1 << 20:
                raise BadInput(f"{problem} (a safetensors header of {length} bytes)")
            header = json.loads(f.read(length))
        size = path.stat().st_size
    except (OSError, struct.error, ValueError, RecursionError) as error:
        raise BadInput(f"{problem} (not a safetensors file: {error})") from None
    info = header.get(ORDER_KEY) if isinstance(header, dict) else None
    expected = {"dtype": "I64", "shape": [epochs, rows], "data_offsets": [0, epochs * rows * 8]}
    if info != expected or set(header) - {ORDER_KEY, "__metadata__"}:
        raise BadInput(f"{problem} (it holds {str(header)[:120]})")
    if size != 8 + length + epochs * rows * 8:
        raise BadInput(f"{problem} (the file is {size} bytes)")
    return 8 + length


def write_order(order: Order, target: Path) -> tuple[str, int]:
    """Write an order as safetensors an epoch at a time (the same bytes as saving the whole
    array at once); returns the file's sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as f:
        header = memoryview(_order_header(order.rows, order.epochs))
        epochs = (np.ascontiguousarray(perm, "<i8").data.cast("B") for perm in order)
        for data in itertools.chain([header], epochs):
            f.write(data)
            digest.update(data)
            size += data.nbytes
    return digest.hexdigest(), size


def make_order(rows: int, epochs: int, seed: int) -> np.ndarray:
    """The whole order as one array [epochs, rows] (for small orders: tests, benchmarks)."""
    return np.stack(list(DrawnOrder(rows, epochs, seed)))
