"""The spec: what the user writes in `capsule.toml`, as validated models.

A manifest and a replay record carry the spec they ran, so these models are part of the
on-disk format too. Reading `capsule.toml` with one-line errors is `builder.spec`'s job.
"""

import math
from itertools import pairwise
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from builder.model_base import Strict
from builder.records.enums import Device

BUILTIN_DATASETS = ("gaussian-2d", "gaussian-5d", "eeg-26d")
SPLITS = ("train", "dev", "eval")

# Bounds: what a real experiment needs, so that a typo cannot hang, exhaust memory or crash
# a framework (README, "Writing a spec"). Every float is finite.
MAX_SEED = 2**63 - 1  # TensorFlow's seeds stop at 2**32 - 1 (frameworks.check_spec)
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 2**20
MAX_CHECKPOINT_EVERY = 10**9  # steps
MAX_WIDTH = 65_536  # units in one hidden layer
MAX_LAYERS = 64  # hidden layers
MAX_HIDDEN_WEIGHTS = 2**28  # weights between consecutive hidden layers, all together
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_EPS = 1.0
MAX_THREADS = 1024
TINY_FLOAT32 = 2.0**-126  # portable numerics flushes anything smaller to 0

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class DataSpec(Strict):
    """Either a built-in dataset or the user's own files (CSV with the label first, or NPZ)."""

    builtin: Literal["gaussian-2d", "gaussian-5d", "eeg-26d"] | None = None
    train: str | None = None
    dev: str | None = None
    eval: str | None = None
    sha256: dict[Literal["train", "dev", "eval"], str] = Field(default={})

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        files = [self.train, self.dev, self.eval]
        if self.builtin is not None and any(files):
            raise ValueError("give either 'builtin' or files (train/dev/eval), not both")
        if self.builtin is None and (self.train is None or self.eval is None):
            raise ValueError("give 'builtin', or at least 'train' and 'eval' files")
        if self.builtin is not None and self.sha256:
            raise ValueError("'sha256' applies to data files, not to a built-in dataset")
        for split, digest in self.sha256.items():
            if getattr(self, split) is None:
                raise ValueError(f"sha256.{split} is given but there is no '{split}' file")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"sha256.{split} is not a 64-digit lowercase hex digest")
        return self


class ModelSpec(Strict):
    """`init = "shared"`: Capsule draws the initial weights itself (NumPy, Glorot-uniform, from
    the init seed), so PyTorch and TensorFlow start from the very same point."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        default_factory=lambda: [26], min_length=1, max_length=MAX_LAYERS
    )
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    init: Literal["framework", "shared"] = "framework"

    @field_validator("hidden")
    @classmethod
    def _weights_fit(cls, hidden: list[int]) -> list[int]:
        between = sum(a * b for a, b in pairwise(hidden))
        if between > MAX_HIDDEN_WEIGHTS:
            raise ValueError(
                f"{between:,} weights between the hidden layers; at most {MAX_HIDDEN_WEIGHTS:,} "
                "(2**28)"
            )
        return hidden


class TrainSpec(Strict):
    """Every optimizer hyperparameter is required: a capsule never depends on a library default."""

    optimizer: Literal["adam"]
    lr: Annotated[float, Field(gt=0, le=MAX_LR, allow_inf_nan=False)]
    betas: Annotated[
        list[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]],
        Field(min_length=2, max_length=2),
    ]
    eps: Annotated[float, Field(gt=0, le=MAX_EPS, allow_inf_nan=False)]
    weight_decay: Annotated[float, Field(ge=0, le=MAX_WEIGHT_DECAY, allow_inf_nan=False)] = 0.0
    loss: Literal["cross_entropy"]
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]
    dtype: Literal["float32", "float64"] = "float32"
    checkpoint_every: Annotated[int, Field(ge=1, le=MAX_CHECKPOINT_EVERY)] = 100
    adam_variant: Literal["torch", "keras"] | None = Field(
        default=None,
        description="Whose Adam update formula to use (eps sits elsewhere in each); "
        "default: the framework's own",
    )


class SeedSpec(Strict):
    init: Seed
    order: Seed


class ControlSpec(Strict):
    """Switches that pin nondeterminism; all of them end up in the manifest."""

    deterministic: bool = True
    threads: Annotated[int, Field(ge=1, le=MAX_THREADS)] = 1
    device: Device = Device.cpu
    adam_impl: Literal["for-loop", "foreach", "fused"] = "for-loop"
    onednn: bool = Field(
        default=True, description="TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS)"
    )
    tf32: bool = Field(
        default=False,
        description="TensorFloat-32 matmuls and convolutions on Ampere and later GPUs: faster, "
        "10-bit mantissas; off unless asked (TensorFlow turns it on by default)",
    )
    numerics: Literal["native", "portable"] = Field(
        default="native",
        description="'portable': the built-in MLP trains with Capsule's portable numerics "
        "(correctly rounded float32 operations in one fixed order): the same bits on every CPU "
        "and GPU, in PyTorch and in TensorFlow; 'native': the framework's own kernels (faster)",
    )

    @model_serializer(mode="wrap")
    def _native_unwritten(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A spec with native numerics is written as before numerics could be chosen, so the
        capsules made then keep their digests."""
        data: dict[str, Any] = write(self)
        if data.get("numerics") == "native":
            data.pop("numerics")
        return data


