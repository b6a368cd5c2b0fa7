"""Each statistic in analysis.stats checked against an independent computation or a published value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times
from scipy import stats as sps

from analysis import stats
from analysis.stats import TestResult

Z95 = sps.norm.ppf(0.975)


# --------------------------------------------------------------------------------------------- helpers


def wilson_by_hand(s, n, z=Z95):
    """Closed-form Wilson score interval (Wilson 1927)."""
    s = np.asarray(s, dtype=float)
    n = np.asarray(n, dtype=float)
    p = s / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def newcombe_by_hand(s1, n1, s0, n0, z=Z95):
    """Newcombe (1998) method 10: hybrid score interval built from the two Wilson intervals."""
    p1, p0 = s1 / n1, s0 / n0
    l1, u1 = wilson_by_hand(s1, n1, z)
    l0, u0 = wilson_by_hand(s0, n0, z)
    d = p1 - p0
    return d, d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def pooled_z(s1, n1, s0, n0):
    """Classical two-proportion z statistic with pooled variance, two-sided normal p-value."""
    p1, p0, pbar = s1 / n1, s0 / n0, (s1 + s0) / (n1 + n0)
    z = (p1 - p0) / math.sqrt(pbar * (1 - pbar) * (1 / n1 + 1 / n0))
    return z, 2 * sps.norm.sf(abs(z))


def bh_by_hand(p):
    """Benjamini-Hochberg step-up adjusted p-values: q_(i) = min_{j >= i} m p_(j) / j, capped at 1."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p)
    q_sorted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, p[order[rank - 1]] * m / rank)
        q_sorted[rank - 1] = running
    q = np.empty(m)
    q[order] = q_sorted
    return q


def logit_newton(s, n, t, iterations=50):
    """Hand-coded Newton-Raphson for the grouped logistic regression logit(p) = a + b t: (b, se(b))."""
    X = np.column_stack([np.ones_like(t), t])
    beta = np.zeros(2)
    for _ in range(iterations):
        mu = 1 / (1 + np.exp(-(X @ beta)))
        w = n * mu * (1 - mu)
        score = X.T @ (s - n * mu)
        info = X.T @ (X * w[:, None])
        beta = beta + np.linalg.solve(info, score)
    mu = 1 / (1 + np.exp(-(X @ beta)))
    info = X.T @ (X * (n * mu * (1 - mu))[:, None])
    return beta[1], math.sqrt(np.linalg.inv(info)[1, 1])


# --------------------------------------------------------------------------------------------- TestResult


def test_result_summary_and_html():
    r = TestResult(statistic=2.0, p_value=0.04, method="score", estimate=0.1, ci_low=0.01, ci_high=0.2, n=90)
    frame = r.summary
    assert list(frame.columns) == ["statistic", "p_value", "estimate", "ci_low", "ci_high", "n"]
    assert frame.index.tolist() == ["score"]
    assert frame.loc["score", "p_value"] == 0.04
    assert "<table" in r._repr_html_() and "score" in r._repr_html_()
    with pytest.raises(AttributeError):
        r.p_value = 0.5  # type: ignore[misc]
    defaults = TestResult(statistic=1.0, p_value=0.5, method="chi_square")
    assert math.isnan(defaults.estimate) and defaults.n == 0


# --------------------------------------------------------------------------------------------- Wilson


def test_wilson_matches_closed_form():
    s = np.array([0, 1, 7, 50, 99, 100, 3])
    n = np.array([100, 100, 40, 100, 100, 100, 5])
    low, high = stats.wilson_interval(s, n)
    hl, hh = wilson_by_hand(s, n)
    np.testing.assert_allclose(low, hl, atol=1e-12)
    np.testing.assert_allclose(high, hh, atol=1e-12)
    z90 = sps.norm.ppf(0.95)
    low90, high90 = stats.wilson_interval(s, n, confidence=0.90)
    np.testing.assert_allclose(low90, wilson_by_hand(s, n, z90)[0], atol=1e-12)
    assert np.all(high90 - low90 < high - low)


