"""Keras helpers that reach user code through the Run: `run.keras_fit`, which keeps
`fit(..., shuffle=True, validation_split=...)` while taking every epoch's rows in the recorded
order, and the callback that logs its epoch metrics.

Keras shuffles inside `fit` from its own RNG, so the order would follow the init seed and go
unrecorded; here the validation rows are split off as Keras splits them (the last fraction,
before any shuffle) and `fit` runs one epoch at a time on the training rows permuted by
`order(rows, epoch)`, with `shuffle=False`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

Order = Callable[[int, int], np.ndarray]
Log = Callable[[str, float, int | None], None]
NOT_ARRAYS = ("steps_per_epoch", "validation_steps", "validation_batch_size")


Step = Callable[[object, object | None, int], int]  # Run.step(loss, weights, every) → step


class CapsuleCallback(keras.callbacks.Callback):
    """`run.keras_callback(every)`: logs every epoch-end metric (`loss`, `accuracy`,
    `val_loss`, …) with step = epoch + 1 and, given `every`, checkpoints each batch's own
    loss (not the running mean `logs["loss"]` holds) every `every` global steps, with the
    weights' digest — the global step counted across epochs and `fit` calls."""

    def __init__(self, log: Log, step: Step | None = None, every: int | None = None) -> None:
        super().__init__()
        self._log, self._step, self._every = log, step, every
        self._seen = (0.0, 0.0)  # the loss tracker's (total, count) after the last batch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._seen = (0.0, 0.0)  # Keras resets its metrics at each epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._step is None or self._every is None:
            return
        self._step(self._batch_loss(logs or {}), self.model, self._every)

    def _batch_loss(self, logs: dict[str, Any]) -> np.float32:
        """This batch's loss: the change of Keras's loss tracker (a Mean over samples: its
        total grows by loss times batch rows, its count by the rows), as float32."""
        tracker = getattr(self.model, "_loss_tracker", None)
        if tracker is None:
            return np.float32(logs.get("loss", np.nan))
        total, count = float(tracker.total.numpy()), float(tracker.count.numpy())
        before_total, before_count = self._seen
        self._seen = (total, count)
        return np.float32((total - before_total) / max(count - before_count, 1.0))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in sorted((logs or {}).items()):
            if isinstance(value, int | float | np.floating) or np.ndim(value) == 0:
                self._log(name, float(value), epoch + 1)


def _rows(x: object) -> int:
    first = keras.tree.flatten(x)[0]
    return int(np.shape(first)[0])


def _take(structure: Any, index: np.ndarray) -> Any:
    return keras.tree.map_structure(
        lambda a: None if a is None else np.asarray(a)[index], structure
    )


def fit(
    order: Order, log: Log, model: Any, x: object, y: object, kwargs: dict[str, Any]
) -> keras.callbacks.History:
    """`model.fit(x, y, **kwargs)` in the recorded order; see the module's docstring."""
    kwargs = dict(kwargs)
    shuffle = kwargs.pop("shuffle", True)
    if shuffle not in (True, False):
        raise ValueError(f"shuffle={shuffle!r}: give True or False")
    for name in NOT_ARRAYS:
        if kwargs.get(name) is not None:
            raise ValueError(f"{name} is not supported (every epoch covers all rows once)")
    flat = keras.tree.flatten(x)
    if not flat or not all(hasattr(a, "shape") for a in flat):
        raise ValueError("x must be arrays or tensors (a dataset or generator has its own order)")
    split = float(kwargs.pop("validation_split", 0.0) or 0.0)
    weights = kwargs.pop("sample_weight", None)
    epochs = int(kwargs.pop("epochs", 1))
    first = int(kwargs.pop("initial_epoch", 0))
    callbacks = list(kwargs.pop("callbacks", None) or [])
    if not any(isinstance(c, CapsuleCallback) for c in callbacks):  # it logs the epochs
        callbacks.append(CapsuleCallback(log))
    rows = _rows(x)
    everything: Any = (x, y, weights)
    if split and kwargs.get("validation_data") is None:
        cut = math.floor(rows * (1.0 - split))
        if cut in (0, rows):
            raise ValueError(f"validation_split={split} leaves no rows on one side of {rows}")
        kwargs["validation_data"] = _take(everything, np.arange(cut, rows))
        everything, rows = _take(everything, np.arange(cut)), cut
    history: keras.callbacks.History | None = None
    merged: dict[str, list[Any]] = {}
    for epoch in range(first, epochs):
        index = order(rows, epoch) if shuffle else np.arange(rows)
        x_e, y_e, w_e = _take(everything, index)
        history = model.fit(
            x_e,
            y_e,
            sample_weight=w_e,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            callbacks=callbacks,
            **kwargs,
        )
        for name, values in history.history.items():
            merged.setdefault(name, []).extend(values)
    if history is None:
        raise ValueError(f"epochs={epochs} with initial_epoch={first}: no epoch to run")
    history.history = merged
    history.epoch = list(range(first, epochs))
    return history
