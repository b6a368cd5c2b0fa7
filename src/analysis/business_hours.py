"""Business-hours arithmetic on the governed calendar (time zone, workdays, opening hours, holidays).

Business time is a monotone clock B(t): the business seconds from 1970-01-01 (local) up to instant t. The business
time between two instants is B(end) - B(start). Two equivalent implementations:

* `business_hours_between` evaluates B with numpy's busday functions on pandas timestamps (vectorised);
* `with_business_seconds` evaluates B inside the engine: a small per-UTC-day calendar table (built here, with the
  same busday functions) is joined on the UTC date, so it runs unchanged on DuckDB, Spark or a warehouse and
  row-level data never leaves the engine.

Opening hours are wall-clock hours in the calendar's time zone, so daylight-saving changes are handled by the
zone conversion. tests/test_business_hours.py checks both against a brute-force walk over every minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import numpy as np
import pandas as pd

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours [start, end) on workdays in `time_zone`, except holidays (local dates)."""

    time_zone: str = "UTC"
    workdays: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri")
    start: str = "09:00"
    end: str = "17:00"
    holidays: tuple[str, ...] = ()

    @property
    def weekmask(self) -> str:
        """numpy weekmask ('1111100' for Mon-Fri)."""
        days = {d.strip().lower()[:3] for d in self.workdays}
        unknown = days - set(_DAY_NAMES)
        if unknown:
            raise ValueError(f"unknown workday name(s): {sorted(unknown)}")
        return "".join("1" if d in days else "0" for d in _DAY_NAMES)

    @property
    def start_minute(self) -> int:
        """Opening time as minutes after local midnight."""
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        """Closing time as minutes after local midnight."""
        return _minutes(self.end)

    @property
    def day_minutes(self) -> int:
        """Business minutes in one full business day."""
        return self.end_minute - self.start_minute

    @property
    def holiday_dates(self) -> np.ndarray:
        """Holidays as datetime64[D]."""
        return np.array(sorted(self.holidays), dtype="datetime64[D]")

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < self.end_minute <= 24 * 60:
            raise ValueError(f"business hours must satisfy 00:00 <= start < end <= 24:00, got {self.start}-{self.end}")
        _ = self.weekmask


def _minutes(hhmm: str) -> int:
    h, _, m = str(hhmm).partition(":")
    return int(h) * 60 + int(m or 0)


def calendar_from_definitions(definitions: Any) -> BusinessCalendar:
    """The business calendar of the definitions' `sla.calendar` section."""
    cal = (definitions["sla"] if not isinstance(definitions, dict) else definitions.get("sla", {})).get("calendar", {})
    return BusinessCalendar(
        time_zone=str(cal.get("time_zone", "UTC")),
        workdays=tuple(str(d) for d in cal.get("workdays", ("Mon", "Tue", "Wed", "Thu", "Fri"))),
        start=str(cal.get("start", "09:00")),
        end=str(cal.get("end", "17:00")),
        holidays=tuple(str(d) for d in cal.get("holidays", ())),
    )


