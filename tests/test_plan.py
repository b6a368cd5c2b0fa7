"""Pipeline plan: the worked example, and every figure against a direct pandas computation on hand-made tables."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from statsmodels.stats.proportion import proportion_confint

from analysis import brief, formats, plan, plan_report
from analysis.config import DEFINITIONS_FILE, load_definitions
from analysis.context import open_context
from analysis.engine import connect, load_tables
from analysis.errors import DefinitionsError
from analysis.metrics import dims, lookup
from analysis.periods import parse_period
from analysis.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
SEGMENTS = ["SMB", "Mid-Market", "Enterprise"]
CHANNELS = ["paid_search", "webinar", "outbound_sdr", "partner_referral", "email", "mystery_channel"]
ORIGIN_OF = {
    "paid_search": "marketing",
    "webinar": "marketing",
    "email": "marketing",
    "outbound_sdr": "sales",
    "partner_referral": "partner",
}
ORIGINS = ["marketing", "sales", "partner"]
TARGET_MONTHS = [str(p) for p in pd.period_range("2025-03", "2027-01", freq="M")]
ACTUAL_MONTHS = [str(p) for p in pd.period_range("2025-03", "2026-10", freq="M")]


# ------------------------------------------------------------------------------------------------ data


def write_table(name: str, frame: pd.DataFrame, out: Path) -> None:
    """`frame` as the canonical table `name` with the schema's Arrow types (absent columns null)."""
    schema = TABLES[name].arrow_schema
    cols = {}
    for f in schema:
        values = frame[f.name] if f.name in frame else pd.Series([None] * len(frame))
        cols[f.name] = pa.array(list(values.astype(object).where(values.notna(), None)), type=f.type)
    pq.write_table(pa.table(cols, schema=schema), out / f"{name}.parquet")


def money(rng: np.random.Generator, n: int, mean: float) -> list[Decimal]:
    return [Decimal(f"{v:.2f}") for v in rng.lognormal(np.log(mean), 0.8, n)]


