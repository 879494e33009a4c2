"""The verdict's arithmetic (ULP distances) and the 'close' tier on a real frozen run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from builder.records.verdict import Tolerances
from builder.verdict import compare, load_side, ulp_distance

TOL = Tolerances(atol=1e-5, rtol=1e-4, metric_atol=0.0025)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(finite32)
def test_next_float_is_one_ulp_away(value: float) -> None:
    a = np.array([value], dtype=np.float32)
    b = np.nextafter(a, np.float32(np.inf))
    if np.isfinite(b).all():
        assert ulp_distance(a, b)[0] == 1


@given(finite32, finite32)
def test_ulp_distance_is_symmetric_and_zero_only_for_equal_bits(x: float, y: float) -> None:
    a, b = np.array([x], dtype=np.float32), np.array([y], dtype=np.float32)
    assert ulp_distance(a, b)[0] == ulp_distance(b, a)[0]
    assert (ulp_distance(a, b)[0] == 0) == (a.tobytes() == b.tobytes() or (x == 0 and y == 0))


def test_ulp_distance_crosses_zero() -> None:
    a = np.array([-np.float32(1e-45)], dtype=np.float32)  # the negative smallest subnormal
    b = np.array([np.float32(1e-45)], dtype=np.float32)
    assert ulp_distance(a, b)[0] == 2


def test_a_one_ulp_nudge_is_close_and_reports_the_ulp(frozen_2d: Path) -> None:
    base = load_side(frozen_2d)
    nudged = dict(base.weights)
    w = nudged["output.weight"].copy()
    w[0, 0] = np.nextafter(w[0, 0], np.float32(np.inf))
    nudged["output.weight"] = w
    verdict = compare(base, dataclasses.replace(base, weights=nudged), TOL)
    assert verdict.verdict == "close"
    row = next(t for t in verdict.tensors if t.name == "output.weight")
    assert row.max_ulp == 1 and not row.equal and row.within_tolerance
    assert any("output.weight" in r.message for r in verdict.reasons)


def test_a_large_change_diverges(frozen_2d: Path) -> None:
    base = load_side(frozen_2d)
    moved = {k: v + np.float32(0.1) for k, v in base.weights.items()}
    verdict = compare(base, dataclasses.replace(base, weights=moved), TOL)
    assert verdict.verdict == "diverged"
    assert all(not t.within_tolerance for t in verdict.tensors)


def test_a_capsule_is_identical_to_itself(frozen_2d: Path) -> None:
    side = load_side(frozen_2d)
    assert compare(side, side, TOL).verdict == "identical"
