"""The paper's statistics over a sweep: per-metric summary with a 95 % confidence interval,
Welch's t-test between two sweeps, and an equivalence test (TOST) of one value against a
sweep's distribution. scipy.stats does the arithmetic."""

from __future__ import annotations

import math
from collections.abc import Sequence

from builder.errors import BadInput
from builder.records.sweep import Summary, Tost, Welch


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
