"""Pipeline plan: the contribution model, pipeline coverage and forecast accuracy (board pack section "plan").

Three questions leadership asks of the plan, each answered from the canonical tables and the governed
definitions (`plan:` and `scorecard:` in config/definitions.yml):

**Contribution model** (targets + opportunities). For each period, the revenue target (targets.revenue_target,
summed over segments) is split by origin (marketing, sales, partner) and divided by that origin's win rate:

    pipeline needed[origin] = revenue target x split[origin] / win rate[origin]

e.g. a $1.5M target split 60/40 marketing/sales at 22 % and 28 % win rates needs $4.1M and $2.1M of pipeline.
It is set against the pipeline *created* in the same period (amount of the opportunities created in it, by
origin); gap = created - needed, negative = short. This is the steady-state reading of the model: the pipeline
created in a period stands in for the pipeline that will close in a later one; the cycle tells how far ahead.

* The split is the governed `plan.revenue_split_by_origin` when the definitions set one; otherwise each origin's
  share of the won revenue of the trailing four quarters (won deals of unknown origin are left out, so the
  shares sum to one). The table and the metrics name which source was used.
* Win rate, average deal size and cycle per origin are measured over the trailing four quarters
  (`plan.trailing_quarters`): the twelve calendar months ending with the reporting period, cut at the as-of
  instant. Win rate = won / closed deals closed in the window (count basis, Wilson interval); average deal size
  = won revenue / won deals with an amount; cycle = median days from created to closed **of closed deals**
  (won and lost) closed in the window, so open deals do not shorten it (see the velocity section for the
  survival view with open deals censored).
* An opportunity's origin is its `origin` column, else the definitions' origin of its source channel, else
  'unknown' (counted in the totals, not in an origin's row).
* For a quarterly run the quarter's months are shown, the quarter itself (period = '2026-Q3'), and the model for
  the *next* quarter (pipeline needed only: its pipeline is not created yet).

**Pipeline coverage** (targets + opportunities) = open pipeline / remaining quota at a snapshot instant t, by
segment and in total (`plan.coverage_pipeline`, `plan.coverage_quota`):

* open at t = created before t and not closed before t (closed_at null or >= t; a deal flagged closed without
  a close date is not open). Amounts are the current amounts (the model keeps no amount history).
* pipeline counted = open deals whose expected close date falls in [t, t + W) with W =
  `plan.coverage_window_days` (90), when the opportunities carry an `expected_close_at` column; the canonical
  model has no expected close date, so by default it is open deals **created in the trailing W days**
  [t - W, t), the deals young enough to close within the window.
* remaining quota = the revenue targets of [t, t + W), a partly covered month prorated by its days. Nothing in
  that window has closed at t, so all of it remains. A window not fully covered by targets has no quota
  (flag 'no_quota', value not emitted).
* The trend: month-end snapshots of the last `plan.trend_months` (6) months up to the reporting month (the
  reporting month's snapshot is the as-of instant when the data stop before its end).

**Forecast accuracy** (forecasts + opportunities) = actual closed-won revenue / committed forecast
(forecasts.forecast_amount) per month and segment; a forecast committed after the as-of instant is ignored.
Outside the band when |accuracy - 1| > `scorecard.thresholds.forecast_accuracy.band` (0.10). A month not over
at the as-of instant is shown and flagged 'incomplete'.

Money stays decimal inside the engine (sums are exact); it becomes float only in the aggregates handed to
pandas for ratios, display and the metrics table. Only aggregates leave the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import ibis
import numpy as np
import pandas as pd

from analysis import stats
from analysis.config import Definitions
from analysis.engine import to_frame
from analysis.errors import DefinitionsError
from analysis.metrics import dims, empty, normalise
from analysis.periods import Period, month_end, parse_period

SECTION = "plan"
SECONDS_PER_DAY = 86_400
ALL = "All"

DEFAULTS = {"trailing_quarters": 4, "coverage_window_days": 90, "trend_months": 6}
METRIC_FLAGS = ("incomplete", "partial_target")


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class PlanSettings:
    """The governed settings the plan section uses (definitions `plan:` and `scorecard.thresholds`)."""

    origins: tuple[str, ...]
    revenue_split: dict[str, float] | None  # None: trailing won revenue share
    trailing_months: int
    coverage_window_days: int
    trend_months: int
    coverage_min: float
    forecast_band: float
    min_cell_size: int
    segments: tuple[str, ...]

    @property
    def trailing_label(self) -> str:
        """'trailing_4q' (used in metric methods)."""
        return f"trailing_{self.trailing_months // 3}q"


def _bad(message: str, key: str, definitions: Definitions) -> DefinitionsError:
    return DefinitionsError(message, file=definitions.path, column=key, rule="definitions")


def plan_settings(definitions: Definitions) -> PlanSettings:
    """The plan settings from the definitions (defaults where `plan:` omits a key); DefinitionsError when invalid."""
    plan = definitions.get("plan") or {}
    origins = tuple(definitions["channels"].get("origins") or ("marketing", "sales", "partner"))
    split = plan.get("revenue_split_by_origin")
    if split is not None:
        if not isinstance(split, dict) or not split:
            raise _bad("must map origins to shares (or be null)", "plan.revenue_split_by_origin", definitions)
        for origin, share in split.items():
            if origin not in origins:
                raise _bad(
                    f"origin '{origin}' is not one of {list(origins)}",
                    f"plan.revenue_split_by_origin.{origin}",
                    definitions,
                )
            if not isinstance(share, int | float) or share < 0:
                raise _bad("a share is a number >= 0", f"plan.revenue_split_by_origin.{origin}", definitions)
        total = round(sum(float(v) for v in split.values()), 9)
        if total != 1.0:
            raise _bad(f"shares sum to {total}, not 1", "plan.revenue_split_by_origin", definitions)
        split = {o: float(split.get(o, 0.0)) for o in origins}
    ints = {}
    for key, default in DEFAULTS.items():
        value = plan.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _bad("must be a positive whole number", f"plan.{key}", definitions)
        ints[key] = value
    thresholds = definitions["scorecard"]["thresholds"]
    return PlanSettings(
        origins=origins,
        revenue_split=split,
        trailing_months=3 * ints["trailing_quarters"],
        coverage_window_days=ints["coverage_window_days"],
        trend_months=ints["trend_months"],
        coverage_min=float(thresholds["pipeline_coverage"]["min"]),
        forecast_band=float(thresholds["forecast_accuracy"]["band"]),
        min_cell_size=int(definitions.stats["min_cell_size"]),
        segments=tuple(definitions["segments"].get("order") or ()),
    )


# ------------------------------------------------------------------------------------------- pure helpers


def pipeline_needed(
    revenue_target: float, split: Mapping[str, float], win_rates: Mapping[str, float]
) -> dict[str, float]:
    """Pipeline each origin must create: revenue target x split / win rate (NaN where the win rate is missing or 0).

    >>> {k: round(v) for k, v in pipeline_needed(1.5e6, {"marketing": .6, "sales": .4},
    ...                                          {"marketing": .22, "sales": .28}).items()}
    {'marketing': 4090909, 'sales': 2142857}
    """
    out = {}
    for origin, share in split.items():
        rate = win_rates.get(origin, math.nan)
        if share == 0:
            out[origin] = 0.0
        elif rate is None or not rate == rate or rate <= 0:
            out[origin] = math.nan
        else:
            out[origin] = float(revenue_target) * float(share) / float(rate)
    return out


def accuracy_outside(accuracy: float | np.ndarray, band: float) -> np.ndarray:
    """True where actual / forecast lies outside 1 +- band (NaN accuracy is not outside: it is unknown)."""
    a = np.asarray(accuracy, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.abs(a - 1.0) > band + 1e-12


def trailing_window(period: Period, as_of: pd.Timestamp, months: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the `months` calendar months ending with the period's last month, cut at as_of."""
    last = pd.Period(period.months[-1], freq="M")
    start = (last - (months - 1)).start_time.tz_localize("UTC")
    return start, min(month_end(str(last)), as_of)


