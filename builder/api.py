"""The `Run` object a user's `main(run)` receives (a plain script asks `current_run()`):
seeds, device, recorded data order, metrics, the checksum trace, weights and data inputs.

On freeze it records; on replay it hands back what was recorded (the same permutations, the
capsule's copies of the data files). It never imports a framework itself: the capsule's
framework (builder.frameworks) turns its tensors and models into NumPy arrays.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from builder.records.run import InputRecord, MetricPoint, TracePoint
from builder.store import file_sha256

if TYPE_CHECKING:
    from builder.frameworks import Framework


class RunUsageError(Exception):
    """The user's code called the Run object in a way that cannot be recorded or replayed."""


@dataclass(frozen=True)
class Seeds:
    """`init` seeds the weights (every RNG is already seeded with it); `order` the data order."""

    init: int
    order: int


@dataclass(frozen=True)
class InputFile:
    """Where `run.data(path)` finds a file: on freeze the user's file (copied into the capsule),
    on replay the capsule's copy."""

    source: Path
    artifact: str


@dataclass
class Recorder:
    """What a run writes down; the freeze and the replay read it back after `main` returns."""

    orders: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, list[MetricPoint]] = field(default_factory=dict)
    trace: list[TracePoint] = field(default_factory=list)
    weights: dict[str, np.ndarray] | None = None
    inputs: dict[str, InputRecord] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # artifact path → file to store
    arguments: dict[str, object] | None = None  # the script's parsed argparse namespace
    weights_file: str | None = None  # the output file the weights were read from


