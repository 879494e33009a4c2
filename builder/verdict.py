"""diff: compare a replay (or another capsule) with a capsule's baseline and name the tier.

Tiers, strongest first: identical (every weight and metric bit-for-bit), close (within
tolerances), equivalent (inside the capsule's seed/order variance; needs a sweep), diverged.
Reasons list what changed between the two runs' environments and where the numbers split.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.frameworks.layout import to_reference_layout
from builder.records.enums import Tier
from builder.records.manifest import Manifest
from builder.records.replay import CapsuleRef, ReplayRecord
from builder.records.run import AppliedControls, Fingerprint, InputRecord, Outcome
from builder.records.spec import Spec
from builder.records.sweep import SweepRecord
from builder.records.verdict import (
    Equivalence,
    MetricDelta,
    Reason,
    ReasonKind,
    TensorDelta,
    Tolerances,
    Verdict,
)
from builder.stats import margin_value, tost
from builder.store import capsule_digest, load_record, load_sweep, read_tensors

MAX_LISTED_PACKAGES = 8


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a capsule's baseline run or a replay."""

    path: Path
    overrides: dict[str, str]
    controls: AppliedControls
    fingerprint: Fingerprint
    outcome: Outcome
    weights: dict[str, np.ndarray]
    initial: dict[str, np.ndarray] | None = None
    inputs: dict[str, InputRecord] = dataclasses.field(default_factory=dict)
    code: dict[str, str] = dataclasses.field(default_factory=dict)  # capsules: file → sha256
    sweep: SweepRecord | None = None  # capsules: their seed/order sweep, if any
    name: str = ""
    frozen_digest: str | None = None  # capsules: store.capsule_digest of their manifest
    source: CapsuleRef | None = None  # replays: the capsule they were made from
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)  # file it wrote → sha256


def load_side(path: Path) -> Side:
    """A record and its weights. The built-in MLP's weights come in PyTorch's names and layout
    whatever the framework, so capsules of different frameworks are compared layer by layer;
    the user's own weights are compared as saved."""
    record: Manifest | ReplayRecord = load_record(path)
    overrides = record.overrides if isinstance(record, ReplayRecord) else {}
    builtin = isinstance(record.spec, Spec)
    layout = to_reference_layout if builtin else dict
    initial = None
    if "initial" in record.artifacts:
        initial = layout(read_tensors(path, record, "initial"))
    code = {
        name.removeprefix("code/"): ref.sha256
        for name, ref in record.artifacts.items()
        if name.startswith("code/")
    }
    return Side(
        path=path,
        overrides=overrides,
        controls=record.controls,
        fingerprint=record.fingerprint,
        outcome=record.outcome,
        weights=layout(read_tensors(path, record, "weights")),
        initial=initial,
        inputs=record.inputs,
        code=code,
        sweep=load_sweep(path, record) if isinstance(record, Manifest) else None,
        name=record.spec.name,
        frozen_digest=capsule_digest(record) if isinstance(record, Manifest) else None,
        source=record.capsule if isinstance(record, ReplayRecord) else None,
        outputs={
            name.removeprefix("outputs/"): ref.sha256
            for name, ref in record.artifacts.items()
            if name.startswith("outputs/")
        },
    )


# ---------------------------------------------------------------- numbers


