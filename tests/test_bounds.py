"""Bounded inputs (issue 13, item 5): every numeric spec field has a range, the data order is
drawn and read an epoch at a time, malformed capsule files are refused in one line, and NaN
or infinity in a run's numbers are values (equal on both sides, written as valid JSON)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tomllib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from builder.data import ORDER_LIMIT, DrawnOrder, StoredOrder, make_order, write_order
from builder.errors import BadInput
from builder.records.spec import MAX_EPOCHS, MAX_LR, MAX_THREADS, MAX_WIDTH
from builder.spec import parse_spec
from tests.conftest import ROOT, TINY_SPEC, assert_refused, capsule, ok
from tests.test_bad_input import freeze_refused

V1 = ROOT / "tests" / "fixtures" / "schema-v1"


def _no_constants(token: str) -> float:
    raise AssertionError(f"not JSON: a bare {token} token")


def strict_json(text: str | bytes) -> object:
    """Parse as JSON proper: a bare NaN / Infinity token fails."""
    return json.loads(text, parse_constant=_no_constants)


def _with_sidecar(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")


# ---------------------------------------------------------------- 1. numeric spec fields


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("epochs = 3", "epochs = 9223372036854775808", "train.epochs"),  # hung
        ("epochs = 3", "epochs = 1000000", "train.epochs"),  # ~80 GB MemoryError
        ("epochs = 3", "epochs = 0", "train.epochs"),
        ("hidden = [8]", "hidden = [1000000000]", "model.hidden.0"),
        ("hidden = [8]", "hidden = [" + "8, " * 65 + "]", "model.hidden"),
        ("hidden = [8]", "hidden = [20000, 20000]", "model.hidden"),
        ("lr = 0.01", "lr = 1e308", "train.lr"),
        ("lr = 0.01", "lr = inf", "train.lr"),
        ("lr = 0.01", "lr = nan", "train.lr"),
        ("eps = 1e-8", "eps = inf", "train.eps"),
        ("betas = [0.9, 0.999]", "betas = [nan, 0.999]", "train.betas.0"),
        ("epochs = 3", "epochs = 3\nweight_decay = inf", "train.weight_decay"),
        ("epochs = 3", "epochs = 3\nweight_decay = 11.0", "train.weight_decay"),
        ("batch_size = 16", "batch_size = 100000000", "train.batch_size"),
        ("checkpoint_every = 10", "checkpoint_every = 10000000000", "train.checkpoint_every"),
        ("[seeds]", "[controls]\nthreads = 100000\n\n[seeds]", "controls.threads"),
        ("init = 11", "init = 18446744073709551616", "seeds.init"),
    ],
    ids=[
        "epochs-2**63",
        "epochs-1e6",
        "epochs-0",
        "hidden-1e9",
        "hidden-65-layers",
        "hidden-weights",
        "lr-1e308",
        "lr-inf",
        "lr-nan",
        "eps-inf",
        "betas-nan",
        "weight-decay-inf",
        "weight-decay-11",
        "batch-size",
        "checkpoint-every",
        "threads-100000",
        "seed-2**64",
    ],
)
def test_a_value_beyond_its_range_is_refused(
    tiny_spec: Callable[..., Path], tmp_path: Path, old: str, new: str, field: str
) -> None:
    spec = tiny_spec()
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))
    freeze_refused(spec, tmp_path, spec.name, field)


def test_the_largest_allowed_values_are_accepted() -> None:
    text = TINY_SPEC.format(name="edge", init=2**63 - 1, order=0, lr=MAX_LR)
    text = text.replace("epochs = 3", f"epochs = {MAX_EPOCHS}\nweight_decay = 10.0")
    text = text.replace("hidden = [8]", f"hidden = [{MAX_WIDTH}, 4096]")
    text += f"\n[controls]\nthreads = {MAX_THREADS}\n"
    spec = parse_spec(tomllib.loads(text), "edge.toml")
    assert spec.train.epochs == MAX_EPOCHS and spec.controls.threads == MAX_THREADS


def test_params_must_be_finite() -> None:
    base = {
        "name": "code",
        "framework": "numpy",
        "entrypoint": "train.py:main",
        "code": {"include": ["train.py"]},
        "seeds": {"init": 1, "order": 2},
    }
    parse_spec({**base, "params": {"rate": 0.5, "sizes": [1.0, 2]}}, "capsule.toml")
    for params in ({"rate": math.nan}, {"sizes": [1.0, math.inf]}):
        with pytest.raises(BadInput, match=r"^capsule.toml: params: .* finite number"):
            parse_spec({**base, "params": params}, "capsule.toml")


def test_threads_and_set_overrides_are_bounded_too(tmp_path: Path) -> None:
    copy = tmp_path / "capsule"
    shutil.copytree(V1 / "capsule", copy)
    assert_refused(
        capsule("replay", copy, "--out", tmp_path / "r", "--threads", "100000"),
        "controls.threads",
    )
    assert_refused(
        capsule("replay", copy, "--out", tmp_path / "r", "--set", "train.epochs=1000000"),
        "--set",
        "train.epochs",
    )
    assert not (tmp_path / "r").exists()


def test_tensorflow_seeds_stop_at_2_32(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = tiny_spec(init=2**32)
    spec.write_text(spec.read_text().replace('"torch"', '"tensorflow"'))
    freeze_refused(spec, tmp_path, spec.name, "seeds.init", "tensorflow")


def test_an_order_too_large_to_record_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "capsule.toml"
    text = (ROOT / "capsules" / "paper-5d-torch" / "capsule.toml").read_text()
    epochs = ORDER_LIMIT // 100_000 + 1  # gaussian-5d has 100,000 training rows
    spec.write_text(text.replace("epochs = 10", f"epochs = {epochs}"))
    assert f"epochs = {epochs}" in spec.read_text()
    freeze_refused(spec, tmp_path, "capsule.toml", "train.epochs", "recorded order")


# ---------------------------------------------------------------- 2. the order, epoch by epoch


def _drawn_at_once(rows: int, epochs: int, seed: int) -> np.ndarray:
    """The order as freeze drew it before it was drawn per epoch (all epochs at once)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.stack([rng.permutation(rows) for _ in range(epochs)]).astype(np.int64)