class Run:
    """Handed to the user's `main(run)`.

    - `run.seeds.init`, `run.seeds.order`: the capsule's seeds; Python's `random`, NumPy's
      global RNG and the framework are already seeded with `seeds.init`.
    - `run.device`: "cpu" or "cuda"; `run.params`: the spec's [params] table.
    - `run.order(n, epoch)`: a permutation of range(n), recorded on freeze, returned on replay.
    - `run.sampler(dataset)`: PyTorch: a Sampler drawing `run.order` per epoch (for a DataLoader,
      in place of `shuffle=True`); `run.keras_fit(model, x, y, ...)`: Keras: `model.fit` with
      its shuffle and `validation_split` taken in the recorded order.
    - `run.log(name, value, step=None)`: a metric; `diff` compares every logged value.
    - `run.checkpoint(step, loss, weights=None)`: a point of the loss-checksum trace.
    - `run.step(loss, weights=None, every=1)`: one optimizer step: the global step counted,
      a checkpoint every `every` steps; `run.keras_callback(every)`: the same for Keras's fit,
      with its epoch metrics logged.
    - `run.save_weights(obj)`: the trained weights (a model of the capsule's framework, its
      state dict, or a dict of NumPy arrays); required.
    - `run.data(path)`: open a data file through the capsule (path of the copy to read).
    - `run.record_arrays(name, **arrays)`: record the digest of data the code loaded itself.
    - `run.outputs`: the folder the code runs in (its working directory); every file written
      there is stored in the capsule by digest. `run.save_file(path)` stores one written
      elsewhere.
    """

    def __init__(
        self,
        seeds: Seeds,
        device: str,
        params: Mapping[str, Any],
        recorded_orders: dict[str, np.ndarray] | None,
        input_files: Mapping[str, InputFile] | None,
        data_root: Path,
        framework: Framework | None,
        outputs: Path | None = None,
        on_metric: Callable[[str, float, int | None], None] = lambda name, value, step: None,
    ) -> None:
        self.seeds = seeds
        self.device = device
        self.params = dict(params)
        self._recorded_orders = recorded_orders
        self._input_files = input_files
        self._data_root = data_root
        self.outputs = outputs if outputs is not None else Path.cwd()
        self._on_metric = on_metric
        self._known_framework = framework  # turns its tensors and models into NumPy arrays
        self.record = Recorder()
        self.global_step = 0  # optimizer steps counted by run.step (and Keras's callback)

    @property
    def _framework(self) -> Framework:
        if self._known_framework is None:  # the stand-in: whichever framework the code imported
            from builder.frameworks import get_framework

            loaded = [n for n in ("torch", "tensorflow", "keras") if n in sys.modules]
            name = {"keras": "tensorflow"}.get(loaded[0], loaded[0]) if loaded else "numpy"
            self._known_framework = get_framework(name)
        return self._known_framework

    # ------------------------------------------------------------ data order

    def order(self, n: int, epoch: int) -> np.ndarray:
        """A permutation of range(n) for `epoch`, drawn from the order seed on freeze and read
        back from the capsule on replay (so a newer NumPy cannot change it)."""
        if not isinstance(n, int) or not isinstance(epoch, int) or n < 1 or epoch < 0:
            raise RunUsageError(f"run.order(n={n!r}, epoch={epoch!r}): need ints, n ≥ 1, epoch ≥ 0")
        key = f"n{n}.epoch{epoch}"
        if self._recorded_orders is None:
            rng = np.random.default_rng([self.seeds.order, epoch])
            perm = rng.permutation(n).astype(np.int64)
        elif key in self._recorded_orders:
            perm = self._recorded_orders[key]
        else:
            raise RunUsageError(
                f"run.order({n}, {epoch}) was not called when the capsule was frozen, so "
                "there is no recorded order to replay"
            )
        self.record.orders[key] = perm
        return perm.copy()

    def sampler(self, dataset: Sized) -> object:
        """PyTorch: a `torch.utils.data.Sampler` over `dataset` that yields `run.order(len,
        epoch)` — a drop-in for a DataLoader's `shuffle=True`. It counts epochs itself (each
        pass over the loader is the next one, from 0); `set_epoch(e)` sets the next one."""
        try:
            return self._framework.sampler(self.order, len(dataset))
        except ValueError as error:
            raise RunUsageError(f"run.sampler: {error}") from None

    def keras_fit(self, model: object, x: object, y: object = None, **kwargs: Any) -> object:
        """Keras: `model.fit(x, y, **kwargs)` with `shuffle` (default True) and
        `validation_split` kept: the rows are split as Keras splits them (the last fraction
        validates) and each epoch's training rows are taken in `run.order(rows, epoch)`.
        Epoch metrics are logged (`run.log`); returns the History."""
        try:
            return self._framework.fit(self.order, self.log, model, x, y, kwargs)
        except ValueError as error:
            raise RunUsageError(f"run.keras_fit: {error}") from None

    # ------------------------------------------------------------ metrics and trace

    def log(self, name: str, value: float, step: int | None = None) -> None:
        """Record a metric value (the last one logged is the final value `diff` reports)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RunUsageError(f"run.log({name!r}, …): value {value!r} is not a number") from None
        self.record.metrics.setdefault(str(name), []).append(MetricPoint(step=step, value=number))
        self._on_metric(str(name), number, step)

    def checkpoint(self, step: int, loss: object, weights: object | None = None) -> None:
        """A point of the loss-checksum trace: the loss's exact bits and, when `weights` is
        given, a digest of them; `diff` names the first checkpoint where two runs part."""
        loss_array = np.asarray(self._framework.as_array(loss))
        if loss_array.size != 1:
            raise RunUsageError(f"run.checkpoint({step}, loss): loss must be one number")
        if loss_array.dtype.kind != "f":
            loss_array = loss_array.astype(np.float64)
        value = float(loss_array.reshape(()))
        bits = loss_array.reshape(()).tobytes().hex()  # in the dtype the code computed it in
        digest = None
        if weights is not None:
            h = hashlib.sha256()
            for name, array in sorted(named_arrays(weights, self._framework).items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(array).tobytes())
            digest = h.hexdigest()[:16]
        self.record.trace.append(
            TracePoint(step=int(step), loss=value, loss_bits=bits, params_sha256=digest)
        )

    def step(self, loss: object, weights: object | None = None, every: int = 1) -> int:
        """One optimizer step done: counts the global step (from 1, across epochs) and, every
        `every` steps, checkpoints this batch's `loss` (and the digest of `weights` when
        given). Returns the global step, for `run.log(..., step=run.global_step)`."""
        if not isinstance(every, int) or every < 1:
            raise RunUsageError(f"run.step(..., every={every!r}): need an int ≥ 1")
        self.global_step += 1
        if self.global_step % every == 0:
            self.checkpoint(self.global_step, loss, weights)
        return self.global_step

    def keras_callback(self, every: int | None = None) -> object:
        """Keras: a callback for `model.fit` (or `run.keras_fit`) that logs every epoch metric
        and, given `every`, checkpoints each batch's own loss (not Keras's running mean) with
        the weights' digest every `every` global steps."""
        try:
            return self._framework.callback(self.log, self.step, every)
        except ValueError as error:
            raise RunUsageError(f"run.keras_callback: {error}") from None

    def save_weights(self, obj: object) -> None:
        """The trained weights, stored as safetensors (a second call replaces the first)."""
        self.record.weights = named_arrays(obj, self._framework)

    # ------------------------------------------------------------ data

    def data(self, path: str | Path) -> Path:
        """The file to read for `path` (relative to the spec's directory, or absolute). On
        freeze it is stored in the capsule by digest; on replay the capsule's copy is used."""
        key = str(path)
        if self._input_files is not None:
            if key not in self._input_files:
                raise RunUsageError(
                    f"run.data({key!r}) was not called when the capsule was frozen, so the "
                    "capsule holds no copy of it"
                )
            found = self._input_files[key]
            source, artifact = found.source, found.artifact
        else:
            source = Path(path) if Path(path).is_absolute() else self._data_root / path
            if not source.is_file():
                raise RunUsageError(f"run.data({key!r}): no such file {source}")
            artifact = f"inputs/{file_sha256(source)[:12]}-{source.name}"
        digest = file_sha256(source)
        self.record.inputs[key] = InputRecord(kind="file", artifact=artifact, sha256=digest)
        self.record.files[artifact] = source
        return source

    def save_file(self, path: str | Path) -> Path:
        """Store a file the code wrote outside `run.outputs` with the capsule's outputs (a copy
        under `run.outputs`, by its name); returns the copy's path."""
        source = Path(path)
        if not source.is_file():
            raise RunUsageError(f"run.save_file({str(path)!r}): no such file")
        target = self.outputs / source.name
        if source.resolve() != target.resolve():
            target.write_bytes(source.read_bytes())
        return target

    def record_arrays(self, name: str, **arrays: object) -> str:
        """Record the digest of data the code loaded itself (from a library, say); returns it.
        `diff` reports it when a replay saw different data."""
        if not arrays:
            raise RunUsageError(f"run.record_arrays({name!r}): give at least one array")
        h = hashlib.sha256()
        detail = []
        for key in sorted(arrays):
            array = np.ascontiguousarray(self._framework.as_array(arrays[key]))
            h.update(f"{key}:{array.dtype}:{array.shape}".encode())
            h.update(array.tobytes())
            detail.append(f"{key} {array.dtype}{list(array.shape)}")
        digest = h.hexdigest()
        self.record.inputs[str(name)] = InputRecord(
            kind="arrays", sha256=digest, detail=", ".join(detail)
        )
        return digest


