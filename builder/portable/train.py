"""The built-in MLP trained with portable numerics (`[controls] numerics = "portable"`), on any
backend's `Ops`, for one run or for many at once.

Runs are stacked along a leading axis: run r's weights are `W[r]`, its batch `x[order_r[…]]`.
Every operation is elementwise or a sum along a trailing axis, so a run's bits do not depend
on how many runs stand beside it — a batched sweep (`capsule sweep --batched`) stores each run
exactly as its solo replay. The initial weights are Capsule's shared ones (NumPy, from the init
seed), so PyTorch and TensorFlow start from the same bits; weights come back in the reference
layout (PyTorch's names, [out, in]).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from builder.data import Dataset
from builder.frameworks import EpochCallback, Trained
from builder.frameworks.initial_weights import layer_names, shared_initial_weights
from builder.portable.algorithm import (
    AdamState,
    adam_start,
    adam_update,
    mean_rows,
    mlp_forward,
    mlp_gradients,
    softmax_parts,
)
from builder.portable.ops import Ops, T
from builder.records.run import EpochMetrics, TracePoint
from builder.records.spec import Spec

EVAL_ELEMENTS = 1 << 23  # products held at once while evaluating (32 MiB of float32)


def _stack(per_run: list[dict[str, np.ndarray]], names: list[str]) -> list[np.ndarray]:
    """[W, b, W, b, …] with kernels [runs, in, out] and biases [runs, out]."""
    flat = []
    for name in names:
        flat.append(np.stack([w[f"{name}.weight"].T for w in per_run]))
        flat.append(np.stack([w[f"{name}.bias"] for w in per_run]))
    return flat


def _unstack(o: Ops, params: list[T], names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each run's weights on the host, in the reference layout."""
    arrays = [o.numpy(p) for p in params]
    runs = arrays[0].shape[0]
    out: list[dict[str, np.ndarray]] = []
    for r in range(runs):
        weights = {}
        for i, name in enumerate(names):
            weights[f"{name}.weight"] = np.ascontiguousarray(arrays[2 * i][r].T)
            weights[f"{name}.bias"] = np.ascontiguousarray(arrays[2 * i + 1][r])
        out.append(weights)
    return out


def _split(o: Ops, flat: T, shapes: list[tuple[int, ...]]) -> list[T]:
    """The tensors [runs, *shape] of a flat parameter vector [runs, P], in order."""
    runs, offset, out = o.shape(flat)[0], 0, []
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(o.reshape(flat[:, offset : offset + size], (runs, *shape)))
        offset += size
    return out


def _join(o: Ops, tensors: list[T]) -> T:
    """[runs, …] tensors as one flat vector [runs, P]: Adam, elementwise, updates every
    parameter in one pass (a fifth of the operations of one pass per tensor)."""
    return o.concat_last([o.reshape(t, (o.shape(t)[0], -1)) for t in tensors])


def params_digest(weights: dict[str, np.ndarray]) -> str:
    """A checkpoint's weights digest: PyTorch's state-dict order and layout, in any framework."""
    h = hashlib.sha256()
    for array in weights.values():
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def evaluate(
    o: Ops, spec: Spec, dataset: Dataset, params: list[T], epoch: int
) -> list[EpochMetrics]:
    with o.scope():
        return _evaluate(o, spec, dataset, params, epoch)