def make_data(out: Path, seed: int = 11, n: int = 900, forecasts: bool = True) -> dict[str, pd.DataFrame]:
    """Opportunities (own origin or by channel, some unknown; some null amounts and created dates), targets,
    forecasts (a few cells planted outside the band, one committed after the as-of instant)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-03-01", tz="UTC")
    created = start + pd.to_timedelta(rng.uniform(0, (AS_OF - start).days - 3, n) * 86400, unit="s")
    created = created.floor("s")
    channel = rng.choice(CHANNELS, n, p=[0.25, 0.15, 0.25, 0.15, 0.1, 0.1])
    own_origin = [ORIGIN_OF.get(c) if rng.random() < 0.5 else None for c in channel]
    close = created + pd.to_timedelta(rng.uniform(3, 220, n) * 86400, unit="s")
    closes = rng.random(n) < 0.8
    closed = closes & (close < AS_OF)
    won = closed & (rng.random(n) < np.where(channel == "outbound_sdr", 0.35, 0.25))
    amount = pd.Series(money(rng, n, 20000), dtype=object)
    amount[rng.random(n) < 0.03] = None
    opps = pd.DataFrame(
        {
            "opportunity_id": [f"O{i:05d}" for i in range(n)],
            "created_at": pd.Series(created),
            "segment": rng.choice(SEGMENTS, n, p=[0.5, 0.3, 0.2]),
            "source_channel": channel,
            "origin": own_origin,
            "amount": amount,
            "stage": np.where(won, "Closed Won", np.where(closed, "Closed Lost", "Discovery")),
            "is_closed": closed,
            "is_won": won,
            "closed_at": pd.Series(close).where(closed),
        }
    )
    # A few closed deals without a created date (the schema allows it): no cycle for them.
    blank = opps.index[opps["is_closed"]][:4]
    opps.loc[blank, "created_at"] = pd.NaT
    targets = pd.DataFrame(
        [(m, s, Decimal(f"{rng.uniform(50_000, 400_000):.2f}")) for m in TARGET_MONTHS for s in SEGMENTS],
        columns=["period", "segment", "revenue_target"],
    )
    out.mkdir(parents=True, exist_ok=True)
    write_table("opportunities", opps, out)
    write_table("targets", targets, out)
    frames = {"opportunities": opps, "targets": targets}
    if forecasts:
        won_rows = opps[opps["is_won"]].assign(
            month=lambda d: d["closed_at"].dt.strftime("%Y-%m"), amt=lambda d: d["amount"].map(_f)
        )
        actual = won_rows.groupby(["month", "segment"])["amt"].sum()
        rows = []
        for m in ACTUAL_MONTHS:
            for s in SEGMENTS:
                a = actual.get((m, s), 0.0)
                factor = {("2026-08", "Enterprise"): 0.8, ("2026-06", "SMB"): 1.25}.get((m, s), rng.uniform(0.93, 1.07))
                committed = pd.Timestamp(f"{m}-01", tz="UTC")
                if (m, s) == ("2026-10", "Mid-Market"):
                    committed = AS_OF + pd.Timedelta(days=2)  # not known at the as-of instant
                rows.append((m, s, Decimal(f"{max(a, 1000.0) / factor:.2f}"), committed))
        fc = pd.DataFrame(rows, columns=["period", "segment", "forecast_amount", "committed_at"])
        write_table("forecasts", fc, out)
        frames["forecasts"] = fc
    (out / "ingest_manifest.json").write_text(json.dumps({"as_of": AS_OF.isoformat(), "files": [], "tables": {}}))
    return frames


def _f(v) -> float:
    return float("nan") if v is None or (isinstance(v, float) and v != v) else float(v)


def run(out: Path, period: str, defs=None, as_of: pd.Timestamp = AS_OF) -> plan.PlanResult:
    con = connect("duckdb")
    p = parse_period(period)
    return plan.plan_analysis(load_tables(con, out), defs or load_definitions(), p, min(as_of, p.end), con)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    frames = make_data(out)
    return out, frames


@pytest.fixture(scope="module")
def monthly(data):
    return run(data[0], "2026-10")


@pytest.fixture(scope="module")
def quarterly(data):
    return run(data[0], "2026-Q3")


def origin_of(opps: pd.DataFrame) -> pd.Series:
    return opps["origin"].fillna(opps["source_channel"].map(ORIGIN_OF)).fillna("unknown")


# --------------------------------------------------------------------------------------- worked example


def test_worked_example_from_the_seed():
    needed = plan.pipeline_needed(1.5e6, {"marketing": 0.6, "sales": 0.4}, {"marketing": 0.22, "sales": 0.28})
    assert needed["marketing"] == pytest.approx(1.5e6 * 0.6 / 0.22)
    assert needed["sales"] == pytest.approx(1.5e6 * 0.4 / 0.28)
    assert formats.money(needed["marketing"]) == "$4.1M" and formats.money(needed["sales"]) == "$2.1M"


def test_pipeline_needed_edge_cases():
    got = plan.pipeline_needed(
        1e6, {"marketing": 0.5, "sales": 0.5, "partner": 0.0}, {"marketing": 0.0, "sales": float("nan")}
    )
    assert np.isnan(got["marketing"]) and np.isnan(got["sales"])
    assert got["partner"] == 0.0  # no share, no pipeline needed, whatever the win rate


def worked_definitions(tmp_path: Path, split: dict | None) -> Path:
    data = yaml.safe_load(DEFINITIONS_FILE.read_text(encoding="utf-8"))
    data.setdefault("plan", {"owner": "test", "last_audited": "2026-10-01"})
    data["plan"]["revenue_split_by_origin"] = split
    path = tmp_path / "definitions.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_worked_example_through_the_engine(tmp_path):
    """$1.5M target, governed 60/40 split, deals closed so that the win rates are exactly 22 % and 28 %."""
    rows = []
    closed_at = pd.Timestamp("2026-06-15T12:00:00Z")
    for origin, channel, n_closed, n_won in (("marketing", "paid_search", 50, 11), ("sales", "outbound_sdr", 25, 7)):
        for i in range(n_closed):
            rows.append(
                {
                    "opportunity_id": f"{origin}-{i}",
                    "created_at": closed_at - pd.Timedelta(days=30 + i),
                    "segment": "SMB",
                    "source_channel": channel,
                    "origin": origin,
                    "amount": Decimal("1000.00"),
                    "stage": "Closed Won" if i < n_won else "Closed Lost",
                    "is_closed": True,
                    "is_won": i < n_won,
                    "closed_at": closed_at,
                }
            )
    out = tmp_path / "data"
    out.mkdir()
    write_table("opportunities", pd.DataFrame(rows), out)
    write_table(
        "targets",
        pd.DataFrame({"period": ["2026-10"], "segment": ["SMB"], "revenue_target": [Decimal("1500000.00")]}),
        out,
    )
    defs = load_definitions(worked_definitions(tmp_path, {"marketing": 0.6, "sales": 0.4, "partner": 0.0}))
    result = run(out, "2026-10", defs)
    m = result.metrics
    assert lookup(m, "win_rate_by_origin", "2026-10", origin="marketing")["value"] == pytest.approx(0.22)
    assert lookup(m, "win_rate_by_origin", "2026-10", origin="sales")["value"] == pytest.approx(0.28)
    mk = lookup(m, "pipeline_needed", "2026-10", origin="marketing")["value"]
    sa = lookup(m, "pipeline_needed", "2026-10", origin="sales")["value"]
    assert mk == pytest.approx(4_090_909.09, abs=0.01) and sa == pytest.approx(2_142_857.14, abs=0.01)
    assert lookup(m, "pipeline_needed", "2026-10", origin="partner")["value"] == 0.0
    assert lookup(m, "pipeline_gap", "2026-10")["value"] == pytest.approx(-(mk + sa))  # nothing created in October
    assert set(result.split["source"]) == {"definitions"}


def test_governed_split_is_validated(tmp_path):
    defs = load_definitions(worked_definitions(tmp_path, {"marketing": 0.6, "sales": 0.3}))
    with pytest.raises(DefinitionsError, match="plan.revenue_split_by_origin"):
        plan.plan_settings(defs)
    defs = load_definitions(worked_definitions(tmp_path, {"marketing": 0.6, "field": 0.4}))
    with pytest.raises(DefinitionsError, match="plan.revenue_split_by_origin.field"):
        plan.plan_settings(defs)


def test_repository_definitions_declare_the_plan_settings():
    defs = load_definitions()
    assert defs["plan"]["owner"] and defs["plan"]["last_audited"]
    s = plan.plan_settings(defs)
    assert (s.trailing_months, s.coverage_window_days, s.trend_months) == (12, 90, 6)
    assert s.forecast_band == defs["scorecard"]["thresholds"]["forecast_accuracy"]["band"]


# ------------------------------------------------------------------------------- performance and model


def trailing(opps: pd.DataFrame, start: str, end: pd.Timestamp) -> pd.DataFrame:
    closed = opps[
        opps["closed_at"].notna() & (opps["closed_at"] >= pd.Timestamp(start, tz="UTC")) & (opps["closed_at"] < end)
    ]
    return closed.assign(origin=origin_of(closed))


@pytest.mark.parametrize("origin", ORIGINS)
def test_origin_performance_matches_pandas(data, monthly, origin):
    opps = data[1]["opportunities"]
    c = trailing(opps, "2025-11-01", AS_OF)
    c = c[c["origin"] == origin]
    won = c[c["is_won"]]
    row = monthly.performance.set_index("origin").loc[origin]
    assert (row["closed"], row["won"]) == (len(c), len(won))
    assert row["win_rate"] == pytest.approx(len(won) / len(c))
    lo, hi = proportion_confint(len(won), len(c), method="wilson")
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    amounts = [a for a in won["amount"] if a is not None]
    assert row["won_revenue"] == float(sum(amounts, Decimal(0)))  # exact decimal sum
    assert row["avg_deal_size"] == pytest.approx(float(sum(amounts, Decimal(0))) / len(amounts))
    days = ((c["closed_at"] - c["created_at"]).dt.total_seconds() / 86400).dropna()
    assert row["cycle_days_median"] == pytest.approx(days.median())
    assert row["cycle_n"] == len(days)


def test_revenue_split_is_trailing_won_share_when_not_governed(data, monthly):
    c = trailing(data[1]["opportunities"], "2025-11-01", AS_OF)
    won = c[c["is_won"] & c["origin"].isin(ORIGINS)]
    rev = won.groupby("origin")["amount"].apply(lambda s: sum(_f(v) for v in s if v is not None))
    split = monthly.split.set_index("origin")["share"]
    for origin in ORIGINS:
        assert split[origin] == pytest.approx(rev[origin] / rev.sum())
    assert split.sum() == pytest.approx(1.0)
    assert set(monthly.split["source"]) == {"trailing_won_share"}


def direct_model(frames, months: list[str], split: pd.Series, rates: pd.Series) -> pd.DataFrame:
    opps = frames["opportunities"]
    created = opps[opps["created_at"].notna()]
    created = created.assign(origin=origin_of(created), month=created["created_at"].dt.strftime("%Y-%m"))
    created = created[created["month"].isin(months)]
    t = frames["targets"]
    target = sum(_f(v) for v in t[t["period"].isin(months)]["revenue_target"])
    rows = []
    for origin in ORIGINS:
        needed = target * split[origin] / rates[origin]
        made = sum(_f(v) for v in created[created["origin"] == origin]["amount"] if v is not None)
        rows.append((origin, needed, made, made - needed))
    made_all = sum(_f(v) for v in created["amount"] if v is not None)
    needed_all = sum(r[1] for r in rows)
    rows.append(("All", needed_all, made_all, made_all - needed_all))
    return pd.DataFrame(rows, columns=["origin", "needed", "created", "gap"]).set_index("origin")


def test_contribution_model_matches_pandas(data, monthly):
    split = monthly.split.set_index("origin")["share"]
    rates = monthly.performance.set_index("origin")["win_rate"]
    want = direct_model(data[1], ["2026-10"], split, rates)
    m = monthly.metrics
    for origin in [*ORIGINS, "All"]:
        d = {} if origin == "All" else {"origin": origin}
        assert lookup(m, "pipeline_needed", "2026-10", **d)["value"] == pytest.approx(want.loc[origin, "needed"])
        assert lookup(m, "pipeline_created", "2026-10", **d)["value"] == pytest.approx(want.loc[origin, "created"])
        assert lookup(m, "pipeline_gap", "2026-10", **d)["value"] == pytest.approx(want.loc[origin, "gap"])
    # unknown-origin pipeline counts in the total, not in an origin
    assert lookup(m, "pipeline_created", "2026-10", origin="unknown") is not None
    assert lookup(m, "pipeline_gap", "2026-10", origin="unknown") is None


def test_created_pipeline_sum_is_exact(data, monthly):
    opps = data[1]["opportunities"]
    oct_ = opps[opps["created_at"].notna() & (opps["created_at"].dt.strftime("%Y-%m") == "2026-10")]
    exact = sum((a for a in oct_["amount"] if a is not None), Decimal(0))
    assert lookup(monthly.metrics, "pipeline_created", "2026-10")["value"] == float(exact)


def test_quarterly_model_has_months_quarter_and_next_quarter(data, quarterly):
    split = quarterly.split.set_index("origin")["share"]
    rates = quarterly.performance.set_index("origin")["win_rate"]
    m = quarterly.metrics
    # the trailing four quarters end with the quarter: 2025-10 .. 2026-09
    c = trailing(data[1]["opportunities"], "2025-10-01", pd.Timestamp("2026-10-01", tz="UTC"))
    assert quarterly.performance.set_index("origin").loc["sales", "closed"] == (c["origin"] == "sales").sum()
    q = direct_model(data[1], ["2026-07", "2026-08", "2026-09"], split, rates)
    for month in ("2026-07", "2026-08", "2026-09"):
        assert lookup(m, "pipeline_gap", month) is not None
    assert lookup(m, "pipeline_gap", "2026-Q3")["value"] == pytest.approx(q.loc["All", "gap"])
    assert lookup(m, "pipeline_needed", "2026-Q3", origin="sales")["value"] == pytest.approx(q.loc["sales", "needed"])
    nxt = direct_model(data[1], ["2026-10", "2026-11", "2026-12"], split, rates)
    for origin in ORIGINS:
        got = lookup(m, "pipeline_needed", "2026-Q4", origin=origin)["value"]
        assert got == pytest.approx(nxt.loc[origin, "needed"])
    assert lookup(m, "pipeline_gap", "2026-Q4") is None  # the next quarter's pipeline is not created yet
    assert lookup(m, "pipeline_created", "2026-Q4") is None
    # the brief reads the latest period: the quarter, not the next one
    assert "needs for 2026-Q3." in brief.plan_sentences(m, "2026-Q3")[0]


# --------------------------------------------------------------------------------------------- coverage


def direct_coverage(frames, t: pd.Timestamp, segment: str | None) -> tuple[float, float, int]:
    """Open pipeline created in the 90 days before t, and the targets of the next 90 days sampled hour by hour."""
    o = frames["opportunities"]
    if segment:
        o = o[o["segment"] == segment]
    open_ = (
        o["created_at"].notna()
        & (o["created_at"] < t)
        & ~(o["closed_at"].notna() & (o["closed_at"] < t))
        & (o["created_at"] >= t - pd.Timedelta(days=90))
    )
    sel = o[open_]
    pipe = sum(_f(v) for v in sel["amount"] if v is not None)
    tg = frames["targets"]
    if segment:
        tg = tg[tg["segment"] == segment]
    per_month = tg.groupby("period")["revenue_target"].apply(lambda s: sum(_f(v) for v in s))
    hours = pd.date_range(t, t + pd.Timedelta(days=90), freq="h", inclusive="left")
    months = hours.strftime("%Y-%m")
    hours_in_month = pd.Series([pd.Period(m, freq="M").days_in_month * 24 for m in months])
    quota = float((pd.Series(months).map(per_month) / hours_in_month).sum())
    return pipe, quota, len(sel)


@pytest.mark.parametrize("segment", [None, *SEGMENTS])
def test_coverage_snapshots_match_pandas(data, monthly, segment):
    cov = monthly.coverage
    months = [str(p) for p in pd.period_range("2026-05", "2026-10", freq="M")]
    assert list(cov["period"].drop_duplicates()) == months
    for m in months:
        t = pd.Period(m, freq="M").end_time.ceil("D").tz_localize("UTC")
        pipe, quota, n = direct_coverage(data[1], t, segment)
        row = lookup(monthly.metrics, "pipeline_coverage", m, **({"segment": segment} if segment else {}))
        assert row["value"] == pytest.approx(pipe / quota, rel=1e-9)
        assert row["unit"] == "x" and row["n"] == n and row["flag"] == ""


def test_coverage_at_a_mid_month_as_of(data):
    as_of = pd.Timestamp("2026-10-20T12:00:00Z")
    result = run(data[0], "2026-10", as_of=as_of)
    row = result.coverage[(result.coverage["period"] == "2026-10") & (result.coverage["segment"] == "All")].iloc[0]
    assert row["snapshot"] == as_of
    pipe, quota, _ = direct_coverage(data[1], as_of, None)
    assert row["open_pipeline"] == pytest.approx(pipe) and row["remaining_quota"] == pytest.approx(quota)
    # the model's month is not over: flagged, and created counts only what existed at the as-of instant
    assert lookup(result.metrics, "pipeline_gap", "2026-10")["flag"] == "incomplete"


def test_open_at_snapshot_rule(tmp_path):
    t = pd.Timestamp("2026-10-01T00:00:00Z")
    day = pd.Timedelta(days=1)
    rows = [
        # id, created, closed_at, is_closed, counted?
        ("open", t - 10 * day, None, False, True),
        ("closed_exactly_at_t", t - 10 * day, t, True, True),  # still open at t
        ("closed_before_t", t - 10 * day, t - day, True, False),
        ("created_at_t", t, None, False, False),
        ("closed_without_date", t - 10 * day, None, True, False),
        ("too_old_for_the_window", t - 91 * day, None, False, False),
        ("closed_after_t", t - 89 * day, t + 5 * day, True, True),
    ]
    opps = pd.DataFrame(
        {
            "opportunity_id": [r[0] for r in rows],
            "created_at": [r[1] for r in rows],
            "segment": "SMB",
            "source_channel": "paid_search",
            "amount": [Decimal(10**i) for i in range(len(rows))],
            "stage": "Discovery",
            "is_closed": [r[3] for r in rows],
            "is_won": False,
            "closed_at": pd.Series([r[2] for r in rows], dtype="datetime64[ns, UTC]"),
        }
    )
    out = tmp_path / "d"
    out.mkdir()
    write_table("opportunities", opps, out)
    write_table(
        "targets",
        pd.DataFrame(
            {
                "period": ["2026-10", "2026-11", "2026-12"],
                "segment": "SMB",
                "revenue_target": [Decimal("31000"), Decimal("30000"), Decimal("31000")],
            }
        ),
        out,
    )
    result = run(out, "2026-09", as_of=t)
    row = result.coverage[(result.coverage["period"] == "2026-09") & (result.coverage["segment"] == "SMB")].iloc[0]
    counted = sum(10**i for i, r in enumerate(rows) if r[4])
    assert row["open_pipeline"] == counted == 1_000_011 and row["open_deals"] == 3
    assert row["remaining_quota"] == pytest.approx(31000 + 30000 + 31000 * 29 / 31)
    # earlier snapshots need targets before October: no quota, so no coverage value is written
    early = result.coverage[result.coverage["period"] == "2026-04"]
    assert (early["flag"] == "no_quota").all()
    assert lookup(result.metrics, "pipeline_coverage", "2026-04", segment="SMB") is None


def test_expected_close_date_is_used_when_provided(tmp_path):
    t = pd.Timestamp("2026-10-01T00:00:00Z")
    frame = pa.table(
        {
            "opportunity_id": ["a", "b", "c"],
            "created_at": pa.array([t - pd.Timedelta(days=200)] * 3, type=pa.timestamp("us", tz="UTC")),
            "segment": ["SMB"] * 3,
            "amount": pa.array([Decimal("100.00"), Decimal("200.00"), Decimal("400.00")], type=pa.decimal128(18, 2)),
            "stage": ["Discovery"] * 3,
            "is_closed": [False] * 3,
            "closed_at": pa.array([None] * 3, type=pa.timestamp("us", tz="UTC")),
            "expected_close_at": pa.array(
                [t + pd.Timedelta(days=10), t + pd.Timedelta(days=95), t - pd.Timedelta(days=1)],
                type=pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    out = tmp_path / "d"
    out.mkdir()
    pq.write_table(frame, out / "opportunities.parquet")
    write_table(
        "targets",
        pd.DataFrame(
            {"period": ["2026-10", "2026-11", "2026-12"], "segment": "SMB", "revenue_target": [Decimal("100")] * 3}
        ),
        out,
    )
    result = run(out, "2026-09", as_of=t)
    row = result.coverage[(result.coverage["period"] == "2026-09") & (result.coverage["segment"] == "All")].iloc[0]
    assert row["open_pipeline"] == 100.0 and row["rule"] == "expected_close_in_window"


# ------------------------------------------------------------------------------------ forecast accuracy


def direct_accuracy(frames, months: list[str]) -> pd.DataFrame:
    o = frames["opportunities"]
    won = o[o["is_won"] & (o["closed_at"] < AS_OF)].assign(month=lambda d: d["closed_at"].dt.strftime("%Y-%m"))
    won = won.assign(amt=won["amount"].map(lambda v: 0.0 if v is None else float(v)))
    actual = won.groupby(["month", "segment"])["amt"].sum()
    fc = frames["forecasts"]
    fc = fc[fc["period"].isin(months) & (fc["committed_at"] < AS_OF)]
    out = fc.assign(
        forecast=fc["forecast_amount"].map(float),
        actual=[actual.get((m, s), 0.0) for m, s in zip(fc["period"], fc["segment"], strict=True)],
    )[["period", "segment", "forecast", "actual"]]
    total = out.groupby("period", as_index=False)[["forecast", "actual"]].sum().assign(segment="All")
    out = pd.concat([out, total], ignore_index=True)
    return out.assign(accuracy=out["actual"] / out["forecast"]).set_index(["period", "segment"])


def test_forecast_accuracy_matches_pandas(data, monthly):
    months = [str(p) for p in pd.period_range("2026-05", "2026-10", freq="M")]
    want = direct_accuracy(data[1], months)
    got = monthly.accuracy.set_index(["period", "segment"])
    assert set(got.index) == set(want.index)
    assert ("2026-10", "Mid-Market") not in got.index  # committed after the as-of instant
    for key, w in want.iterrows():
        period, segment = key
        assert got.loc[key, "forecast"] == pytest.approx(w["forecast"])
        assert got.loc[key, "actual"] == pytest.approx(w["actual"])
        row = lookup(monthly.metrics, "forecast_accuracy", period, **({} if segment == "All" else {"segment": segment}))
        assert row["value"] == pytest.approx(w["accuracy"]) and row["unit"] == "ratio"
        assert bool(got.loc[key, "outside_band"]) == (abs(w["accuracy"] - 1) > 0.10)


def test_band_classification():
    acc = np.array([0.89, 0.9, 0.95, 1.0, 1.1, 1.1000001, 1.2, np.nan])
    assert plan.accuracy_outside(acc, 0.10).tolist() == [True, False, False, False, False, True, True, False]


def test_planted_misses_are_listed_outside_the_band(data, monthly):
    bad = plan_report.outside_band(monthly)
    cells = set(zip(bad["period"], bad["segment"], strict=True))
    assert ("2026-08", "Enterprise") in cells and ("2026-06", "SMB") in cells
    assert all(abs(a - 1) > 0.10 for a in bad["accuracy"])
    text = " ".join(plan_report.summary_sentences(monthly))
    assert "2026-08 Enterprise" in text and "2026-06 SMB" in text


def test_quarter_accuracy_is_the_sum_of_its_months(data, quarterly):
    months = ["2026-07", "2026-08", "2026-09"]
    want = direct_accuracy(data[1], months).reset_index()
    for segment in [*SEGMENTS, "All"]:
        w = want[want["segment"] == segment]
        row = lookup(
            quarterly.metrics, "forecast_accuracy", "2026-Q3", **({} if segment == "All" else {"segment": segment})
        )
        assert row["value"] == pytest.approx(w["actual"].sum() / w["forecast"].sum())


def test_missing_forecasts_leave_the_rest(tmp_path):
    out = tmp_path / "nf"
    make_data(out, forecasts=False)
    result = run(out, "2026-10")
    assert result.accuracy.empty
    assert not result.metrics["metric"].isin(["forecast_accuracy", "forecast_committed", "revenue_won"]).any()
    assert lookup(result.metrics, "pipeline_gap", "2026-10") is not None
    assert lookup(result.metrics, "pipeline_coverage", "2026-10") is not None
    assert plan_report.accuracy_table(result).empty
    assert not any("Forecast" in s for s in plan_report.summary_sentences(result))
    plan_report.accuracy_chart(result)  # draws the band alone, no error


# ---------------------------------------------------------------------------------- metrics contract


def test_metrics_contract_for_the_brief(monthly):
    m = monthly.metrics
    assert set(m["section"]) == {"plan"}
    units = {
        "pipeline_gap": "money",
        "pipeline_coverage": "x",
        "forecast_accuracy": "ratio",
        "pipeline_needed": "money",
        "pipeline_created": "money",
        "win_rate_by_origin": "share",
        "avg_deal_size": "money",
        "cycle_days_median": "days",
    }
    for metric, unit in units.items():
        rows = m[m["metric"] == metric]
        assert not rows.empty and set(rows["unit"]) == {unit}, metric
    for metric in ("pipeline_gap", "pipeline_coverage", "forecast_accuracy"):
        assert (m.loc[m["metric"] == metric, "dimensions"] == "{}").any()
    assert set(m.loc[m["metric"] == "pipeline_coverage", "dimensions"]) == {"{}", *(dims(segment=s) for s in SEGMENTS)}
    wr = m[m["metric"] == "win_rate_by_origin"]
    assert set(wr["dimensions"]) == {dims(origin=o) for o in ORIGINS}
    assert (wr["ci_low"] < wr["value"]).all() and (wr["value"] < wr["ci_high"]).all()
    assert m["period"].str.fullmatch(r"\d{4}-\d{2}").all()
    assert not m["value"].isna().any()
    sentences = brief.plan_sentences(m, "2026-10")
    assert len(sentences) == 3 and "2026-10" in sentences[0]
    card = brief.scorecard(m, load_definitions(), ["2026-10"])
    card = card.set_index(card["measure"].str.lower())
    coverage = lookup(m, "pipeline_coverage", "2026-10")["value"]
    assert card.loc["pipeline coverage", "period"] == "2026-10"
    assert card.loc["pipeline coverage", "value"] == f"{coverage:.2f}x"
    assert card.loc["forecast accuracy (actual ÷ committed)", "period"] == "2026-10"


def test_charts_and_tables_render(monthly, quarterly):
    from analysis.charts import png_bytes

    for result in (monthly, quarterly):
        for chart in (plan_report.needed_vs_created_chart, plan_report.coverage_chart, plan_report.accuracy_chart):
            assert png_bytes(chart(result))[:4] == b"\x89PNG"
        assert len(plan_report.model_table(result)) == len(result.model)
        assert list(plan_report.coverage_detail_table(result)["segment"]) == [*SEGMENTS, "All"]
    assert "2026-Q4 (next quarter)" in set(plan_report.model_table(quarterly)["period"])


def test_same_inputs_same_metrics(data, monthly):
    again = run(data[0], "2026-10").metrics
    pd.testing.assert_frame_equal(again, monthly.metrics)


# ------------------------------------------------------------------------------------------- notebook


NOTEBOOK = ROOT / "notebooks" / "08_pipeline_plan.ipynb"


def test_notebook_parameters_and_shape():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].source.startswith("# Pipeline plan\n")
    assert nb.cells[1].metadata["tags"] == ["parameters"]
    assert nb.cells[1].source == (
        'period = "2026-10"\ncadence = "monthly"\nas_of = ""\ndata_dir = "../data/processed"\n'
        'out_dir = "../reports/scratch"\ndefinitions_path = "../config/definitions.yml"\nengine = "duckdb"'
    )
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'ctx.missing_note("pipeline plan", "targets", "opportunities")' in code
    assert "write_section_metrics(metrics, out_dir, plan.SECTION)" in code


def execute(tmp_path: Path, data_dir: Path, period: str) -> pd.DataFrame:
    import papermill
    out = tmp_path / f"rep-{period}"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / f"{period}.ipynb"),
        parameters={
            "data_dir": str(data_dir),
            "out_dir": str(out),
            "period": period,
            "definitions_path": str(DEFINITIONS_FILE),
        },
        kernel_name="python3",
        progress_bar=False,
        cwd=str(ROOT / "notebooks"),
    )
    return pd.read_parquet(out / "metrics" / "plan.parquet")


@pytest.mark.e2e
def test_notebook_runs_monthly_and_quarterly(data, tmp_path, monthly):
    m = execute(tmp_path, data[0], "2026-10")
    assert lookup(m, "pipeline_gap", "2026-10")["value"] == pytest.approx(
        lookup(monthly.metrics, "pipeline_gap", "2026-10")["value"]
    )
    q = execute(tmp_path, data[0], "2026-Q3")
    assert lookup(q, "pipeline_coverage", "2026-Q3") is not None


@pytest.mark.e2e
def test_notebook_without_targets_shows_a_note(tmp_path):
    out = tmp_path / "no_targets"
    make_data(out)
    (out / "targets.parquet").unlink()
    m = execute(tmp_path, out, "2026-10")
    assert m.empty
    shown = (tmp_path / "2026-10.ipynb").read_text(encoding="utf-8")
    assert "No targets provided: pipeline plan omitted." in shown
    ctx = open_context(out, "2026-10", None, DEFINITIONS_FILE)
    assert (
        ctx.missing_note("pipeline plan", "targets", "opportunities") == "No targets provided: pipeline plan omitted."
    )