# ---------------------------------------------------------------- current_run


_ACTIVE: list[Run] = []


@contextmanager
def active(run: Run) -> Iterator[Run]:
    """Make `run` what `current_run()` returns while the user's code runs."""
    _ACTIVE.append(run)
    try:
        yield run
    finally:
        _ACTIVE.remove(run)


def current_run() -> Run:
    """The Run of the freeze or replay running this code; outside Capsule (`python main.py`)
    a stand-in that records nothing: orders drawn from order seed 0, data files read where
    they lie, metrics and weights kept in memory only. So one script runs both ways."""
    if _ACTIVE:
        return _ACTIVE[-1]
    return Run(
        seeds=Seeds(init=0, order=0),
        device="cpu",
        params={},
        recorded_orders=None,
        input_files=None,
        data_root=Path.cwd(),
        framework=None,
    )


def named_arrays(obj: object, framework: Framework) -> dict[str, np.ndarray]:
    """Weights by name from a model of the framework, or from a mapping of name → tensor or
    array (a state dict, a dict of NumPy arrays)."""
    try:
        named = framework.named_weights(obj)
    except ValueError as error:
        raise RunUsageError(f"run.save_weights: {error}") from None
    if named is not None:
        obj = named
    elif not isinstance(obj, Mapping):
        raise RunUsageError(
            f"run.save_weights: got {type(obj).__name__}; give a model of the capsule's "
            f"framework ({framework.name}), its state dict, or a dict of NumPy arrays"
        )
    if not obj:
        raise RunUsageError("run.save_weights: no weights given (the dict is empty)")
    arrays = {}
    for name, value in obj.items():
        array = np.ascontiguousarray(framework.as_array(value)).copy()
        if array.dtype == object:
            raise RunUsageError(f"run.save_weights: {name!r} is not a numeric array")
        arrays[str(name)] = array
    return arrays