@pytest.mark.parametrize(
    ("s", "n", "low", "high"),
    [  # Newcombe (1998) Stat Med 17:857, Table I, method 3 (score); also Brown, Cai & DasGupta (2001)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_published_values(s, n, low, high):
    lo, hi = stats.wilson_interval(s, n)
    assert abs(float(lo) - low) < 1e-4
    assert abs(float(hi) - high) < 1e-4


def test_wilson_edge_cases():
    low, high = stats.wilson_interval(pd.Series([0, 10, 0, 4]), pd.Series([10, 10, 0, 9]))
    assert low[0] == 0.0 and 0 < high[0] < 1
    assert high[1] == pytest.approx(1.0) and 0 < low[1] < 1
    assert np.isnan(low[2]) and np.isnan(high[2])
    assert isinstance(low, np.ndarray)
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)
    with pytest.raises(ValueError):
        stats.wilson_interval(-1, 4)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 4, confidence=95)


# --------------------------------------------------------------------------------------------- Newcombe


@pytest.mark.parametrize(
    ("counts", "low", "high"),
    [  # Newcombe (1998) Stat Med 17:873, Table II, method 10 (hybrid score, no continuity correction)
        ((56, 70, 48, 80), 0.0524, 0.3339),
        ((9, 10, 3, 10), 0.1705, 0.8090),
        ((5, 56, 0, 29), -0.0381, 0.1926),
        ((0, 10, 0, 20), -0.1611, 0.2775),
    ],
)
def test_newcombe_published_values(counts, low, high):
    diff, lo, hi = stats.newcombe_difference(*counts)
    s1, n1, s0, n0 = counts
    assert float(diff) == pytest.approx(s1 / n1 - s0 / n0)
    assert abs(float(lo) - low) < 1e-4
    assert abs(float(hi) - high) < 1e-4


def test_newcombe_matches_hand_formula_vectorised():
    s1 = np.array([56, 9, 5, 30, 1, 40])
    n1 = np.array([70, 10, 56, 31, 50, 40])
    s0 = np.array([48, 3, 0, 2, 0, 39])
    n0 = np.array([80, 10, 29, 60, 45, 40])
    diff, low, high = stats.newcombe_difference(s1, n1, s0, n0)
    hd, hl, hh = newcombe_by_hand(s1, n1, s0, n0)
    np.testing.assert_allclose(diff, hd, atol=1e-12)
    np.testing.assert_allclose(low, hl, atol=1e-12)
    np.testing.assert_allclose(high, hh, atol=1e-12)


def test_newcombe_zero_trials_is_nan():
    diff, low, high = stats.newcombe_difference([5, 5, 0], [10, 10, 0], [3, 0, 1], [10, 0, 4])
    assert np.isfinite(diff[0]) and np.isfinite(low[0]) and np.isfinite(high[0])
    assert np.isnan(diff[1:]).all() and np.isnan(low[1:]).all() and np.isnan(high[1:]).all()


# ----------------------------------------------------------------------------------------- two proportions


def test_score_test_matches_pooled_z():
    r = stats.two_proportion_test(56, 70, 48, 80)
    z, p = pooled_z(56, 70, 48, 80)
    assert r.method == "score"
    assert r.statistic == pytest.approx(z, rel=1e-10)
    assert r.p_value == pytest.approx(p, rel=1e-10)
    assert r.estimate == pytest.approx(0.2)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert r.n == 150
    # z**2 is the Pearson chi-square of the same 2x2 table
    chi2 = sps.chi2_contingency([[56, 14], [48, 32]], correction=False).statistic
    assert r.statistic**2 == pytest.approx(chi2, rel=1e-10)


