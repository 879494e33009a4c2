"""PyTorch backend: the paper's MLP trained with Adam under recorded controls.

The loop is plain eager PyTorch; the capsule's extra work (a weight digest every
`checkpoint_every` steps, full-set metrics once per epoch) stays off the per-step path.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from builder.data import Dataset
from builder.frameworks import EpochCallback, LogFn, OrderFn, StepFn, Trained
from builder.frameworks.initial_weights import shared_initial_weights
from builder.records.run import EpochMetrics, GpuInfo, TracePoint
from builder.records.spec import ModelSpec, Spec, SpecBase

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
ALERT = " does not have a deterministic implementation"


class MLP(nn.Module):
    """Hidden layers named hidden.N, the classifier named output: stable weight names."""

    def __init__(self, inputs: int, classes: int, spec: ModelSpec) -> None:
        super().__init__()
        widths = [inputs, *spec.hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.activation = ACTIVATIONS[spec.activation]()
        self.output = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.output(x)


def _float_bits(value: float, dtype: torch.dtype) -> str:
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    return np.array(value, dtype=np_dtype).tobytes().hex()


def _params_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class KerasAdam(torch.optim.Optimizer):
    """Keras 3's Adam update in PyTorch (`adam_variant = "keras"`): eps is added to sqrt(v)
    before bias correction, which is folded into the learning rate instead."""

    def __init__(self, params: object, lr: float, betas: tuple[float, float], eps: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})  # type: ignore[arg-type]

    @torch.no_grad()
    def step(self, closure: object = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            (beta_1, beta_2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = torch.tensor(float(state["step"]), dtype=p.dtype)
                b1, b2 = torch.tensor(beta_1, dtype=p.dtype), torch.tensor(beta_2, dtype=p.dtype)
                alpha = lr * torch.sqrt(1 - b2**t) / (1 - b1**t)
                m, v, g = state["m"], state["v"], p.grad
                m.add_((g - m) * (1 - b1))
                v.add_((g * g - v) * (1 - b2))
                p.sub_((m * alpha) / (torch.sqrt(v) + eps))


def _optimizer(model: nn.Module, spec: Spec) -> torch.optim.Optimizer:
    impl = spec.controls.adam_impl
    t = spec.train
    if (t.adam_variant or "torch") == "keras":
        return KerasAdam(model.parameters(), lr=t.lr, betas=(t.betas[0], t.betas[1]), eps=t.eps)
    return torch.optim.Adam(
        model.parameters(),
        lr=t.lr,
        betas=(t.betas[0], t.betas[1]),
        eps=t.eps,
        weight_decay=t.weight_decay,
        foreach=impl == "foreach",
        fused=impl == "fused",
    )


class TorchFramework:
    name = "torch"

    def version(self) -> str:
        return torch.__version__

    def gpu_facts(self) -> tuple[list[GpuInfo], str | None, str | None]:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        gpus = []
        if torch.cuda.is_available():
            driver = _nvidia_driver()
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append(
                    GpuInfo(
                        name=props.name,
                        driver=driver,
                        capability=f"{props.major}.{props.minor}",
                        memory_mib=props.total_memory // 2**20,
                    )
                )
        return gpus, torch.version.cuda, str(cudnn) if cudnn else None

    def portable(self, device: str) -> tuple[Any, Callable[[dict], dict]]:
        from builder.frameworks.torch_portable import TorchOps

        return TorchOps(device), dict  # the reference layout is PyTorch's

    def nondeterministic_op(self, warning: str) -> str | None:
        """`use_deterministic_algorithms(True, warn_only=True)` warns "OP does not have a
        deterministic implementation, but you set ..." once per call of such an op."""
        if ALERT not in warning:
            return None
        return warning.split(ALERT)[0].strip()

    def refused_nondeterminism(self, error: BaseException) -> bool:
        return False  # user code runs warn-only: alerts arrive as warnings

    def as_array(self, value: object) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return np.asarray(value)

    def named_weights(self, obj: object) -> dict[str, object] | None:
        if isinstance(obj, nn.Module):
            return dict(obj.state_dict())
        return None  # a state_dict is a plain mapping of tensors

    def seeding_functions(self) -> list[tuple[object, str, str]]:
        return [
            (torch, "manual_seed", "torch.manual_seed"),
            (torch.random, "manual_seed", "torch.random.manual_seed"),
            (torch.cuda, "manual_seed", "torch.cuda.manual_seed"),
            (torch.cuda, "manual_seed_all", "torch.cuda.manual_seed_all"),
        ]

    def weights_file(self, path: Path) -> dict[str, object] | None:
        if path.suffix not in (".pt", ".pth"):
            return None
        try:  # weights_only: the restricted unpickler, which builds tensors and containers only
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if (
            isinstance(loaded, dict)
            and loaded
            and all(isinstance(v, torch.Tensor) for v in loaded.values())
        ):
            return {str(k): v for k, v in loaded.items()}
        return None

    def sampler(self, order: OrderFn, n: int) -> object:
        from builder.frameworks.torch_hooks import RecordedSampler

        return RecordedSampler(order, n)

    def callback(self, log: LogFn, step: StepFn, every: int | None) -> object:
        raise ValueError(
            "a Keras callback in a PyTorch capsule; call run.step(loss, model) per batch"
        )

    def fit(
        self,
        order: OrderFn,
        log: LogFn,
        model: object,
        x: object,
        y: object,
        kwargs: dict[str, Any],
    ) -> object:
        raise ValueError(
            "Keras's fit in a PyTorch capsule; iterate a DataLoader with run.sampler(dataset)"
        )

    def apply_base_controls(
        self, spec: SpecBase, device: str, threads: int, warn_only: bool
    ) -> dict[str, str | int | float | bool | None]:
        torch.manual_seed(spec.seeds.init)
        torch.set_num_threads(threads)
        # set once per process; a second call raises, and the recorded value says what holds
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)
        deterministic = spec.controls.deterministic
        _use_deterministic_algorithms(deterministic, warn_only)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = spec.controls.tf32
        torch.backends.cudnn.allow_tf32 = spec.controls.tf32
        return {
            "torch.manual_seed": spec.seeds.init,
            "torch.use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "torch.use_deterministic_algorithms.warn_only": (
                torch.is_deterministic_algorithms_warn_only_enabled()
            ),
            "torch.backends.cudnn.deterministic": torch.backends.cudnn.deterministic,
            "torch.backends.cudnn.benchmark": torch.backends.cudnn.benchmark,
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.get_num_threads": torch.get_num_threads(),
            "torch.get_num_interop_threads": torch.get_num_interop_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "torch.compile": False,
        }

    def apply_controls(
        self, spec: Spec, device: str, threads: int
    ) -> dict[str, str | int | float | bool | None]:
        switches = self.apply_base_controls(spec, device, threads, warn_only=False)
        probe = _optimizer(nn.Linear(1, 1), spec).param_groups[0]  # Adam as it holds its settings
        return {
            "adam.lr": float(probe["lr"]),
            "adam.beta_1": float(probe["betas"][0]),
            "adam.beta_2": float(probe["betas"][1]),
            "adam.eps": float(probe["eps"]),
            **switches,
            "adam.foreach": spec.controls.adam_impl == "foreach",
            "adam.fused": spec.controls.adam_impl == "fused",
            "adam.variant": spec.train.adam_variant or "torch",
            "init": spec.model.init,
        }

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
        dtype = DTYPES[spec.train.dtype]
        splits = {
            s: (torch.from_numpy(x).to(device, dtype), torch.from_numpy(y).to(device))
            for s, (x, y) in dataset.arrays.items()
        }
        torch.manual_seed(spec.seeds.init)  # the initial weights depend on the init seed alone
        model = MLP(dataset.features, dataset.classes, spec.model).to(device, dtype)
        if spec.model.init == "shared":
            shared = shared_initial_weights(
                spec.model, dataset.features, dataset.classes, spec.seeds.init, spec.train.dtype
            )
            model.load_state_dict({k: torch.from_numpy(v) for k, v in shared.items()})
        initial = _numpy_weights(model)
        optimizer = _optimizer(model, spec)
        x_train, y_train = splits["train"]
        batch, every = spec.train.batch_size, spec.train.checkpoint_every
        trace: list[TracePoint] = []
        epochs: list[EpochMetrics] = []
        step = 0
        started = time.perf_counter()
        for epoch, permutation in zip(range(spec.train.epochs), order, strict=True):
            model.train()
            perm = torch.from_numpy(permutation).to(device)
            for start in range(0, perm.shape[0], batch):
                idx = perm[start : start + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = functional.cross_entropy(model(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                step += 1
                if step % every == 0:
                    value = loss.item()
                    trace.append(
                        TracePoint(
                            step=step,
                            loss=value,
                            loss_bits=_float_bits(value, dtype),
                            params_sha256=_params_digest(model),
                        )
                    )
            metrics = _evaluate(model, splits, epoch + 1)
            epochs.append(metrics)
            on_epoch(metrics)
        seconds = time.perf_counter() - started
        return Trained(
            epochs=epochs,
            trace=trace,
            initial=initial,
            weights=_numpy_weights(model),
            steps=step,
            train_seconds=seconds,
        )

    def evaluate(
        self, spec: Spec, dataset: Dataset, weights: dict[str, np.ndarray], device: str
    ) -> EpochMetrics:
        if spec.controls.numerics == "portable":
            from builder.portable.train import evaluate_one

            return evaluate_one(self.portable(device)[0], spec, dataset, weights)
        dtype = DTYPES[spec.train.dtype]
        splits = {
            s: (torch.from_numpy(x).to(device, dtype), torch.from_numpy(y).to(device))
            for s, (x, y) in dataset.arrays.items()
        }
        model = MLP(dataset.features, dataset.classes, spec.model).to(device, dtype)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return _evaluate(model, splits, spec.train.epochs)


def _numpy_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().contiguous().numpy().copy() for k, v in model.state_dict().items()}


@torch.no_grad()
def _evaluate(
    model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], epoch: int
) -> EpochMetrics:
    model.eval()
    errors: dict[str, float | None] = {"dev": None, "eval": None}
    train_loss = 0.0
    for split, (x, y) in splits.items():
        logits = model(x)
        errors[split] = (logits.argmax(dim=1) != y).sum().item() / y.shape[0]
        if split == "train":
            train_loss = functional.cross_entropy(logits, y).item()
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_error=errors["train"],  # type: ignore[arg-type]
        dev_error=errors["dev"],
        eval_error=errors["eval"],
    )


def _use_deterministic_algorithms(mode: bool, warn_only: bool) -> None:
    """torch.use_deterministic_algorithms without its import of torch._inductor (~1.5 s here).

    The public call also makes torch.compile deterministic; Capsule never compiles (recorded as
    torch.compile = False), so the core switch alone is the same control at a tenth of the cost.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


def _nvidia_driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


FRAMEWORK = TorchFramework()
