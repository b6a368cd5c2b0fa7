"""Business hours: the vectorised clock and the engine version both equal a brute-force walk over every minute."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import ibis
import numpy as np
import pandas as pd
import pytest

from analysis.business_hours import (
    BusinessCalendar,
    business_hours_between,
    business_seconds_clock,
    calendar_from_definitions,
    calendar_table,
    with_business_seconds,
)
from analysis.config import load_definitions

NY = calendar_from_definitions(load_definitions())
# A zone whose working day straddles midnight UTC (09:00-17:00 NZDT = 20:00-04:00 UTC), with a Sun-Thu week.
AUCKLAND = BusinessCalendar(
    "Pacific/Auckland", ("Sun", "Mon", "Tue", "Wed", "Thu"), "08:30", "17:15", ("2026-04-06", "2026-10-26")
)


def brute_force_hours(start: pd.Timestamp, end: pd.Timestamp, cal: BusinessCalendar) -> float:
    """Walk every whole minute in [start, end) (minute-aligned instants) and count the open ones."""
    sign = 1.0
    if end < start:
        start, end, sign = end, start, -1.0
    tz = ZoneInfo(cal.time_zone)
    days = {d.strip().lower()[:3] for d in cal.workdays}
    hol = {dt.date.fromisoformat(h) for h in cal.holidays}
    sh, sm = (int(x) for x in cal.start.split(":"))
    eh, em = (int(x) for x in cal.end.split(":"))
    count = 0
    t = start.to_pydatetime()
    stop = end.to_pydatetime()
    step = dt.timedelta(minutes=1)
    while t < stop:
        local = t.astimezone(tz)
        tod = local.hour * 60 + local.minute
        if local.strftime("%a").lower() in days and local.date() not in hol and sh * 60 + sm <= tod < eh * 60 + em:
            count += 1
        t += step
    return sign * count / 60.0


def random_pairs(n: int, seed: int, first: str, days: int, max_span_h: float, align: bool = True):
    rng = np.random.default_rng(seed)
    base = pd.Timestamp(first, tz="UTC")
    start = base + pd.to_timedelta(rng.uniform(0, days * 24, n), unit="h")
    end = start + pd.to_timedelta(rng.uniform(-6, max_span_h, n), unit="h")
    if align:
        start, end = start.floor("min"), end.floor("min")
    else:
        start, end = start.floor("us"), end.floor("us")
    return pd.DatetimeIndex(start), pd.DatetimeIndex(end)


def test_calendar_reads_the_definitions():
    assert NY.time_zone == "America/New_York"
    assert NY.weekmask == "1111100"
    assert (NY.start_minute, NY.end_minute, NY.day_minutes) == (540, 1020, 480)
    assert "2026-11-26" in NY.holidays


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2026-10-16T20:00:00Z", "2026-10-19T14:00:00Z", 2.0),  # Fri 16:00 EDT -> Mon 10:00 EDT: 1 h + 1 h
        ("2026-11-25T21:00:00Z", "2026-11-27T15:00:00Z", 2.0),  # Wed 16:00 EST -> Fri 10:00 EST, Thanksgiving off
        ("2026-10-17T15:00:00Z", "2026-10-18T15:00:00Z", 0.0),  # Saturday to Sunday
        ("2026-10-19T12:00:00Z", "2026-10-19T22:00:00Z", 8.0),  # a whole Monday, before opening to after closing
        ("2026-03-06T21:00:00Z", "2026-03-09T14:00:00Z", 2.0),  # Fri 16:00 EST -> Mon 10:00 EDT (DST starts Sun)
        ("2026-10-19T14:30:00Z", "2026-10-19T14:00:00Z", -0.5),  # end before start: negative
    ],
)
def test_known_cases(start, end, hours):
    got = business_hours_between([pd.Timestamp(start)], [pd.Timestamp(end)], NY)[0]
    assert got == pytest.approx(hours, abs=1e-9)
    assert brute_force_hours(pd.Timestamp(start), pd.Timestamp(end), NY) == pytest.approx(hours)


@pytest.mark.parametrize(
    ("cal", "first"),
    [(NY, "2026-02-20"), (NY, "2026-10-20"), (AUCKLAND, "2026-03-25"), (AUCKLAND, "2026-09-20")],
    ids=["ny-dst-start", "ny-dst-end-thanksgiving", "auckland-dst-end", "auckland-dst-start"],
)
def test_vectorised_equals_minute_walk(cal, first):
    start, end = random_pairs(70, seed=len(first) + len(cal.time_zone), first=first, days=45, max_span_h=120)
    got = business_hours_between(start, end, cal)
    want = np.array([brute_force_hours(a, b, cal) for a, b in zip(start, end, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert np.any(want > 0) and np.any(want == 0)  # the sample exercises open and closed spans


def test_seconds_resolution_within_a_minute_of_the_walk():
    start, end = random_pairs(60, seed=3, first="2026-10-01", days=30, max_span_h=72, align=False)
    got = business_hours_between(start, end, NY)
    walk = np.array(
        [
            brute_force_hours(a.ceil("min"), b.floor("min"), NY) if b > a else np.nan
            for a, b in zip(start, end, strict=True)
        ]
    )
    ok = ~np.isnan(walk)
    assert np.all(np.abs(got[ok] - walk[ok]) <= 2 / 60 + 1e-9)


def test_missing_instants_give_nan():
    got = business_hours_between(
        pd.Series([pd.Timestamp("2026-10-19T14:00:00Z"), pd.NaT]),
        pd.Series([pd.NaT, pd.Timestamp("2026-10-19T15:00:00Z")]),
        NY,
    )
    assert np.isnan(got).all()
    assert np.isnan(business_seconds_clock([pd.NaT], NY)).all()


@pytest.mark.parametrize("cal", [NY, AUCKLAND], ids=["ny", "auckland"])
def test_engine_clock_equals_numpy_clock(cal):
    start, end = random_pairs(400, seed=11, first="2026-02-15", days=280, max_span_h=200, align=False)
    frame = pd.DataFrame({"i": np.arange(len(start)), "a": start, "b": end})
    rows = calendar_table(cal, "2026-02-01", "2026-12-31")
    expr = with_business_seconds(ibis.memtable(frame), ["a", "b"], rows)
    got = expr.execute().sort_values("i").reset_index(drop=True)
    np.testing.assert_allclose(got["a_bs"].to_numpy(float), business_seconds_clock(start, cal), atol=1.0)
    hours = (got["b_bs"] - got["a_bs"]).to_numpy(float) / 3600
    np.testing.assert_allclose(hours, business_hours_between(start, end, cal), atol=2 / 3600)
    assert list(got.columns) == ["i", "a", "b", "a_bs", "b_bs"]


def test_engine_clock_is_null_outside_the_calendar_and_for_null_instants():
    frame = pd.DataFrame({"a": pd.to_datetime(["2026-10-19T14:00:00Z", None, "2030-01-01T00:00:00Z"], utc=True)})
    out = with_business_seconds(ibis.memtable(frame), ["a"], calendar_table(NY, "2026-10-01", "2026-10-31")).execute()
    assert out["a_bs"].notna().sum() == 1


def test_invalid_calendars_are_refused():
    with pytest.raises(ValueError):
        BusinessCalendar("UTC", ("Mon",), "17:00", "09:00")
    with pytest.raises(ValueError):
        BusinessCalendar("UTC", ("Funday",))
