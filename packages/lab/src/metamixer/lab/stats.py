"""The statistics of a study, from scipy and statsmodels (nothing computed by hand): Welch's
t-test of a cell against its baseline with the t-based confidence interval of the difference,
Holm's correction over the comparisons of one grid, and the minimal detectable effect of a design."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: significance level of every test and of the minimal detectable effect
ALPHA = 0.05
#: power at which the minimal detectable effect is computed
POWER = 0.8
#: the multiple-comparison correction (a ``statsmodels.stats.multitest.multipletests`` method)
#: and its name in the tables
CORRECTION = "holm"
CORRECTION_NAME = "Holm"


@dataclass(frozen=True)
class Comparison:
    """A cell against its baseline: the difference of the means (cell − baseline), its 95 %
    Welch confidence interval and the two-sided p-value (``nan`` where neither arm varies)."""

    delta: float
    low: float
    high: float
    p: float

    @property
    def testable(self) -> bool:
        return not math.isnan(self.p)


def welch(cell: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``) of ``cell``
    against ``baseline``, each with at least two values."""
    from scipy import stats

    if len(cell) < 2 or len(baseline) < 2:
        raise ValueError("a Welch test needs at least two values in each arm")
    delta = sum(cell) / len(cell) - sum(baseline) / len(baseline)
    if max(cell) == min(cell) and max(baseline) == min(baseline):
        return Comparison(delta, delta, delta, math.nan)  # no spread in either arm: no test
    result = stats.ttest_ind(cell, baseline, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(delta, float(interval.low), float(interval.high), float(result.pvalue))


def correct(pvalues: Sequence[float]) -> tuple[list[bool], list[float]]:
    """``CORRECTION`` over one family of p-values: whether each test rejects at ``ALPHA`` and its
    corrected p-value."""
    from statsmodels.stats.multitest import multipletests

    if not pvalues:
        return [], []
    reject, corrected, _, _ = multipletests(list(pvalues), alpha=ALPHA, method=CORRECTION)
    return [bool(r) for r in reject], [float(p) for p in corrected]


def minimal_detectable_effect(
    n: int, sd: float, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest difference of means a two-sided two-sample t-test with ``n`` values per arm
    detects with ``power`` at ``alpha``: ``statsmodels``' standardized effect size times ``sd``
    (the baseline's standard deviation), in the metric's units."""
    from statsmodels.stats.power import TTestIndPower

    if n < 2:
        raise ValueError("a minimal detectable effect needs at least two values per arm")
    effect = TTestIndPower().solve_power(
        effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=1.0, alternative="two-sided"
    )
    return float(effect) * sd
