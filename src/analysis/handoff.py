"""Handoff and SLA: speed to lead in business hours, SLA adherence, acceptance, MQL aging, rejection reasons.

Cohorts of MQLs by the day they became MQL (any period: month, ISO week or quarter is a union of days), flows of
rejections by the day they were rejected. Per lead, the engine computes the business time from MQL to the first
sales touch on the governed calendar (`analysis.business_hours`, joined as a small calendar table), whether the
SLA windows had elapsed at the as-of instant (an MQL whose window is still open is not counted either way), and
the outcomes; only daily counts (and medians per period) reach pandas. Events after the as-of instant have not
happened yet. The tested period is compared with its pooled trailing baseline (two-proportion score test, exact
on small cells; Newcombe interval); cells below the minimum size are shown but not tested.

The period helpers here (`period_windows`, `change_row`, `bucket_counts`) are shared by the velocity and
closed-lost sections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import numpy as np
import pandas as pd

from analysis import stats
from analysis.business_hours import (
    business_seconds_clock,
    calendar_from_definitions,
    calendar_table,
    with_business_seconds,
)
from analysis.engine import to_frame
from analysis.metrics import dims, normalise, parse_dims
from analysis.periods import Period
from analysis.privacy import mask_personal_data

SECTION = "handoff"
HOUR = 3600
ALL = "All"

# --------------------------------------------------------------------------------------------- periods (shared)


@dataclass(frozen=True)
class PeriodWindows:
    """The tested period, its pooled trailing baseline and the trend months, all cut at the as-of instant."""

    label: str  # tested period label ('2026-10', '2026-W43', '2026-Q3')
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive, never after as_of
    baseline_start: pd.Timestamp
    baseline_end: pd.Timestamp  # = start of the tested period
    months: tuple[str, ...]  # trend months, oldest first, ending with the period's last month
    as_of: pd.Timestamp
    baseline_months: int

    @property
    def first(self) -> pd.Timestamp:
        """The earliest instant any section table looks at."""
        return min(self.baseline_start, pd.Timestamp(self.months[0] + "-01", tz="UTC"))

    @property
    def is_month(self) -> bool:
        """True when the tested period is one calendar month (its rows coincide with a trend month)."""
        return len(self.months) > 0 and self.label == self.months[-1]


def period_windows(period: Period, as_of: pd.Timestamp, settings: dict[str, Any]) -> PeriodWindows:
    """Windows for `period`: baseline = the `baseline_months` months before its start; trend = `trend_months` months."""
    k = int(settings.get("baseline_months", 6))
    span = int(settings.get("trend_months", 12))
    last = pd.Period(period.months[-1], freq="M")
    months = tuple(str(last - i) for i in range(span - 1, -1, -1))
    return PeriodWindows(
        label=period.label,
        start=period.start,
        end=min(period.end, as_of),
        baseline_start=period.start - pd.DateOffset(months=k),
        baseline_end=period.start,
        months=months,
        as_of=as_of,
        baseline_months=k,
    )


def bucket_counts(
    daily: pd.DataFrame, windows: PeriodWindows, keys: Sequence[str], values: Sequence[str], day: str = "day"
) -> pd.DataFrame:
    """Daily counts summed per bucket (each trend month, 'tested', 'baseline') and key; bucket in column 'bucket'."""
    cols = ["bucket", *keys, *values]
    if daily.empty:
        return pd.DataFrame(columns=cols)
    ts = pd.to_datetime(daily[day], utc=True)
    month = ts.dt.strftime("%Y-%m")
    parts = []
    in_trend = month.isin(windows.months)
    parts.append(daily[in_trend].assign(bucket=month[in_trend]))
    tested = (ts >= windows.start) & (ts < windows.end)
    parts.append(daily[tested].assign(bucket="tested"))
    base = (ts >= windows.baseline_start) & (ts < windows.baseline_end)
    parts.append(daily[base].assign(bucket="baseline"))
    frame = pd.concat(parts, ignore_index=True)
    if frame.empty:
        return pd.DataFrame(columns=cols)
    out = frame.groupby(["bucket", *keys], sort=True, dropna=False)[list(values)].sum().reset_index()
    return out[cols]


def change_row(
    s1: float,
    n1: float,
    s0: float,
    n0: float,
    settings: dict[str, Any],
    *,
    metric: str,
    dimensions: str,
    period: str,
    impact: float = np.nan,
) -> dict[str, Any]:
    """One test row: change of the tested rate vs the pooled baseline rate (p_value only when both cells are big)."""
    k = int(settings.get("baseline_months", 6))
    min_cell = int(settings.get("min_cell_size", 30))
    s1, n1, s0, n0 = int(s1), int(n1), int(s0), int(n0)
    row: dict[str, Any] = {
        "metric": metric,
        "dimensions": dimensions,
        "period": period,
        "n": n1,
        "baseline": s0 / n0 if n0 else np.nan,
        "unit": "share_points",
        "impact": impact,
    }
    if n1 < min_cell or n0 < min_cell:
        row.update(
            value=(s1 / n1 - s0 / n0) if n1 and n0 else np.nan,
            method="not_tested",
            flag="small_cell",
        )
        return row
    test = stats.two_proportion_test(s1, n1, s0, n0, exact_below=float(settings.get("exact_test_below", 5)))
    row.update(
        value=test.estimate,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        method=f"{test.method}_vs_{k}m_baseline",
        flag="",
    )
    return row


def rate_rows(
    counts: pd.DataFrame,
    *,
    metric: str,
    success: str,
    trials: str,
    by: str | None,
    windows: PeriodWindows,
    min_cell: int,
    method: str = "wilson",
) -> list[dict[str, Any]]:
    """Descriptive rate rows (Wilson interval) for each trend month, plus the tested period when it is not a month."""
    rows = []
    buckets = list(windows.months) + ([] if windows.is_month else ["tested"])
    sub = counts[counts["bucket"].isin(buckets)]
    low, high = stats.wilson_interval(sub[success].to_numpy(float), sub[trials].to_numpy(float))
    for i, rec in enumerate(sub.itertuples(index=False)):
        s, n = float(getattr(rec, success)), float(getattr(rec, trials))
        rows.append(
            {
                "metric": metric,
                "dimensions": dims(**({by: getattr(rec, by)} if by else {})),
                "period": windows.label if rec.bucket == "tested" else rec.bucket,
                "value": s / n if n else np.nan,
                "ci_low": low[i],
                "ci_high": high[i],
                "n": int(n),
                "unit": "share",
                "method": method,
                "flag": "small_cell" if n < min_cell else "",
            }
        )
    return rows


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(list(rows))
    if out.empty:
        return normalise(out)
    out["section"] = SECTION
    return normalise(out)


# --------------------------------------------------------------------------------------------- engine side


def _ts(value: pd.Timestamp) -> ibis.Expr:
    return ibis.literal(pd.Timestamp(value).to_pydatetime(), type="timestamp('UTC')")


def _col(t: ibis.Table, name: str, typ: str) -> ibis.Expr:
    """The column, or a typed NULL when the export did not provide it."""
    return t[name] if name in t.columns else ibis.null(typ)


def _text(t: ibis.Table, name: str, default: str) -> ibis.Expr:
    return _col(t, name, "string").cast("string").fill_null(default)


def _settings(ctx: Any) -> dict[str, Any]:
    return dict(ctx.definitions.stats)


def sla_rules(definitions: Any) -> dict[str, Any]:
    """The SLA rules of the definitions with defaults: hours, silence rule, aging hours, reason picklist."""
    sla = definitions["sla"]
    return {
        "acceptance_hours": float(sla.get("acceptance_hours", 48)),
        "silence_equals_acceptance": bool(sla.get("silence_equals_acceptance", False)),
        "first_touch_business_hours": float(sla.get("first_touch_business_hours", 8)),
        "aging_alert_hours": float(sla.get("aging_alert_hours", 72)),
        "rejection_reasons": [str(r) for r in sla.get("rejection_reasons", [])],
    }


def mql_table(ctx: Any, windows: PeriodWindows) -> ibis.Table:
    """Ibis: one row per MQL in the analysis window with business time to first touch and SLA outcomes (0/1)."""
    rules = sla_rules(ctx.definitions)
    cal = calendar_from_definitions(ctx.definitions)
    leads = ctx.tables["leads"]
    as_of = _ts(windows.as_of)
    first = windows.first
    t = leads.filter(leads.mql_at.notnull() & (leads.mql_at >= _ts(first)) & (leads.mql_at < as_of))

    def until_as_of(name: str) -> ibis.Expr:
        c = _col(t, name, "timestamp('UTC')")
        return ibis.cases((c <= as_of, c), else_=ibis.null("timestamp('UTC')"))

    t = t.select(
        mql_at=t.mql_at,
        day=t.mql_at.date(),
        region=_text(t, "region", "unknown"),
        owner_team=_text(t, "owner_team", "unassigned"),
        segment=_text(t, "segment", "unknown"),
        touch_at=until_as_of("first_sales_touch_at"),
        sal_at=until_as_of("sal_at"),
        rejected_at=until_as_of("rejected_at"),
        sql_at=until_as_of("sql_at"),
    )
    rows = calendar_table(cal, (first - pd.Timedelta(days=3)).date(), (windows.as_of + pd.Timedelta(days=3)).date())
    t = with_business_seconds(t, ["mql_at", "touch_at"], rows)
    b_as_of = int(business_seconds_clock([windows.as_of], cal)[0])
    limit = int(round(rules["first_touch_business_hours"] * HOUR))
    acc = ibis.interval(seconds=int(round(rules["acceptance_hours"] * HOUR)))
    aging = ibis.interval(seconds=int(round(rules["aging_alert_hours"] * HOUR)))

    touched = t.touch_at.notnull()
    delta = ibis.greatest(ibis.literal(0, "int64"), t.touch_at_bs - t.mql_at_bs)  # touch before MQL counts as 0
    sla_mature = (ibis.literal(b_as_of, "int64") - t.mql_at_bs) >= limit
    acc_mature = (t.mql_at + acc) <= as_of
    sal_in = t.sal_at.notnull() & (t.sal_at <= t.mql_at + acc)
    rej_in = t.rejected_at.notnull() & (t.rejected_at <= t.mql_at + acc)
    silence = ~sal_in & ~rej_in
    accepted = sal_in | silence if rules["silence_equals_acceptance"] else sal_in
    aging_mature = (t.mql_at + aging) <= as_of
    handled_in_time = (touched & (t.touch_at <= t.mql_at + aging)) | (
        t.rejected_at.notnull() & (t.rejected_at <= t.mql_at + aging)
    )

    def flag(cond: ibis.Expr) -> ibis.Expr:
        return cond.fill_null(False).cast("int64")

    return t.mutate(
        touch_business_hours=ibis.cases((touched, delta.cast("float64") / HOUR), else_=ibis.null("float64")),
        touched_before_mql=flag(touched & (t.touch_at < t.mql_at)),
        sla_n=flag(sla_mature),
        sla_met=flag(sla_mature & touched & (delta <= limit)),
        sla_untouched=flag(sla_mature & ~touched),
        acc_n=flag(acc_mature),
        accepted=flag(acc_mature & accepted),
        responded=flag(acc_mature & (sal_in | rej_in)),
        silent=flag(acc_mature & silence),
        aging_n=flag(aging_mature),
        aged=flag(aging_mature & ~handled_in_time),
        mqls=ibis.literal(1, "int64"),
    )


COUNT_COLUMNS = (
    "mqls",
    "sla_n",
    "sla_met",
    "sla_untouched",
    "touched_before_mql",
    "acc_n",
    "accepted",
    "responded",
    "silent",
    "aging_n",
    "aged",
)


def mql_daily_counts(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Daily MQL counts and SLA outcomes per (day, region, owner_team, segment)."""
    t = mql_table(ctx, windows)
    keys = ["day", "region", "owner_team", "segment"]
    expr = t.group_by(keys).aggregate(**{c: t[c].sum() for c in COUNT_COLUMNS})
    out = to_frame(expr, ctx.con)
    for c in COUNT_COLUMNS:
        out[c] = out[c].fillna(0).astype("int64")
    out["day"] = pd.to_datetime(out["day"], utc=True)
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