def test_score_test_agrees_with_homogeneity_for_two_groups():
    r2 = stats.two_proportion_test(120, 400, 150, 410)
    rh = stats.homogeneity_test([120, 150], [400, 410])
    assert r2.p_value == pytest.approx(rh.p_value, rel=1e-10)
    assert r2.statistic < 0  # p1 < p0


def test_fisher_on_small_counts():
    r = stats.two_proportion_test(3, 8, 0, 9)
    ref = sps.fisher_exact([[3, 5], [0, 9]])
    assert r.method == "fisher_exact"
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.estimate == pytest.approx(3 / 8)
    d, lo, hi = newcombe_by_hand(3, 8, 0, 9)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_exact_below_boundary():
    # n1 = n0 = 10 with 10 successes in all: every expected cell is exactly 5 -> score test
    at = stats.two_proportion_test(7, 10, 3, 10, exact_below=5)
    assert at.method == "score"
    assert at.p_value == pytest.approx(pooled_z(7, 10, 3, 10)[1], rel=1e-10)
    # 9 successes in all: expected successes 4.5 < 5 -> Fisher
    below = stats.two_proportion_test(6, 10, 3, 10, exact_below=5)
    assert below.method == "fisher_exact"
    assert below.p_value == pytest.approx(sps.fisher_exact([[6, 4], [3, 7]]).pvalue, rel=1e-12)
    # the threshold is a parameter
    assert stats.two_proportion_test(7, 10, 3, 10, exact_below=5.01).method == "fisher_exact"
    assert stats.two_proportion_test(6, 10, 3, 10, exact_below=4.5).method == "score"


def test_two_proportion_edge_cases():
    none = stats.two_proportion_test(0, 10, 0, 10)
    assert none.method == "fisher_exact" and none.p_value == pytest.approx(1.0)
    assert none.estimate == 0.0 and none.ci_low < 0 < none.ci_high
    full = stats.two_proportion_test(40, 40, 50, 50)
    assert full.method == "fisher_exact" and full.p_value == pytest.approx(1.0)
    extreme = stats.two_proportion_test(0, 100, 100, 100)
    assert extreme.p_value < 1e-40 and extreme.estimate == -1.0
    empty = stats.two_proportion_test(0, 0, 3, 10)
    assert empty.method == "none" and math.isnan(empty.p_value) and math.isnan(empty.estimate)
    assert empty.n == 10
    missing = stats.two_proportion_test(float("nan"), 10, 3, 10)
    assert missing.method == "none" and math.isnan(missing.p_value)
    no_exact = stats.two_proportion_test(0, 10, 0, 10, exact_below=0)
    assert no_exact.method == "score" and math.isnan(no_exact.p_value)
    with pytest.raises(ValueError):
        stats.two_proportion_test(11, 10, 3, 10)
    with pytest.raises(ValueError):
        stats.two_proportion_test(2.5, 10, 3, 10)


# --------------------------------------------------------------------------------------------- binomial trend


def test_binomial_trend_recovers_simulated_slope():
    rng = np.random.default_rng(20251101)
    k, true_slope, intercept = 24, 0.04, -1.5
    t = np.arange(k, dtype=float)
    trials = rng.integers(800, 1200, size=k)
    successes = rng.binomial(trials, 1 / (1 + np.exp(-(intercept + true_slope * t))))
    r = stats.binomial_trend(successes, trials)
    assert r.method == "glm_trend"
    assert r.n == trials.sum()
    assert r.ci_low < true_slope < r.ci_high
    assert abs(r.estimate - true_slope) < 0.01
    assert r.p_value < 1e-10
    # independent path: hand Newton-Raphson on the binomial log-likelihood
    slope, se = logit_newton(successes.astype(float), trials.astype(float), t)
    assert r.estimate == pytest.approx(slope, rel=1e-8)
    assert r.statistic == pytest.approx(slope / se, rel=1e-6)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(slope / se)), rel=1e-5)
    assert (r.ci_low, r.ci_high) == pytest.approx((slope - Z95 * se, slope + Z95 * se), rel=1e-6)