class SpecBase(Strict):
    """What every experiment names: itself, its framework, its seeds and its controls."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str = ""
    framework: Literal["torch", "tensorflow", "numpy"] = Field(
        description="'numpy': the user's own code with no deep-learning framework "
        "(the smallest capsule and image)"
    )
    seeds: SeedSpec
    controls: ControlSpec = Field(default_factory=ControlSpec)


class Spec(SpecBase):
    """A built-in experiment: Capsule's own MLP on a built-in or user dataset."""

    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec

    @model_validator(mode="after")
    def _portable_as_built(self) -> Self:
        """What portable numerics implements: float32, Capsule's shared initial weights (every
        framework starts from the same bits) and PyTorch's Adam update."""
        if self.controls.numerics != "portable":
            return self
        if self.model.init != "shared":
            raise ValueError(
                "controls.numerics = 'portable' starts from Capsule's shared initial weights: "
                "set model.init = 'shared'"
            )
        if self.train.dtype != "float32":
            raise ValueError("controls.numerics = 'portable' trains in float32: set "
                             "train.dtype = 'float32'")  # fmt: skip
        if self.train.adam_variant == "keras":
            raise ValueError(
                "controls.numerics = 'portable' implements PyTorch's Adam update: leave "
                "train.adam_variant out or set it to 'torch'"
            )
        t = self.train
        hyper = {"lr": t.lr, "eps": t.eps, "weight_decay": t.weight_decay}
        hyper.update({f"betas[{i}]": beta for i, beta in enumerate(t.betas)})
        for name, value in hyper.items():
            if 0 < value < TINY_FLOAT32:
                raise ValueError(
                    f"train.{name} = {value} is below float32's smallest normal number "
                    "(2**-126), which portable numerics flushes to 0 on every backend: use 0 or "
                    "a larger value"
                )
        return self


ParamValue = str | int | float | bool | list[str | int | float | bool]


class CodeSpec(Strict):
    """The user's files frozen into the capsule, and the distributions they import."""

    include: Annotated[list[str], Field(min_length=1)]
    requires: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]] = Field(
        default=[],
        description="Distributions the code imports beyond Capsule and its framework "
        "(e.g. scikit-learn); pinned from this machine and put in the image",
    )


class UserSpec(SpecBase):
    """The user's own training code: `entrypoint = "train.py:main"` is called with a Run;
    `entrypoint = "main.py"` runs the script as `__main__`, its command line built from
    [params] (`--key value`; README, "Your own training code")."""

    entrypoint: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py(:[A-Za-z_][A-Za-z0-9_]*)?$",
            description="'FILE.py:FUNCTION' (called with a Run) or 'FILE.py' (a script run as "
            "__main__ with its command line built from [params])",
        ),
    ]
    code: CodeSpec
    params: dict[str, ParamValue] = Field(
        default={}, description="Free values handed to the code as run.params"
    )

    @field_validator("params")
    @classmethod
    def _finite_params(cls, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for key, value in params.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, float) and not math.isfinite(item):
                    raise ValueError(f"{key!r} is {item}; a value must be a finite number")
        return params

    @model_validator(mode="after")
    def _native_numerics(self) -> Self:
        if self.controls.numerics == "portable":
            raise ValueError(
                "controls.numerics = 'portable' applies to the built-in MLP; your own code gets "
                "portable numerics by building its model with builder.portable (README)"
            )
        return self

    @property
    def module_file(self) -> str:
        return self.entrypoint.split(":")[0]

    @property
    def function(self) -> str | None:
        """The function to call with a Run; None: the file is a script run as `__main__`."""
        parts = self.entrypoint.split(":")
        return parts[1] if len(parts) == 2 else None

    @model_validator(mode="after")
    def _entry_included(self) -> Self:
        entry = self.module_file
        if not any(entry == i or entry.startswith(i.rstrip("/") + "/") for i in self.code.include):
            raise ValueError(f"entrypoint file '{entry}' is not among code.include")
        return self


def _spec_kind(value: Any) -> str:
    entry = value.get("entrypoint") if isinstance(value, dict) else getattr(value, "entrypoint", 0)
    return "builtin" if entry in (None, 0) else "code"


AnySpec = Annotated[
    Annotated[Spec, Tag("builtin")] | Annotated[UserSpec, Tag("code")],
    Discriminator(_spec_kind),
]