def quarter_after(period: Period) -> Period:
    """The quarter that starts where `period` ends (for the forward plan)."""
    nxt = pd.Period(period.months[-1], freq="M") + 1
    return parse_period(f"{nxt.year}-Q{(nxt.month - 1) // 3 + 1}")


def month_start(month: str) -> pd.Timestamp:
    return pd.Period(month, freq="M").start_time.tz_localize("UTC")


def prorated_quota(targets: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> tuple[float, bool]:
    """(sum of target x share of each month inside [start, end), True when every overlapped month has a target).

    `targets` has columns month and revenue_target (one segment, or summed).
    """
    by_month = dict(zip(targets["month"], targets["revenue_target"], strict=True))
    total, complete = 0.0, True
    last = (end - pd.Timedelta(microseconds=1)).tz_localize(None)
    for p in pd.period_range(start=start.tz_localize(None), end=last, freq="M"):
        m0, m1 = month_start(str(p)), month_end(str(p))
        overlap = (min(m1, end) - max(m0, start)) / (m1 - m0)
        if overlap <= 0:
            continue
        value = by_month.get(str(p))
        if value is None or value != value:
            complete = False
            continue
        total += float(value) * overlap
    return total, complete


ZERO = Decimal(0)


def _decimal(value: object) -> Decimal | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _money_col(frame: pd.DataFrame, col: str, fill: Decimal | None = ZERO) -> None:
    """Money from the engine kept exact: Decimal objects (an empty sum is 0 unless `fill` is None)."""
    values = [_decimal(v) for v in frame[col]]
    frame[col] = pd.Series([fill if v is None else v for v in values], index=frame.index, dtype=object)


def dsum(values) -> Decimal:
    """Exact sum of Decimal money (None skipped): totals of engine sums stay exact before becoming float."""
    return sum((v for v in values if v is not None), ZERO)


# ---------------------------------------------------------------------------------------- engine helpers


def _lit(ts: pd.Timestamp) -> ibis.Expr:
    return ibis.literal(pd.Timestamp(ts).to_pydatetime())


def _col(table: ibis.Table, name: str, dtype: str) -> ibis.Expr:
    """A canonical column, or a typed null when the export did not provide that optional column."""
    return table[name] if name in table.columns else ibis.null(dtype)


def with_origin(opportunities: ibis.Table, definitions: Definitions) -> ibis.Table:
    """Opportunities with `origin` filled: its own value, else the channel's governed origin, else 'unknown'."""
    o = opportunities
    mapping = definitions["channels"]["origin_by_channel"]
    from_channel = (
        ibis.cases(*[(o.source_channel == ch, org) for ch, org in sorted(mapping.items())], else_=ibis.null("string"))
        if "source_channel" in o.columns and mapping
        else ibis.null("string")
    )
    own = _col(o, "origin", "string")
    return o.mutate(origin=ibis.coalesce(own, from_channel, ibis.literal("unknown")))


def _month_bucket(col: ibis.Expr, months: Sequence[str]) -> ibis.Expr:
    """'YYYY-MM' of a UTC timestamp among `months` (null outside), by explicit UTC bounds (no session time zone)."""
    return ibis.cases(
        *[((col >= _lit(month_start(m))) & (col < _lit(month_end(m))), m) for m in months],
        else_=ibis.null("string"),
    )


def _segment_order(values: Sequence[str], settings: PlanSettings) -> list[str]:
    known = [s for s in settings.segments if s in set(values)]
    return known + sorted(set(values) - set(known))


# --------------------------------------------------------------------------------------------- measures


def origin_performance(
    tables: dict[str, ibis.Table], definitions: Definitions, period: Period, as_of: pd.Timestamp, con=None
) -> pd.DataFrame:
    """Per origin over the trailing four quarters: closed, won, win rate (Wilson CI), won revenue, deal size, cycle."""
    settings = plan_settings(definitions)
    start, end = trailing_window(period, as_of, settings.trailing_months)
    o = with_origin(tables["opportunities"], definitions)
    closed = o.filter(o.closed_at.notnull() & (o.closed_at >= _lit(start)) & (o.closed_at < _lit(end)))
    won = _col(closed, "is_won", "boolean").fill_null(False)
    days = (closed.closed_at.epoch_seconds() - closed.created_at.epoch_seconds()).cast("float64") / SECONDS_PER_DAY
    expr = closed.group_by("origin").aggregate(
        closed=closed.count(),
        won=closed.count(where=won),
        won_revenue=closed.amount.sum(where=won),
        won_with_amount=closed.count(where=won & closed.amount.notnull()),
        cycle_days_median=days.median(),
        cycle_n=closed.count(where=closed.created_at.notnull()),
    )
    got = to_frame(expr, con)
    names = list(settings.origins) + sorted(set(got["origin"]) - set(settings.origins))
    frame = pd.DataFrame({"origin": names}).merge(got, on="origin", how="left")
    for col in ("closed", "won", "won_with_amount", "cycle_n"):
        frame[col] = frame[col].fillna(0).astype("int64")
    _money_col(frame, "won_revenue")
    frame["won_revenue"] = frame["won_revenue"].map(float).astype("float64")
    frame["cycle_days_median"] = pd.to_numeric(frame["cycle_days_median"], errors="coerce").astype("float64")
    frame["win_rate"] = np.where(frame["closed"] > 0, frame["won"] / frame["closed"].clip(lower=1), np.nan)
    frame["ci_low"], frame["ci_high"] = stats.wilson_interval(frame["won"].to_numpy(), frame["closed"].to_numpy())
    frame["avg_deal_size"] = np.where(
        frame["won_with_amount"] > 0, frame["won_revenue"] / frame["won_with_amount"].clip(lower=1), np.nan
    )
    frame["flag"] = np.where(frame["closed"] < settings.min_cell_size, "small_cell", "")
    frame["window_start"], frame["window_end"] = start, end
    return frame[
        [
            "origin",
            "closed",
            "won",
            "win_rate",
            "ci_low",
            "ci_high",
            "won_revenue",
            "won_with_amount",
            "avg_deal_size",
            "cycle_days_median",
            "cycle_n",
            "flag",
            "window_start",
            "window_end",
        ]
    ]


def revenue_split(definitions: Definitions, performance: pd.DataFrame) -> pd.DataFrame:
    """Share of the revenue target each origin carries: governed, or the trailing won revenue share."""
    settings = plan_settings(definitions)
    if settings.revenue_split is not None:
        return pd.DataFrame(
            {
                "origin": list(settings.origins),
                "share": [settings.revenue_split[o] for o in settings.origins],
                "source": "definitions",
            }
        )
    rev = performance.set_index("origin")["won_revenue"].reindex(list(settings.origins)).fillna(0.0)
    total = rev.sum()
    share = rev / total if total > 0 else rev * np.nan
    return pd.DataFrame({"origin": list(settings.origins), "share": share.to_numpy(), "source": "trailing_won_share"})


def revenue_targets(tables: dict[str, ibis.Table], months: Sequence[str], con=None) -> pd.DataFrame:
    """Revenue target per month and segment (exact sum in the engine), for the listed months that have one."""
    if "targets" not in tables or not months:
        return pd.DataFrame(
            {
                "month": pd.Series(dtype=str),
                "segment": pd.Series(dtype=str),
                "revenue_target": pd.Series(dtype="float64"),
            }
        )
    t = tables["targets"]
    t = t.filter(t.period.isin(list(months)))
    got = to_frame(t.group_by(["period", "segment"]).aggregate(revenue_target=t.revenue_target.sum()), con)
    got = got.rename(columns={"period": "month"})
    _money_col(got, "revenue_target", fill=None)
    return got.sort_values(["month", "segment"], kind="mergesort").reset_index(drop=True)


def pipeline_created(
    tables: dict[str, ibis.Table], definitions: Definitions, months: Sequence[str], as_of: pd.Timestamp, con=None
) -> pd.DataFrame:
    """Amount and count of opportunities created per month and origin (created before as_of)."""
    o = with_origin(tables["opportunities"], definitions)
    o = o.filter(o.created_at.notnull() & (o.created_at < _lit(as_of)))
    o = o.mutate(month=_month_bucket(o.created_at, months))
    o = o.filter(o.month.notnull())
    got = to_frame(o.group_by(["month", "origin"]).aggregate(pipeline_created=o.amount.sum(), deals=o.count()), con)
    _money_col(got, "pipeline_created")
    got["deals"] = got["deals"].astype("int64")
    return got.sort_values(["month", "origin"], kind="mergesort").reset_index(drop=True)


def contribution_model(
    tables: dict[str, ibis.Table],
    definitions: Definitions,
    period: Period,
    as_of: pd.Timestamp,
    performance: pd.DataFrame,
    split: pd.DataFrame,
    con=None,
) -> pd.DataFrame:
    """Pipeline needed vs created per origin (and 'All') for each month of the period; quarterly: the quarter and
    the next quarter's needs. Columns: period, kind (month/quarter/next_quarter), origin, revenue_target, split,
    win_rate, pipeline_needed, pipeline_created, deals_created, pipeline_gap, flag."""
    settings = plan_settings(definitions)
    months = list(period.months)
    nxt = quarter_after(period) if period.cadence == "quarterly" else None
    target_months = months + (list(nxt.months) if nxt else [])
    targets = revenue_targets(tables, target_months, con)
    by_month = targets.groupby("month")["revenue_target"].agg(dsum)
    created = pipeline_created(tables, definitions, months, as_of, con)
    shares = dict(zip(split["origin"], split["share"], strict=True))
    rates = dict(zip(performance["origin"], performance["win_rate"], strict=True))

    groups: list[tuple[str, str, list[str]]] = [(m, "month", [m]) for m in months]
    if period.cadence == "quarterly":
        groups.append((period.label, "quarter", months))
        groups.append((nxt.label, "next_quarter", list(nxt.months)))
    rows = []
    for label, kind, ms in groups:
        have = [m for m in ms if m in by_month.index]
        target = float(dsum(by_month.reindex(have))) if have else math.nan
        needed = pipeline_needed(target, shares, rates) if have else {o: math.nan for o in settings.origins}
        future = kind == "next_quarter"
        incomplete = (not future) and month_end(ms[-1]) > as_of
        c = (
            created[created["month"].isin(ms)]
            .groupby("origin")
            .agg(pipeline_created=("pipeline_created", dsum), deals=("deals", "sum"))
        )
        flag = "no_target" if not have else ("partial_target" if len(have) < len(ms) else "")
        if not flag and incomplete:
            flag = "incomplete"
        origins = list(settings.origins) + sorted(set(c.index) - set(settings.origins))
        for origin in origins:
            governed = origin in settings.origins
            row = {
                "period": label,
                "kind": kind,
                "origin": origin,
                "revenue_target": target * shares.get(origin, math.nan) if governed else math.nan,
                "split": shares.get(origin, math.nan) if governed else math.nan,
                "win_rate": rates.get(origin, math.nan) if governed else math.nan,
                "pipeline_needed": needed.get(origin, math.nan) if governed else math.nan,
                "pipeline_created": math.nan if future else float(c["pipeline_created"].get(origin, ZERO)),
                "deals_created": None if future else int(c["deals"].get(origin, 0)),
                "flag": flag if governed else "unknown_origin",
            }
            if governed and flag == "" and row["pipeline_needed"] != row["pipeline_needed"]:
                row["flag"] = "no_win_rate"
            rows.append(row)
        total_needed = sum(needed.get(o, math.nan) for o in settings.origins)
        rows.append(
            {
                "period": label,
                "kind": kind,
                "origin": ALL,
                "revenue_target": target,
                "split": 1.0,
                "win_rate": math.nan,
                "pipeline_needed": total_needed,
                "pipeline_created": math.nan if future else float(dsum(c["pipeline_created"])),
                "deals_created": None if future else int(c["deals"].sum()),
                "flag": flag or ("no_win_rate" if total_needed != total_needed else ""),
            }
        )
    out = pd.DataFrame(rows)
    out["deals_created"] = out["deals_created"].astype("Int64")
    out["pipeline_gap"] = out["pipeline_created"] - out["pipeline_needed"]
    return out


def coverage_snapshots(
    tables: dict[str, ibis.Table], definitions: Definitions, period: Period, as_of: pd.Timestamp, con=None
) -> pd.DataFrame:
    """Open pipeline / remaining quota at month-end snapshots of the trend months, by segment and 'All'.

    Columns: period, snapshot, segment, open_pipeline, open_deals, remaining_quota, coverage, rule, flag.
    """
    settings = plan_settings(definitions)
    window = pd.Timedelta(days=settings.coverage_window_days)
    last = pd.Period(period.months[-1], freq="M")
    months = [str(last - k) for k in range(settings.trend_months - 1, -1, -1)]
    snaps = [(m, min(month_end(m), as_of)) for m in months if min(month_end(m), as_of) > month_start(m)]
    if not snaps:
        return pd.DataFrame(
            columns=[
                "period",
                "snapshot",
                "segment",
                "open_pipeline",
                "open_deals",
                "remaining_quota",
                "coverage",
                "rule",
                "flag",
            ]
        )
    o = tables["opportunities"]
    has_expected = "expected_close_at" in o.columns
    rule = "expected_close_in_window" if has_expected else "created_in_trailing_window"
    parts = []
    for label, t in snaps:
        tl = _lit(t)
        is_open = (
            o.created_at.notnull()
            & (o.created_at < tl)
            & ~(o.closed_at.notnull() & (o.closed_at < tl))
            & ~(_col(o, "is_closed", "boolean").fill_null(False) & o.closed_at.isnull())
        )
        if has_expected:
            in_window = (o.expected_close_at >= tl) & (o.expected_close_at < _lit(t + window))
        else:
            in_window = o.created_at >= _lit(t - window)
        sel = o.filter(is_open & in_window)
        parts.append(
            sel.group_by("segment")
            .aggregate(open_pipeline=sel.amount.sum(), open_deals=sel.count())
            .mutate(period=ibis.literal(label))
        )
    got = to_frame(ibis.union(*parts), con) if len(parts) > 1 else to_frame(parts[0], con)
    _money_col(got, "open_pipeline")
    got["open_deals"] = got["open_deals"].astype("int64")

    quota_months = sorted(
        {
            str(p)
            for _, t in snaps
            for p in pd.period_range(t.tz_localize(None), (t + window).tz_localize(None), freq="M")
        }
    )
    targets = revenue_targets(tables, quota_months, con)
    segments = _segment_order(list(set(targets["segment"]) | set(got["segment"])), settings)
    rows = []
    for label, t in snaps:
        snap = got[got["period"] == label].set_index("segment")
        for seg in [*segments, ALL]:
            tg = targets if seg == ALL else targets[targets["segment"] == seg]
            tg = tg.groupby("month", as_index=False)["revenue_target"].agg(dsum)
            if seg == ALL:
                # every segment must have its target for the total to be complete
                counts = targets.groupby("month")["segment"].nunique()
                tg = tg[tg["month"].map(counts).fillna(0).to_numpy() >= len(set(targets["segment"]))]
            quota, complete = prorated_quota(tg, t, t + window)
            pipe = float(dsum(snap["open_pipeline"]) if seg == ALL else snap["open_pipeline"].get(seg, ZERO))
            deals = int(snap["open_deals"].sum()) if seg == ALL else int(snap["open_deals"].get(seg, 0))
            ok = complete and quota > 0
            rows.append(
                {
                    "period": label,
                    "snapshot": t,
                    "segment": seg,
                    "open_pipeline": pipe,
                    "open_deals": deals,
                    "remaining_quota": quota if complete else math.nan,
                    "coverage": pipe / quota if ok else math.nan,
                    "rule": rule,
                    "flag": "" if ok else "no_quota",
                }
            )
    out = pd.DataFrame(rows)
    if period.cadence == "quarterly":
        q = out[out["period"] == period.months[-1]].copy()
        q["period"] = period.label
        out = pd.concat([out, q], ignore_index=True)
    return out


def forecast_accuracy(
    tables: dict[str, ibis.Table], definitions: Definitions, period: Period, as_of: pd.Timestamp, con=None
) -> pd.DataFrame:
    """Actual closed-won revenue / committed forecast per month (trend months) and segment, and 'All'.

    Columns: period, kind (month/quarter), segment, forecast, actual, won_deals, accuracy, outside_band, flag.
    Empty when the forecasts table is missing.
    """
    cols = ["period", "kind", "segment", "forecast", "actual", "won_deals", "accuracy", "outside_band", "flag"]
    if "forecasts" not in tables or "opportunities" not in tables:
        return pd.DataFrame(columns=cols)
    settings = plan_settings(definitions)
    last = pd.Period(period.months[-1], freq="M")
    months = [str(last - k) for k in range(max(settings.trend_months, len(period.months)) - 1, -1, -1)]
    months = [m for m in months if month_start(m) < as_of]
    f = tables["forecasts"]
    f = f.filter(f.period.isin(months))
    if "committed_at" in f.columns:
        f = f.filter(f.committed_at.isnull() | (f.committed_at < _lit(as_of)))
    fc = to_frame(f.group_by(["period", "segment"]).aggregate(forecast=f.forecast_amount.sum()), con)
    _money_col(fc, "forecast")
    o = tables["opportunities"]
    w = o.filter(_col(o, "is_won", "boolean").fill_null(False) & o.closed_at.notnull() & (o.closed_at < _lit(as_of)))
    w = w.mutate(period=_month_bucket(w.closed_at, months))
    w = w.filter(w.period.notnull())
    act = to_frame(w.group_by(["period", "segment"]).aggregate(actual=w.amount.sum(), won_deals=w.count()), con)
    _money_col(act, "actual")
    frame = fc.merge(act, on=["period", "segment"], how="left")  # accuracy exists where a forecast does
    frame["actual"] = [ZERO if v is None or v != v else v for v in frame["actual"]]
    frame["won_deals"] = frame["won_deals"].fillna(0).astype("int64")
    frame["kind"] = "month"
    sums = {"forecast": ("forecast", dsum), "actual": ("actual", dsum), "won_deals": ("won_deals", "sum")}
    total = frame.groupby("period", as_index=False).agg(**sums)
    total["segment"], total["kind"] = ALL, "month"
    frame = pd.concat([frame, total], ignore_index=True)
    if period.cadence == "quarterly":
        q = frame[frame["period"].isin(period.months)]
        q = q.groupby("segment", as_index=False).agg(**sums)
        if not q.empty:
            q["period"], q["kind"] = period.label, "quarter"
            frame = pd.concat([frame, q], ignore_index=True)
    frame = frame.astype({"forecast": "float64", "actual": "float64"})  # exact sums, now for ratios and display
    frame["accuracy"] = np.where(
        frame["forecast"] > 0, frame["actual"] / frame["forecast"].where(frame["forecast"] > 0, 1.0), np.nan
    )
    frame["outside_band"] = accuracy_outside(frame["accuracy"].to_numpy(), settings.forecast_band)
    last_month = [
        period.months[-1] if k == "quarter" else p for p, k in zip(frame["period"], frame["kind"], strict=True)
    ]
    frame["flag"] = np.where([month_end(m) > as_of for m in last_month], "incomplete", "")
    order = {s: i for i, s in enumerate(_segment_order(list(set(frame["segment"]) - {ALL}), settings) + [ALL])}
    frame = frame.assign(_k=frame["kind"].map({"month": 0, "quarter": 1}), _s=frame["segment"].map(order))
    frame = frame.sort_values(["_k", "period", "_s"], kind="mergesort").drop(columns=["_k", "_s"])
    return frame[cols].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- metrics


def _rows(
    frame: pd.DataFrame,
    metric: str,
    value: str,
    dim: str | None,
    unit: str,
    method: str,
    n: str | None = None,
    total: str = ALL,
    extra: Mapping[str, str] | None = None,
) -> list[dict]:
    out = []
    for r in frame.to_dict("records"):
        v = r[value]
        if v is None or v != v:
            continue
        d = dims() if dim is None or r[dim] == total else dims(**{dim: r[dim]})
        row = {
            "metric": metric,
            "dimensions": d,
            "period": r["period"],
            "value": float(v),
            "unit": unit,
            "method": method,
            "n": int(r[n]) if n else 0,
            "flag": r.get("flag", "") or "",
        }
        for k, col in (extra or {}).items():
            row[k] = r[col]
        out.append(row)
    return out


def plan_metric_rows(result: PlanResult) -> pd.DataFrame:
    """Long-format metrics (section 'plan') of everything the section shows."""
    s = result.settings
    rows: list[dict] = []
    # Metric flags: only what qualifies a shown number (period not over, targets for part of it); the other
    # table notes explain why a value is absent, and absent values are not written.
    model = result.model.assign(flag=result.model["flag"].where(result.model["flag"].isin(METRIC_FLAGS), ""))
    model_origins = model[model["origin"].isin([*s.origins, ALL])]
    method = f"target_x_split_over_{s.trailing_label}_win_rate"
    # what is needed does not depend on how much of the period has passed; what was created (and the gap) does
    needed = model_origins.assign(flag=model_origins["flag"].replace("incomplete", ""))
    rows += _rows(needed, "pipeline_needed", "pipeline_needed", "origin", "money", method)
    current = model_origins[model_origins["kind"] != "next_quarter"]
    rows += _rows(
        model[model["kind"] != "next_quarter"],
        "pipeline_created",
        "pipeline_created",
        "origin",
        "money",
        "sum_amount_created_in_period",
        n="deals_created",
    )
    rows += _rows(current, "pipeline_gap", "pipeline_gap", "origin", "money", "created_minus_needed", n="deals_created")
    perf = result.performance.assign(period=result.period.label)
    perf = perf[perf["origin"].isin(s.origins)]
    rows += _rows(
        perf,
        "win_rate_by_origin",
        "win_rate",
        "origin",
        "share",
        f"{s.trailing_label}_closed_wilson",
        n="closed",
        extra={"ci_low": "ci_low", "ci_high": "ci_high"},
    )
    rows += _rows(
        perf.assign(flag=""),
        "avg_deal_size",
        "avg_deal_size",
        "origin",
        "money",
        f"{s.trailing_label}_won_mean",
        n="won_with_amount",
    )
    rows += _rows(
        perf.assign(flag=""),
        "cycle_days_median",
        "cycle_days_median",
        "origin",
        "days",
        f"{s.trailing_label}_closed_median_created_to_closed",
        n="cycle_n",
    )
    split = result.split.assign(period=result.period.label, flag="")
    rows += _rows(
        split, "revenue_split", "share", "origin", "share", str(split["source"].iloc[0]) if len(split) else ""
    )
    cov = result.coverage
    if not cov.empty:
        cmethod = f"open_{cov['rule'].iloc[0]}_{s.coverage_window_days}d_over_quota"
        rows += _rows(cov, "pipeline_coverage", "coverage", "segment", "x", cmethod, n="open_deals")
        rows += _rows(cov, "open_pipeline", "open_pipeline", "segment", "money", cmethod, n="open_deals")
        rows += _rows(
            cov,
            "remaining_quota",
            "remaining_quota",
            "segment",
            "money",
            f"targets_next_{s.coverage_window_days}d_prorated",
        )
    acc = result.accuracy
    if not acc.empty:
        rows += _rows(
            acc,
            "forecast_accuracy",
            "accuracy",
            "segment",
            "ratio",
            "actual_won_over_committed_forecast",
            n="won_deals",
        )
        rows += _rows(acc, "forecast_committed", "forecast", "segment", "money", "sum_forecast_amount")
        rows += _rows(acc, "revenue_won", "actual", "segment", "money", "sum_amount_closed_won", n="won_deals")
    if not rows:
        return empty()
    out = pd.DataFrame(rows)
    out["section"] = SECTION
    return normalise(out)


# ------------------------------------------------------------------------------------------------ result


@dataclass
class PlanResult:
    """Everything the plan section computes for one period (frames for tables and charts, metrics, notes)."""

    period: Period
    as_of: pd.Timestamp
    settings: PlanSettings
    performance: pd.DataFrame
    split: pd.DataFrame
    model: pd.DataFrame
    coverage: pd.DataFrame
    accuracy: pd.DataFrame
    metrics: pd.DataFrame = field(default_factory=empty)
    notes: list[str] = field(default_factory=list)

    @property
    def window_text(self) -> str:
        """The trailing window for people: '2025-11-01 to 2026-10-31 23:46 UTC'."""
        start, end = self.performance["window_start"].iloc[0], self.performance["window_end"].iloc[0]
        last = end - pd.Timedelta(microseconds=1)
        shown = f"{last:%Y-%m-%d}" if end == month_end(f"{last:%Y-%m}") else f"{end:%Y-%m-%d %H:%M} UTC"
        return f"{start:%Y-%m-%d} to {shown}"

    @property
    def headline(self) -> str:
        """The period the headline figures belong to: the quarter for a quarterly run, else the last month."""
        return self.period.label if self.period.cadence == "quarterly" else self.period.months[-1]


def plan_analysis(
    tables: dict[str, ibis.Table], definitions: Definitions, period: Period, as_of: pd.Timestamp, con=None
) -> PlanResult:
    """The whole section: performance by origin, split, contribution model, coverage, forecast accuracy, metrics.

    Needs targets and opportunities (the notebook switches the section off with a note otherwise); without
    forecasts the forecast part is empty and a note says so.
    """
    settings = plan_settings(definitions)
    performance = origin_performance(tables, definitions, period, as_of, con)
    split = revenue_split(definitions, performance)
    result = PlanResult(
        period=period,
        as_of=as_of,
        settings=settings,
        performance=performance,
        split=split,
        model=contribution_model(tables, definitions, period, as_of, performance, split, con),
        coverage=coverage_snapshots(tables, definitions, period, as_of, con),
        accuracy=forecast_accuracy(tables, definitions, period, as_of, con),
    )
    if split["share"].isna().any():
        result.notes.append(
            "No won revenue in the trailing four quarters: the revenue split (and pipeline needed) "
            "cannot be derived; set plan.revenue_split_by_origin in the definitions."
        )
    result.metrics = plan_metric_rows(result)
    return result