def test_binomial_trend_matches_logit_on_expanded_rows():
    s = np.array([3, 5, 4, 9, 8, 12])
    n = np.array([30, 31, 25, 33, 30, 35])
    t = np.array([0.0, 1, 2, 4, 5, 7])  # uneven steps: t is honoured
    r = stats.binomial_trend(s, n, t)
    y = np.concatenate([np.r_[np.ones(a), np.zeros(b - a)] for a, b in zip(s, n, strict=True)])
    x = np.repeat(t, n)
    logit = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    assert r.estimate == pytest.approx(logit.params[1], rel=1e-6)
    assert r.p_value == pytest.approx(logit.pvalues[1], rel=1e-5)


def test_binomial_trend_flat_and_edge_cases():
    flat = stats.binomial_trend([10, 10, 10, 10], [100, 100, 100, 100])
    assert flat.estimate == pytest.approx(0.0, abs=1e-10) and flat.p_value == pytest.approx(1.0)
    # steps without trials are dropped, not counted as zeros
    gap = stats.binomial_trend([10, 0, 10, 10], [100, 0, 100, 100])
    assert gap.estimate == pytest.approx(0.0, abs=1e-10) and gap.n == 300
    for s, n in [([0, 0, 0], [10, 10, 10]), ([10, 10, 10], [10, 10, 10]), ([0, 0, 5, 10], [10] * 4)]:
        r = stats.binomial_trend(s, n)
        assert r.method == "glm_trend" and math.isnan(r.estimate) and math.isnan(r.p_value)
    one = stats.binomial_trend([3, 0], [10, 0])
    assert one.method == "none" and math.isnan(one.p_value)
    two = stats.binomial_trend([3, 5], [10, 10])  # saturated, but identified
    assert two.estimate == pytest.approx(math.log(5 / 5) - math.log(3 / 7))
    with pytest.raises(ValueError):
        stats.binomial_trend([1, 2], [10, 10], t=[0, 1, 2])


# --------------------------------------------------------------------------------------------- homogeneity


def test_homogeneity_matches_hand_chi_square():
    s = np.array([30, 45, 20, 60])
    n = np.array([200, 210, 190, 230])
    observed = np.vstack([s, n - s]).astype(float)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    r = stats.homogeneity_test(s, n)
    assert r.method == "chi_square"
    assert r.statistic == pytest.approx(chi2, rel=1e-12)
    assert r.p_value == pytest.approx(sps.chi2.sf(chi2, df=3), rel=1e-10)
    assert r.n == n.sum()


def test_homogeneity_edge_cases():
    same = stats.homogeneity_test([10, 20], [100, 200])
    assert same.statistic == pytest.approx(0.0, abs=1e-12) and same.p_value == pytest.approx(1.0)
    dropped = stats.homogeneity_test([10, 0, 20], [100, 0, 200])
    assert dropped.p_value == pytest.approx(1.0) and dropped.n == 300
    for s, n in [([0, 0], [10, 20]), ([10, 20], [10, 20])]:
        r = stats.homogeneity_test(s, n)
        assert r.method == "chi_square" and math.isnan(r.p_value)
    assert stats.homogeneity_test([5], [10]).method == "none"


# --------------------------------------------------------------------------------------------- BH


def test_bh_matches_hand_step_up():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.5, 0.041, 0.9])
    q = stats.bh_qvalues(p)
    np.testing.assert_allclose(q, bh_by_hand(p), atol=1e-15)
    # worked values: smallest p 0.005 * 8 / 1 = 0.04; the 0.04/0.041 pair shares 0.041 * 8 / 5
    assert q[3] == pytest.approx(0.04)
    assert q[1] == pytest.approx(0.041 * 8 / 5) and q[6] == pytest.approx(0.041 * 8 / 5)


