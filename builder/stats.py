"""The paper's statistics over a sweep: per-metric summary with a 95 % confidence interval,
Welch's t-test between two sweeps, and an equivalence test (TOST) of one value against a
sweep's distribution. scipy.stats does the arithmetic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from builder.errors import BadInput
from builder.records.results import StatsResult
from builder.records.sweep import Summary, SweepRecord, SweepRun, Tost, Welch


def summarize(metric: str, values: Sequence[float], confidence: float = 0.95) -> Summary:
    """min, max, mean, sample standard deviation and the t-based confidence interval of the
    mean — the columns of the paper's Statistical Analysis table."""
    from scipy import stats

    data = [float(v) for v in values]
    n = len(data)
    mean = float(sum(data) / n)
    std = float(stats.tstd(data)) if n > 1 else 0.0
    if n > 1 and std > 0:
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(data))
    else:
        low = high = mean
    return Summary(
        metric=metric,
        n=n,
        min=min(data),
        max=max(data),
        mean=mean,
        std=std,
        ci_low=float(low),
        ci_high=float(high),
    )


def welch(metric: str, a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Welch:
    """Welch's t-test (unequal variances) between two sweeps' values of one metric."""
    from scipy import stats

    result = stats.ttest_ind(list(a), list(b), equal_var=False)
    t, p = float(result.statistic), float(result.pvalue)
    if math.isnan(p):  # both samples constant
        p = 1.0 if sum(a) / len(a) == sum(b) / len(b) else 0.0
        t = 0.0 if p == 1.0 else math.inf
    return Welch(
        metric=metric,
        mean_a=float(sum(a) / len(a)),
        mean_b=float(sum(b) / len(b)),
        t=t,
        p=p,
        significant=p < alpha,
        alpha=alpha,
    )


def tost(
    metric: str, value: float, sample: Sequence[float], margin: float, alpha: float = 0.05
) -> Tost:
    """Equivalence of `value` with the sample's mean within ±margin: both one-sided t-tests
    (mean > value - margin and mean < value + margin) must reject at `alpha`."""
    from scipy import stats

    data = [float(v) for v in sample]
    summary = summarize(metric, data)
    if summary.std == 0 or len(data) < 2:  # no spread: the tests are undefined, decide directly
        inside = abs(summary.mean - value) < margin
        p_lower = p_upper = 0.0 if inside else 1.0
    else:
        p_lower = float(stats.ttest_1samp(data, value - margin, alternative="greater").pvalue)
        p_upper = float(stats.ttest_1samp(data, value + margin, alternative="less").pvalue)
    p = max(p_lower, p_upper)
    return Tost(
        metric=metric,
        value=value,
        n=len(data),
        mean=summary.mean,
        std=summary.std,
        margin=margin,
        p_lower=p_lower,
        p_upper=p_upper,
        p=p,
        alpha=alpha,
        equivalent=p < alpha,
    )


def margin_value(text: str, sample: Sequence[float]) -> float:
    """An equivalence margin: `3sd` is 3 times the sample's standard deviation; a plain number
    is taken as given (in the metric's own units)."""
    try:
        if text.endswith("sd"):
            return float(text.removesuffix("sd")) * summarize("margin", sample).std
        value = float(text)
    except ValueError:
        raise BadInput(f"--margin {text!r}: expected a number or Ksd (e.g. 3sd)") from None
    if value < 0:
        raise BadInput(f"--margin {text!r}: must not be negative")
    return value


def summaries(record: SweepRecord) -> list[Summary]:
    """The summary of every metric of a sweep (the rows of the paper's table): the stored
    ones where they agree with the runs' values, else computed."""
    values = record.values()
    stored = record.summaries
    if stored is not None and [(s.metric, s.n, s.min, s.max) for s in stored] == [
        (metric, len(data), min(data), max(data)) for metric, data in values.items()
    ]:
        return stored
    return [summarize(metric, data) for metric, data in values.items()]


def summarized(runs: list[SweepRun]) -> SweepRecord:
    """The record to store: the runs with their summaries."""
    return SweepRecord(runs=runs, summaries=summaries(SweepRecord(runs=runs)))


def sweep_of(capsule: Path) -> SweepRecord:
    """The capsule's stored sweep (its manifest and the sweep's artifact checked), or exit 2
    saying to run one."""
    from builder.store import load_manifest, load_sweep

    record = load_sweep(capsule, load_manifest(capsule))
    if record is None:
        raise BadInput(f"{capsule}: artifacts.sweep: no sweep yet; run `capsule sweep` first")
    return record


def statistics(
    capsule: Path,
    other: Path | None = None,
    value: float | None = None,
    metric: str | None = None,
    margin: str = "3sd",
    alpha: float = 0.05,
) -> StatsResult:
    """`capsule stats`: the sweep's summaries; Welch's t-test per metric against another
    capsule's sweep; TOST of one value of one metric against the sweep."""
    record = sweep_of(capsule)
    sample = record.values()
    welch_tests = []
    if other is not None:
        theirs = sweep_of(other).values()
        welch_tests = [welch(m, sample[m], theirs[m], alpha) for m in sample if m in theirs]
    tost_test = None
    if value is not None:
        if metric is None or metric not in sample:
            raise BadInput(f"--metric: give one of {', '.join(sample)} with --value")
        tost_test = tost(metric, value, sample[metric], margin_value(margin, sample[metric]), alpha)
    return StatsResult(
        path=str(capsule),
        stats=summaries(record),
        welch=welch_tests,
        tost=tost_test,
        runs=record.runs,
    )
