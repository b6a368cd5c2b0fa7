"""Velocity: Kaplan-Meier, log-rank, Aalen-Johansen and aging figures equal independent computations on the rows
(lifelines where the kit uses statsmodels, a direct formula where it uses lifelines); the Maven CRM sample matches
its published closed-deal medians."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from canonical_factory import write_table
from conftest import MAPPINGS, shared_data
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.statistics import multivariate_logrank_test
from statsmodels.duration.survfunc import SurvfuncRight

from analysis import velocity, velocity_report
from analysis.config import load_definitions
from analysis.context import SectionContext, open_context
from analysis.engine import connect, load_tables
from analysis.metrics import dims
from analysis.periods import parse_period

AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
DEFS = load_definitions()
TRAILING = [str(p) for p in pd.period_range("2025-11", "2026-10", freq="M")]
STAGES = ["Discovery", "Solution", "Proposal", "Negotiation"]


def make_deals(n: int = 1400, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    created = (
        pd.Timestamp("2025-06-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 517 * 24 * 60, n), unit="min")
    ).floor("min")
    seg = rng.choice(["SMB", "Enterprise"], n, p=[0.7, 0.3])
    cycle = np.where(seg == "SMB", rng.lognormal(np.log(30), 0.6, n), rng.lognormal(np.log(100), 0.4, n))
    close = created + pd.to_timedelta(np.round(cycle * 24 * 60), unit="min")
    snapshot = pd.Timestamp("2027-01-01T00:00:00Z")  # the export is later than the as-of instant
    closed = close < snapshot
    won = closed & (rng.random(n) < 0.35)
    opps = pd.DataFrame(
        {
            "opportunity_id": [f"O{i:05d}" for i in range(n)],
            "created_at": created,
            "segment": seg,
            "origin": rng.choice(["marketing", "sales"], n),
            "owner_team": rng.choice(["AE-1", "AE-2"], n),
            "amount": [Decimal(f"{v:.2f}") for v in rng.lognormal(9, 1, n)],
            "stage": np.where(won, "Closed Won", np.where(closed, "Closed Lost", "Discovery")),
            "is_closed": closed,
            "is_won": won,
            "closed_at": pd.Series(close).where(closed),
        }
    )
    furthest = np.where(won, 3, rng.integers(0, 4, n))
    rows = []
    for i in range(n):
        for k in range(furthest[i] + 1):
            rows.append((opps["opportunity_id"][i], STAGES[k], created[i] + pd.Timedelta(days=float(cycle[i]) * k / 4)))
        if closed[i]:
            rows.append((opps["opportunity_id"][i], "Closed Won" if won[i] else "Closed Lost", close[i]))
    hist = pd.DataFrame(rows, columns=["opportunity_id", "stage", "entered_at"])
    hist["entered_at"] = pd.to_datetime(hist["entered_at"], utc=True).dt.floor("us")
    # edge cases: a deal not yet engaged (no creation date) is left out
    extra = opps.iloc[:1].copy()
    extra["opportunity_id"], extra["created_at"] = "O-NOT-ENGAGED", pd.NaT
    return pd.concat([opps, extra], ignore_index=True), hist


def ctx_for(folder: Path, period: str = "2026-10", as_of: pd.Timestamp = AS_OF) -> SectionContext:
    con = connect("duckdb")
    return SectionContext(
        con=con,
        tables=load_tables(con, folder),
        definitions=DEFS,
        period=parse_period(period),
        as_of=as_of,
        data_dir=folder,
    )


def direct_durations(opps: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    d = opps[opps["created_at"].notna() & (opps["created_at"] < as_of)].copy()
    d["created_at"] = pd.to_datetime(d["created_at"], utc=True)
    d["closed_at"] = pd.to_datetime(d["closed_at"], utc=True)
    done = d["is_closed"] & (d["closed_at"] <= as_of)
    end = d["closed_at"].where(done, as_of)
    d["days"] = np.floor((end - d["created_at"]).dt.total_seconds() / 86400).astype(int)
    d["event"] = np.where(done, np.where(d["is_won"], 1, 2), 0)
    d["cohort"] = d["created_at"].dt.strftime("%Y-%m")
    return d


def aj_direct(days: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """Tie-exact Aalen-Johansen cumulative incidence of event 1 (event 2 competing) at `horizon`."""
    s, cif = 1.0, 0.0
    for t in np.unique(days[event > 0]):
        if t > horizon:
            break
        n = (days >= t).sum()
        d1, d = ((days == t) & (event == 1)).sum(), ((days == t) & (event > 0)).sum()
        cif += s * d1 / n
        s *= 1 - d / n
    return cif


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("velocity")
    opps, hist = make_deals()
    write_table("opportunities", opps, folder)
    write_table("stage_history", hist, folder)
    result = velocity.analyse(ctx_for(folder))
    return folder, opps, hist, direct_durations(opps, AS_OF), result


def row(m, metric, period="2026-10", **d):
    r = m[(m["metric"] == metric) & (m["period"] == period) & (m["dimensions"] == dims(**d))]
    assert len(r) == 1, (metric, period, d)
    return r.iloc[0]


def test_grouped_durations_equal_direct(case):
    _, _, _, d, res = case
    mine = res.durations.groupby(["cohort", "days", "event"])["deals"].sum()
    want = d[d["cohort"] >= res.durations["cohort"].min()].groupby(["cohort", "days", "event"]).size()
    pd.testing.assert_series_equal(mine, want, check_names=False)
    assert res.source == "stage_history"


@pytest.mark.parametrize("segment", [None, "SMB", "Enterprise"])
def test_km_median_equals_lifelines_and_ci_equals_statsmodels(case, segment):
    _, _, _, d, res = case
    g = d[d["cohort"].isin(TRAILING)]
    if segment:
        g = g[g["segment"] == segment]
    kmf = KaplanMeierFitter().fit(g["days"], g["event"] > 0)
    r = row(res.metrics, "days_to_close_median", **({"segment": segment} if segment else {}))
    assert r["value"] == kmf.median_survival_time_
    assert r["n"] == len(g)
    low, high = SurvfuncRight(g["days"].to_numpy(float), (g["event"] > 0).to_numpy(float)).quantile_ci(0.5)
    assert r["ci_low"] == pytest.approx(low) and r["ci_high"] == pytest.approx(high)
    closed = g[g["event"] > 0]
    naive = row(res.metrics, "days_to_close_naive_mean_closed", **({"segment": segment} if segment else {}))
    assert naive["value"] == pytest.approx(closed["days"].mean()) and naive["n"] == len(closed)
    # Censoring: the closed-only median leaves out the long-open deals, so it is below the KM median.
    assert (
        row(res.metrics, "days_to_close_naive_median_closed", **({"segment": segment} if segment else {}))["value"]
        < r["value"]
    )


def test_segment_logrank_equals_lifelines(case):
    _, _, _, d, res = case
    g = d[d["cohort"].isin(TRAILING)]
    want = multivariate_logrank_test(g["days"], g["segment"], g["event"] > 0)
    r = row(res.metrics, "days_to_close_segment_difference")
    assert r["value"] == pytest.approx(want.test_statistic, rel=1e-6)
    # statsmodels reports p as 1 - cdf, which underflows to 0 below about 1e-16; lifelines uses the survival function
    assert r["p_value"] == pytest.approx(want.p_value, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("segment", [None, "SMB", "Enterprise"])
def test_win_cumulative_incidence_equals_tie_exact_aalen_johansen(case, segment):
    _, _, _, d, res = case
    g = d[d["cohort"].isin(TRAILING)]
    if segment:
        g = g[g["segment"] == segment]
    for h in (90, 180):
        r = row(res.metrics, f"win_cumulative_incidence_{h}d", **({"segment": segment} if segment else {}))
        assert r["value"] == pytest.approx(aj_direct(g["days"].to_numpy(), g["event"].to_numpy(), h), abs=1e-9)
        assert r["ci_low"] < r["value"] < r["ci_high"]
    # a competing-risk incidence is below the 1 - KM that would treat losses as censored
    kmf = KaplanMeierFitter().fit(g["days"], g["event"] == 1)
    assert r["value"] < 1 - kmf.survival_function_at_times(180).iloc[0]


def test_early_close_change_is_the_logrank_of_the_tested_cohort(case):
    _, _, _, d, res = case
    cur = d[d["cohort"] == "2026-10"]
    base = d[d["cohort"].isin([f"2026-0{i}" for i in range(4, 10)])]
    r = row(res.metrics, "early_close_rate_change")
    want = lifelines_logrank(cur["days"], base["days"], cur["event"] > 0, base["event"] > 0)
    assert r["p_value"] == pytest.approx(want.p_value, rel=1e-6)
    p1 = 1 - KaplanMeierFitter().fit(cur["days"], cur["event"] > 0).survival_function_at_times(14).iloc[0]
    p0 = 1 - KaplanMeierFitter().fit(base["days"], base["event"] > 0).survival_function_at_times(14).iloc[0]
    assert r["value"] == pytest.approx(p1 - p0) and r["baseline"] == pytest.approx(p0)
    assert r["n"] == len(cur) and r["metric"].endswith("_change")


def test_time_in_stage_equals_direct(case):
    _, opps, hist, _, res = case
    h = hist[hist["entered_at"] <= AS_OF].sort_values(["opportunity_id", "entered_at"]).copy()
    h["next_at"] = h.groupby("opportunity_id")["entered_at"].shift(-1)
    h = h[h["stage"].isin(STAGES) & (h["entered_at"] >= pd.Timestamp("2025-11-01", tz="UTC")).to_numpy()]
    o = opps.set_index("opportunity_id")
    close = o["closed_at"].reindex(h["opportunity_id"]).to_numpy()
    close = pd.Series(close, index=h.index).where(lambda s: s <= AS_OF)
    exit_ = h["next_at"].fillna(close)
    h["event"] = exit_.notna()
    h["days"] = np.floor((exit_.fillna(AS_OF) - h["entered_at"]).dt.total_seconds() / 86400).astype(int)
    h["segment"] = o["segment"].reindex(h["opportunity_id"]).to_numpy()
    for (stage, seg), g in h.groupby(["stage", "segment"]):
        r = row(res.metrics, "time_in_stage_median", stage=stage, segment=seg)
        assert r["n"] == len(g)
        want = KaplanMeierFitter().fit(g["days"], g["event"]).median_survival_time_
        assert (np.isinf(want) and np.isnan(r["value"])) or r["value"] == want


def test_aging_uses_the_segment_p75_of_days_to_close(case):
    _, _, _, d, res = case
    for seg in ("SMB", "Enterprise"):
        g = d[d["cohort"].isin(TRAILING) & (d["segment"] == seg)]
        sf = KaplanMeierFitter().fit(g["days"], g["event"] > 0).survival_function_.iloc[:, 0]
        p75 = float(sf.index[np.argmax(sf.to_numpy() <= 0.25 + 1e-12)])
        open_ = d[(d["event"] == 0) & (d["segment"] == seg)]
        old = open_[open_["days"] > p75]
        r = row(res.metrics, "aging_open_deals", segment=seg)
        assert r["baseline"] == p75 and r["value"] == len(old) and r["n"] == len(open_)
        assert r["impact"] == pytest.approx(float(sum(old["amount"])))
    top = res.aging_list
    assert len(top) <= 15 and (top["age_days"] > top["threshold_days"]).all()
    assert top["amount"].is_monotonic_decreasing
    assert "Closed Won" not in set(top["stage"]) and "Closed Lost" not in set(top["stage"])


def test_deal_without_creation_date_is_left_out_with_a_note(case):
    *_, res = case
    assert any("without a creation date" in n for n in res.notes)


def test_lead_to_opportunity_median(tmp_path):
    rng = np.random.default_rng(9)
    n = 500
    created = pd.Timestamp("2025-10-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 390, n), unit="D")
    sql = created + pd.to_timedelta(rng.exponential(25, n), unit="D")
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n)],
            "created_at": created.floor("us"),
            "segment": rng.choice(["SMB", "Enterprise"], n),
            "source_channel": "webinar",
            "sql_at": pd.Series(sql.floor("us")).where(rng.random(n) < 0.4),
        }
    )
    opps, hist = make_deals(200)
    write_table("leads", leads, tmp_path)
    write_table("opportunities", opps, tmp_path)
    res = velocity.analyse(ctx_for(tmp_path))
    days_w = DEFS["conversion_windows"]["days"]
    w = days_w["lead_to_mql"] + days_w["mql_to_sql"]
    g = leads[
        (leads["created_at"] >= pd.Timestamp("2025-11-01", tz="UTC"))
        & (leads["created_at"] < AS_OF - pd.Timedelta(days=w))
        & leads["sql_at"].notna()
    ]
    days = (g["sql_at"] - g["created_at"]).dt.total_seconds() / 86400
    g, days = g[days <= w], days[days <= w]
    r = row(res.metrics, "lead_to_opportunity_days_median")
    assert r["n"] == len(g) and r["value"] == pytest.approx(days.median())
    # without stage_history: durations from created/closed, said so, no time in stage
    assert res.source == velocity.SOURCE_DATES
    assert "No stage_history provided" in res.notes[0]
    assert not (res.metrics["metric"] == "time_in_stage_median").any()
    d = direct_durations(opps, AS_OF)
    g = d[d["cohort"].isin(TRAILING)]
    assert (
        row(res.metrics, "days_to_close_median")["value"]
        == KaplanMeierFitter().fit(g["days"], g["event"] > 0).median_survival_time_
    )


def test_no_opportunities_gives_a_note_not_a_crash(tmp_path):
    res = velocity.analyse(ctx_for(tmp_path))
    assert res.metrics.empty and res.notes == ["No opportunities provided: velocity omitted."]


def test_charts_render(case):
    folder, *_, res = case
    from analysis.charts import png_bytes

    w = velocity.period_windows(parse_period("2026-10"), AS_OF, DEFS.stats)
    for fig in (
        velocity_report.km_chart(res.durations, w),
        velocity_report.cif_chart(res.durations, w),
        velocity_report.stage_chart(res.metrics),
    ):
        assert png_bytes(fig)[:4] == b"\x89PNG"
    assert len(velocity_report.summary_table(res.metrics)) == 3
    assert list(velocity_report.stage_table(res.metrics, velocity.open_stages(DEFS))["stage"]) == STAGES


# ----------------------------------------------------------------------------------------- Maven CRM sample


def test_maven_closed_deal_medians_and_censoring(tmp_path):
    raw = shared_data("maven_crm")
    from analysis.ingest import ingest

    ingest(raw, MAPPINGS / "maven_crm.yml", tmp_path / "processed", DEFS)
    ctx = open_context(tmp_path / "processed", "2017-12", None, DEFS.path, "duckdb")
    counts = velocity.duration_counts(ctx, None)
    med = velocity.closed_deal_medians(counts).set_index("outcome")
    # REFERENCE.md: median days engage -> close of closed deals, Won 57 (n 4238), Lost 14 (n 2473).
    assert med.loc["won", "median_days"] == 57 and med.loc["won", "deals"] == 4238
    assert med.loc["lost", "median_days"] == 14 and med.loc["lost", "deals"] == 2473
    # Censoring: 1589 Engaging deals are still open at the snapshot, many of them for months. The closed-only
    # median drops them, i.e. drops exactly the deals whose time to close is longer than their age, so the
    # Kaplan-Meier median (which keeps them as censored) must be longer than the naive median of closed deals.
    km = velocity.km_summary(counts, None).iloc[0]
    assert km["deals"] == 8300 and km["closed"] == 6711
    assert km["km_median"] > km["naive_median_closed"] + 10
    res = velocity.analyse(ctx)
    assert res.source == velocity.SOURCE_DATES
    assert any("500 opportunities without a creation date" in n for n in res.notes)


def test_tables_and_charts_on_empty_metrics():
    from analysis.charts import png_bytes
    from analysis.metrics import empty

    m = empty()
    assert velocity_report.summary_table(m).empty and velocity_report.stage_table(m).empty
    assert velocity_report.lead_table(m).empty
    assert velocity_report.early_close_table(m).empty
    assert png_bytes(velocity_report.stage_chart(m))[:4] == b"\x89PNG"


def test_early_close_without_common_follow_up_is_not_tested():
    # the tested cohort is followed for 20 days and nobody closed; the baseline only closes after day 40:
    # no closing day has deals of both cohorts at risk, so the log-rank has nothing to compare.
    tested = pd.DataFrame({"cohort": "2026-10", "days": np.arange(40) % 20, "event": 0})
    base = pd.DataFrame({"cohort": "2026-05", "days": 40 + np.arange(40), "event": 1})
    counts = pd.concat([tested, base], ignore_index=True).assign(segment="SMB", origin="sales", deals=1, amount=0.0)
    w = velocity.period_windows(parse_period("2026-10"), AS_OF, DEFS.stats)
    m = velocity.early_close_metrics(counts, w, ["2026-10"], DEFS.stats)
    r = row(m, "early_close_rate_change")
    assert np.isnan(r["p_value"]) and r["method"] == "not_tested_no_common_follow_up"
    assert r["value"] == 0 and r["baseline"] == 0