def test_bh_nan_not_counted():
    p = np.array([0.01, np.nan, 0.02, np.nan, 0.03])
    q = stats.bh_qvalues(p)
    assert np.isnan(q[[1, 3]]).all()
    np.testing.assert_allclose(q[[0, 2, 4]], bh_by_hand([0.01, 0.02, 0.03]))
    assert stats.bh_qvalues([]).shape == (0,)
    assert np.isnan(stats.bh_qvalues([np.nan, np.nan])).all()
    with pytest.raises(ValueError):
        stats.bh_qvalues([0.1, 1.2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), min_size=1, max_size=40))
def test_bh_properties(p_list):
    p = np.array(p_list)
    q = stats.bh_qvalues(p)
    ok = ~np.isnan(p)
    assert np.array_equal(np.isnan(q), ~ok)
    pv, qv = p[ok], q[ok]
    assert np.all(qv >= pv - 1e-15) and np.all(qv <= 1)
    order = np.argsort(pv, kind="stable")
    assert np.all(np.diff(qv[order]) >= -1e-15)
    np.testing.assert_allclose(qv, bh_by_hand(pv) if pv.size else qv, atol=1e-12)


# --------------------------------------------------------------------------------------------- is_move


def test_is_move_truth_table():
    #            q     change  baseline  expected
    rows = [
        (0.01, 0.05, 0.20, True),  # significant, big, 25% relative
        (0.01, -0.05, 0.20, True),  # falls count too
        (0.05, 0.05, 0.20, False),  # q == alpha is not < alpha
        (0.01, 0.02, 0.05, False),  # below the practical effect (40% relative is not enough)
        (0.01, 0.03, 0.20, True),  # exactly the practical effect, 15% relative exactly
        (0.01, 0.04, 0.50, False),  # practical but only 8% relative
        (np.nan, 0.10, 0.20, False),  # not tested
        (0.01, np.nan, 0.20, False),
        (0.01, 0.05, 0.0, True),  # from zero: infinite relative change
    ]
    q, change, base, expected = (np.array(c) for c in zip(*rows, strict=True))
    got = stats.is_move(q, change, base, alpha=0.05, min_practical_effect=0.03, min_relative_effect=0.15)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected.astype(bool))
    # default: no relative criterion, so a NaN baseline does not block
    assert stats.is_move(0.01, 0.04, np.nan, alpha=0.05, min_practical_effect=0.03)
    assert not stats.is_move(
        0.01, 0.04, np.nan, alpha=0.05, min_practical_effect=0.03, min_relative_effect=0.1
    )
    series = stats.is_move(
        pd.Series([0.01, 0.2]), pd.Series([0.1, 0.1]), 0.3, alpha=0.05, min_practical_effect=0.03
    )
    np.testing.assert_array_equal(series, [True, False])


def test_enough_cells():
    got = stats.enough_cells(pd.Series([0, 29, 30, 31, np.nan]), 30)
    np.testing.assert_array_equal(got, [False, False, True, True, False])
    assert got.dtype == bool


# --------------------------------------------------------------------------------------------- mix / rate


def test_mix_rate_simpson():
    # every segment's rate falls, but the mix moves towards the high-rate segment, so the total rises
    frame = pd.DataFrame(
        {"seg": ["enterprise", "smb"], "s0": [50, 90], "n0": [100, 900], "s1": [405, 8], "n1": [900, 100]}
    )
    out = stats.mix_rate_decomposition(frame, group="seg", s0="s0", n0="n0", s1="s1", n1="n1")
    assert list(out.columns) == ["group", "w0", "w1", "r0", "r1", "mix_effect", "rate_effect", "total_effect"]
    assert out["group"].tolist() == ["enterprise", "smb"]
    r0_total, r1_total = 140 / 1000, 413 / 1000
    assert r1_total > r0_total
    assert (out["r1"] < out["r0"]).all()
    assert (out["rate_effect"] < 0).all()
    assert out["mix_effect"].sum() > 0
    assert out["total_effect"].sum() == pytest.approx(r1_total - r0_total, abs=1e-12)
    assert out.attrs["r0_total"] == pytest.approx(r0_total)
    assert out.attrs["r1_total"] == pytest.approx(r1_total)
    # hand values for the enterprise row
    ent = out.iloc[0]
    assert ent["rate_effect"] == pytest.approx((0.45 - 0.5) * (0.1 + 0.9) / 2)
    assert ent["mix_effect"] == pytest.approx((0.9 - 0.1) * (0.5 + 0.45) / 2)


