"""Journeys built by Ibis equal a direct pandas computation on small hand-made canonical tables."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from canonical_factory import write_table

from analysis import journeys as J
from analysis.config import load_definitions
from analysis.engine import connect, load_tables

ORIGIN = load_definitions()["channels"]["origin_by_channel"]
CHANNELS = ["paid_search", "webinar", "email", "content_syndication", "outbound_sdr", "partner_referral", "events"]
UTC = "UTC"
START, END = pd.Timestamp("2026-10-01", tz=UTC), pd.Timestamp("2026-11-01", tz=UTC)
AS_OF = pd.Timestamp("2026-10-31 12:00", tz=UTC)
LOOKBACK = 180
WINDOW = J.JourneyWindow(START, END, AS_OF, LOOKBACK)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def _write(tmp: Path, leads: pd.DataFrame, opps: pd.DataFrame, touches: pd.DataFrame):
    tmp.mkdir(parents=True, exist_ok=True)
    write_table("leads", leads, tmp)
    write_table("opportunities", opps, tmp)
    write_table("touchpoints", touches, tmp)
    con = connect("duckdb")
    return con, load_tables(con, tmp)


# ------------------------------------------------------------------------------------------- hand-made case


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    leads = pd.DataFrame([
        # L1 converted into O1; L2 is an MQL of the period without an opportunity; L3's opportunity comes after as-of
        {"lead_id": "L1", "created_at": ts("2026-08-01"), "segment": "SMB", "source_channel": "webinar",
         "mql_at": ts("2026-08-05"), "opportunity_id": "O1"},
        {"lead_id": "L2", "created_at": ts("2026-09-20"), "segment": "Enterprise", "source_channel": "email",
         "mql_at": ts("2026-10-05"), "opportunity_id": None},
        {"lead_id": "L3", "created_at": ts("2026-09-25"), "segment": "SMB", "source_channel": "email",
         "mql_at": ts("2026-10-07"), "opportunity_id": "O9"},
        {"lead_id": "L4", "created_at": ts("2026-01-25"), "segment": "SMB", "source_channel": "email",
         "mql_at": ts("2026-09-07"), "opportunity_id": None},  # MQL before the period: not a journey
    ])
    opps = pd.DataFrame([
        {"opportunity_id": "O1", "created_at": ts("2026-10-10"), "segment": "SMB", "stage": "Closed Won",
         "amount": Decimal("1234.56"), "is_closed": True, "is_won": True, "closed_at": ts("2026-10-20")},
        {"opportunity_id": "O2", "created_at": ts("2026-10-15"), "segment": "Mid-Market", "stage": "Closed Lost",
         "amount": Decimal("99.99"), "is_closed": True, "is_won": False, "closed_at": ts("2026-10-30")},
        {"opportunity_id": "O3", "created_at": ts("2026-10-16"), "segment": "Mid-Market", "stage": "Discovery",
         "amount": Decimal("500.00"), "is_closed": False, "is_won": False, "closed_at": None},  # no touches
        {"opportunity_id": "O9", "created_at": ts("2026-11-20"), "segment": "SMB", "stage": "Discovery",
         "amount": Decimal("10.00"), "is_closed": False, "is_won": False, "closed_at": None},
    ])
    t = [
        ("T01", "L1", None, "2026-03-01", "paid_search", "marketing"),  # 223 days before creation: outside lookback
        ("T02", "L1", None, "2026-09-01", "webinar", "marketing"),
        ("T00", "L1", None, "2026-09-01", "content_syndication", "marketing"),  # same instant, lower id: first
        ("T03", None, "O1", "2026-09-15", "paid_search", "marketing"),  # linked by opportunity only
        ("T04", "L1", None, "2026-10-10", "email", "marketing"),  # at creation: included (inclusive)
        ("T05", "L1", None, "2026-10-12", "outbound_sdr", "sales"),  # after creation: revenue only
        ("T06", "L1", None, "2026-10-25", "paid_search", "marketing"),  # after the close: excluded
        ("T07", None, "O2", "2026-10-01", "outbound_sdr", "sales"),
        ("T08", None, "O2", "2026-10-20", "events", "sales"),  # events tagged sales: not a marketing touch
        ("T09", "L2", None, "2026-03-01", "email", "marketing"),  # before mql - lookback: excluded
        ("T10", "L2", None, "2026-10-02", "webinar", "marketing"),
        ("T11", "L2", None, "2026-10-31 13:00", "email", "marketing"),  # after as-of: excluded
        ("T12", "L3", None, "2026-10-08", "partner_referral", "marketing"),
        ("T13", None, None, "2026-10-08", "paid_search", "marketing"),  # account-only touch: no journey
    ]
    touches = pd.DataFrame(
        [{"touchpoint_id": i, "lead_id": lead, "opportunity_id": opp, "occurred_at": ts(at), "channel": ch,
          "touch_kind": kind, "account_id": "A1"} for i, lead, opp, at, ch, kind in t]
    )
    con, tables = _write(tmp_path_factory.mktemp("hand"), leads, opps, touches)
    return con, tables


def _paths(con, tables, basis, w=WINDOW):
    return J.fetch_paths(J.path_table(tables, basis, w, ORIGIN), con).set_index(["segment", "path"])


def test_pipeline_paths_by_hand(hand):
    con, tables = hand
    p = _paths(con, tables, "pipeline")
    o1 = p.loc[("SMB", "content_syndication > webinar > paid_search > email")]
    assert (o1["conversions"], o1["nulls"], o1["value_cents"], o1["creation_index"]) == (1, 0, 123456, 3)
    assert p.loc[("Mid-Market", "outbound_sdr")]["value_cents"] == 9999  # O2: touch after creation excluded
    assert p.loc[("Mid-Market", "")]["value_cents"] == 50000  # O3: no touches, kept (unattributed)
    assert p.loc[("Enterprise", "webinar")][["conversions", "nulls"]].tolist() == [0, 1]  # L2: an MQL, no opp
    assert p.loc[("SMB", "partner_referral")][["conversions", "nulls"]].tolist() == [0, 1]  # L3: opp after as-of
    assert p["journeys"].sum() == 5 and p["conversions"].sum() == 3
    assert p.loc[("SMB", "content_syndication > webinar > paid_search > email")]["value"] == 1234.56


def test_revenue_paths_by_hand(hand):
    con, tables = hand
    p = _paths(con, tables, "revenue")
    won = p.loc[("SMB", "content_syndication > webinar > paid_search > email > outbound_sdr")]
    assert (won["conversions"], won["nulls"], won["value_cents"], won["creation_index"]) == (1, 0, 123456, 3)
    lost = p.loc[("Mid-Market", "outbound_sdr > events")]
    assert (lost["conversions"], lost["nulls"], lost["value_cents"]) == (0, 1, 0)
    assert len(p) == 2


def test_lookback_is_respected(hand):
    con, tables = hand
    short = J.JourneyWindow(START, END, AS_OF, 30)  # 30 days: T02/T00 (39 days before O1) fall out
    p = _paths(con, tables, "pipeline", short)
    assert ("SMB", "paid_search > email") in p.index
    long = J.JourneyWindow(START, END, AS_OF, 400)  # T01 comes in
    p = _paths(con, tables, "pipeline", long)
    assert ("SMB", "paid_search > content_syndication > webinar > paid_search > email") in p.index


def test_sourced_influenced_and_closed_by_hand(hand):
    con, tables = hand
    lc = J.fetch_sorted(J.lifecycle_table(tables, WINDOW, ORIGIN), con, ["segment", "first_channel"])
    lc = lc.set_index("segment")
    smb = lc.loc["SMB"]
    assert (smb["first_channel"], bool(smb["first_marketing"]), bool(smb["marketing_before"])) == (
        "content_syndication", True, True)
    mm = lc.loc["Mid-Market"].sort_values("opportunities")
    assert mm["value_cents"].sum() == 9999 + 50000
    o2 = mm[mm["first_channel"] == "outbound_sdr"].iloc[0]
    assert not o2["first_marketing"] and not o2["marketing_before"] and not o2["marketing_after"]
    closed = J.fetch_sorted(J.closed_table(tables, WINDOW, ORIGIN), con, ["segment"])
    assert closed[["segment", "marketing", "won", "deals"]].values.tolist() == [
        ["Mid-Market", False, False, 1], ["SMB", True, True, 1]]


def test_time_decay_by_hand(hand):
    con, tables = hand
    td = J.fetch_sorted(J.time_decay_table(tables, "pipeline", WINDOW, ORIGIN, 7.0), con, ["segment", "key"])
    o1 = td[td["segment"] == "SMB"].set_index("key")
    ages = {"content_syndication": 39, "webinar": 39, "paid_search": 25, "email": 0}
    w = {k: 2 ** (-a / 7) for k, a in ages.items()}
    tot = sum(w.values())
    for k, v in w.items():
        assert o1.loc[k, "weight_count"] == pytest.approx(v / tot, rel=1e-12)
        assert o1.loc[k, "weight_cents"] == pytest.approx(123456 * v / tot, rel=1e-12)
    assert td["weight_count"].sum() == pytest.approx(2.0)  # O1 and O2 (O3 has no touch)


def test_transitions_by_hand(hand):
    con, tables = hand
    t = J.fetch_transitions(J.transition_table(tables, "pipeline", WINDOW, ORIGIN), con)
    got = {(r.from_state, r.to_state): (r.journeys, r.value_cents) for r in t.itertuples()}
    assert got == {
        # O1: content_syndication > webinar > paid_search > email, converted (1234.56)
        ("(start)", "content_syndication"): (1, 0), ("content_syndication", "webinar"): (1, 0),
        ("webinar", "paid_search"): (1, 0), ("paid_search", "email"): (1, 0), ("email", "(conversion)"): (1, 123456),
        # O2: outbound_sdr, converted (99.99); O3 has no touch: no transition
        ("(start)", "outbound_sdr"): (1, 0), ("outbound_sdr", "(conversion)"): (1, 9999),
        # L2 (webinar) and L3 (partner_referral): MQLs without an opportunity
        ("(start)", "webinar"): (1, 0), ("webinar", "(null)"): (1, 0),
        ("(start)", "partner_referral"): (1, 0), ("partner_referral", "(null)"): (1, 0),
    }
    rev = J.fetch_transitions(J.transition_table(tables, "revenue", WINDOW, ORIGIN), con)
    assert rev.set_index(["from_state", "to_state"]).loc[("email", "outbound_sdr"), "journeys"] == 1
    assert rev.set_index(["from_state", "to_state"]).loc[("events", "(null)"), "journeys"] == 1


# ------------------------------------------------------------------------------------------- random tables vs pandas


def random_tables(seed: int):
    rng = np.random.default_rng(seed)
    base = ts("2026-05-01")
    hours = lambda lo, hi, n: pd.to_timedelta(rng.integers(lo, hi, n), unit="h")  # noqa: E731
    n_leads, n_opps, n_t = 60, 40, 700
    opp_ids = [f"O{i:03d}" for i in range(n_opps)]
    o_created = base + hours(0, 24 * 200, n_opps)
    closed = rng.random(n_opps) < 0.6
    o_close = o_created + hours(24, 24 * 60, n_opps)
    opps = pd.DataFrame({
        "opportunity_id": opp_ids, "created_at": o_created, "segment": rng.choice(["SMB", "Enterprise"], n_opps),
        "stage": "Discovery", "amount": [Decimal(f"{v:.2f}") for v in rng.uniform(1, 90_000, n_opps)],
        "is_closed": closed, "is_won": closed & (rng.random(n_opps) < 0.5),
        "closed_at": pd.Series(o_close).where(closed),
    })
    lead_ids = [f"L{i:03d}" for i in range(n_leads)]
    l_created = base + hours(-24 * 100, 24 * 200, n_leads)
    has_mql = rng.random(n_leads) < 0.8
    lead_opp = [opp_ids[i] if i < 30 and rng.random() < 0.8 else None for i in range(n_leads)]
    leads = pd.DataFrame({
        "lead_id": lead_ids, "created_at": l_created, "segment": rng.choice(["SMB", "Enterprise"], n_leads),
        "source_channel": "email", "mql_at": pd.Series(l_created + hours(1, 24 * 30, n_leads)).where(has_mql),
        "opportunity_id": lead_opp,
    })
    link = rng.random(n_t)
    t_lead = np.where(link < 0.6, rng.choice(lead_ids, n_t), None)
    t_opp = np.where((link >= 0.5) & (link < 0.9), rng.choice(opp_ids, n_t), None)
    # coarse times (whole days) so that ties are frequent and ordering by touchpoint_id matters
    t_at = base + pd.to_timedelta(rng.integers(-260, 240, n_t), unit="D")
    touches = pd.DataFrame({
        "touchpoint_id": [f"T{i:04d}" for i in rng.permutation(n_t)], "lead_id": t_lead, "opportunity_id": t_opp,
        "occurred_at": t_at, "channel": rng.choice(CHANNELS, n_t),
        "touch_kind": rng.choice(["marketing", "sales", None], n_t), "account_id": None,
    })
    return leads, opps, touches


def _is_mkt(t: pd.DataFrame) -> pd.Series:
    origin = t["channel"].map(ORIGIN).fillna("unknown")
    return (origin == "marketing") & (t["touch_kind"].fillna("").str.lower() != "sales")


def reference_journeys(leads, opps, touches, kind, w: J.JourneyWindow) -> list[dict]:
    """The journey rules of analysis.journeys written directly in pandas, one journey at a time."""
    lb = pd.Timedelta(days=w.lookback_days)
    t = touches[touches["occurred_at"] <= w.as_of].copy()
    t["opp_link"] = t["opportunity_id"].where(t["opportunity_id"].notna(),
                                              t["lead_id"].map(leads.set_index("lead_id")["opportunity_id"]))
    t["mkt"] = _is_mkt(t)
    t = t.sort_values(["occurred_at", "touchpoint_id"])

    def in_period(x):
        return x.notna() & (x >= w.start) & (x < w.end) & (x <= w.as_of)

    out = []

    def add(seg, mine, lo, hi, creation, converted, cents, closed_at=None):
        mine = mine[(mine["occurred_at"] >= lo) & (mine["occurred_at"] <= hi)]
        pre = mine["occurred_at"] <= creation if creation is not None else pd.Series(False, index=mine.index)
        out.append({"segment": seg, "keys": mine["channel"].tolist(), "ats": mine["occurred_at"].tolist(),
                    "mkt": mine["mkt"].tolist(), "pre": pre.tolist(), "creation_index": int(pre.sum()) - 1,
                    "converted": converted, "cents": cents, "event": hi})

    cents = {r.opportunity_id: int(r.amount * 100) for r in opps.itertuples()}
    if kind == "pipeline":
        for r in opps[in_period(opps["created_at"])].itertuples():
            add(r.segment, t[t["opp_link"] == r.opportunity_id], r.created_at - lb, r.created_at, r.created_at, True,
                cents[r.opportunity_id])
        existing = set(opps.loc[opps["created_at"] <= w.as_of, "opportunity_id"])
        for r in leads[in_period(leads["mql_at"])].itertuples():
            if r.opportunity_id in existing:
                continue
            add(r.segment, t[t["lead_id"] == r.lead_id], r.mql_at - lb, w.as_of, None, False, 0)
    elif kind in ("revenue", "closed"):
        closed = opps[in_period(opps["closed_at"]) & opps["is_closed"]]
        for r in closed.itertuples():
            add(r.segment, t[t["opp_link"] == r.opportunity_id], r.created_at - lb, r.closed_at, r.created_at,
                bool(r.is_won), cents[r.opportunity_id])
    elif kind == "lifecycle":
        for r in opps[in_period(opps["created_at"])].itertuples():
            end = min(r.closed_at, w.as_of) if pd.notna(r.closed_at) else w.as_of
            add(r.segment, t[t["opp_link"] == r.opportunity_id], r.created_at - lb, end, r.created_at, True,
                cents[r.opportunity_id])
    return out


def reference_paths(js: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame({
        "segment": [j["segment"] for j in js], "path": [" > ".join(j["keys"]) for j in js],
        "creation_index": [j["creation_index"] for j in js], "conv": [int(j["converted"]) for j in js],
        "cents": [j["cents"] for j in js],
    })
    df["value_cents"] = df["cents"] * df["conv"]
    g = df.groupby(["segment", "path", "creation_index"]).agg(
        journeys=("conv", "size"), conversions=("conv", "sum"), value_cents=("value_cents", "sum"))
    g["nulls"] = g["journeys"] - g["conversions"]
    return g.reset_index()


WINDOWS = [
    J.JourneyWindow(ts("2026-08-01"), ts("2026-09-01"), ts("2026-09-01"), 180),
    J.JourneyWindow(ts("2026-07-01"), ts("2026-10-01"), ts("2026-09-10 06:00"), 90),
    J.JourneyWindow(ts("2026-05-01"), ts("2027-01-01"), ts("2026-12-01"), 30),
]


@pytest.fixture(scope="module", params=[1, 2])
def rand(request, tmp_path_factory):
    leads, opps, touches = random_tables(request.param)
    con, tables = _write(tmp_path_factory.mktemp(f"rand{request.param}"), leads, opps, touches)
    return con, tables, leads, opps, touches


@pytest.mark.parametrize("w", WINDOWS, ids=["month", "quarter-mid-as-of", "long-short-lookback"])
@pytest.mark.parametrize("basis", ["pipeline", "revenue"])
def test_paths_equal_pandas(rand, basis, w):
    con, tables, leads, opps, touches = rand
    got = J.fetch_paths(J.path_table(tables, basis, w, ORIGIN), con)
    ref = reference_paths(reference_journeys(leads, opps, touches, basis, w))
    cols = ["segment", "path", "creation_index", "journeys", "conversions", "nulls", "value_cents"]
    ref = ref.sort_values(["segment", "path", "creation_index"]).reset_index(drop=True)[cols]
    assert len(ref) > 0
    pd.testing.assert_frame_equal(got[cols], ref, check_dtype=False)


@pytest.mark.parametrize("w", WINDOWS, ids=["month", "quarter-mid-as-of", "long-short-lookback"])
@pytest.mark.parametrize("basis", ["pipeline", "revenue"])
def test_transitions_equal_numpy_count_of_the_distinct_paths(rand, basis, w):
    """Ties in time are frequent here: the window's order (time, touchpoint_id) must be the paths' order."""
    from analysis import attribution as A

    con, tables, *_ = rand
    got = J.fetch_transitions(J.transition_table(tables, basis, w, ORIGIN), con)
    ref = A.transition_counts(J.fetch_paths(J.path_table(tables, basis, w, ORIGIN), con))
    assert len(ref) > 0
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)


@pytest.mark.parametrize("w", WINDOWS[:2], ids=["month", "quarter-mid-as-of"])
@pytest.mark.parametrize("basis", ["pipeline", "revenue"])
def test_time_decay_equals_pandas(rand, basis, w):
    con, tables, leads, opps, touches = rand
    got = J.fetch_sorted(J.time_decay_table(tables, basis, w, ORIGIN, 7.0), con, ["segment", "key"])
    rows = []
    for j in reference_journeys(leads, opps, touches, basis, w):
        if not j["converted"] or not j["keys"]:
            continue
        age = np.array([(j["event"] - a).total_seconds() / 86400 for a in j["ats"]])
        wt = 0.5 ** (age / 7.0)
        wt = wt / wt.sum()
        rows += [(j["segment"], k, x, x * j["cents"]) for k, x in zip(j["keys"], wt, strict=True)]
    ref = pd.DataFrame(rows, columns=["segment", "key", "weight_count", "weight_cents"])
    ref = ref.groupby(["segment", "key"], as_index=False).sum()
    np.testing.assert_array_equal(got[["segment", "key"]].to_numpy(), ref[["segment", "key"]].to_numpy())
    np.testing.assert_allclose(got["weight_count"], ref["weight_count"], rtol=1e-9)
    np.testing.assert_allclose(got["weight_cents"], ref["weight_cents"], rtol=1e-9)


@pytest.mark.parametrize("w", WINDOWS, ids=["month", "quarter-mid-as-of", "long-short-lookback"])
def test_lifecycle_and_closed_equal_pandas(rand, w):
    con, tables, leads, opps, touches = rand
    keys = ["segment", "first_channel", "first_marketing", "marketing_before", "marketing_after"]
    got = J.fetch_sorted(J.lifecycle_table(tables, w, ORIGIN), con, keys)
    rows = []
    for j in reference_journeys(leads, opps, touches, "lifecycle", w):
        pre = [i for i, p in enumerate(j["pre"]) if p]
        rows.append({
            "segment": j["segment"], "first_channel": j["keys"][pre[0]] if pre else None,
            "first_marketing": bool(j["mkt"][pre[0]]) if pre else False,
            "marketing_before": any(m and p for m, p in zip(j["mkt"], j["pre"], strict=True)),
            "marketing_after": any(m and not p for m, p in zip(j["mkt"], j["pre"], strict=True)),
            "cents": j["cents"],
        })
    ref = pd.DataFrame(rows).groupby(keys, dropna=False).agg(opportunities=("cents", "size"),
                                                             value_cents=("cents", "sum")).reset_index()
    ref = ref.sort_values(keys, na_position="last").reset_index(drop=True)
    assert got["value_cents"].sum() == ref["value_cents"].sum()
    got = got[[*keys, "opportunities", "value_cents"]].astype(object)
    got["first_channel"] = got["first_channel"].where(got["first_channel"].notna(), None)
    ref = ref.astype(object)
    ref["first_channel"] = ref["first_channel"].where(ref["first_channel"].notna(), None)
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)

    got = J.fetch_sorted(J.closed_table(tables, w, ORIGIN), con, ["segment", "marketing", "won"])
    rows = [{"segment": j["segment"], "marketing": any(j["mkt"]), "won": j["converted"], "cents": j["cents"]}
            for j in reference_journeys(leads, opps, touches, "closed", w)]
    ref = pd.DataFrame(rows).groupby(["segment", "marketing", "won"]).agg(
        deals=("cents", "size"), value_cents=("cents", "sum")).reset_index()
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)


def test_campaign_key_falls_back_to_channel(tmp_path):
    leads = pd.DataFrame([{"lead_id": "L1", "created_at": ts("2026-09-01"), "segment": "SMB",
                           "source_channel": "email", "opportunity_id": "O1"}])
    opps = pd.DataFrame([{"opportunity_id": "O1", "created_at": ts("2026-10-02"), "segment": "SMB",
                          "stage": "Discovery", "amount": Decimal("1.00")}])
    touches = pd.DataFrame([
        {"touchpoint_id": "T1", "lead_id": "L1", "occurred_at": ts("2026-09-02"), "channel": "email",
         "campaign": "q3 > nurture"},
        {"touchpoint_id": "T2", "lead_id": "L1", "occurred_at": ts("2026-09-03"), "channel": "webinar"},
    ])
    con, tables = _write(tmp_path, leads, opps, touches)
    p = J.fetch_paths(J.path_table(tables, "pipeline", WINDOW, ORIGIN, touch_key="campaign"), con)
    assert p["path"].tolist() == ["q3 - nurture > webinar"]


def test_expressions_are_ibis_only_and_compile_for_spark(hand, monkeypatch):
    import ibis
    from ibis.config import Config

    if getattr(ibis.options, "pyspark", None) is None:  # pyspark not installed: its compile option is unset

        class PySparkOptions(Config):
            treat_nan_as_null: bool = False

        monkeypatch.setattr(ibis.options, "pyspark", PySparkOptions())
    _, tables = hand
    for expr in (J.path_table(tables, "revenue", WINDOW, ORIGIN), J.lifecycle_table(tables, WINDOW, ORIGIN),
                 J.time_decay_table(tables, "pipeline", WINDOW, ORIGIN, 7.0), J.closed_table(tables, WINDOW, ORIGIN),
                 J.transition_table(tables, "pipeline", WINDOW, ORIGIN)):
        assert isinstance(expr, ibis.Table)
        assert "SELECT" in ibis.to_sql(expr, dialect="pyspark")


def test_without_a_leads_table_only_direct_links_count(hand):
    con, tables = hand
    no_leads = {k: v for k, v in tables.items() if k != "leads"}
    p = J.fetch_paths(J.path_table(no_leads, "pipeline", WINDOW, ORIGIN), con).set_index(["segment", "path"])
    # O1 keeps only its directly linked touch; there are no MQL journeys without the leads table
    assert p.loc[("SMB", "paid_search")]["conversions"] == 1
    assert p["nulls"].sum() == 0 and p["conversions"].sum() == 3

