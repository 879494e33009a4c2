"""Unit tests of pure pieces the end-to-end tests reach only through slow runs: delta
debugging, `--set` overrides, `--with` parsing and the version-conflict check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import BadInput
from builder.overrides import apply_changes, changed, parse_sets, parse_value, with_controls
from builder.records.audit import Change
from builder.spec import load_spec
from builder.upgrade import check, ddmin, parse_with, plan_changes
from tests.conftest import CAPSULES

# ---------------------------------------------------------------- ddmin


def changes_named(names: list[str]) -> list[Change]:
    return [Change(name=n, old="1", new="2") for n in names]


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=12),
    culprits=st.sets(st.integers(min_value=0, max_value=11), min_size=1, max_size=3),
)
def test_ddmin_finds_a_one_minimal_set_that_still_moves(size: int, culprits: set[int]) -> None:
    """The result moves when every culprit is among the changes: ddmin must return exactly the
    culprits (the only 1-minimal moving set), within its quadratic bound of questions."""
    culprits = {c for c in culprits if c < size} or {0}
    changes = changes_named([f"p{i}" for i in range(size)])
    wanted = {f"p{i}" for i in culprits}
    asked: list[frozenset[str]] = []

    def moves(subset: list[Change]) -> bool:
        names = frozenset(c.name for c in subset)
        asked.append(names)
        return wanted <= names

    found = ddmin(changes, moves)
    assert {c.name for c in found} == wanted
    assert len(asked) <= size * size + 3 * size  # ddmin's worst case is quadratic


def test_ddmin_treats_an_unresolved_subset_as_not_moving() -> None:
    """A subset that cannot be set up (a conflict: None) is never taken as the culprit."""
    changes = changes_named(["a", "b", "c", "d"])

    def moves(subset: list[Change]) -> bool | None:
        names = {c.name for c in subset}
        if names == {"a", "b"}:
            return None  # conflicts
        return "c" in names

    assert [c.name for c in ddmin(changes, moves)] == ["c"]


def test_ddmin_of_one_change_is_that_change() -> None:
    one = changes_named(["numpy"])
    assert ddmin(one, lambda subset: True) == one


# ---------------------------------------------------------------- --with and conflicts


def test_parse_with_canonicalizes_names_and_refuses_bad_values() -> None:
    assert parse_with(["NumPy==2.4.5", "typing_extensions==4.12.2"]) == {
        "numpy": "2.4.5",
        "typing-extensions": "4.12.2",
    }
    for bad, needle in (
        ([], "at least one"),
        (["numpy"], "expected PKG==VERSION"),
        (["numpy==not-a-version"], "expected PKG==VERSION"),
        (["numpy>=2"], "expected PKG==VERSION"),
        (["numpy==2.0", "NumPy==2.1"], "given twice"),
    ):
        with pytest.raises(BadInput, match=needle):
            parse_with(bad)


def test_plan_changes_refuses_the_version_the_capsule_has() -> None:
    pins = {"numpy": "2.4.6"}
    assert plan_changes(pins, {"numpy": "2.4.5", "six": "1.17.0"}) == [
        Change(name="numpy", old="2.4.6", new="2.4.5"),
        Change(name="six", old=None, new="1.17.0"),
    ]
    with pytest.raises(BadInput, match=r"already has numpy 2\.4\.6"):
        plan_changes(pins, {"numpy": "2.4.6"})


def test_check_names_conflicts_and_missing_distributions() -> None:
    env = {"tensorflow-cpu": "2.19.1", "numpy": "2.4.6", "protobuf": "5.29.5"}
    requires = {
        "tensorflow-cpu": [
            "numpy<2.2.0,>=1.26.0",
            "protobuf>=5.26",
            "ml-dtypes<1.0.0,>=0.5.1",
            "tensorflow-io-gcs-filesystem>=0.23.1; python_version < '3.12' and extra == 'gcs'",
        ],
        "numpy": [],
    }
    problems, missing = check(env, requires)
    assert problems == ["tensorflow-cpu 2.19.1 requires numpy<2.2.0,>=1.26.0, not 2.4.6"]
    assert [str(r) for r in missing] == ["ml-dtypes<1.0.0,>=0.5.1"]  # extras stay out
    env["numpy"] = "2.1.3"
    env["ml-dtypes"] = "0.5.1"
    assert check(env, requires) == ([], [])


# ---------------------------------------------------------------- --set and --device/--threads


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return load_spec(CAPSULES / "paper-2d-torch")


def test_set_values_are_parsed_as_toml_or_kept_as_text() -> None:
    assert parse_value("0.005") == 0.005
    assert parse_value("[26, 26]") == [26, 26]
    assert parse_value("true") is True
    assert parse_value("tanh") == "tanh"
    assert parse_sets(["train.lr=0.005", "model.activation = tanh"]) == {
        "train.lr": 0.005,
        "model.activation": "tanh",
    }
    for bad in ("train.lr", "=1", "train..lr=1"):
        with pytest.raises(BadInput, match="expected KEY=VALUE"):
            parse_sets([bad])


def test_apply_changes_validates_again_and_says_what_changed(spec) -> None:  # type: ignore[no-untyped-def]
    after = apply_changes(spec, {"train.lr": 0.005, "seeds.order": 7})
    assert changed(spec, after) == {"seeds.order": "7", "train.lr": "0.005"}
    with pytest.raises(BadInput, match=r"train\.lr"):
        apply_changes(spec, {"train.lr": -1.0})
    with pytest.raises(BadInput, match="cannot be changed in a replay"):
        apply_changes(spec, {"data.builtin": "gaussian-5d"})
    with pytest.raises(BadInput, match="'lr' is not a table"):
        apply_changes(spec, {"train.lr.x": 1})


def test_with_controls_sets_device_and_threads_only_when_given(spec) -> None:  # type: ignore[no-untyped-def]
    assert with_controls(spec, None, None) is spec
    after = with_controls(spec, "cpu", 2)
    assert changed(spec, after) == {"controls.threads": "2"}
    with pytest.raises(BadInput, match=r"controls\.threads"):
        with_controls(spec, None, 0)