@pytest.mark.parametrize(("rows", "epochs", "seed"), [(1, 1, 0), (7, 2, 3), (10_000, 10, 1000033)])
def test_the_order_is_written_and_read_per_epoch_with_the_same_bytes(
    tmp_path: Path, rows: int, epochs: int, seed: int
) -> None:
    from safetensors.numpy import save

    expected = _drawn_at_once(rows, epochs, seed)
    target = tmp_path / "order.safetensors"
    digest, size = write_order(DrawnOrder(rows, epochs, seed), target)
    reference = save({"order": expected})
    assert target.read_bytes() == reference
    assert (digest, size) == (hashlib.sha256(reference).hexdigest(), len(reference))
    assert np.array_equal(np.stack(list(StoredOrder(target, rows, epochs))), expected)
    assert np.array_equal(make_order(rows, epochs, seed), expected)


def test_drawing_and_reading_the_order_holds_one_epoch_at_a_time(tmp_path: Path) -> None:
    rows, epochs = 100_000, 40  # 32 MB in all; one epoch is 0.8 MB
    order = DrawnOrder(rows, epochs, seed=5)
    target = tmp_path / "order.safetensors"
    tracemalloc.start()
    try:
        write_order(order, target)
        for _ in StoredOrder(target, rows, epochs):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * rows * 8, peak  # a few epochs' arrays, never all 40


def test_a_stored_order_of_another_shape_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "order.safetensors"
    write_order(DrawnOrder(10, 3, seed=1), target)
    with pytest.raises(BadInput, match=r"order\.safetensors: not the recorded order"):
        StoredOrder(target, 10, 4)
    target.write_bytes(b"not safetensors at all")
    with pytest.raises(BadInput, match=r"order\.safetensors: not the recorded order"):
        StoredOrder(target, 10, 3)


# ---------------------------------------------------------------- 3. malformed capsule files


def _broken_copy(tmp_path: Path, edit: Callable[[bytes], bytes]) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(V1 / "capsule", copy)
    _with_sidecar(copy / "manifest.json", edit((copy / "manifest.json").read_bytes()))
    return copy


def _nested(data: bytes) -> bytes:
    return data.replace(b'"description": ""', b'"description": ' + b"[" * 100_000 + b"]" * 100_000)


def _nul_path(data: bytes) -> bytes:
    document = json.loads(data)
    document["artifacts"]["weights"]["path"] = "artifacts/we\x00ights.safetensors"
    return json.dumps(document, indent=2).encode()


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda d: d.replace(b'"tiny-v1"', b'"tiny-\xff"', 1), ("not valid JSON", "utf-8")),
        (_nested, ("nested too deeply",)),
        (_nul_path, ("artifacts.weights.path", "NUL")),
        (lambda d: d.replace(b'"description": ""', b'"description": "\\udcff"'), ("surrogate",)),
    ],
    ids=["invalid-utf8", "deeply-nested", "nul-in-artifact-path", "lone-surrogate"],
)
@pytest.mark.parametrize("command", ["verify", "inspect", "diff"])
def test_a_malformed_manifest_is_one_line(
    tmp_path: Path,
    command: str,
    edit: Callable[[bytes], bytes],
    needles: tuple[str, ...],
) -> None:
    broken = _broken_copy(tmp_path, edit)
    args = ["diff", V1 / "capsule", broken] if command == "diff" else [command, broken]
    result = capsule(*args)
    assert_refused(result, "broken/manifest.json", *needles)
    assert len(result.stderr) < 300  # the message, not the document


