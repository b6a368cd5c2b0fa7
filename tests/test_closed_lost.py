"""Closed-lost themes: theming, shares, tests, loop closure and win rates equal a direct Python computation;
notes are masked and escaped; the planted competitor displacement is found; null data moves nothing."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from canonical_factory import write_table

from analysis import closed_lost as cl
from analysis import stats
from analysis.config import load_definitions
from analysis.context import SectionContext
from analysis.display import table_html
from analysis.engine import connect, load_tables
from analysis.metrics import dims
from analysis.periods import parse_period

AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
DEFS = load_definitions()
THEMES = DEFS["closed_lost_themes"]["themes"]
BASE = [f"2026-0{i}" for i in range(4, 10)]

NOTES = [
    "Customer said we were too expensive.",
    "They went with Acme after a bake-off.",
    "Budget freeze for the year.",
    "We need SSO; roadmap too far out.",
    "Price was fine but they chose Acme anyway.",  # pricing precedes competitor_displacement in the taxonomy
    "The associate in charge left for holidays.",  # 'sso' inside 'associate' is not the keyword
    "Went dark after the demo. <script>alert('x')</script>",
    "Data residency in the EU is mandatory. Contact: jane.doe@example.com",
    "Data residency requirements block hosting abroad; call +1 415 555 0100",
    "Legal redlines on the liability cap could not be agreed.",
    "Legal redlines on liability: <b>no</b> agreement",
    "Their IT team could not support another cloud tool.",
    "",
    None,
]
CODES = ["price_too_high", "no_budget", "lost_to_competitor", "champion_left", "weird_code", "", None, "BAD_TIMING"]


def make_deals(n: int = 2500, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closed = pd.Timestamp("2025-10-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 396 * 24, n), unit="h")
    won = rng.random(n) < 0.3
    code = np.array(CODES, dtype=object)[rng.integers(0, len(CODES), n)]
    note = np.array(NOTES, dtype=object)[rng.integers(0, len(NOTES), n)]
    comp = np.array(["Acme", "Globex", None, None], dtype=object)[rng.integers(0, 4, n)]
    # Acme rises in the tested month
    late = closed >= pd.Timestamp("2026-10-01", tz="UTC")
    comp = np.where(late & (rng.random(n) < 0.3), "Acme", comp)
    return pd.DataFrame(
        {
            "opportunity_id": [f"O{i:05d}" for i in range(n)],
            "created_at": (closed - pd.Timedelta(days=40)).floor("us"),
            "segment": rng.choice(["SMB", "Enterprise"], n),
            "origin": rng.choice(["marketing", "sales"], n),
            "owner_team": rng.choice(["AE-1", "AE-2"], n),
            "amount": [Decimal(f"{v:.2f}") for v in rng.lognormal(9, 0.8, n)],
            "stage": np.where(won, "Closed Won", "Closed Lost"),
            "is_closed": True,
            "is_won": won,
            "closed_at": closed.floor("us"),
            "lost_reason_code": np.where(won, None, code),
            "lost_reason_notes": np.where(won, None, note),
            "competitor": comp,
        }
    )


def direct_theme(code: object, note: object) -> tuple[str, str]:
    """The taxonomy rule in plain Python: code, else first theme (definitions order) with a whole-word keyword."""
    c = (code or "").strip().lower()
    for theme, spec in THEMES.items():
        if c and c in spec["codes"]:
            return theme, "code"
    text = (note or "").lower()
    for theme, spec in THEMES.items():
        if any(re.search(r"\b" + re.escape(k) + r"\b", text) for k in spec["keywords"]):
            return theme, "note"
    return "unthemed", "none"


def direct(deals: pd.DataFrame) -> pd.DataFrame:
    d = deals[~deals["is_won"] & (deals["closed_at"] <= AS_OF)].copy()
    d[["theme", "themed_by"]] = [
        direct_theme(c, n) for c, n in zip(d["lost_reason_code"], d["lost_reason_notes"], strict=True)
    ]
    d["month"] = d["closed_at"].dt.strftime("%Y-%m")
    has_code = d["lost_reason_code"].fillna("").str.strip() != ""
    has_note = d["lost_reason_notes"].fillna("").str.strip() != ""
    d["debriefed"] = has_code & (d["competitor"].notna() | has_note)
    d["amount_f"] = d["amount"].astype(float)
    return d


def make_ctx(folder: Path) -> SectionContext:
    con = connect("duckdb")
    return SectionContext(
        con=con,
        tables=load_tables(con, folder),
        definitions=DEFS,
        period=parse_period("2026-10"),
        as_of=AS_OF,
        data_dir=folder,
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("closed_lost")
    deals = make_deals()
    write_table("opportunities", deals, folder)
    return folder, deals, direct(deals), cl.analyse(make_ctx(folder))


def row(m, metric, period="2026-10", **d):
    r = m[(m["metric"] == metric) & (m["period"] == period) & (m["dimensions"] == dims(**d))]
    assert len(r) == 1, (metric, period, d)
    return r.iloc[0]


def test_theming_rule_matches_direct(case):
    _, _, d, res = case
    mine = res.counts.groupby(["month", "theme", "themed_by"])["losses"].sum()
    want = d[d["month"] >= "2025-11"].groupby(["month", "theme", "themed_by"]).size()
    pd.testing.assert_series_equal(mine, want, check_names=False)
    by_note = d.drop_duplicates("lost_reason_notes").set_index("lost_reason_notes")
    # the precedence and whole-word rules are exercised
    assert direct_theme(None, NOTES[4]) == ("pricing", "note")
    assert direct_theme(None, NOTES[5]) == ("unthemed", "none")
    assert direct_theme("BAD_TIMING", None) == ("timing", "code")
    assert len(by_note) > 5


def test_theme_shares_and_tests(case):
    _, _, d, res = case
    m = res.metrics
    for month in ("2026-03", "2026-10"):
        g = d[d["month"] == month]
        for theme, n in g["theme"].value_counts().items():
            r = row(m, "theme_share", month, theme=theme)
            assert r["n"] == len(g) and r["value"] == pytest.approx(n / len(g))
    cur, base = d[d["month"] == "2026-10"], d[d["month"].isin(BASE)]
    assert not ((m["metric"] == "theme_share_change") & (m["dimensions"] == dims(theme="unthemed"))).any()
    for theme in ("pricing", "timing", "competitor_displacement"):
        s1, n1 = int((cur["theme"] == theme).sum()), len(cur)
        s0, n0 = int((base["theme"] == theme).sum()), len(base)
        r = row(m, "theme_share_change", theme=theme)
        want = stats.two_proportion_test(s1, n1, s0, n0)
        assert r["p_value"] == pytest.approx(want.p_value) and r["value"] == pytest.approx(s1 / n1 - s0 / n0)
        assert r["baseline"] == pytest.approx(s0 / n0) and r["n"] == n1
        assert r["impact"] == pytest.approx(r["value"] * n1 * cur["amount_f"].mean())


def test_competitor_shares_and_breakdowns(case):
    _, _, d, res = case
    m = res.metrics
    cur, base = d[d["month"] == "2026-10"], d[d["month"].isin(BASE)]
    s1, n1 = int((cur["competitor"] == "Acme").sum()), len(cur)
    s0, n0 = int((base["competitor"] == "Acme").sum()), len(base)
    r = row(m, "competitor_loss_share_change", competitor="Acme")
    assert r["value"] == pytest.approx(s1 / n1 - s0 / n0) and r["value"] > 0.1
    assert r["p_value"] == pytest.approx(stats.two_proportion_test(s1, n1, s0, n0).p_value)
    for seg, g in cur.groupby("segment"):
        r = row(m, "theme_share", theme="pricing", segment=seg)
        assert r["value"] == pytest.approx((g["theme"] == "pricing").mean()) and r["n"] == len(g)
    assert not ((m["metric"] == "competitor_loss_share") & (m["dimensions"] == dims(competitor="none"))).any()


def test_loop_closure_rate(case):
    _, _, d, res = case
    for month in ("2026-05", "2026-10"):
        g = d[d["month"] == month]
        r = row(res.metrics, "loop_closure_rate", month)
        assert r["n"] == len(g) and r["value"] == pytest.approx(g["debriefed"].mean())
    for team, g in d[d["month"] == "2026-10"].groupby("owner_team"):
        r = row(res.metrics, "loop_closure_rate", owner_team=team)
        assert r["value"] == pytest.approx(g["debriefed"].mean())


def test_win_rate_against_competitors(case):
    _, deals, _, res = case
    g = deals[deals["competitor"].notna() & (deals["closed_at"].dt.strftime("%Y-%m") == "2026-09")]
    for comp, x in g.groupby("competitor"):
        r = row(res.metrics, "win_rate_vs_competitor", "2026-09", competitor=comp)
        assert r["n"] == len(x) and r["value"] == pytest.approx(x["is_won"].mean())


def test_unknown_codes_are_unthemed_and_listed(case):
    _, _, d, res = case
    assert res.unknown_codes["code"].tolist() == ["weird_code"]
    weird = d[d["lost_reason_code"] == "weird_code"]
    assert set(weird["themed_by"]) <= {"note", "none"}
    assert any("weird_code" in n for n in res.notes)


def test_topic_suggestions_are_masked_and_deterministic(case):
    folder, _, _, res = case
    t = res.topics
    assert len(t) >= 2 and t["notes"].sum() > 0
    again = cl.analyse(make_ctx(folder)).topics
    pd.testing.assert_frame_equal(t, again)
    text = " ".join(t["top_terms"]) + " " + " ".join(t["example"])
    for leak in ("jane", "example.com", "415", "555", "<script", "alert"):
        assert leak not in text.lower(), leak
    assert any("residency" in terms for terms in t["top_terms"])
    html = table_html(t, caption="Suggested topics")
    assert "<script" not in html


def test_html_payloads_are_escaped_in_tables(case):
    _, _, _, res = case
    html = table_html(cl.tests_table(res.metrics, "theme_share_change", "theme"), caption="<i>x</i>")
    assert "<i>x</i>" not in html
    assert table_html(cl.crosstab(res.metrics, "segment", "2026-10"))


def test_notes_absent_themes_from_codes_only(tmp_path):
    deals = make_deals(800)
    write_table("opportunities", deals.drop(columns=["lost_reason_notes"]), tmp_path)
    ctx = make_ctx(tmp_path)
    ctx.tables["opportunities"] = ctx.tables["opportunities"].drop("lost_reason_notes")
    res = cl.analyse(ctx)
    assert set(res.counts["themed_by"]) <= {"code", "none"}
    assert res.topics.empty
    assert any("No lost_reason_notes provided" in n for n in res.notes)


def test_no_losses_and_no_opportunities_give_notes(tmp_path):
    deals = make_deals(50)
    deals["is_won"] = True
    (tmp_path / "won").mkdir()
    write_table("opportunities", deals, tmp_path / "won")
    res = cl.analyse(make_ctx(tmp_path / "won"))
    assert res.metrics.empty and any("No closed-lost deals" in n for n in res.notes)
    res = cl.analyse(make_ctx(tmp_path))
    assert res.notes == ["No opportunities provided: closed-lost themes omitted."]


def test_charts_render(case):
    *_, res = case
    from analysis.charts import png_bytes

    for fig in (cl.theme_chart(res.metrics), cl.competitor_chart(res.metrics), cl.loop_closure_chart(res.metrics, 0.7)):
        assert png_bytes(fig)[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------- demo data


def _family(data: dict) -> tuple[pd.DataFrame, cl.ClosedLostResult]:
    con = connect("duckdb")
    ctx = SectionContext(
        con=con,
        tables=load_tables(con, data["processed"]),
        definitions=DEFS,
        period=parse_period("2026-10"),
        as_of=AS_OF,
        data_dir=data["processed"],
    )
    res = cl.analyse(ctx)
    t = res.metrics[res.metrics["p_value"].notna()].copy()
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
    return t, res


def test_planted_competitor_displacement_is_found(demo_data):
    truth = json.loads((demo_data["raw"] / "truth.json").read_text())
    effect = next(e for e in truth["effects"] if e["id"] == "competitor_displacement_rising")
    t, res = _family(demo_data)
    nw = t[
        (t["metric"] == "competitor_loss_share_change") & (t["dimensions"] == dims(competitor="Northwind Analytics"))
    ]
    assert nw["moved"].item() and nw["value"].item() > 0.08
    assert nw["baseline"].item() + nw["value"].item() == pytest.approx(effect["planted"], abs=0.06)
    theme = t[(t["metric"] == "theme_share_change") & (t["dimensions"] == dims(theme="competitor_displacement"))]
    assert theme["moved"].item() and theme["value"].item() > 0
    comp = effect["compensating"]
    for r in t[t["moved"]].itertuples():
        d = json.loads(r.dimensions)
        if d in ({"competitor": "Northwind Analytics"}, {"theme": "competitor_displacement"}):
            continue
        # only mechanical counterparts may move, downwards
        assert r.value < 0 and (d.get("theme") in comp["themes"] or d.get("competitor") in comp["competitors"]), r
    assert len(res.topics) >= 2
    examples = " ".join(res.topics["example"])
    assert "@" not in examples and "<script" not in examples


def test_null_data_moves_nothing(null_data):
    t, _ = _family(null_data)
    assert len(t) >= 8
    assert not t["moved"].any(), t[t["moved"]]


def test_tables_and_charts_on_empty_metrics():
    from analysis.charts import png_bytes
    from analysis.metrics import empty

    m = empty()
    for fig in (cl.theme_chart(m), cl.competitor_chart(m), cl.loop_closure_chart(m, None)):
        assert png_bytes(fig)[:4] == b"\x89PNG"
    assert cl.crosstab(m, "segment", "2026-10").empty and cl.win_rate_table(m).empty
    assert cl.team_table(m, "2026-10").empty and cl.tests_table(m, "theme_share_change", "theme").empty


def test_empty_code_note_and_competitor_columns_give_notes(tmp_path):
    deals = make_deals(600)
    deals[["lost_reason_code", "lost_reason_notes", "competitor"]] = None
    write_table("opportunities", deals, tmp_path)
    res = cl.analyse(make_ctx(tmp_path))
    assert set(res.counts["theme"]) == {"unthemed"}
    assert not (res.metrics["metric"] == "competitor_loss_share").any()
    assert any("reason code or a note" in n for n in res.notes) and any("names a competitor" in n for n in res.notes)
    assert row(res.metrics, "loop_closure_rate")["value"] == 0