def _ordered(bits: np.ndarray, sign_min: int) -> np.ndarray:
    """Map IEEE bit patterns onto integers whose order and distance follow the float line."""
    wide = bits.astype(np.int64)
    return np.where(wide < 0, sign_min - wide, wide)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Units in the last place between two float arrays of one dtype (0 means bit-identical)."""
    if a.dtype == np.float32:
        return np.abs(_ordered(a.view(np.int32), -(2**31)) - _ordered(b.view(np.int32), -(2**31)))
    if a.dtype == np.float64:
        oa = _ordered(a.view(np.int64), -(2**63)).astype(np.float64)
        ob = _ordered(b.view(np.int64), -(2**63)).astype(np.float64)
        return np.abs(oa - ob)
    return (a != b).astype(np.int64)


def compare_tensor(name: str, a: np.ndarray, b: np.ndarray, tol: Tolerances) -> TensorDelta:
    if a.shape != b.shape or a.dtype != b.dtype:
        return TensorDelta(
            name=name,
            shape=list(a.shape),
            equal=False,
            max_abs=None,
            max_ulp=None,
            within_tolerance=False,
        )
    equal = a.tobytes() == b.tobytes()
    if a.size == 0:
        return TensorDelta(
            name=name,
            shape=list(a.shape),
            equal=equal,
            max_abs=0.0,
            max_ulp=0,
            within_tolerance=equal,
        )
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, and no warning
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        within = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(a.astype(np.float64))))
    return TensorDelta(
        name=name,
        shape=list(a.shape),
        equal=equal,
        max_abs=float(diff.max()),
        max_ulp=float(ulp_distance(a, b).max()),
        within_tolerance=equal or within,
    )


def same(a: object, b: object) -> bool:
    """Equal, where NaN equals NaN: a metric is a value, and a run that diverged to NaN agrees
    with a bit-identical replay of itself (+inf already equals +inf). Lists and dicts compare
    item by item."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _metric_pairs(base: Outcome, other: Outcome) -> list[MetricDelta]:
    rows = []
    a, b = base.final_values(), other.final_values()
    for name in [*a, *(n for n in b if n not in a)]:
        x, y = a.get(name), b.get(name)
        equal = same(x, y)
        delta = None if x is None or y is None else 0.0 if equal else y - x
        rows.append(MetricDelta(name=name, baseline=x, replay=y, delta=delta, equal=equal))
    return rows


def _input_reasons(a: Side, b: Side) -> list[Reason]:
    """Data the user's code read, and the code itself (two capsules), where they differ."""
    reasons = []
    for key in sorted(set(a.inputs) | set(b.inputs)):
        x, y = a.inputs.get(key), b.inputs.get(key)
        if x is None or y is None:
            side = "baseline" if y is None else "replay"
            message = f"input {key!r} was read by the {side} only"
            reasons.append(Reason(kind=ReasonKind.data, message=message))
        elif x.sha256 != y.sha256:
            reasons.append(
                Reason(
                    kind=ReasonKind.data,
                    message=f"input {key!r} differs: sha256 {x.sha256[:12]}… → {y.sha256[:12]}…",
                )
            )
    if a.code and b.code:
        for name in sorted(set(a.code) | set(b.code)):
            if a.code.get(name) != b.code.get(name):
                reasons.append(Reason(kind=ReasonKind.code, message=f"code file {name} differs"))
    return reasons


def _output_reasons(a: Side, b: Side) -> list[Reason]:
    """Files the user's code wrote (its outputs), compared by digest: a differing file keeps
    the verdict from `identical` (an output the other side lacks too)."""
    reasons = []
    for name in sorted(set(a.outputs) | set(b.outputs)):
        x, y = a.outputs.get(name), b.outputs.get(name)
        if x is None or y is None:
            side = "baseline" if y is None else "replay"
            message = f"output {name} was written by the {side} only"
            reasons.append(Reason(kind=ReasonKind.outputs, message=message))
        elif x != y:
            message = f"output {name} differs: sha256 {x[:12]}… → {y[:12]}…"
            reasons.append(Reason(kind=ReasonKind.outputs, message=message))
    return reasons


def _first_divergent_step(base: Outcome, other: Outcome, same_layout: bool = True) -> int | None:
    """The first checkpoint whose loss bits (or, where both store weights in one layout, weights
    digest) differ."""
    for a, b in zip(base.trace, other.trace, strict=False):
        weights_differ = same_layout and a.params_sha256 != b.params_sha256
        if a.step != b.step or a.loss_bits != b.loss_bits or weights_differ:
            return min(a.step, b.step)
    if len(base.trace) != len(other.trace):
        shorter = min(len(base.trace), len(other.trace))
        return (base.trace if len(base.trace) > shorter else other.trace)[shorter].step
    return None


# ---------------------------------------------------------------- reasons


def _changed(label: str, a: object, b: object) -> str:
    return f"{label}: {a} → {b}"


