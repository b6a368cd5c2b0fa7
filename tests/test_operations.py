"""Weekly operations: new pipeline by source and deals likely to slip equal direct pandas computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from canonical_factory import random_funnel

from analysis import operations as op
from analysis.context import open_context


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    out = tmp_path_factory.mktemp("ops")
    frames = random_funnel(out, n=6000, seed=11)
    return frames, open_context(out, "2026-W40")


def test_new_pipeline_matches_pandas(week):
    frames, ctx = week
    o = frames["opportunities"]
    start, end = ctx.period.start, ctx.period.end
    cur = o[(o["created_at"] >= start) & (o["created_at"] < end)]
    prior = o[(o["created_at"] >= start - pd.Timedelta(weeks=8)) & (o["created_at"] < start)]
    got = op.new_pipeline_by_source(ctx).set_index("channel")
    for channel, g in cur.groupby("source_channel"):
        assert got.loc[channel, "deals"] == len(g)
        assert got.loc[channel, "amount"] == pytest.approx(float(sum(g["amount"])), abs=0.005)
    for channel, g in prior.groupby("source_channel"):
        assert got.loc[channel, "run_rate_amount"] == pytest.approx(float(sum(g["amount"])) / 8, rel=1e-12)
    assert got["origin"].isin(["marketing", "sales", "partner"]).all()


def test_slip_thresholds_and_list_match_pandas(week):
    frames, ctx = week
    o = frames["opportunities"]
    as_of = ctx.as_of
    won = o[o["is_won"] & (o["closed_at"] < as_of) & (o["closed_at"] >= as_of - pd.Timedelta(days=365))]
    days = (won["closed_at"] - won["created_at"]).dt.total_seconds() / 86400
    p75 = days.groupby(won["segment"]).quantile(0.75)
    got = op.slip_thresholds(ctx).set_index("segment")["p75_days_to_close"]
    # DuckDB's quantile is continuous like pandas' default linear interpolation.
    pd.testing.assert_series_equal(got.sort_index(), p75.sort_index(), check_names=False, rtol=1e-9)

    open_ = o[(o["created_at"] < as_of) & (o["closed_at"].isna() | (o["closed_at"] >= as_of))].copy()
    open_["age"] = (as_of - open_["created_at"]).dt.total_seconds() / 86400
    late = open_[open_["age"] > open_["segment"].map(p75)]
    summary = op.slip_summary(ctx).set_index("segment")
    for seg, g in open_.groupby("segment"):
        assert summary.loc[seg, "open_deals"] == len(g)
        assert summary.loc[seg, "late_deals"] == int((late["segment"] == seg).sum())
    listed = op.deals_likely_to_slip(ctx, limit=5)
    expected = late.assign(a=late["amount"].astype(float)).sort_values(["a", "opportunity_id"], ascending=[False, True])
    assert list(listed["opportunity_id"]) == list(expected["opportunity_id"].head(5))
    assert not set(listed.columns) & {"owner_id", "contact_name", "email"}


def test_metrics_carry_the_week(week):
    _, ctx = week
    pipeline, slip = op.new_pipeline_by_source(ctx), op.slip_summary(ctx)
    m = op.operations_metrics(ctx, pipeline, slip)
    assert (m["period"] == "2026-W40").all() and (m["section"] == "operations").all()
    total = m[(m["metric"] == "new_pipeline_amount") & (m["dimensions"] == "{}")]["value"].iloc[0]
    assert total == pytest.approx(pipeline["amount"].sum())
    assert np.isnan(m["p_value"]).all(), "operational figures are not tested moves"
