"""Funnel conversion: every count, rate and test equals a direct pandas / statsmodels computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from canonical_factory import random_funnel
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
)
from statsmodels.stats.proportion import (
    test_proportions_2indep as score_test_2indep,
)

from analysis import funnel
from analysis.config import load_definitions
from analysis.engine import connect, load_tables
from analysis.metrics import dims
from analysis.periods import month_end, previous_months

AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("funnel")
    frames = random_funnel(out)
    con = connect("duckdb")
    defs = load_definitions()
    counts, metrics = funnel.funnel_metrics(load_tables(con, out), defs, AS_OF, "2026-10", con)
    return frames, defs, counts, metrics


def direct_counts(frames, defs, key: str) -> pd.DataFrame:
    """Independent cohort counting in pandas on the row-level frames."""
    pair = funnel.PAIRS_BY_KEY[key]
    w = pd.Timedelta(days=defs.window_days(key))
    if pair.source == "leads":
        df = frames["leads"].copy()
        df["channel"] = df["source_channel"]
        entry, exit_ = df[pair.entry], df[pair.exit]
    else:
        df = frames["opportunities"].copy()
        df["channel"] = df["source_channel"]
        entry = df["created_at"]
        exit_ = df["closed_at"].where(df["is_won"])
    keep = entry.notna() & (entry < AS_OF)
    df, entry, exit_ = df[keep], entry[keep], exit_[keep]
    df = df.assign(
        month=entry.dt.strftime("%Y-%m"),
        converted=(exit_.notna() & (exit_ < AS_OF) & (exit_ >= entry) & (exit_ - entry <= w)).astype(int),
    )
    return df.groupby(["month", "segment", "channel"]).agg(
        entered=("converted", "size"), converted=("converted", "sum")
    )


@pytest.mark.parametrize("key", [p.key for p in funnel.STAGE_PAIRS])
def test_cohort_counts_match_pandas(data, key):
    frames, defs, counts, _ = data
    mine = counts[counts["pair"] == key].set_index(["month", "segment", "channel"])[["entered", "converted"]]
    theirs = direct_counts(frames, defs, key)
    pd.testing.assert_frame_equal(mine.sort_index(), theirs.sort_index().astype("int64"), check_names=False)


def test_maturity_follows_the_window(data):
    _, defs, counts, _ = data
    for rec in counts.drop_duplicates(["pair", "month"]).itertuples():
        expected = month_end(rec.month) + pd.Timedelta(days=defs.window_days(rec.pair)) <= AS_OF
        assert rec.mature == expected
    # With a 30-day MQL->SQL window at 1 Nov, September is the last mature cohort; October is immature.
    assert funnel.latest_mature_month(counts, "mql_to_sql", "2026-10") == "2026-09"
    assert funnel.latest_mature_month(counts, "sql_to_won", "2026-10") == "2026-04"


def test_rates_and_wilson_intervals_match_statsmodels(data):
    _, _, counts, metrics = data
    seg = counts[(counts["pair"] == "mql_to_sql") & (counts["segment"] == "Enterprise")]
    by_month = seg.groupby("month")[["entered", "converted"]].sum()
    for month, row in by_month.iterrows():
        m = metrics[
            (metrics["metric"] == "mql_to_sql_rate")
            & (metrics["dimensions"] == dims(segment="Enterprise"))
            & (metrics["period"] == month)
        ].iloc[0]
        lo, hi = proportion_confint(row.converted, row.entered, method="wilson")
        assert m["value"] == pytest.approx(row.converted / row.entered, abs=1e-12)
        assert (m["ci_low"], m["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert m["n"] == row.entered


def test_immature_cohorts_are_flagged_and_never_tested(data):
    _, _, _, metrics = data
    immature = metrics[(metrics["metric"] == "mql_to_sql_rate") & (metrics["period"] == "2026-10")]
    assert not immature.empty and (immature["flag"] == "immature").all()
    tests = metrics[metrics["p_value"].notna()]
    assert "2026-10" not in set(tests[tests["metric"].str.startswith("mql_to_sql")]["period"])


@pytest.mark.parametrize("segment", ["Enterprise", "SMB", None])
def test_baseline_test_matches_statsmodels(data, segment):
    frames, defs, counts, metrics = data
    month = "2026-09"
    base = previous_months(month, int(defs.stats["baseline_months"]))
    sub = counts[(counts["pair"] == "mql_to_sql")]
    if segment:
        sub = sub[sub["segment"] == segment]
    s1, n1 = sub.loc[sub["month"] == month, ["converted", "entered"]].sum()
    s0, n0 = sub.loc[sub["month"].isin(base), ["converted", "entered"]].sum()
    row = metrics[
        (metrics["metric"] == "mql_to_sql_rate_change")
        & (metrics["dimensions"] == (dims(segment=segment) if segment else "{}"))
    ].iloc[0]
    assert row["period"] == month and row["n"] == n1
    assert row["baseline"] == pytest.approx(s0 / n0, abs=1e-12)
    if n1 < defs.stats["min_cell_size"]:
        assert np.isnan(row["p_value"]) and row["flag"] == "small_cell"
        return
    _, p = score_test_2indep(s1, n1, s0, n0, method="score", correction=False)
    lo, hi = confint_proportions_2indep(s1, n1, s0, n0, method="newcomb", compare="diff")
    assert row["value"] == pytest.approx(s1 / n1 - s0 / n0, abs=1e-12)
    assert row["p_value"] == pytest.approx(p, rel=1e-9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_decomposition_sums_to_the_overall_change(data):
    _, defs, counts, metrics = data
    month = "2026-09"
    base = previous_months(month, int(defs.stats["baseline_months"]))
    sub = counts[counts["pair"] == "mql_to_sql"]
    r1 = sub.loc[sub["month"] == month, "converted"].sum() / sub.loc[sub["month"] == month, "entered"].sum()
    b = sub[sub["month"].isin(base)]
    r0 = b["converted"].sum() / b["entered"].sum()
    seg = metrics[metrics["method"] == "midpoint_decomposition_by_segment"]
    seg = seg[seg["metric"].isin(["mql_to_sql_rate_mix_effect", "mql_to_sql_rate_rate_effect"])]
    per_group, totals = seg[seg["dimensions"] != "{}"], seg[seg["dimensions"] == "{}"]
    assert per_group["value"].sum() == pytest.approx(r1 - r0, abs=1e-12)
    assert totals["value"].sum() == pytest.approx(r1 - r0, abs=1e-12)
    assert len(totals) == 2


def test_trend_slope_matches_statsmodels_glm(data):
    import statsmodels.api as sm

    _, _, counts, metrics = data
    row = metrics[(metrics["metric"] == "lead_to_mql_rate_trend") & (metrics["dimensions"] == "{}")].iloc[0]
    months = previous_months(row["period"], 11) + [row["period"]]
    sub = (
        counts[(counts["pair"] == "lead_to_mql") & counts["month"].isin(months)]
        .groupby("month")[["converted", "entered"]]
        .sum()
    )
    y = np.column_stack([sub["converted"], sub["entered"] - sub["converted"]])
    x = sm.add_constant(np.arange(len(sub), dtype=float))
    fit = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    assert row["value"] == pytest.approx(fit.params[1], rel=1e-6)
    assert row["p_value"] == pytest.approx(fit.pvalues[1], rel=1e-6)


def test_every_test_row_is_in_the_pack_family(data):
    _, _, _, metrics = data
    tested = metrics[metrics["p_value"].notna()]
    assert set(tested["method"].str.split("_").str[0]) <= {"score", "fisher", "glm", "chi"}
    assert tested["period"].str.match(r"^\d{4}-\d{2}$").all()