def _as_utc_index(values: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return idx


def business_seconds_clock(instants: Any, calendar: BusinessCalendar) -> np.ndarray:
    """B(t) in seconds for each instant (naive values are taken as UTC); NaN where the instant is missing."""
    idx = _as_utc_index(instants)
    out = np.full(len(idx), np.nan)
    ok = ~idx.isna()
    if not ok.any():
        return out
    local = idx[ok].tz_convert(calendar.time_zone)
    days = local.tz_localize(None).normalize().values.astype("datetime64[D]")
    seconds_of_day = (
        local.hour.to_numpy() * 3600.0
        + local.minute.to_numpy() * 60.0
        + local.second.to_numpy()
        + local.microsecond.to_numpy() / 1e6
    )
    mask, hol = calendar.weekmask, calendar.holiday_dates
    full_days = np.busday_count(_EPOCH, days, weekmask=mask, holidays=hol).astype(float)
    is_open = np.is_busday(days, weekmask=mask, holidays=hol)
    within = np.clip(seconds_of_day - calendar.start_minute * 60.0, 0.0, calendar.day_minutes * 60.0)
    out[ok] = full_days * calendar.day_minutes * 60.0 + np.where(is_open, within, 0.0)
    return out


def business_hours_between(start: Any, end: Any, calendar: BusinessCalendar) -> np.ndarray:
    """Business hours from each start to each end (negative when end < start; NaN where either is missing)."""
    return (business_seconds_clock(end, calendar) - business_seconds_clock(start, calendar)) / 3600.0


# ----------------------------------------------------------------------------------------------- in the engine


def calendar_table(calendar: BusinessCalendar, first: dt.date | str, last: dt.date | str) -> pd.DataFrame:
    """Per UTC date in [first, last]: B at UTC midnight and up to two business intervals within that UTC day.

    Columns: bh_day (date), bh_cum (B at 00:00 UTC, seconds), bh_a1, bh_b1, bh_a2, bh_b2 (epoch seconds; an
    empty interval has a == b). B(t) = bh_cum + clip(t - a1, 0, b1 - a1) + clip(t - a2, 0, b2 - a2).
    """
    days = pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D", tz="UTC")
    midnight = days.tz_localize(None).values.astype("datetime64[s]").astype(np.int64)
    cum = business_seconds_clock(days, calendar)
    # Local business days that can intersect a UTC day: the local dates of UTC day -1 .. +1.
    mask, hol = calendar.weekmask, calendar.holiday_dates
    intervals: list[list[tuple[int, int]]] = [[] for _ in range(len(days))]
    for shift in (-1, 0, 1):
        local_days = (days.tz_localize(None) + pd.Timedelta(days=shift)).values.astype("datetime64[D]")
        open_ = np.is_busday(local_days, weekmask=mask, holidays=hol)
        base = pd.DatetimeIndex(local_days.astype("datetime64[ns]"))
        a = _local_to_epoch(base + pd.Timedelta(minutes=calendar.start_minute), calendar.time_zone)
        b = _local_to_epoch(base + pd.Timedelta(minutes=calendar.end_minute), calendar.time_zone)
        lo = np.maximum(a, midnight)
        hi = np.minimum(b, midnight + 86400)
        for i in np.flatnonzero(open_ & (hi > lo)):
            intervals[i].append((int(lo[i]), int(hi[i])))
    rows = []
    for i, ivs in enumerate(intervals):
        ivs = sorted(set(ivs))
        if len(ivs) > 2:  # cannot happen for opening hours shorter than a day; guard anyway
            raise ValueError("more than two business intervals in one UTC day")
        ivs = ivs + [(int(midnight[i]), int(midnight[i]))] * (2 - len(ivs))
        rows.append((ivs[0][0], ivs[0][1], ivs[1][0], ivs[1][1]))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return pd.DataFrame(
        {
            "bh_day": days.tz_localize(None).date,
            "bh_cum": cum.astype(np.int64),
            "bh_a1": arr[:, 0],
            "bh_b1": arr[:, 1],
            "bh_a2": arr[:, 2],
            "bh_b2": arr[:, 3],
        }
    )


def _local_to_epoch(local: pd.DatetimeIndex, tz: str) -> np.ndarray:
    utc = local.tz_localize(tz, ambiguous=False, nonexistent="shift_forward").tz_convert("UTC")
    return utc.tz_localize(None).values.astype("datetime64[s]").astype(np.int64)


def with_business_seconds(
    table: ibis.Table,
    columns: Sequence[str],
    calendar_rows: pd.DataFrame,
) -> ibis.Table:
    """`table` plus a `<column>_bs` column (B(t) in seconds, int64; NULL outside the calendar) per timestamp column.

    `calendar_rows` comes from `calendar_table` and must cover the dates of the instants that matter.
    """
    cal = ibis.memtable(calendar_rows)
    out = table
    for col in columns:
        c = cal.rename({f"{k}__{col}": k for k in calendar_rows.columns})
        day_col = f"bh_day__{col}"
        key = f"_bh_key__{col}"
        out = out.mutate(**{key: out[col].date()})
        keep = out.columns
        joined = out.left_join(c, out[key] == c[day_col])
        t = joined[col].epoch_seconds().cast("int64")

        def clip(a: ibis.Expr, b: ibis.Expr, t: ibis.Expr = t) -> ibis.Expr:
            return ibis.greatest(ibis.literal(0, "int64"), ibis.least(t - a, b - a))

        value = (
            joined[f"bh_cum__{col}"]
            + clip(joined[f"bh_a1__{col}"], joined[f"bh_b1__{col}"])
            + clip(joined[f"bh_a2__{col}"], joined[f"bh_b2__{col}"])
        )
        out = joined.select(*[joined[k] for k in keep if k != key], **{f"{col}_bs": value.cast("int64")})
    return out