def speed_to_lead(ctx: Any, windows: PeriodWindows, by: Sequence[str | None] = (None, "region")) -> pd.DataFrame:
    """Median business hours MQL -> first touch of touched, SLA-mature MQLs per bucket (months, tested, baseline).

    One row per (breakdown, bucket, group): columns by ('' for the total), group ('All' for the total), bucket,
    median, n.
    """
    t = mql_table(ctx, windows)
    t = t.filter((t.sla_n == 1) & t.touch_business_hours.notnull())
    month = t.mql_at.year() * 100 + t.mql_at.month()
    tested = (t.mql_at >= _ts(windows.start)) & (t.mql_at < _ts(windows.end))
    base = (t.mql_at >= _ts(windows.baseline_start)) & (t.mql_at < _ts(windows.baseline_end))
    stacked = ibis.union(
        t.mutate(bucket_key=month.cast("int64")),
        t.filter(tested).mutate(bucket_key=ibis.literal(-1, "int64")),
        t.filter(base).mutate(bucket_key=ibis.literal(-2, "int64")),
        distinct=False,
    )
    frames = []
    for b in by:
        keys = ["bucket_key"] + ([b] if b else [])
        f = to_frame(
            stacked.group_by(keys).aggregate(median=ibis._.touch_business_hours.median(), n=ibis._.count()), ctx.con
        )
        f["by"] = b or ""
        f["group"] = f[b] if b else ALL
        frames.append(f[["by", "group", "bucket_key", "median", "n"]])
    out = pd.concat(frames, ignore_index=True)
    named = {-1: "tested", -2: "baseline"}
    out["bucket"] = [named.get(int(k), f"{int(k) // 100:04d}-{int(k) % 100:02d}") for k in out["bucket_key"]]
    out = out[out["bucket"].isin([*windows.months, "tested", "baseline"])]
    out["n"] = out["n"].astype("int64")
    cols = ["by", "group", "bucket", "median", "n"]
    return out[cols].sort_values(cols[:3], kind="mergesort").reset_index(drop=True)