def test_mix_rate_new_and_empty_groups():
    frame = pd.DataFrame(
        {
            "g": ["c", "a", "b", "d", "a"],  # unsorted, "a" split over two rows
            "s0": [0, 10, 20, 0, 5],
            "n0": [0, 50, 100, 0, 50],
            "s1": [30, 12, 18, 0, 6],
            "n1": [60, 60, 90, 0, 40],
        }
    )
    out = stats.mix_rate_decomposition(frame, group="g", s0="s0", n0="n0", s1="s1", n1="n1")
    assert out["group"].tolist() == ["a", "b", "c", "d"]
    new = out.set_index("group").loc["c"]
    assert new["w0"] == 0 and new["r0"] == pytest.approx(0.5) and new["rate_effect"] == 0
    assert new["mix_effect"] == pytest.approx(60 / 250 * 0.5)
    gone = out.set_index("group").loc["d"]
    assert np.isnan(gone["r0"]) and gone["mix_effect"] == 0 and gone["rate_effect"] == 0
    pooled_a = out.set_index("group").loc["a"]
    assert pooled_a["r0"] == pytest.approx(15 / 100) and pooled_a["r1"] == pytest.approx(18 / 100)
    assert out["total_effect"].sum() == pytest.approx(66 / 250 - 35 / 200, abs=1e-12)


def test_mix_rate_empty_period_is_nan():
    frame = pd.DataFrame({"g": ["a", "b"], "s0": [0, 0], "n0": [0, 0], "s1": [1, 2], "n1": [5, 5]})
    out = stats.mix_rate_decomposition(frame, group="g", s0="s0", n0="n0", s1="s1", n1="n1")
    assert out["total_effect"].isna().all() and np.isnan(out.attrs["r0_total"])


group_counts = st.tuples(st.integers(0, 500), st.integers(0, 500)).flatmap(
    lambda nn: st.tuples(st.integers(0, nn[0]), st.just(nn[0]), st.integers(0, nn[1]), st.just(nn[1]))
)


@settings(max_examples=300, deadline=None)
@given(st.lists(group_counts, min_size=1, max_size=8))
def test_mix_rate_sums_to_total_change(rows):
    frame = pd.DataFrame(rows, columns=["s0", "n0", "s1", "n1"])
    frame["g"] = [f"g{i}" for i in range(len(rows))]
    out = stats.mix_rate_decomposition(frame, group="g", s0="s0", n0="n0", s1="s1", n1="n1")
    if frame["n0"].sum() == 0 or frame["n1"].sum() == 0:
        assert out["total_effect"].isna().all()
        return
    change = frame["s1"].sum() / frame["n1"].sum() - frame["s0"].sum() / frame["n0"].sum()
    assert abs((out["mix_effect"] + out["rate_effect"]).sum() - change) < 1e-12
    assert np.allclose(out["total_effect"], out["mix_effect"] + out["rate_effect"])
    assert out["w0"].sum() == pytest.approx(1.0) and out["w1"].sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------- survival


def _survival_sample(seed, n=300):
    rng = np.random.default_rng(seed)
    groups = rng.choice(["inbound", "outbound", "partner"], size=n)
    scale = np.select([groups == "inbound", groups == "outbound"], [40.0, 60.0], 50.0)
    durations = np.ceil(rng.exponential(scale))  # whole days, so ties occur
    events = rng.random(n) < 0.7  # the rest are open deals, censored
    return durations, events, groups


