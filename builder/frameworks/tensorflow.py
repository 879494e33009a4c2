"""TensorFlow/Keras backend: the paper's MLP trained by a whole-epoch `tf.function`.

One compiled function runs every step of an epoch (batches gathered from the recorded order,
Keras's own loss and Adam), which is bitwise equal to `model.fit` on the same inputs and many
times faster than it. Checkpoints of the checksum trace are collected inside the function.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from builder.frameworks.native_logs import quiet_native_logs

quiet_native_logs()  # before TensorFlow's import logs anything

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from builder.data import Dataset  # noqa: E402
from builder.frameworks import EpochCallback, LogFn, OrderFn, StepFn, Trained  # noqa: E402
from builder.frameworks.initial_weights import layer_names, shared_initial_weights  # noqa: E402
from builder.frameworks.layout import to_kernel_layout  # noqa: E402
from builder.records.run import EpochMetrics, GpuInfo, TracePoint  # noqa: E402
from builder.records.spec import Spec, SpecBase  # noqa: E402

Update = Callable[[list[tf.Tensor]], None]


def build_model(spec: Spec, inputs: int, classes: int) -> keras.Sequential:
    """Dense layers named like PyTorch's modules (hidden.N, output), so weights line up."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=(inputs,))]
    for i, width in enumerate(spec.model.hidden):
        layers.append(
            keras.layers.Dense(width, activation=spec.model.activation, name=f"hidden.{i}")
        )
    layers.append(keras.layers.Dense(classes, name="output"))
    return keras.Sequential(layers)


def named_weights(model: keras.Sequential) -> dict[str, np.ndarray]:
    """`X.kernel` ([in, out]) and `X.bias` per layer, as NumPy copies."""
    out = {}
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        out[f"{layer.name}.kernel"] = np.ascontiguousarray(kernel)
        out[f"{layer.name}.bias"] = np.ascontiguousarray(bias)
    return out


def keras_adam(spec: Spec) -> keras.optimizers.Adam:
    t = spec.train
    return keras.optimizers.Adam(
        learning_rate=t.lr, beta_1=t.betas[0], beta_2=t.betas[1], epsilon=t.eps
    )


def torch_adam_update(spec: Spec, variables: list[tf.Variable]) -> Update:
    """PyTorch's Adam formula in TensorFlow (`adam_variant = "torch"`): bias corrections in
    float64 scalars, eps added after dividing sqrt(v) by sqrt(1 - beta2^t)."""
    t = spec.train
    beta_1, beta_2 = t.betas
    dtype = variables[0].dtype
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    first = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
    second = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def update(grads: list[tf.Tensor]) -> None:
        step.assign_add(1)
        n = tf.cast(step, tf.float64)
        step_size = tf.cast(t.lr / (1.0 - beta_1**n), dtype)
        correction = tf.cast(tf.sqrt(1.0 - beta_2**n), dtype)
        for var, grad, m, v in zip(variables, grads, first, second, strict=True):
            m.assign(m + (grad - m) * (1.0 - beta_1))
            v.assign(v * beta_2 + grad * grad * (1.0 - beta_2))
            var.assign_sub(step_size * m / (tf.sqrt(v) / correction + t.eps))

    return update


def _adam_variant(spec: Spec) -> str:
    """Whose Adam runs: the spec's choice; Keras's by default; PyTorch's under portable numerics."""
    if spec.controls.numerics == "portable":
        return "torch"
    return spec.train.adam_variant or "keras"


def _adam_as_used(spec: Spec) -> dict[str, str | int | float | bool | None]:
    """Adam's hyperparameters as the optimizer object holds them (Keras's) or as the formula
    uses them (the PyTorch variant, and portable numerics, whose Adam is PyTorch's)."""
    if _adam_variant(spec) == "torch":
        t = spec.train
        return {
            "adam.lr": t.lr,
            "adam.beta_1": t.betas[0],
            "adam.beta_2": t.betas[1],
            "adam.eps": t.eps,
        }
    probe = keras_adam(spec)
    return {
        "adam.lr": float(probe.learning_rate),
        "adam.beta_1": float(probe.beta_1),
        "adam.beta_2": float(probe.beta_2),
        "adam.eps": float(probe.epsilon),
    }


