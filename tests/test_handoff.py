"""Handoff and SLA: every figure equals a direct pandas computation (business hours by a minute walk); the
planted demo effects are found and nothing else moves on null data beyond the FDR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from canonical_factory import write_table
from statsmodels.stats.proportion import test_proportions_2indep as score_test_2indep

from analysis import handoff, stats
from analysis.config import load_definitions
from analysis.context import SectionContext
from analysis.engine import connect, load_tables
from analysis.metrics import dims
from analysis.periods import parse_period

AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
DEFS = load_definitions()
TZ = DEFS["sla"]["calendar"]["time_zone"]
HOLIDAY_DAYS = pd.DatetimeIndex(DEFS["sla"]["calendar"]["holidays"])
PICKLIST = DEFS["sla"]["rejection_reasons"]


def walk_hours(a: pd.Timestamp, b: pd.Timestamp) -> float:
    """Business hours in [a, b) by walking every minute on the definitions calendar (minute-aligned inputs)."""
    if pd.isna(a) or pd.isna(b):
        return np.nan
    if b <= a:
        return 0.0
    minutes = pd.date_range(a, b, freq="min", inclusive="left").tz_convert(TZ)
    tod = minutes.hour * 60 + minutes.minute
    local_day = minutes.tz_localize(None).normalize()
    ok = (minutes.dayofweek < 5) & ~local_day.isin(HOLIDAY_DAYS) & (tod >= 540) & (tod < 1020)
    return float(ok.sum()) / 60.0


def make_leads(n: int = 1200, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    mql = (start + pd.to_timedelta(rng.uniform(0, 245 * 24 * 60, n), unit="min")).floor("min")
    kind = rng.random(n)
    touch = mql + pd.to_timedelta(np.where(kind < 0.05, -120, rng.exponential(20 * 60, n)), unit="min").floor("min")
    touch = pd.Series(touch).where(kind < 0.90)  # 10% never touched
    decide = rng.random(n)
    dec_t = pd.Series(mql + pd.to_timedelta(rng.exponential(30 * 60, n), unit="min").floor("min"))
    reasons = np.array([*PICKLIST[:4], "made_up_code", None], dtype=object)
    rejected = dec_t.where((decide >= 0.70) & (decide < 0.90))
    return pd.DataFrame(
        {
            "lead_id": [f"L{i:05d}" for i in range(n)],
            "created_at": mql - pd.Timedelta(days=2),
            "segment": rng.choice(["SMB", "Enterprise"], n),
            "region": rng.choice(np.array(["NA", "EMEA", None], dtype=object), n, p=[0.5, 0.45, 0.05]),
            "source_channel": "webinar",
            "mql_at": mql,
            "first_sales_touch_at": touch,
            "sal_at": dec_t.where(decide < 0.70),
            "rejected_at": rejected,
            "rejection_reason": pd.Series(rng.choice(reasons, n)).where(rejected.notna()),
            "owner_team": rng.choice(np.array(["SDR-1", "SDR-2", None], dtype=object), n),
        }
    )


def make_ctx(folder: Path, period: str, as_of: pd.Timestamp, definitions=DEFS) -> SectionContext:
    con = connect("duckdb")
    return SectionContext(
        con=con,
        tables=load_tables(con, folder),
        definitions=definitions,
        period=parse_period(period),
        as_of=as_of,
        data_dir=folder,
    )


def direct(leads: pd.DataFrame, as_of: pd.Timestamp, silence: bool = False) -> pd.DataFrame:
    """Per-lead SLA outcomes computed directly (events after as_of have not happened)."""
    d = leads[leads["mql_at"] < as_of].copy()
    for c in ("first_sales_touch_at", "sal_at", "rejected_at"):
        d[c] = d[c].where(d[c] <= as_of)
    d["region"] = d["region"].fillna("unknown")
    d["owner_team"] = d["owner_team"].fillna("unassigned")
    d["month"] = d["mql_at"].dt.strftime("%Y-%m")
    # 5 calendar days always hold 8 business hours on this calendar (longest closure: Fri 17:00 to Tue 09:00),
    # so only MQLs of the last 5 days before as_of need the walk to decide whether their SLA window has elapsed.
    recent = d["mql_at"] > as_of - pd.Timedelta(days=5)
    d["sla_mature"] = [walk_hours(a, as_of) >= 8 if r else True for a, r in zip(d["mql_at"], recent, strict=True)]
    d["bh"] = [
        walk_hours(a, b) if pd.notna(b) else np.nan for a, b in zip(d["mql_at"], d["first_sales_touch_at"], strict=True)
    ]
    d["sla_met"] = d["sla_mature"] & d["bh"].notna() & (d["bh"] <= 8)
    w48, w72 = pd.Timedelta(hours=48), pd.Timedelta(hours=72)
    d["acc_mature"] = d["mql_at"] + w48 <= as_of
    sal_in = d["sal_at"].notna() & (d["sal_at"] <= d["mql_at"] + w48)
    rej_in = d["rejected_at"].notna() & (d["rejected_at"] <= d["mql_at"] + w48)
    d["accepted"] = d["acc_mature"] & (sal_in | (silence & ~sal_in & ~rej_in))
    d["aging_mature"] = d["mql_at"] + w72 <= as_of
    handled = (d["first_sales_touch_at"] <= d["mql_at"] + w72) | (d["rejected_at"] <= d["mql_at"] + w72)
    d["aged"] = d["aging_mature"] & ~handled
    return d


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("handoff")
    leads = make_leads()
    write_table("leads", leads, folder)
    ctx = make_ctx(folder, "2026-10", AS_OF)
    return folder, leads, direct(leads, AS_OF), handoff.handoff_metrics(ctx)


def row(metrics, metric, period, **d):
    r = metrics[(metrics["metric"] == metric) & (metrics["period"] == period) & (metrics["dimensions"] == dims(**d))]
    assert len(r) == 1, (metric, period, d)
    return r.iloc[0]


def test_sla_adherence_by_month_and_region_matches_direct(case):
    _, _, d, m = case
    mature = d[d["sla_mature"]]
    checked = 0
    for (month, region), g in mature.groupby(["month", "region"]):
        if month < "2025-11":
            continue
        r = row(m, "sla_adherence", month, region=region)
        assert r["n"] == len(g)
        assert r["value"] == pytest.approx(g["sla_met"].mean())
        checked += 1
    tot = row(m, "sla_adherence", "2026-10")
    oct_ = mature[mature["month"] == "2026-10"]
    assert tot["n"] == len(oct_) and tot["value"] == pytest.approx(oct_["sla_met"].mean())
    assert checked >= 16
    # MQLs of the last business day of October are not mature at the as-of instant: they are left out.
    assert len(oct_) < (d["month"] == "2026-10").sum()


def test_sla_change_is_the_score_test_against_the_pooled_baseline(case):
    _, _, d, m = case
    mature = d[d["sla_mature"]]
    base_months = ["2026-04", "2026-05", "2026-06", "2026-07", "2026-08", "2026-09"]
    for region in ("NA", "EMEA", None):
        g = mature if region is None else mature[mature["region"] == region]
        cur, base = g[g["month"] == "2026-10"], g[g["month"].isin(base_months)]
        s1, n1, s0, n0 = int(cur["sla_met"].sum()), len(cur), int(base["sla_met"].sum()), len(base)
        r = row(m, "sla_adherence_change", "2026-10", **({"region": region} if region else {}))
        want = score_test_2indep(s1, n1, s0, n0, method="score", correction=False)
        assert r["method"].startswith("score")
        assert r["p_value"] == pytest.approx(want.pvalue, rel=1e-9)
        assert r["value"] == pytest.approx(s1 / n1 - s0 / n0)
        assert r["baseline"] == pytest.approx(s0 / n0)
        assert r["n"] == n1 and r["ci_low"] < r["value"] < r["ci_high"]
    small = row(m, "sla_adherence_change", "2026-10", region="unknown")
    assert np.isnan(small["p_value"]) and small["flag"] == "small_cell"


def test_acceptance_and_aging_match_direct(case):
    _, _, d, m = case
    for month in ("2026-06", "2026-10"):
        g = d[(d["month"] == month) & d["acc_mature"]]
        r = row(m, "acceptance_within_48h", month)
        assert r["n"] == len(g) and r["value"] == pytest.approx(g["accepted"].mean())
        a = d[(d["month"] == month) & d["aging_mature"]]
        r = row(m, "mql_aging_72h_share", month)
        assert r["n"] == len(a) and r["value"] == pytest.approx(a["aged"].mean())
        for team, t in a.groupby("owner_team"):
            r = row(m, "mql_aging_72h_share", month, owner_team=team)
            assert r["n"] == len(t) and r["value"] == pytest.approx(t["aged"].mean())


def test_silence_equals_acceptance_setting(case, tmp_path):
    folder, leads, d, m = case
    data = yaml.safe_load(Path(DEFS.path).read_text(encoding="utf-8"))
    data["sla"]["silence_equals_acceptance"] = True
    path = tmp_path / "definitions.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    metrics = handoff.handoff_metrics(make_ctx(folder, "2026-10", AS_OF, load_definitions(path)))
    silent = direct(leads, AS_OF, silence=True)
    g = silent[(silent["month"] == "2026-09") & silent["acc_mature"]]
    r = row(metrics, "acceptance_within_48h", "2026-09")
    assert r["value"] == pytest.approx(g["accepted"].mean())
    assert r["value"] > row(m, "acceptance_within_48h", "2026-09")["value"]  # silence now counts as accepted


def test_speed_to_lead_median_in_business_hours(case):
    _, _, d, m = case
    g = d[d["sla_mature"] & d["first_sales_touch_at"].notna()]
    for month in ("2026-05", "2026-10"):
        gm = g[g["month"] == month]
        r = row(m, "speed_to_lead_median_business_hours", month)
        assert r["n"] == len(gm)
        assert r["value"] == pytest.approx(gm["bh"].clip(lower=0).median())
        e = gm[gm["region"] == "EMEA"]
        assert row(m, "speed_to_lead_median_business_hours", month, region="EMEA")["value"] == pytest.approx(
            e["bh"].clip(lower=0).median()
        )


def test_rejection_reason_shares_by_month_rejected(case):
    _, leads, _, m = case
    r = leads[leads["rejected_at"].notna() & (leads["rejected_at"] < AS_OF)].copy()
    r["month"] = r["rejected_at"].dt.strftime("%Y-%m")
    r["reason"] = np.where(
        r["rejection_reason"].isna(),
        "missing",
        np.where(r["rejection_reason"].isin(PICKLIST), r["rejection_reason"], "unlisted"),
    )
    assert {"missing", "unlisted"} <= set(r["reason"])
    for month in ("2026-07", "2026-10"):
        g = r[r["month"] == month]
        for reason, n in g["reason"].value_counts().items():
            x = row(m, "rejection_reason_share", month, reason=reason)
            assert x["n"] == len(g) and x["value"] == pytest.approx(n / len(g))
    base = r[r["month"].between("2026-04", "2026-09")]
    cur = r[r["month"] == "2026-10"]
    x = row(m, "rejection_reason_share_change", "2026-10", reason="unlisted")
    s1, n1 = int((cur["reason"] == "unlisted").sum()), len(cur)
    s0, n0 = int((base["reason"] == "unlisted").sum()), len(base)
    assert x["value"] == pytest.approx(s1 / n1 - s0 / n0) and x["baseline"] == pytest.approx(s0 / n0)
    if min(n1, n0) >= 30:
        assert x["p_value"] == pytest.approx(stats.two_proportion_test(s1, n1, s0, n0).p_value)


def test_unlisted_reasons_and_aging_list(case):
    folder, leads, _, _ = case
    ctx = make_ctx(folder, "2026-10", AS_OF)
    w = handoff.period_windows(ctx.period, ctx.as_of, ctx.definitions.stats)
    un = handoff.unlisted_reasons(ctx, w)
    assert un["code"].tolist() == ["made_up_code"]
    assert un["rejections"].iloc[0] == int(
        (
            (leads["rejection_reason"] == "made_up_code")
            & (leads["rejected_at"] >= w.first)
            & (leads["rejected_at"] < AS_OF)
        ).sum()
    )
    lst = handoff.aging_list(ctx)
    open_ = leads[
        (leads["mql_at"] < AS_OF - pd.Timedelta(hours=72))
        & ~(leads["first_sales_touch_at"] <= AS_OF)
        & ~(leads["rejected_at"] <= AS_OF)
    ]
    assert lst["total"].sum() == len(open_)
    assert "lead_id" not in lst.columns and "owner_id" not in lst.columns  # no personal data


def test_events_after_as_of_have_not_happened(case):
    folder, leads, _, _ = case
    as_of = pd.Timestamp("2026-10-15T00:00:00Z")
    m = handoff.handoff_metrics(make_ctx(folder, "2026-10", as_of))
    d = direct(leads, as_of)
    g = d[(d["month"] == "2026-10") & d["sla_mature"]]
    r = row(m, "sla_adherence", "2026-10")
    assert r["n"] == len(g) and r["value"] == pytest.approx(g["sla_met"].mean())
    rej = leads[(leads["rejected_at"] >= "2026-10-01") & (leads["rejected_at"] < as_of)]
    assert row(m, "rejection_rate", "2026-10")["value"] == pytest.approx(len(rej) / (d["month"] == "2026-10").sum())


def test_weekly_period(case):
    folder, leads, _, _ = case
    as_of = pd.Timestamp("2026-10-26T00:00:00Z")
    m = handoff.handoff_metrics(make_ctx(folder, "2026-W43", as_of))
    d = direct(leads, as_of)
    mature = d[d["sla_mature"]]
    cur = mature[(mature["mql_at"] >= "2026-10-19") & (mature["mql_at"] < "2026-10-26")]
    base = mature[(mature["mql_at"] >= "2026-04-19") & (mature["mql_at"] < "2026-10-19")]
    r = row(m, "sla_adherence_change", "2026-W43")
    assert r["n"] == len(cur)
    assert r["baseline"] == pytest.approx(base["sla_met"].mean())
    assert r["value"] == pytest.approx(cur["sla_met"].mean() - base["sla_met"].mean())
    assert row(m, "sla_adherence", "2026-W43")["value"] == pytest.approx(cur["sla_met"].mean())


def test_missing_columns_and_tables_never_crash(tmp_path):
    leads = make_leads(200).drop(columns=["first_sales_touch_at", "owner_team", "rejection_reason", "region"])
    write_table("leads", leads, tmp_path)
    ctx = make_ctx(tmp_path, "2026-10", AS_OF)
    ctx.tables["leads"] = ctx.tables["leads"].drop("first_sales_touch_at", "owner_team", "rejection_reason", "region")
    m = handoff.handoff_metrics(ctx)
    assert (m[m["metric"] == "sla_adherence"]["value"] == 0).all()  # nobody touched: nobody within the SLA
    assert set(m.loc[m["metric"] == "rejection_reason_share", "dimensions"]) == {dims(reason="missing")}
    assert handoff.handoff_metrics(make_ctx(tmp_path / "none", "2026-10", AS_OF)).empty


# ----------------------------------------------------------------------------------------- demo data


def _family(data: dict, period: str = "2026-10") -> pd.DataFrame:
    con = connect("duckdb")
    ctx = SectionContext(
        con=con,
        tables=load_tables(con, data["processed"]),
        definitions=DEFS,
        period=parse_period(period),
        as_of=AS_OF,
        data_dir=data["processed"],
    )
    m = handoff.handoff_metrics(ctx)
    t = m[m["p_value"].notna()].copy()
    s = DEFS.stats
    t["q_value"] = stats.bh_qvalues(t["p_value"].to_numpy())
    t["moved"] = stats.is_move(
        t["q_value"],
        t["value"],
        t["baseline"],
        alpha=s["alpha"],
        min_practical_effect=s["min_practical_effect"],
        min_relative_effect=s["min_relative_effect"],
    )
    return t


def test_planted_effects_are_found(demo_data):
    truth = json.loads((demo_data["raw"] / "truth.json").read_text())
    effects = {e["id"]: e for e in truth["effects"]}
    t = _family(demo_data)
    budget = t[
        (t["metric"] == "rejection_reason_share_change") & (t["dimensions"] == dims(reason="budget_not_confirmed"))
    ]
    emea = t[(t["metric"] == "sla_adherence_change") & (t["dimensions"] == dims(region="EMEA"))]
    assert budget["moved"].item() and budget["value"].item() > 0.2
    assert budget["baseline"].item() + budget["value"].item() == pytest.approx(
        effects["budget_not_confirmed_spike"]["planted"], abs=0.06
    )
    assert emea["moved"].item() and emea["value"].item() < -0.2
    assert emea["baseline"].item() + emea["value"].item() == pytest.approx(
        effects["emea_sla_breach_surge"]["planted"], abs=0.06
    )
    # Anything else that moved is a mechanical counterpart the truth lists (other reasons' shares fall).
    compensating = set(effects["budget_not_confirmed_spike"]["compensating"]["reasons"])
    for r in t[t["moved"]].itertuples():
        if r.metric == "rejection_reason_share_change" and r.dimensions != dims(reason="budget_not_confirmed"):
            assert json.loads(r.dimensions)["reason"] in compensating and r.value < 0
        else:
            assert r.dimensions in (dims(reason="budget_not_confirmed"), dims(region="EMEA"), dims()), r


def test_null_data_moves_nothing(null_data):
    t = _family(null_data)
    assert len(t) >= 10
    assert not t["moved"].any(), t[t["moved"]]


def test_charts_and_tables_render_with_and_without_data(case):
    from analysis.charts import png_bytes
    from analysis.metrics import empty

    *_, m = case
    for metrics in (m, empty()):
        for fig in (
            handoff.sla_chart(metrics),
            handoff.rejection_chart(metrics),
            handoff.aging_chart(metrics, "2026-10"),
        ):
            assert png_bytes(fig)[:4] == b"\x89PNG"
        handoff.monthly_table(metrics)
        handoff.tests_table(metrics, "sla_adherence_change", "region")
    assert list(handoff.tests_table(m, "sla_adherence_change", "region")["region"])[0] == "All"
    assert len(handoff.monthly_table(m)) == 6