def test_logrank_matches_lifelines():
    d, e, g = _survival_sample(20251101)
    r = stats.logrank_test(d, e, g)
    ref = multivariate_logrank_test(d, g, e)
    assert r.method == "logrank" and r.n == d.size
    assert r.statistic == pytest.approx(ref.test_statistic, rel=1e-8)
    assert r.p_value == pytest.approx(ref.p_value, rel=1e-8)
    two = g != "partner"
    r2 = stats.logrank_test(d[two], e[two], g[two])
    ref2 = lifelines_logrank(
        d[two & (g == "inbound")],
        d[two & (g == "outbound")],
        e[two & (g == "inbound")],
        e[two & (g == "outbound")],
    )
    assert r2.statistic == pytest.approx(ref2.test_statistic, rel=1e-8)
    assert r2.p_value == pytest.approx(ref2.p_value, rel=1e-8)
    assert r2.p_value < 0.05  # the simulated scales differ by half


def test_logrank_edge_cases():
    one = stats.logrank_test([1, 2, 3], [1, 1, 0], ["a", "a", "a"])
    assert one.method == "none" and math.isnan(one.p_value) and one.n == 3
    censored = stats.logrank_test([1, 2, 3, 4], [0, 0, 0, 0], ["a", "b", "a", "b"])
    assert math.isnan(censored.p_value)
    with pytest.raises(ValueError):
        stats.logrank_test([1, -2], [1, 1], ["a", "b"])
    with pytest.raises(ValueError):
        stats.logrank_test([1, 2], [1, 2], ["a", "b"])


@pytest.mark.parametrize("seed", [1, 2, 3, 20251101])
def test_km_median_matches_lifelines(seed):
    d, e, _ = _survival_sample(seed, n=120)
    median, low, high = stats.km_median(d, e)
    kmf = KaplanMeierFitter().fit(d, e)
    ci = median_survival_times(kmf.confidence_interval_).to_numpy().ravel()
    assert median == kmf.median_survival_time_
    assert low <= median <= high
    assert (low, high) == pytest.approx(tuple(ci))


def test_km_median_edge_cases():
    # the curve sits exactly on 0.5 after two of four events: first time at or below 0.5 (lifelines)
    median, _, _ = stats.km_median([1, 2, 3, 4], [1, 1, 1, 1])
    assert median == KaplanMeierFitter().fit([1, 2, 3, 4], [1, 1, 1, 1]).median_survival_time_ == 2
    # mostly open deals: median not reached -> NaN, upper limit unbounded -> NaN
    median, low, high = stats.km_median(np.arange(1, 11), [1] + [0] * 9)
    assert math.isnan(median) and math.isnan(high) and low == 1
    assert all(math.isnan(x) for x in stats.km_median([], []))
    assert all(math.isnan(x) for x in stats.km_median([3, 5], [0, 0]))
    narrow = stats.km_median(*_survival_sample(7)[:2], confidence=0.5)
    wide = stats.km_median(*_survival_sample(7)[:2], confidence=0.99)
    assert wide[1] <= narrow[1] <= narrow[2] <= wide[2]


def test_wilson_interval_holds_the_rate_at_zero_and_one():
    """0/n and n/n: the bounds are exactly 0 and 1 (rounding put 0/6's lower bound 2.8e-17 above the rate, a
    negative error bar that made matplotlib refuse the handoff section's aging chart and so the whole run)."""
    low, high = stats.wilson_interval(np.array([0, 6, 0, 40]), np.array([6, 6, 1, 40]))
    rate = np.array([0, 1, 0, 1])
    assert (low <= rate).all() and (high >= rate).all()
    assert low[0] == 0.0 and low[2] == 0.0 and high[1] == 1.0 and high[3] == 1.0