@pytest.mark.parametrize("command", ["verify", "inspect", "diff"])
def test_a_sidecar_that_is_not_utf8_is_an_integrity_failure(tmp_path: Path, command: str) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(V1 / "capsule", copy)
    (copy / "manifest.sha256").write_bytes(b"\xff\xfe  manifest.json\n")
    args = ["diff", V1 / "capsule", copy] if command == "diff" else [command, copy]
    result = capsule(*args)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "broken/manifest.json" in result.stderr


def test_weights_that_are_not_safetensors_are_refused_by_diff(tmp_path: Path) -> None:
    def to_the_spec(data: bytes) -> bytes:
        document = json.loads(data)
        document["artifacts"]["weights"] = document["artifacts"]["spec"]  # its digest matches
        return json.dumps(document, indent=2).encode()

    broken = _broken_copy(tmp_path, to_the_spec)
    ok(capsule("verify", broken))  # every digest matches
    assert_refused(
        capsule("diff", V1 / "capsule", broken), "capsule.toml", "weights", "safetensors"
    )


def test_a_deeply_nested_spec_is_refused(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = tiny_spec()
    spec.write_text(spec.read_text() + "\n[params]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n")
    freeze_refused(spec, tmp_path, spec.name, "nested too deeply")


# ---------------------------------------------------------------- 4. NaN and infinity


@pytest.fixture
def nan_capsule(tiny_spec: Callable[..., Path], tmp_path: Path) -> Path:
    """A tiny capsule whose training turns NaN: one training feature is infinite."""
    spec = tiny_spec(name="nan")
    train = tmp_path / "train.csv"
    lines = train.read_text().splitlines()
    label, _, rest = lines[5].split(",", 2)
    lines[5] = f"{label},inf,{rest}"
    train.write_text("\n".join(lines) + "\n")
    out = tmp_path / "nan-capsule"
    ok(capsule("freeze", spec, "--out", out))
    return out


def test_a_nan_run_is_identical_to_its_replay_and_stored_as_json(
    nan_capsule: Path, tmp_path: Path
) -> None:
    text = (nan_capsule / "manifest.json").read_text()
    manifest = strict_json(text)
    assert isinstance(manifest, dict)
    assert manifest["outcome"]["final"]["train_loss"] == "NaN"
    ok(capsule("replay", nan_capsule, "--out", tmp_path / "r"))
    strict_json((tmp_path / "r" / "replay.json").read_text())
    result = ok(capsule("diff", nan_capsule, tmp_path / "r", "--json", "--require", "identical"))
    verdict = strict_json(result.stdout)
    assert isinstance(verdict, dict) and verdict["verdict"] == "identical"
    loss = next(m for m in verdict["metrics"] if m["name"] == "train_loss")
    assert loss["equal"] is True and loss["delta"] == 0.0
    strict_json(ok(capsule("inspect", nan_capsule, "--json")).stdout)


def test_a_capsule_with_bare_nan_tokens_still_loads(nan_capsule: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(nan_capsule, old)
    text = (old / "manifest.json").read_text()
    bare = text.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    assert bare != text
    _with_sidecar(old / "manifest.json", bare.encode())
    ok(capsule("verify", old))
    ok(capsule("inspect", old))
    verdict = json.loads(ok(capsule("diff", nan_capsule, old, "--json")).stdout)
    assert verdict["verdict"] == "identical"


def test_nan_equals_nan_and_infinities_their_own_sign() -> None:
    from builder.verdict import same

    nan, inf = math.nan, math.inf
    assert same(nan, float("nan")) and same(inf, inf) and same(-inf, -inf)
    assert not same(inf, -inf) and not same(nan, 1.0) and not same(1.0, nan)
    assert not same(nan, None) and same(None, None)
    assert same({"a": [nan, 1.0]}, {"a": [float("nan"), 1.0]})
    assert not same({"a": [nan, 1.0]}, {"a": [nan, 2.0]})


def test_stored_floats_read_back_nan_and_infinity_from_strings_and_tokens() -> None:
    from builder.records.run import MetricPoint

    for text in ('{"step": 1, "value": "NaN"}', '{"step": 1, "value": NaN}'):
        assert math.isnan(MetricPoint.model_validate_json(text).value)
    for text in ('{"step": 1, "value": "-Infinity"}', '{"step": 1, "value": -Infinity}'):
        assert MetricPoint.model_validate_json(text).value == -math.inf
    point = MetricPoint(step=None, value=math.inf)
    assert strict_json(point.model_dump_json()) == {"step": None, "value": "Infinity"}
    with pytest.raises(ValueError, match="valid number"):
        MetricPoint.model_validate_json('{"step": 1, "value": "nan"}')
