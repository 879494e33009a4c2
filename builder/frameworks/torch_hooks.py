"""PyTorch helpers that reach user code through the Run: the recorded order as a DataLoader
sampler (`run.sampler`), so a script keeps its DataLoader and only swaps `shuffle=True`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler

Order = Callable[[int, int], np.ndarray]


class RecordedSampler(Sampler[int]):
    """Yields `order(n, epoch)`: on freeze drawn from the order seed and recorded, on replay
    read back from the capsule. Each pass over it is the next epoch (from 0), so the code
    does not count epochs for it; `set_epoch(e)` (DistributedSampler's method) sets the next
    pass's epoch for code that already calls it."""

    def __init__(self, order: Order, n: int) -> None:
        self._order = order
        self._n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        permutation = self._order(self._n, self.epoch)
        self.epoch += 1
        return iter(permutation.tolist())

    def __len__(self) -> int:
        return self._n
