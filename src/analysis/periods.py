"""Reporting periods (month, ISO week, quarter) and the as-of instant a pack is computed at."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pandas as pd

UTC = dt.UTC


@dataclass(frozen=True)
class Period:
    """A reporting period: label ('2026-10', '2026-W43', '2026-Q3'), cadence, [start, end) in UTC."""

    label: str
    cadence: str
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive

    @property
    def months(self) -> list[str]:
        """Calendar months (YYYY-MM) overlapping the period, in order."""
        rng = pd.period_range(self.start, self.end - pd.Timedelta(microseconds=1), freq="M")
        return [str(p) for p in rng]


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")


def parse_period(label: str) -> Period:
    """The Period named by 'YYYY-MM', 'YYYY-Www' or 'YYYY-Qn'; ValueError otherwise."""
    if m := _MONTH.match(label):
        start = pd.Timestamp(int(m[1]), int(m[2]), 1, tz=UTC)
        return Period(label, "monthly", start, start + pd.offsets.MonthBegin(1))
    if m := _WEEK.match(label):
        start = pd.Timestamp(dt.date.fromisocalendar(int(m[1]), int(m[2]), 1), tz=UTC)
        return Period(label, "weekly", start, start + pd.Timedelta(days=7))
    if m := _QUARTER.match(label):
        start = pd.Timestamp(int(m[1]), 3 * int(m[2]) - 2, 1, tz=UTC)
        return Period(label, "quarterly", start, start + pd.offsets.MonthBegin(3))
    raise ValueError(f"period '{label}' is not YYYY-MM, YYYY-Www or YYYY-Qn")


def _period_containing(cadence: str, instant: pd.Timestamp) -> Period:
    naive = instant.tz_convert(UTC).tz_localize(None)
    if cadence == "monthly":
        return parse_period(f"{naive.year}-{naive.month:02d}")
    if cadence == "weekly":
        y, w, _ = naive.date().isocalendar()
        return parse_period(f"{y}-W{w:02d}")
    if cadence == "quarterly":
        return parse_period(f"{naive.year}-Q{(naive.month - 1) // 3 + 1}")
    raise ValueError(f"unknown cadence '{cadence}'")


def last_complete_period(cadence: str, snapshot: pd.Timestamp) -> Period:
    """The last period of `cadence` that ended at or before the data's snapshot instant."""
    snapshot = pd.Timestamp(snapshot)
    snapshot = snapshot.tz_localize(UTC) if snapshot.tzinfo is None else snapshot.tz_convert(UTC)
    period = _period_containing(cadence, snapshot - pd.Timedelta(microseconds=1))
    if period.end > snapshot:
        period = _period_containing(cadence, period.start - pd.Timedelta(microseconds=1))
    return period


def as_of_for(period: Period, snapshot: pd.Timestamp) -> pd.Timestamp:
    """The instant a pack is computed at: the end of the period, or the snapshot if the data stops earlier."""
    snapshot = pd.Timestamp(snapshot)
    return min(period.end, snapshot)


def month_label(ts: pd.Series) -> pd.Series:
    """'YYYY-MM' for each UTC timestamp."""
    return ts.dt.strftime("%Y-%m")


def previous_months(month: str, k: int) -> list[str]:
    """The k calendar months before `month`, oldest first."""
    p = pd.Period(month, freq="M")
    return [str(p - i) for i in range(k, 0, -1)]


def month_end(month: str) -> pd.Timestamp:
    """The exclusive end instant (UTC) of month 'YYYY-MM'."""
    return pd.Timestamp(pd.Period(month, freq="M").end_time.date() + dt.timedelta(days=1), tz=UTC)