def epoch_function(
    model: keras.Sequential, update: Update, x: tf.Tensor, y: tf.Tensor, batch: int, every: int
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A compiled epoch: every batch in the given order, returning the checkpoints' batch losses
    and flattened weights (steps counted from `start`)."""
    variables = model.trainable_variables
    rows = int(x.shape[0])
    batches = -(-rows // batch)
    size = sum(int(np.prod(v.shape)) for v in variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def run(order: tf.Tensor, start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        losses = tf.TensorArray(x.dtype, size=0, dynamic_size=True, element_shape=[])
        params = tf.TensorArray(x.dtype, size=0, dynamic_size=True, element_shape=[size])
        for b in tf.range(batches):
            idx = order[b * batch : tf.minimum((b + 1) * batch, rows)]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            update(tape.gradient(loss, variables))
            if (start + tf.cast(b, tf.int64) + 1) % every == 0:
                losses = losses.write(losses.size(), loss)
                flat = tf.concat([tf.reshape(v, [-1]) for v in variables], axis=0)
                params = params.write(params.size(), flat)
        return losses.stack(), params.stack()

    return run


class TensorflowFramework:
    name = "tensorflow"

    def version(self) -> str:
        return str(tf.__version__)

    def gpu_facts(self) -> tuple[list[GpuInfo], str | None, str | None]:
        build = tf.sysconfig.get_build_info()
        gpus = []
        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            capability = details.get("compute_capability")
            gpus.append(
                GpuInfo(
                    name=str(details.get("device_name", device.name)),
                    driver=None,
                    capability=".".join(map(str, capability)) if capability else None,
                    memory_mib=None,
                )
            )
        cuda, cudnn = build.get("cuda_version"), build.get("cudnn_version")
        return gpus, str(cuda) if cuda else None, str(cudnn) if cudnn else None

    def nondeterministic_op(self, warning: str) -> str | None:
        return None  # no warn-only mode: see refused_nondeterminism

    def refused_nondeterminism(self, error: BaseException) -> bool:
        """Under `enable_op_determinism` an op with no deterministic kernel raises an error
        saying "... determinism is enabled"."""
        return "determinism is enabled" in str(error)

    def as_array(self, value: object) -> np.ndarray:
        if hasattr(value, "numpy"):  # tf.Tensor, tf.Variable, a Keras variable
            return np.asarray(value.numpy())
        return np.asarray(value)

    def named_weights(self, obj: object) -> dict[str, object] | None:
        if not isinstance(obj, keras.layers.Layer):  # a keras.Model is a Layer
            return None
        named: dict[str, object] = {}
        for variable in obj.weights:
            name = str(getattr(variable, "path", None) or variable.name)
            if name in named:
                raise ValueError(f"two weights are named {name!r}")
            named[name] = variable
        return named

    def seeding_functions(self) -> list[tuple[object, str, str]]:
        return [
            (tf.random, "set_seed", "tf.random.set_seed"),
            (keras.utils, "set_random_seed", "keras.utils.set_random_seed"),
        ]

    def weights_file(self, path: Path) -> dict[str, object] | None:
        return None  # a Keras file needs its model to be read: call run.save_weights(model)

    def sampler(self, order: OrderFn, n: int) -> object:
        raise ValueError(
            "a PyTorch DataLoader sampler; with Keras use run.keras_fit(model, x, y, ...)"
        )

    def callback(self, log: LogFn, step: StepFn, every: int | None) -> object:
        from builder.frameworks.keras_hooks import CapsuleCallback

        return CapsuleCallback(log, step, every)

    def fit(
        self,
        order: OrderFn,
        log: LogFn,
        model: object,
        x: object,
        y: object,
        kwargs: dict[str, Any],
    ) -> object:
        from builder.frameworks.keras_hooks import fit

        return fit(order, log, model, x, y, kwargs)

    def apply_base_controls(
        self, spec: SpecBase, device: str, threads: int, warn_only: bool
    ) -> dict[str, str | int | float | bool | None]:
        """TensorFlow has no warn-only determinism: an op it cannot run deterministically
        raises, and the audit of user code reports that error."""
        # thread pools can be sized only before TensorFlow's runtime starts
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        keras.utils.set_random_seed(spec.seeds.init)
        if spec.controls.deterministic:
            tf.config.experimental.enable_op_determinism()
        tf.config.experimental.enable_tensor_float_32_execution(spec.controls.tf32)
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        return {
            "keras.utils.set_random_seed": spec.seeds.init,
            "tf.config.experimental.enable_op_determinism": spec.controls.deterministic,
            "tf.config.experimental.tensor_float_32_execution_enabled": (
                tf.config.experimental.tensor_float_32_execution_enabled()
            ),
            "tf.config.threading.intra_op_parallelism_threads": intra,
            "tf.config.threading.inter_op_parallelism_threads": inter,
            "interop_threads": inter,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "keras": keras.__version__,
        }

    def apply_controls(
        self, spec: Spec, device: str, threads: int
    ) -> dict[str, str | int | float | bool | None]:
        switches = self.apply_base_controls(spec, device, threads, warn_only=False)
        keras.backend.set_floatx(spec.train.dtype)
        return {
            **_adam_as_used(spec),
            **switches,
            "keras.backend.floatx": keras.backend.floatx(),
            "tf.function": (
                "whole epoch"
                if spec.controls.numerics == "native"
                else "per step, graph unrewritten"
            ),
            "adam.variant": _adam_variant(spec),
            "init": spec.model.init,
        }

    def portable(self, device: str) -> tuple[Any, Callable[[dict], dict]]:
        from builder.frameworks.tensorflow_portable import TensorFlowOps

        return TensorFlowOps(device), to_kernel_layout

    def evaluate(
        self, spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray], device: str
    ) -> EpochMetrics:
        if spec.controls.numerics == "portable":  # placed on `device` by the Ops
            from builder.frameworks.layout import to_reference_layout
            from builder.portable.train import evaluate_one

            reference = to_reference_layout(weights)
            return evaluate_one(self.portable(device)[0], spec, dataset, reference)
        keras.backend.set_floatx(spec.train.dtype)
        return _evaluate_weights(spec, dataset, weights, device)

    def train(
        self,
        spec: Spec,
        dataset: Dataset,
        order: Iterable[np.ndarray],
        device: str,
        on_epoch: EpochCallback,
    ) -> Trained:
        if spec.controls.numerics == "portable":
            from builder.portable.train import train_one

            return train_one(*self.portable(device), spec, dataset, order, on_epoch)
        with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
            return self._train(spec, dataset, order, on_epoch)

    def _train(
        self, spec: Spec, dataset: Dataset, order: Iterable[np.ndarray], on_epoch: EpochCallback
    ) -> Trained:
        dtype = spec.train.dtype
        splits = {
            s: (tf.constant(x.astype(dtype)), tf.constant(y))
            for s, (x, y) in dataset.arrays.items()
        }
        model = build_model(spec, dataset.features, dataset.classes)
        if spec.model.init == "shared":
            shared = to_kernel_layout(
                shared_initial_weights(
                    spec.model, dataset.features, dataset.classes, spec.seeds.init, dtype
                )
            )
            for name in layer_names(spec.model):
                model.get_layer(name).set_weights(
                    [shared[f"{name}.kernel"], shared[f"{name}.bias"]]
                )
        initial = named_weights(model)
        variables = model.trainable_variables
        update: Update
        if (spec.train.adam_variant or "keras") == "keras":
            optimizer = keras_adam(spec)
            optimizer.build(variables)

            def apply_keras(grads: list[tf.Tensor]) -> None:
                optimizer.apply_gradients(zip(grads, variables, strict=True))

            update = apply_keras
        else:
            update = torch_adam_update(spec, variables)
        x_train, y_train = splits["train"]
        every = spec.train.checkpoint_every
        run_epoch = epoch_function(model, update, x_train, y_train, spec.train.batch_size, every)
        batches = -(-int(x_train.shape[0]) // spec.train.batch_size)
        trace: list[TracePoint] = []
        epochs: list[EpochMetrics] = []
        step = 0
        started = time.perf_counter()
        for epoch, permutation in zip(range(spec.train.epochs), order, strict=True):
            losses, params = run_epoch(tf.constant(permutation), tf.constant(step, tf.int64))
            for k, (loss, flat) in enumerate(zip(losses.numpy(), params.numpy(), strict=True)):
                trace.append(
                    TracePoint(
                        step=(step // every + k + 1) * every,
                        loss=float(loss),
                        loss_bits=np.asarray(loss).tobytes().hex(),
                        params_sha256=hashlib.sha256(
                            np.ascontiguousarray(flat).tobytes()
                        ).hexdigest()[:16],
                    )
                )
            step += batches
            metrics = _evaluate(model, splits, epoch + 1)
            epochs.append(metrics)
            on_epoch(metrics)
        seconds = time.perf_counter() - started
        return Trained(
            epochs=epochs,
            trace=trace,
            initial=initial,
            weights=named_weights(model),
            steps=step,
            train_seconds=seconds,
        )


def _evaluate_weights(
    spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray], device: str
) -> EpochMetrics:
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        dtype = spec.train.dtype
        splits = {
            s: (tf.constant(x.astype(dtype)), tf.constant(y))
            for s, (x, y) in dataset.arrays.items()
        }
        model = build_model(spec, dataset.features, dataset.classes)
        for layer in model.layers:
            layer.set_weights([weights[f"{layer.name}.kernel"], weights[f"{layer.name}.bias"]])
        return _evaluate(model, splits, spec.train.epochs)


def fit_reference(
    spec: Spec,
    dataset: Dataset,
    order: Iterable[np.ndarray],
    on_epoch: Callable[[], None] = lambda: None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same training through Keras `fit` (one call per epoch on the rows in the recorded
    order, no shuffling): the reference the compiled loop is checked and timed against.
    Returns the initial and the final weights."""
    keras.utils.set_random_seed(spec.seeds.init)
    model = build_model(spec, dataset.features, dataset.classes)
    start = named_weights(model)
    model.compile(
        optimizer=keras_adam(spec),
        jit_compile=False,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = dataset.arrays["train"]
    for _, permutation in zip(range(spec.train.epochs), order, strict=True):
        model.fit(
            x[permutation],
            y[permutation],
            batch_size=spec.train.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        on_epoch()
    return start, named_weights(model)


def _evaluate(
    model: keras.Sequential, splits: dict[str, tuple[tf.Tensor, tf.Tensor]], epoch: int
) -> EpochMetrics:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    errors: dict[str, float | None] = {"dev": None, "eval": None}
    train_loss = 0.0
    for split, (x, y) in splits.items():
        logits = model(x, training=False)
        wrong = tf.math.count_nonzero(tf.argmax(logits, axis=1) != tf.cast(y, tf.int64))
        errors[split] = int(wrong) / int(y.shape[0])
        if split == "train":
            train_loss = float(loss_fn(y, logits))
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_error=errors["train"],  # type: ignore[arg-type]
        dev_error=errors["dev"],
        eval_error=errors["eval"],
    )


FRAMEWORK = TensorflowFramework()