def environment_reasons(a: Side, b: Side) -> list[Reason]:
    """What differs between the two runs' controls and fingerprints, most telling first."""
    reasons = [
        Reason(kind=ReasonKind.override, message=f"replay overrode {k} = {v}")
        for k, v in b.overrides.items()
    ]
    ca, cb = a.controls, b.controls
    for field in (
        "numerics",
        "device",
        "threads",
        "interop_threads",
        "deterministic",
        "dtype",
        "adam_impl",
    ):
        if getattr(ca, field) != getattr(cb, field):
            reasons.append(
                Reason(
                    kind=ReasonKind.controls,
                    message=_changed(
                        f"{field.replace('_', ' ')}", getattr(ca, field), getattr(cb, field)
                    ),
                )
            )
    if ca.seeds != cb.seeds:
        reasons.append(
            Reason(kind=ReasonKind.controls, message=_changed("seeds", ca.seeds, cb.seeds))
        )
    fa, fb = a.fingerprint, b.fingerprint
    same_framework = fa.framework == fb.framework
    # across frameworks, only the switches both record (Adam variant, init) are comparable;
    # the switches that restate the thread count are reported as `threads` already
    from builder.frameworks import FRAMEWORKS, SHARED_SWITCHES

    shared_keys = set(ca.framework_switches) | set(cb.framework_switches)
    if not same_framework:
        shared_keys = set(SHARED_SWITCHES)
    restated = {k for f in (fa, fb) if f.framework in FRAMEWORKS
                for k in FRAMEWORKS[f.framework].thread_switches}  # fmt: skip
    for key in sorted(shared_keys - restated):
        va, vb = ca.framework_switches.get(key), cb.framework_switches.get(key)
        if va != vb:
            reasons.append(Reason(kind=ReasonKind.controls, message=_changed(key, va, vb)))
    if (fa.framework, fa.framework_version) != (fb.framework, fb.framework_version):
        reasons.insert(
            0,
            Reason(
                kind=ReasonKind.framework,
                message=_changed(
                    "framework",
                    f"{fa.framework} {fa.framework_version}",
                    f"{fb.framework} {fb.framework_version}",
                ),
            ),
        )
    for field, kind in (
        ("gpus", ReasonKind.hardware),
        ("cuda", ReasonKind.hardware),
        ("cudnn", ReasonKind.hardware),
        ("cpu_model", ReasonKind.hardware),
        ("machine", ReasonKind.hardware),
        ("cores", ReasonKind.hardware),
        ("python", ReasonKind.python),
        ("kernel", ReasonKind.os),
        ("os", ReasonKind.os),
    ):
        va, vb = getattr(fa, field), getattr(fb, field)
        if va != vb:
            if field == "gpus":
                va = ", ".join(g.name for g in va) or "none"
                vb = ", ".join(g.name for g in vb) or "none"
            reasons.append(Reason(kind=kind, message=_changed(field.replace("_", " "), va, vb)))
    if fa.cpu_flags != fb.cpu_flags:
        gained = sorted(set(fb.cpu_flags) - set(fa.cpu_flags))
        lost = sorted(set(fa.cpu_flags) - set(fb.cpu_flags))
        reasons.append(
            Reason(
                kind=ReasonKind.hardware,
                message=f"CPU flags differ (+{len(gained)} "
                f"-{len(lost)}: {' '.join((gained + lost)[:6])})",
            )
        )
    reasons.extend(_package_reasons(fa.distributions, fb.distributions))
    for key in sorted(set(fa.env) | set(fb.env)):
        if fa.env.get(key) != fb.env.get(key):
            reasons.append(
                Reason(
                    kind=ReasonKind.env,
                    message=_changed(
                        f"${key}", fa.env.get(key) or "unset", fb.env.get(key) or "unset"
                    ),
                )
            )
    return reasons


