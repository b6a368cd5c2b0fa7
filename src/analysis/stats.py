"""Statistics core of the kit: interval estimates, tests, FDR control, decomposition and survival summaries.

Conventions (DESIGN.md "Statistics conventions", FIELD_NOTES.md "Statistics"):

* rates carry Wilson intervals, differences Newcombe's hybrid score interval;
* a month against its baseline: two-proportion score test, Fisher's exact test on small expected counts;
* trends: binomial GLM (logit link); segments: chi-square test of homogeneity;
* one pack = one family of tests: Benjamini-Hochberg q-values; a "move" needs q < alpha *and* a change
  larger than the minimum practical (and relative) effect;
* time to close: Kaplan-Meier medians with intervals, log-rank across segments.

The computations are delegated to statsmodels / scipy; this module only chooses the method, handles the
edge cases (zero trials, all or no successes, single groups) and returns plain numbers. Valid counts never
raise: where a quantity is undefined the result is NaN and the docstring says when that happens. Invalid
input (negative counts, successes > trials, confidence outside (0, 1)) raises ``ValueError``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.duration.survfunc import SurvfuncRight, survdiff
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    test_proportions_2indep,
)
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning
from statsmodels.tools.tools import add_constant

__all__ = [
    "TestResult",
    "bh_qvalues",
    "binomial_trend",
    "enough_cells",
    "homogeneity_test",
    "is_move",
    "km_median",
    "logrank_test",
    "mix_rate_decomposition",
    "newcombe_difference",
    "two_proportion_test",
    "wilson_interval",
]

NAN = float("nan")


# --------------------------------------------------------------------------------------------- result type


@dataclass(frozen=True)
class TestResult:
    """Outcome of one hypothesis test (lifelines-style): statistic, p_value, method, optional effect + CI."""

    __test__ = False  # not a pytest test class, despite the name

    statistic: float
    p_value: float
    method: str  # "score", "fisher_exact", "glm_trend", "chi_square", "logrank" or "none" (not testable)
    estimate: float = NAN  # the effect (difference, slope...) when there is one
    ci_low: float = NAN
    ci_high: float = NAN
    n: int = 0

    @property
    def summary(self) -> pd.DataFrame:
        """One-row DataFrame (index = method) with statistic, p_value, estimate, ci_low, ci_high, n."""
        return pd.DataFrame(
            {
                "statistic": [self.statistic],
                "p_value": [self.p_value],
                "estimate": [self.estimate],
                "ci_low": [self.ci_low],
                "ci_high": [self.ci_high],
                "n": [self.n],
            },
            index=pd.Index([self.method], name="method"),
        )

    def _repr_html_(self) -> str:
        """HTML table of ``summary`` for notebooks."""
        return self.summary.to_html()


def _not_tested(n: int = 0) -> TestResult:
    return TestResult(statistic=NAN, p_value=NAN, method="none", n=int(n))


# --------------------------------------------------------------------------------------------- validation


def _check_confidence(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


def _counts(successes: Any, trials: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays (broadcast) of successes and trials; NaN allowed, negative or s > n is an error."""
    s = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    s, n = np.broadcast_arrays(s, n)
    with np.errstate(invalid="ignore"):
        if np.any(s < 0) or np.any(n < 0):
            raise ValueError("counts must be non-negative")
        if np.any(s > n):
            raise ValueError("successes must not exceed trials")
    return s, n


