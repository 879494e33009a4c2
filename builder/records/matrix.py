"""The cross-device matrix (`OUT/matrix.json`): trained on by evaluated on, and whether each
training's weights are the capsule's."""

from typing import Literal

from builder.model_base import Real, Strict
from builder.records.enums import Device, Where


class Config(Strict):
    label: str
    on: Where
    device: Device
    threads: int | None


class Cell(Strict):
    trained_on: str
    evaluated_on: str
    train_error: Real
    dev_error: Real | None
    eval_error: Real | None
    train_loss: Real


class Row(Strict):
    trained_on: str
    weights_identical_to_baseline: bool
    max_abs_to_baseline: Real


class MatrixRecord(Strict):
    """`kind` and `schema_version` came after the first matrices: a matrix.json without them
    loads as version 1 (see `builder.records.record_kind`)."""

    kind: Literal["matrix"] = "matrix"
    schema_version: Literal[1] = 1
    capsule: str
    configs: list[Config]
    rows: list[Row]
    cells: list[Cell]

    def cell(self, trained: str, evaluated: str) -> Cell:
        return next(
            c for c in self.cells if c.trained_on == trained and c.evaluated_on == evaluated
        )