def _package_reasons(a: dict[str, str], b: dict[str, str]) -> list[Reason]:
    differ = [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    # version changes first: a tool missing from an image matters less than numpy moving
    differ.sort(key=lambda n: n not in a or n not in b)
    changes = [f"{n} {a.get(n, 'absent')} → {b.get(n, 'absent')}" for n in differ]
    if not changes:
        return []
    shown = ", ".join(changes[:MAX_LISTED_PACKAGES])
    more = (
        f" and {len(changes) - MAX_LISTED_PACKAGES} more"
        if len(changes) > MAX_LISTED_PACKAGES
        else ""
    )
    return [Reason(kind=ReasonKind.library, message=f"installed packages differ: {shown}{more}")]


def _outcome_reasons(
    tensors: list[TensorDelta], metrics: list[MetricDelta], step: int | None, a: Side, b: Side
) -> list[Reason]:
    reasons = []
    if step is not None:
        ta = {p.step: p for p in a.outcome.trace}.get(step)
        tb = {p.step: p for p in b.outcome.trace}.get(step)
        detail = ""
        if ta and tb and ta.loss_bits != tb.loss_bits:
            detail = f": loss {ta.loss!r} vs {tb.loss!r}"
        elif ta and tb:
            detail = (
                f": the weights' digest differs (the batch loss {ta.loss!r} is still bit-equal)"
            )
        reasons.append(
            Reason(
                kind=ReasonKind.trace,
                message=f"loss-checksum trace first differs at step {step}{detail}",
            )
        )
    for t in tensors:
        if t.max_abs is None:
            reasons.append(
                Reason(kind=ReasonKind.weights, message=f"{t.name}: shape or dtype differs")
            )
        elif not t.equal:
            reasons.append(
                Reason(
                    kind=ReasonKind.weights,
                    message=(
                        f"{t.name}: max |Δ| = {t.max_abs:.3g}, max {t.max_ulp:.0f} ULP"
                        + ("" if t.within_tolerance else " (outside tolerance)")
                    ),
                )
            )
    for m in metrics:
        if not m.equal:
            delta = "n/a" if m.delta is None else f"{m.delta:+.4g}"
            reasons.append(
                Reason(
                    kind=ReasonKind.metrics,
                    message=f"{m.name}: {m.baseline} → {m.replay} ({delta})",
                )
            )
    return reasons


# ---------------------------------------------------------------- the verdict


def compare(a: Side, b: Side, tol: Tolerances) -> Verdict:
    names = sorted(set(a.weights) | set(b.weights))
    missing = [n for n in names if n not in a.weights or n not in b.weights]
    tensors = [
        compare_tensor(n, a.weights[n], b.weights[n], tol) for n in names if n not in missing
    ]
    metrics = _metric_pairs(a.outcome, b.outcome)
    epochs_equal = same(
        a.outcome.model_dump(include={"epochs", "metrics"}),
        b.outcome.model_dump(include={"epochs", "metrics"}),
    )
    step = _first_divergent_step(
        a.outcome, b.outcome, a.fingerprint.framework == b.fingerprint.framework
    )
    weights_equal = not missing and all(t.equal for t in tensors)
    outputs = _output_reasons(a, b)
    if weights_equal and epochs_equal and all(m.equal for m in metrics) and not outputs:
        tier = Tier.identical
    elif (
        not missing
        and all(t.within_tolerance for t in tensors)
        and all(
            m.delta is not None and abs(m.delta) <= tol.metric_atol
            for m in metrics
            if m.baseline is not None or m.replay is not None
        )
    ):
        tier = Tier.close
    else:
        tier = Tier.diverged
    context = environment_reasons(a, b) + _input_reasons(a, b)
    # the replay's own overrides, a change of framework, data or code explain what follows
    first_kinds = (
        (ReasonKind.override, ReasonKind.framework, ReasonKind.data, ReasonKind.code)
        if a.fingerprint.framework != b.fingerprint.framework
        else (ReasonKind.override, ReasonKind.data, ReasonKind.code)
    )
    overrides = [r for r in context if r.kind in first_kinds]
    environment = [r for r in context if r.kind not in first_kinds]
    if tier == Tier.identical:
        head = [
            Reason(
                kind=ReasonKind.identical,
                message=(
                    f"all {len(tensors)} weight tensors and all metrics are bit-for-bit equal"
                ),
            )
        ]
    else:
        head = _outcome_reasons(tensors, metrics, step, a, b) + outputs
        head += [
            Reason(kind=ReasonKind.weights, message=f"{n}: present on one side only")
            for n in missing
        ]
    if a.initial is not None and b.initial is not None:
        head.append(_initial_reason(a.initial, b.initial, tol))
    equivalence = None
    if tier == Tier.diverged and a.sweep is None:
        head.append(
            Reason(
                kind=ReasonKind.tier,
                message=(
                    "the 'equivalent' tier was not available: the capsule holds no seed/order "
                    "sweep (run `capsule sweep`)"
                ),
            )
        )
    elif tier == Tier.diverged and a.sweep is not None:
        equivalence = judge_equivalence(a.sweep, b.outcome, tol)
        if equivalence.equivalent:
            tier = Tier.equivalent
        head = _equivalence_reasons(equivalence) + head
    return Verdict(
        verdict=tier,
        baseline=str(a.path),
        replay=str(b.path),
        reasons=_provenance_reasons(a, b) + overrides + head + environment,
        tensors=tensors,
        metrics=metrics,
        first_divergent_step=step,
        tolerances=tol,
        equivalence=equivalence,
    )


def _provenance_reasons(a: Side, b: Side) -> list[Reason]:
    """A capsule against a replay that records another frozen content than the capsule's now:
    a replay of another capsule, or of this one before its baseline was changed."""
    capsule, replay = (a, b) if a.source is None else (b, a)
    if capsule.frozen_digest is None or replay.source is None:
        return []
    made_from = replay.source.source_digest
    if made_from is None or made_from == capsule.frozen_digest:
        return []
    if replay.source.name == capsule.name:
        message = (
            f"the replay was made from {capsule.name} as it was (frozen digest "
            f"{made_from[:12]}…); its frozen content is now {capsule.frozen_digest[:12]}…: "
            "the capsule changed since, so its baseline is not the one replayed"
        )
    else:
        message = (
            f"the replay is of capsule {replay.source.name} (frozen digest {made_from[:12]}…), "
            f"not of {capsule.name} ({capsule.frozen_digest[:12]}…)"
        )
    return [Reason(kind=ReasonKind.capsule, message=message)]


def judge_equivalence(sweep: SweepRecord, outcome: Outcome, tol: Tolerances) -> Equivalence:
    """The replay's final metrics against the sweep's distribution of each (TOST): the error
    rates for the built-in experiment (the paper's measure), every logged metric for user code."""
    sample = sweep.values()
    judged = {
        metric: value
        for metric, value in outcome.final_values().items()
        if outcome.final is None or metric.endswith("_error")
    }
    tests = [
        tost(metric, value, sample[metric], margin_value(tol.margin, sample[metric]), tol.alpha)
        for metric, value in judged.items()
        if value is not None and len(sample.get(metric, [])) >= 2
    ]
    return Equivalence(
        runs=len(sweep.runs),
        margin=tol.margin,
        alpha=tol.alpha,
        tests=tests,
        equivalent=bool(tests) and all(t.equivalent for t in tests),
    )


def _equivalence_reasons(equivalence: Equivalence) -> list[Reason]:
    if not equivalence.tests:
        return [
            Reason(
                kind=ReasonKind.equivalence, message="the sweep has no metric the replay reports"
            )
        ]
    word = "inside" if equivalence.equivalent else "not shown inside"
    reasons = [
        Reason(
            kind=ReasonKind.equivalence,
            message=f"the replay's metrics are {word} the capsule's variance over "
            f"{equivalence.runs} sweep runs (TOST, margin {equivalence.margin}, "
            f"alpha {equivalence.alpha})",
        )
    ]
    for t in sorted(equivalence.tests, key=lambda t: t.equivalent):
        reasons.append(
            Reason(
                kind=ReasonKind.equivalence,
                message=f"{t.metric}: {t.value:.6g} vs sweep mean {t.mean:.6g} "
                f"(std {t.std:.3g}, n = {t.n}), margin ±{t.margin:.3g}: p = {t.p:.3g} → "
                + ("equivalent" if t.equivalent else "not equivalent"),
            )
        )
    return reasons


def _initial_reason(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tol: Tolerances) -> Reason:
    if a.keys() != b.keys():
        return Reason(kind=ReasonKind.init, message="the initial weights have different layers")
    deltas = [compare_tensor(n, a[n], b[n], tol) for n in sorted(a)]
    if all(d.equal for d in deltas):
        return Reason(kind=ReasonKind.init, message="the initial weights are bit-identical")
    worst = max(deltas, key=lambda d: d.max_abs if d.max_abs is not None else float("inf"))
    return Reason(
        kind=ReasonKind.init,
        message=(
            f"the initial weights differ (largest in {worst.name}: max |Δ| = {worst.max_abs})"
        ),
    )


def diff(baseline: Path, replay: Path, tol: Tolerances) -> Verdict:
    return compare(load_side(baseline), load_side(replay), tol)