def rejection_daily_counts(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Daily rejections (flow by rejected_at) per reason: picklist code, 'unlisted' or 'missing'."""
    leads = ctx.tables["leads"]
    if "rejected_at" not in leads.columns:
        return pd.DataFrame(columns=["day", "reason", "rejections"])
    picklist = sla_rules(ctx.definitions)["rejection_reasons"]
    t = leads.filter(
        leads.rejected_at.notnull()
        & (leads.rejected_at >= _ts(windows.first))
        & (leads.rejected_at < _ts(windows.as_of))
    )
    raw = _col(t, "rejection_reason", "string").cast("string").strip()
    reason = ibis.cases(
        (raw.isnull() | (raw == ""), "missing"),
        (raw.isin(picklist) if picklist else ibis.literal(False), raw),
        else_="unlisted",
    )
    expr = (
        t.mutate(day=t.rejected_at.date(), reason=reason)
        .group_by(["day", "reason"])
        .aggregate(rejections=ibis._.count())
    )
    out = to_frame(expr, ctx.con)
    out["rejections"] = out["rejections"].astype("int64")
    out["day"] = pd.to_datetime(out["day"], utc=True)
    return out.sort_values(["day", "reason"], kind="mergesort").reset_index(drop=True)


def unlisted_reasons(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Rejection reason codes not in the governed picklist (as typed), with counts; for a visible note."""
    leads = ctx.tables["leads"]
    if "rejected_at" not in leads.columns or "rejection_reason" not in leads.columns:
        return pd.DataFrame(columns=["code", "rejections"])
    picklist = sla_rules(ctx.definitions)["rejection_reasons"]
    t = leads.filter(
        leads.rejected_at.notnull()
        & (leads.rejected_at >= _ts(windows.first))
        & (leads.rejected_at < _ts(windows.as_of))
    )
    code = t.rejection_reason.cast("string").strip()
    t = t.filter(code.notnull() & (code != "") & ~code.isin(picklist or ["\x00"]))
    out = to_frame(t.group_by(code.name("code")).aggregate(rejections=ibis._.count()), ctx.con)
    out["rejections"] = out["rejections"].astype("int64")
    return out.sort_values(["rejections", "code"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


def aging_list(ctx: Any) -> pd.DataFrame:
    """MQLs untouched at the as-of instant beyond the aging hours, by owner team and age band (no personal data)."""
    rules = sla_rules(ctx.definitions)
    leads = ctx.tables["leads"]
    as_of = _ts(ctx.as_of)
    limit = ctx.as_of - pd.Timedelta(hours=rules["aging_alert_hours"])
    t = leads.filter(leads.mql_at.notnull() & (leads.mql_at < _ts(limit)))
    for name in ("first_sales_touch_at", "rejected_at", "sql_at"):
        if name in t.columns:
            t = t.filter(t[name].isnull() | (t[name] > as_of))
    age_days = (ibis.literal(int(ctx.as_of.timestamp()), "int64") - t.mql_at.epoch_seconds().cast("int64")) / 86400
    band = ibis.cases(
        (age_days < 7, "1: 3-7 days"),
        (age_days < 30, "2: 7-30 days"),
        (age_days < 90, "3: 30-90 days"),
        else_="4: 90+ days",
    )
    expr = (
        t.mutate(owner_team=_text(t, "owner_team", "unassigned"), band=band)
        .group_by(["owner_team", "band"])
        .aggregate(mqls=ibis._.count())
    )
    out = to_frame(expr, ctx.con)
    if out.empty:
        return pd.DataFrame(columns=["owner team", "3-7 days", "7-30 days", "30-90 days", "90+ days", "total"])
    wide = out.pivot_table(index="owner_team", columns="band", values="mqls", aggfunc="sum", fill_value=0)
    for b in ("1: 3-7 days", "2: 7-30 days", "3: 30-90 days", "4: 90+ days"):
        if b not in wide.columns:
            wide[b] = 0
    wide = wide[sorted(wide.columns)]
    wide.columns = [c.split(": ", 1)[1] for c in wide.columns]
    wide["total"] = wide.sum(axis=1)
    wide = wide.astype("int64").reset_index().rename(columns={"owner_team": "owner team"})
    return wide.sort_values(["total", "owner team"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- metrics


def _with_total(counts: pd.DataFrame, by: str, values: Sequence[str]) -> pd.DataFrame:
    return counts.groupby(["bucket", by], sort=True)[list(values)].sum().reset_index()


def sla_metrics(daily: pd.DataFrame, windows: PeriodWindows, settings: dict[str, Any]) -> pd.DataFrame:
    """SLA adherence (total and by region) per month, and its change vs baseline (tested)."""
    min_cell = int(settings.get("min_cell_size", 30))
    rows: list[dict[str, Any]] = []
    for by in (None, "region"):
        keys = [by] if by else []
        c = bucket_counts(daily, windows, keys, ["sla_n", "sla_met"])
        rows += rate_rows(
            c, metric="sla_adherence", success="sla_met", trials="sla_n", by=by, windows=windows, min_cell=min_cell
        )
        groups = [None] if by is None else sorted(c[by].dropna().unique())
        for g in groups:
            cg = c if g is None else c[c[by] == g]
            cur, base = cg[cg["bucket"] == "tested"], cg[cg["bucket"] == "baseline"]
            rows.append(
                change_row(
                    cur["sla_met"].sum(),
                    cur["sla_n"].sum(),
                    base["sla_met"].sum(),
                    base["sla_n"].sum(),
                    settings,
                    metric="sla_adherence_change",
                    dimensions=dims(**({by: g} if by else {})),
                    period=windows.label,
                )
            )
    return _frame(rows)


def acceptance_metrics(daily: pd.DataFrame, windows: PeriodWindows, settings: dict[str, Any]) -> pd.DataFrame:
    """Acceptance within the window, explicit response within the window, MQL aging share (total, by team)."""
    min_cell = int(settings.get("min_cell_size", 30))
    rows: list[dict[str, Any]] = []
    c = bucket_counts(daily, windows, [], ["acc_n", "accepted", "responded", "aging_n", "aged"])
    rows += rate_rows(
        c,
        metric="acceptance_within_48h",
        success="accepted",
        trials="acc_n",
        by=None,
        windows=windows,
        min_cell=min_cell,
    )
    rows += rate_rows(
        c,
        metric="response_within_48h",
        success="responded",
        trials="acc_n",
        by=None,
        windows=windows,
        min_cell=min_cell,
    )
    rows += rate_rows(
        c, metric="mql_aging_72h_share", success="aged", trials="aging_n", by=None, windows=windows, min_cell=min_cell
    )
    t = bucket_counts(daily, windows, ["owner_team"], ["aging_n", "aged"])
    rows += rate_rows(
        t,
        metric="mql_aging_72h_share",
        success="aged",
        trials="aging_n",
        by="owner_team",
        windows=windows,
        min_cell=min_cell,
    )
    return _frame(rows)


def speed_metrics(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Median business hours to first touch (touched, SLA-mature MQLs), total and by region, per month."""
    s = speed_to_lead(ctx, windows)
    keep = list(windows.months) + ([] if windows.is_month else ["tested"])
    rows = [
        {
            "metric": "speed_to_lead_median_business_hours",
            "dimensions": dims(**({rec.by: rec.group} if rec.by else {})),
            "period": windows.label if rec.bucket == "tested" else rec.bucket,
            "value": rec.median,
            "n": rec.n,
            "unit": "business_hours",
            "method": "median_of_touched_mqls",
        }
        for rec in s[s["bucket"].isin(keep)].itertuples(index=False)
    ]
    return _frame(rows)


def rejection_metrics(
    rejections: pd.DataFrame, daily: pd.DataFrame, windows: PeriodWindows, settings: dict[str, Any]
) -> pd.DataFrame:
    """Reason shares of rejections per month (flow) and each reason's change vs baseline; rejection rate."""
    min_cell = int(settings.get("min_cell_size", 30))
    rows: list[dict[str, Any]] = []
    by_reason = bucket_counts(rejections, windows, ["reason"], ["rejections"])
    totals = by_reason.groupby("bucket", sort=True)["rejections"].sum().rename("all_rejections").reset_index()
    reasons = sorted(by_reason["reason"].dropna().unique())
    # complete grid: a reason absent in a bucket has 0 rejections there
    grid = pd.MultiIndex.from_product([totals["bucket"], reasons], names=["bucket", "reason"]).to_frame(index=False)
    shares = grid.merge(by_reason, how="left", on=["bucket", "reason"]).merge(totals, on="bucket")
    shares["rejections"] = shares["rejections"].fillna(0).astype("int64")
    rows += rate_rows(
        shares,
        metric="rejection_reason_share",
        success="rejections",
        trials="all_rejections",
        by="reason",
        windows=windows,
        min_cell=min_cell,
    )
    for reason in reasons:
        r = shares[shares["reason"] == reason]
        cur, base = r[r["bucket"] == "tested"], r[r["bucket"] == "baseline"]
        rows.append(
            change_row(
                cur["rejections"].sum(),
                cur["all_rejections"].sum(),
                base["rejections"].sum(),
                base["all_rejections"].sum(),
                settings,
                metric="rejection_reason_share_change",
                dimensions=dims(reason=reason),
                period=windows.label,
            )
        )
    # rejection rate (flow): rejections in the period / MQLs created in the period
    mqls = bucket_counts(daily, windows, [], ["mqls"])
    rate = mqls.merge(totals, on="bucket", how="left").fillna({"all_rejections": 0})
    rate["all_rejections"] = rate["all_rejections"].astype("int64")
    rate = rate[rate["all_rejections"] <= rate["mqls"]]
    rows += rate_rows(
        rate,
        metric="rejection_rate",
        success="all_rejections",
        trials="mqls",
        by=None,
        windows=windows,
        min_cell=min_cell,
        method="wilson_flow",
    )
    return _frame(rows)


@dataclass
class HandoffResult:
    """Everything the handoff notebook shows: metric rows, the aging list and notes."""

    metrics: pd.DataFrame
    aging_list: pd.DataFrame
    notes: list[str]
    windows: PeriodWindows | None = None


def analyse(ctx: Any) -> HandoffResult:
    """The handoff/SLA section for the context's period (a note instead when leads or MQL dates are missing)."""
    if not ctx.has("leads") or "mql_at" not in ctx.tables["leads"].columns:
        return HandoffResult(
            normalise(pd.DataFrame()), pd.DataFrame(), ["No leads with MQL dates provided: handoff and SLA omitted."]
        )
    settings = _settings(ctx)
    windows = period_windows(ctx.period, ctx.as_of, settings)
    daily = mql_daily_counts(ctx, windows)
    rejections = rejection_daily_counts(ctx, windows)
    parts = [
        sla_metrics(daily, windows, settings),
        acceptance_metrics(daily, windows, settings),
        speed_metrics(ctx, windows),
        rejection_metrics(rejections, daily, windows, settings),
    ]
    parts = [p for p in parts if not p.empty]
    metrics = normalise(pd.concat(parts, ignore_index=True)) if parts else normalise(pd.DataFrame())
    notes = []
    leads = ctx.tables["leads"]
    if "first_sales_touch_at" not in leads.columns:
        notes.append(
            "No first_sales_touch_at provided: speed to lead cannot be measured (every MQL counts as untouched)."
        )
    early = int(daily["touched_before_mql"].sum()) if len(daily) else 0
    if early:
        notes.append(f"{early:,} MQLs were touched by sales before they became MQLs; their speed to lead counts as 0.")
    unlisted = unlisted_reasons(ctx, windows)
    if len(unlisted):
        shown = ", ".join(
            f"{mask_personal_data(c)[:40]} ({n})"
            for c, n in zip(unlisted["code"].head(10), unlisted["rejections"].head(10), strict=True)
        )
        notes.append(f"Rejection reasons outside the governed picklist (counted as 'unlisted'): {shown}.")
    return HandoffResult(metrics, aging_list(ctx), notes, windows)


def handoff_metrics(ctx: Any) -> pd.DataFrame:
    """Every handoff/SLA metric row for the context's period (empty when no leads are provided)."""
    return analyse(ctx).metrics


# --------------------------------------------------------------------------------------------- tables and charts


def tests_table(metrics: pd.DataFrame, metric: str, by: str | None = None) -> pd.DataFrame:
    """Tested period vs baseline for one '_change' metric: rate, baseline, change (pts), interval, p, n."""
    t = metrics[metrics["metric"] == metric]
    rows = []
    for r in t.itertuples(index=False):
        d = parse_dims(r.dimensions)
        rows.append(
            {
                (by or "scope"): d.get(by, ALL) if by else (", ".join(map(str, d.values())) or ALL),
                "period": r.period,
                "rate": r.baseline + r.value if r.value == r.value else np.nan,
                "baseline": r.baseline,
                "change (pts)": r.value * 100,
                "95% CI (pts)": "" if r.ci_low != r.ci_low else f"{r.ci_low * 100:+.1f} to {r.ci_high * 100:+.1f}",
                "p": r.p_value,
                "n": int(r.n),
                "note": "below minimum cell size: not tested" if r.flag == "small_cell" else "",
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    key = by or "scope"
    out["_all"] = out[key] != ALL
    return out.sort_values(["_all", key], kind="mergesort").drop(columns="_all").reset_index(drop=True)


MONTHLY_COLUMNS = {
    "sla_adherence": "SLA adherence",
    "speed_to_lead_median_business_hours": "median business hours to first touch",
    "acceptance_within_48h": "accepted within 48 h",
    "response_within_48h": "accepted or rejected within 48 h",
    "mql_aging_72h_share": "untouched beyond 72 h",
    "rejection_rate": "rejections per MQL",
}


def monthly_table(metrics: pd.DataFrame, months: int = 6) -> pd.DataFrame:
    """The totals of the handoff measures side by side, one row per month (and the period when it is a week)."""
    m = metrics[metrics["metric"].isin(list(MONTHLY_COLUMNS)) & (metrics["dimensions"] == "{}")]
    if m.empty:
        return pd.DataFrame()
    wide = m.pivot_table(index="period", columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=[c for c in MONTHLY_COLUMNS if c in wide.columns]).rename(columns=MONTHLY_COLUMNS)
    wide.columns.name = None
    return wide.sort_index().tail(months).reset_index()


def _series(metrics: pd.DataFrame, metric: str, by: str | None) -> pd.DataFrame:
    m = metrics[metrics["metric"] == metric].copy()
    m["d"] = m["dimensions"].map(parse_dims)
    m = m[m["d"].map(lambda d: list(d) == ([by] if by else [])).astype(bool)]
    m = m[m["period"].str.match(r"^\d{4}-\d{2}$")]
    m["group"] = m["d"].map(lambda d: d.get(by, ALL) if by else ALL)
    m["month"] = pd.PeriodIndex(m["period"], freq="M").to_timestamp()
    return m.sort_values(["group", "month"])


def draw_rate_lines(ax, m: pd.DataFrame, order: Sequence[str] | None = None, bands: bool = True) -> None:
    """One line per group (columns group, month, value, ci_low, ci_high) with its Wilson band in the same colour."""
    import seaborn as sns

    groups = list(order) if order is not None else sorted(m["group"].unique())
    colors = sns.color_palette(n_colors=max(len(groups), 1))
    for color, g in zip(colors, groups, strict=False):
        d = m[m["group"] == g].sort_values("month")
        ax.plot(d["month"], d["value"], marker="o", ms=4, color=color, label=str(g), lw=2.2 if g == ALL else 1.4)
        if bands:
            ax.fill_between(d["month"], d["ci_low"], d["ci_high"], color=color, alpha=0.10, lw=0)


def sla_chart(metrics: pd.DataFrame):
    """Line chart: monthly SLA adherence by region (and all), Wilson bands in the lines' colours."""
    from analysis.charts import new_figure

    m = pd.concat([_series(metrics, "sla_adherence", None), _series(metrics, "sla_adherence", "region")])
    fig, ax = new_figure(8, 3.4)
    if m.empty:
        ax.text(0.5, 0.5, "no SLA data", ha="center", va="center", transform=ax.transAxes)
        return fig
    order = [ALL] + sorted(g for g in m["group"].unique() if g != ALL)
    draw_rate_lines(ax, m, order)
    ax.set_ylabel("touched within SLA")
    ax.set_xlabel("")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("SLA adherence by MQL month and region")
    ax.legend(title="", fontsize=8, ncol=3)
    return fig


def rejection_chart(metrics: pd.DataFrame, top: int = 6):
    """Line chart: monthly share of rejections for the most frequent reasons."""
    import seaborn as sns

    from analysis.charts import new_figure

    m = _series(metrics, "rejection_reason_share", "reason")
    fig, ax = new_figure(8, 3.4)
    if m.empty:
        ax.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=ax.transAxes)
        return fig
    weight = (m["value"] * m["n"]).groupby(m["group"]).sum().sort_values(ascending=False, kind="mergesort")
    keep = sorted(weight.index[:top])
    sns.lineplot(data=m[m["group"].isin(keep)], x="month", y="value", hue="group", hue_order=keep, marker="o", ax=ax)
    ax.set_ylabel("share of rejections")
    ax.set_xlabel("")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("Rejection reasons by month rejected")
    ax.legend(title="", fontsize=8, ncol=2)
    return fig


def aging_chart(metrics: pd.DataFrame, period: str):
    """Bar chart: share of the period's MQLs untouched beyond the aging hours, by owner team."""
    import seaborn as sns

    from analysis.charts import new_figure

    m = metrics[(metrics["metric"] == "mql_aging_72h_share") & (metrics["period"] == period)].copy()
    m["team"] = m["dimensions"].map(lambda d: parse_dims(d).get("owner_team", ALL))
    m = m.sort_values("team")
    fig, ax = new_figure(8, 3.0)
    if m.empty:
        ax.text(0.5, 0.5, "no MQLs", ha="center", va="center", transform=ax.transAxes)
        return fig
    sns.barplot(data=m, x="team", y="value", ax=ax, color=sns.color_palette()[0])
    ax.errorbar(
        range(len(m)),
        m["value"],
        yerr=[m["value"] - m["ci_low"], m["ci_high"] - m["value"]],
        fmt="none",
        ecolor="black",
        capsize=3,
        lw=1,
    )
    ax.set_ylabel("untouched beyond 72 h")
    ax.set_xlabel("")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title(f"MQL aging by owner team, {period}")
    return fig