def _scalar_count(value: Any, name: str) -> float:
    v = float(value)
    if np.isnan(v):
        return v
    if v < 0 or v != np.floor(v):
        raise ValueError(f"{name} must be a non-negative whole number, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------- intervals


def wilson_interval(successes: Any, trials: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high) per element; NaN where trials == 0 (no rate to estimate) or NaN."""
    conf = _check_confidence(confidence)
    s, n = _counts(successes, trials)
    ok = n > 0
    low = np.full(s.shape, np.nan)
    high = np.full(s.shape, np.nan)
    if np.any(ok):
        lo, hi = proportion_confint(s[ok], n[ok], alpha=1.0 - conf, method="wilson")
        # The interval holds the observed rate; rounding gave 0/n a lower bound of 2.8e-17 above 0 (and n/n an
        # upper bound below 1), i.e. negative error bars, which charts refuse.
        rate = s[ok] / n[ok]
        low[ok] = np.minimum(lo, rate)
        high[ok] = np.maximum(hi, rate)
    return low, high


def newcombe_difference(
    s1: Any, n1: Any, s0: Any, n0: Any, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference p1 - p0 with Newcombe's hybrid score interval: (diff, low, high); NaN where n1 or n0 = 0."""
    conf = _check_confidence(confidence)
    a1, b1 = _counts(s1, n1)
    a0, b0 = _counts(s0, n0)
    a1, b1, a0, b0 = np.broadcast_arrays(a1, b1, a0, b0)
    ok = (b1 > 0) & (b0 > 0)
    diff = np.full(a1.shape, np.nan)
    low = np.full(a1.shape, np.nan)
    high = np.full(a1.shape, np.nan)
    if np.any(ok):
        diff[ok] = a1[ok] / b1[ok] - a0[ok] / b0[ok]
        lo, hi = confint_proportions_2indep(
            a1[ok], b1[ok], a0[ok], b0[ok], method="newcomb", compare="diff", alpha=1.0 - conf
        )
        low[ok] = lo
        high[ok] = hi
    return diff, low, high


# --------------------------------------------------------------------------------------------- tests


def two_proportion_test(
    s1: int, n1: int, s0: int, n0: int, *, exact_below: float = 5, confidence: float = 0.95
) -> TestResult:
    """Test p1 == p0 (score test, or Fisher's exact on small expected counts); estimate = p1-p0, Newcombe CI.

    * Score test: statsmodels ``test_proportions_2indep(method="score", correction=False)``: the
      classical pooled-variance z test, without the Miettinen-Nurminen n/(n-1) variance factor,
      so z**2 equals the Pearson chi-square of the 2x2 table and the p-value agrees with
      ``homogeneity_test`` on the same two groups. ``statistic`` is z.
    * Fisher's exact test (two-sided, scipy) when any of the four expected counts of the 2x2 table
      [[s1, n1-s1], [s0, n0-s0]] is < ``exact_below``; ``statistic`` is then the sample odds ratio
      (NaN/inf when a cell is 0). Tables with no or only successes always go to Fisher when
      ``exact_below > 0`` (their expected counts are 0), where p = 1.
    * ``method="none"`` and NaN statistic/p-value when n1 == 0 or n0 == 0 or a count is NaN: there is no
      rate to compare. With ``exact_below <= 0`` and a pooled rate of 0 or 1 the score test is undefined
      (zero variance) and statistic/p-value are NaN.
    """
    conf = _check_confidence(confidence)
    a1, b1 = _scalar_count(s1, "s1"), _scalar_count(n1, "n1")
    a0, b0 = _scalar_count(s0, "s0"), _scalar_count(n0, "n0")
    if any(np.isnan(v) for v in (a1, b1, a0, b0)):
        return _not_tested(0)
    if a1 > b1 or a0 > b0:
        raise ValueError("successes must not exceed trials")
    n_total = int(b1 + b0)
    if b1 == 0 or b0 == 0:
        return _not_tested(n_total)

    diff, low, high = (float(x) for x in newcombe_difference(a1, b1, a0, b0, confidence=conf))
    table = np.array([[a1, b1 - a1], [a0, b0 - a0]], dtype=float)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()

    if np.any(expected < exact_below):
        res = sps.fisher_exact(table.astype(np.int64), alternative="two-sided")
        statistic, p_value, method = float(res.statistic), float(res.pvalue), "fisher_exact"
    else:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = test_proportions_2indep(
                a1, b1, a0, b0, method="score", compare="diff", value=0, correction=False
            )
        statistic, p_value, method = float(res.statistic), float(res.pvalue), "score"
    return TestResult(
        statistic=statistic,
        p_value=p_value,
        method=method,
        estimate=diff,
        ci_low=low,
        ci_high=high,
        n=n_total,
    )


def _separated(t: np.ndarray, s: np.ndarray, f: np.ndarray) -> bool:
    """True when successes and failures are (quasi-)completely separated along t: no finite logit MLE."""
    ts, tf = t[s > 0], t[f > 0]
    return bool(tf.max() <= ts.min() or ts.max() <= tf.min())


def binomial_trend(successes: Any, trials: Any, t: Any = None, *, confidence: float = 0.95) -> TestResult:
    """Binomial GLM (logit) trend over t (default 0..k-1): estimate = log-odds slope per step, Wald p and CI.

    statsmodels ``GLM(family=Binomial())`` with endog [successes, failures] and exog [1, t].

    ``statistic`` is the Wald z of the slope; the binomial variance is taken at face value (no
    overdispersion scale). Steps with 0 (or NaN) trials carry no information and are dropped.
    NaN (``method="none"``) when fewer than two distinct time points remain. NaN slope/p-value
    (``method="glm_trend"``) when the slope has no finite maximum-likelihood estimate: no successes or
    no failures at all, or successes and failures (quasi-)completely separated in time (e.g. 0/10,
    0/10, 5/10, 10/10), or the fit does not converge.
    """
    conf = _check_confidence(confidence)
    s, n = _counts(successes, trials)
    s, n = s.ravel(), n.ravel()
    tt = np.arange(s.size, dtype=float) if t is None else np.asarray(t, dtype=float).ravel()
    if tt.shape != s.shape:
        raise ValueError(f"t has {tt.size} elements, successes/trials have {s.size}")
    keep = (n > 0) & np.isfinite(s) & np.isfinite(tt)
    s, n, tt = s[keep], n[keep], tt[keep]
    n_total = int(n.sum())
    if np.unique(tt).size < 2:
        return _not_tested(n_total)
    f = n - s
    undefined = TestResult(statistic=NAN, p_value=NAN, method="glm_trend", n=n_total)
    if s.sum() == 0 or f.sum() == 0 or _separated(tt, s, f):
        return undefined

    exog = add_constant(tt, has_constant="add")
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # separation is ruled out above; statsmodels still warns when the model is saturated (k = 2),
        # where a perfect fit is expected and harmless.
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = GLM(np.column_stack([s, f]), exog, family=families.Binomial()).fit()
    slope, se = float(fit.params[1]), float(fit.bse[1])
    if not fit.converged or not np.isfinite(slope) or not np.isfinite(se):
        return undefined
    low, high = (float(x) for x in fit.conf_int(alpha=1.0 - conf)[1])
    return TestResult(
        statistic=float(fit.tvalues[1]),
        p_value=float(fit.pvalues[1]),
        method="glm_trend",
        estimate=slope,
        ci_low=low,
        ci_high=high,
        n=n_total,
    )


def homogeneity_test(successes: Any, trials: Any) -> TestResult:
    """Chi-square test that the groups share one rate (scipy chi2_contingency on the 2xk table, uncorrected).

    ``statistic`` is Pearson's chi-square (k-1 degrees of freedom, k = groups with trials > 0); there is no
    effect estimate. Groups with 0 (or NaN) trials are dropped. ``method="none"`` (NaN) when fewer than two
    groups remain; NaN statistic/p-value (``method="chi_square"``) when no group has a success or no group
    a failure (expected counts of 0: the statistic is 0/0).
    """
    s, n = _counts(successes, trials)
    s, n = s.ravel(), n.ravel()
    keep = (n > 0) & np.isfinite(s)
    s, n = s[keep], n[keep]
    n_total = int(n.sum())
    if s.size < 2:
        return _not_tested(n_total)
    if s.sum() == 0 or s.sum() == n_total:
        return TestResult(statistic=NAN, p_value=NAN, method="chi_square", n=n_total)
    res = sps.chi2_contingency(np.vstack([s, n - s]), correction=False)
    return TestResult(
        statistic=float(res.statistic), p_value=float(res.pvalue), method="chi_square", n=n_total
    )


# --------------------------------------------------------------------------------------------- decisions


def bh_qvalues(p_values: Any, method: str = "fdr_bh") -> np.ndarray:
    """Benjamini-Hochberg q-values for one family; NaN p-values stay NaN and are not counted in the family.

    ``method`` is passed to statsmodels ``multipletests`` (e.g. "fdr_by"); the result has the input's shape.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if np.any(ok):
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def is_move(
    q_value: Any,
    change: Any,
    baseline: Any,
    *,
    alpha: float,
    min_practical_effect: float,
    min_relative_effect: float = 0.0,
) -> np.ndarray:
    """True where q < alpha, |change| >= min_practical_effect and |change|/baseline >= min_relative_effect.

    NaN q-values or changes are never moves. The relative criterion is skipped when
    ``min_relative_effect <= 0``; a baseline of 0 makes any non-zero change infinitely large in relative
    terms; a NaN baseline fails the relative criterion when it applies.
    """
    q = np.asarray(q_value, dtype=float)
    c = np.abs(np.asarray(change, dtype=float))
    b = np.abs(np.asarray(baseline, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = (q < alpha) & (c >= min_practical_effect)
        if min_relative_effect > 0:
            moved = moved & (c / b >= min_relative_effect)
        else:
            moved = moved & np.ones_like(b, dtype=bool)
    return np.asarray(moved, dtype=bool)


def enough_cells(trials: Any, min_cell_size: int) -> np.ndarray:
    """True where trials >= min_cell_size (cells below are shown but not tested); NaN trials are False."""
    with np.errstate(invalid="ignore"):
        return np.asarray(np.asarray(trials, dtype=float) >= min_cell_size, dtype=bool)


# --------------------------------------------------------------------------------------------- decomposition


def mix_rate_decomposition(
    frame: pd.DataFrame, *, group: str, s0: str, n0: str, s1: str, n1: str
) -> pd.DataFrame:
    """Per-group mix and rate effects (symmetric/midpoint) summing exactly to the change in the overall rate.

    rate_effect_g = (r1_g - r0_g) * (w0_g + w1_g)/2 ; mix_effect_g = (w1_g - w0_g) * (r0_g + r1_g)/2 ;
    w = share of the period's trials, r = successes / trials. Summed over groups,
    mix_effect + rate_effect = R1 - R0 (overall rates) exactly.

    Columns: group (the values of ``frame[group]``, column named "group"), w0, w1, r0, r1, mix_effect,
    rate_effect, total_effect; one row per group sorted by group (rows sharing a group are pooled).
    ``attrs["r0_total"]``/``attrs["r1_total"]`` hold the overall rates.

    Edge cases: a group with 0 trials in one period (new or vanished segment) has that period's rate
    taken as the other period's rate, so its rate effect is 0 and its whole contribution (w1*r1 or
    -w0*r0) is mix. A group with 0 trials in both periods keeps NaN rates and zero effects. When a whole
    period has 0 trials the overall change is undefined and every weight of that period and every
    effect is NaN.
    """
    cols = [s0, n0, s1, n1]
    missing = [c for c in [group, *cols] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {missing}")
    g = frame[[group, *cols]].groupby(group, sort=True, dropna=False)[cols].sum()
    _counts(g[s0].to_numpy(), g[n0].to_numpy())
    _counts(g[s1].to_numpy(), g[n1].to_numpy())
    a0, b0 = g[s0].to_numpy(dtype=float), g[n0].to_numpy(dtype=float)
    a1, b1 = g[s1].to_numpy(dtype=float), g[n1].to_numpy(dtype=float)
    tot0, tot1 = b0.sum(), b1.sum()

    with np.errstate(divide="ignore", invalid="ignore"):
        w0 = b0 / tot0 if tot0 > 0 else np.full(b0.shape, np.nan)
        w1 = b1 / tot1 if tot1 > 0 else np.full(b1.shape, np.nan)
        r0 = np.where(b0 > 0, a0 / b0, np.nan)
        r1 = np.where(b1 > 0, a1 / b1, np.nan)
    # a period without trials for a group borrows the other period's rate (documented above)
    r0_filled = np.where(b0 > 0, r0, r1)
    r1_filled = np.where(b1 > 0, r1, r0)
    both_empty = (b0 == 0) & (b1 == 0)
    mix = (w1 - w0) * (r0_filled + r1_filled) / 2.0
    rate = (r1_filled - r0_filled) * (w0 + w1) / 2.0
    if tot0 > 0 and tot1 > 0:
        mix = np.where(both_empty, 0.0, mix)
        rate = np.where(both_empty, 0.0, rate)

    out = pd.DataFrame(
        {
            "group": g.index.to_numpy(),
            "w0": w0,
            "w1": w1,
            "r0": r0_filled,
            "r1": r1_filled,
            "mix_effect": mix,
            "rate_effect": rate,
            "total_effect": mix + rate,
        }
    )
    out.attrs["r0_total"] = float(a0.sum() / tot0) if tot0 > 0 else NAN
    out.attrs["r1_total"] = float(a1.sum() / tot1) if tot1 > 0 else NAN
    return out


# --------------------------------------------------------------------------------------------- survival


def _survival_input(durations: Any, events: Any) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(durations, dtype=float).ravel()
    e_raw = np.asarray(events).ravel()
    if d.shape != e_raw.shape:
        raise ValueError(f"durations has {d.size} elements, events has {e_raw.size}")
    if np.any(~np.isfinite(d)) or np.any(d < 0):
        raise ValueError("durations must be finite and non-negative")
    e = e_raw.astype(float)
    if np.any((e != 0) & (e != 1)):
        raise ValueError("events must be 0/1 or boolean (1 = event observed, 0 = censored)")
    return d, e


def logrank_test(durations: Any, events: Any, groups: Any) -> TestResult:
    """Log-rank test that the groups share one survival curve (statsmodels survdiff); chi-square, k-1 df.

    ``events`` is 1/True for an observed event and 0/False for a censored duration. ``method="none"``
    (NaN) when fewer than two groups are present; NaN statistic/p-value when there is no event at all.
    """
    d, e = _survival_input(durations, events)
    g = np.asarray(groups).ravel()
    if g.shape != d.shape:
        raise ValueError(f"groups has {g.size} elements, durations has {d.size}")
    n = int(d.size)
    if pd.unique(g).size < 2:
        return _not_tested(n)
    if e.sum() == 0:
        return TestResult(statistic=NAN, p_value=NAN, method="logrank", n=n)
    chisq, p_value = survdiff(d, e, g)
    return TestResult(statistic=float(chisq), p_value=float(p_value), method="logrank", n=n)


def km_median(durations: Any, events: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Kaplan-Meier median duration with its confidence interval: (median, low, high).

    The median is the first time at which the Kaplan-Meier curve (statsmodels SurvfuncRight) is at or
    below 0.5 - the textbook/lifelines convention; statsmodels' own ``quantile`` uses a strict "< 0.5",
    which differs only when the curve sits exactly on 0.5. The interval is Brookmeyer-Crowley from
    statsmodels ``quantile_ci`` (cloglog transform). NaN means "not reached": the median is NaN when the
    curve never falls to 0.5 (too many open / censored deals), the upper limit is NaN when the interval is
    unbounded; all three are NaN for empty input or when no event was observed.
    """
    conf = _check_confidence(confidence)
    d, e = _survival_input(durations, events)
    if d.size == 0 or e.sum() == 0:
        return NAN, NAN, NAN
    sf = SurvfuncRight(d, e)
    reached = np.flatnonzero(sf.surv_prob <= 0.5 + 1e-12)
    median = float(sf.surv_times[reached[0]]) if reached.size else NAN
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = sf.quantile_ci(0.5, alpha=1.0 - conf)
    low, high = float(low), float(high)
    return median, (low if np.isfinite(low) else NAN), (high if np.isfinite(high) else NAN)