def _evaluate(
    o: Ops, spec: Spec, dataset: Dataset, params: list[T], epoch: int
) -> list[EpochMetrics]:
    """Each run's loss on the training set and error rate on every split. Rows go through in
    chunks (a row's logits do not depend on the others); the loss is the pairwise mean of all
    rows' losses; a prediction is the first largest logit (NumPy's argmax of the same bits)."""
    layers = list(zip(params[::2], params[1::2], strict=True))
    runs = o.shape(params[0])[0]
    widest = max(o.shape(w)[-2] * o.shape(w)[-1] for w in params[::2])
    chunk = max(1, EVAL_ELEMENTS // (runs * widest))
    errors: dict[str, list[float | None]] = {"dev": [None] * runs, "eval": [None] * runs}
    losses = [0.0] * runs
    for split, (x, y) in dataset.arrays.items():
        wrong = np.zeros(runs, np.int64)
        row_losses = []
        for start in range(0, x.shape[0], chunk):
            xs, ys = o.tensor(x[start : start + chunk]), y[start : start + chunk]
            logits, _ = mlp_forward(o, layers, xs, spec.model.activation)
            wrong += (np.argmax(o.numpy(logits), axis=-1) != ys[None, :]).sum(axis=1)
            if split == "train":
                onehot = o.one_hot(o.tensor(ys), dataset.classes)
                row_losses.append(softmax_parts(o, logits, onehot)[0])
        errors[split] = [int(w) / x.shape[0] for w in wrong]
        if split == "train":
            rows = o.tensor(np.concatenate([o.numpy(r) for r in row_losses], axis=-1))
            losses = [float(v) for v in o.numpy(mean_rows(o, rows))]
    return [
        EpochMetrics(
            epoch=epoch,
            train_loss=losses[r],
            train_error=errors["train"][r],  # type: ignore[arg-type]
            dev_error=errors["dev"][r],
            eval_error=errors["eval"][r],
        )
        for r in range(runs)
    ]


def train(
    o: Ops,
    spec: Spec,
    dataset: Dataset,
    inits: list[int],
    orders: Sequence[Iterable[np.ndarray]],
    on_epoch: Callable[[int, list[EpochMetrics]], None] | None = None,
) -> list[Trained]:
    """Train one run per (init seed, order) pair, all at once; `on_epoch(epoch, metrics)` after
    each epoch. Everything but the recorded order and the initial weights is the spec's."""
    with o.scope():
        return _train(o, spec, dataset, inits, orders, on_epoch)


def _train(
    o: Ops,
    spec: Spec,
    dataset: Dataset,
    inits: list[int],
    orders: Sequence[Iterable[np.ndarray]],
    on_epoch: Callable[[int, list[EpochMetrics]], None] | None,
) -> list[Trained]:
    t = spec.train
    names = layer_names(spec.model)
    initial = [
        shared_initial_weights(spec.model, dataset.features, dataset.classes, seed, "float32")
        for seed in inits
    ]
    stacked = _stack(initial, names)
    shapes = [a.shape[1:] for a in stacked]
    params = _join(o, [o.tensor(a) for a in stacked])
    x_train, y_train = dataset.arrays["train"]
    x = o.tensor(x_train)
    onehot = o.one_hot(o.tensor(y_train), dataset.classes)
    state = AdamState()
    adam_start(o, [params], state)
    activation, betas = spec.model.activation, (t.betas[0], t.betas[1])

    def one_step(
        params: T, m: T, v: T, scalars: list[T], x: T, onehot: T, rows: T, with_loss: bool
    ) -> tuple[T, T, T, T]:
        """One Adam step, state in and out (so a backend can run it as one program); the loss
        only where asked (a checkpoint's), as the gradient does not need it."""
        tensors = _split(o, params, shapes)
        layers = list(zip(tensors[::2], tensors[1::2], strict=True))
        xb, yb = o.take_rows(x, rows), o.take_rows(onehot, rows)
        loss, _, grads = mlp_gradients(o, layers, xb, yb, activation, with_loss)
        flat = _join(o, [g for pair in grads for g in pair])
        (params,), (m,), (v,) = adam_update(
            o, [params], [flat], ([m], [v]), scalars[0], scalars[1], betas, t.eps,
            t.weight_decay,
        )  # fmt: skip
        return (o.const(0.0) if loss is None else loss), params, m, v

    steps = {
        with_loss: o.compile(
            lambda p, m, v, s, x, y, rows, with_loss=with_loss: one_step(
                p, m, v, s, x, y, rows, with_loss
            )
        )
        for with_loss in (False, True)
    }
    m, v = state.m[0], state.v[0]
    traces: list[list[TracePoint]] = [[] for _ in inits]
    history: list[list[EpochMetrics]] = [[] for _ in inits]
    iterators: list[Iterator[np.ndarray]] = [iter(order) for order in orders]
    step = 0
    started = time.perf_counter()
    for epoch in range(1, t.epochs + 1):
        permutation = o.tensor(np.stack([next(i) for i in iterators]))  # [runs, rows]
        for start in range(0, x_train.shape[0], t.batch_size):
            rows = permutation[:, start : start + t.batch_size]
            scalars = [o.tensor(value) for value in state.advance(t.lr, betas)]
            step += 1
            checkpoint = step % t.checkpoint_every == 0
            loss, params, m, v = steps[checkpoint](params, m, v, scalars, x, onehot, rows)
            if checkpoint:
                for r, (value, weights) in enumerate(
                    zip(o.numpy(loss), _unstack(o, _split(o, params, shapes), names), strict=True)
                ):
                    traces[r].append(
                        TracePoint(
                            step=step,
                            loss=float(value),
                            loss_bits=np.float32(value).tobytes().hex(),
                            params_sha256=params_digest(weights),
                        )
                    )
        metrics = evaluate(o, spec, dataset, _split(o, params, shapes), epoch)
        for r, row in enumerate(metrics):
            history[r].append(row)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    seconds = (time.perf_counter() - started) / len(inits)
    return [
        Trained(
            epochs=history[r],
            trace=traces[r],
            initial=initial[r],
            weights=weights,
            steps=step,
            train_seconds=seconds,
        )
        for r, weights in enumerate(_unstack(o, _split(o, params, shapes), names))
    ]


Layout = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def train_one(
    o: Ops,
    layout: Layout,
    spec: Spec,
    dataset: Dataset,
    order: Iterable[np.ndarray],
    on_epoch: EpochCallback,
) -> Trained:
    """A framework's `train` under portable numerics: one run, its weights in the framework's
    `layout`."""
    (run,) = train(o, spec, dataset, [spec.seeds.init], [order], lambda _, m: on_epoch(m[0]))
    return Trained(
        epochs=run.epochs,
        trace=run.trace,
        initial=layout(run.initial),
        weights=layout(run.weights),
        steps=run.steps,
        train_seconds=run.train_seconds,
    )


def evaluate_one(
    o: Ops, spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray]
) -> EpochMetrics:
    """A framework's `evaluate` under portable numerics (weights in the reference layout)."""
    params = [o.tensor(a) for a in _stack([weights], layer_names(spec.model))]
    return evaluate(o, spec, dataset, params, spec.train.epochs)[0]
