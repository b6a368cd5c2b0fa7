"""Velocity: time to close and time in stage (Kaplan-Meier, open deals censored at the as-of instant),
win as a competing outcome (Aalen-Johansen cumulative incidence), lead-to-opportunity speed and deal aging.

The engine computes one duration per deal (whole days from creation, or first stage entry, to the closing stage or
the as-of instant) and returns only grouped event times: (segment, origin, cohort month, days, outcome) -> deals,
amount. Survival estimates run on those counts (expanded to one entry per deal only inside the estimators).
With stage_history the durations come from stage entries (and time in stage is available); without it from
opportunities.created_at / closed_at, which the section says.

The average days-to-close of closed deals alone is shown only next to the censored estimate: it leaves out the deals
still open, which are by construction the long ones, so it understates the cycle.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import ibis
import numpy as np
import pandas as pd
from statsmodels.duration.survfunc import SurvfuncRight

from analysis import stats
from analysis.engine import to_frame
from analysis.handoff import PeriodWindows, period_windows
from analysis.metrics import dims, normalise

SECTION = "velocity"
DAY = 86_400
EARLY_CLOSE_DAYS = 14  # horizon of the tested cohort's close probability (half a month of follow-up)
CIF_HORIZONS = (90, 180)
CENSORED, WON, LOST = 0, 1, 2
OUTCOME_NAMES = {CENSORED: "open", WON: "won", LOST: "lost"}
ALL = "All"
SOURCE_HISTORY = "stage_history"
SOURCE_DATES = "opportunities.created_at / closed_at"


@dataclass
class VelocityResult:
    """Everything the velocity notebook shows: metric rows, the grouped durations, tables and notes."""

    metrics: pd.DataFrame
    durations: pd.DataFrame  # grouped: segment, origin, cohort, days, event, deals, amount
    stage_durations: pd.DataFrame  # grouped: stage, segment, days, event, entries (empty without history)
    aging: pd.DataFrame  # per segment: open deals, threshold, aging deals, aging amount
    aging_list: pd.DataFrame  # the largest aging deals (ids, segment, stage, age, amount, owner team)
    source: str
    notes: list[str] = field(default_factory=list)
    windows: PeriodWindows | None = None


# --------------------------------------------------------------------------------------------- engine side


def _ts(value: pd.Timestamp) -> ibis.Expr:
    return ibis.literal(pd.Timestamp(value).to_pydatetime(), type="timestamp('UTC')")


def _text(t: ibis.Table, name: str, default: str) -> ibis.Expr:
    c = t[name] if name in t.columns else ibis.null("string")
    return c.cast("string").fill_null(default)


def _stage_names(definitions: Any) -> tuple[list[str], str, str]:
    opp = definitions["stages"]["opportunity"]
    return [str(s) for s in opp.get("open", [])], str(opp.get("won", "Closed Won")), str(opp.get("lost", "Closed Lost"))


def open_stages(definitions: Any) -> list[str]:
    """The open opportunity stages of the definitions, in order."""
    return _stage_names(definitions)[0]


def velocity_source(ctx: Any) -> str:
    """Where durations come from: 'stage_history' when provided, else the opportunities' created/closed dates."""
    return SOURCE_HISTORY if ctx.has("stage_history") else SOURCE_DATES


def _days(start: ibis.Expr, end: ibis.Expr) -> ibis.Expr:
    secs = end.epoch_seconds().cast("int64") - start.epoch_seconds().cast("int64")
    return (secs / DAY).floor().cast("int64")


def deal_durations(ctx: Any, since: pd.Timestamp | None) -> ibis.Table:
    """Ibis: per opportunity created in [since, as_of): segment, origin, cohort key, days to close/as-of, event."""
    o = ctx.tables["opportunities"]
    as_of = _ts(ctx.as_of)
    cond = o.created_at.notnull() & (o.created_at < as_of)
    if since is not None:
        cond = cond & (o.created_at >= _ts(since))
    o = o.filter(cond)
    _, won_stage, lost_stage = _stage_names(ctx.definitions)
    if ctx.has("stage_history"):
        h = ctx.tables["stage_history"]
        h = h.filter(h.entered_at <= as_of)
        per = h.group_by("opportunity_id").aggregate(
            first_entry=h.entered_at.min(),
            won_at=ibis.cases((h.stage == won_stage, h.entered_at), else_=ibis.null("timestamp('UTC')")).min(),
            lost_at=ibis.cases((h.stage == lost_stage, h.entered_at), else_=ibis.null("timestamp('UTC')")).min(),
        )
        j = o.left_join(per, o.opportunity_id == per.opportunity_id)
        start = ibis.coalesce(j.first_entry, j.created_at)
        won_at, lost_at = j.won_at, j.lost_at
        t = j
    else:
        t = o
        closed = o.is_closed.fill_null(False) if "is_closed" in o.columns else ibis.literal(False)
        won = o.is_won.fill_null(False) if "is_won" in o.columns else ibis.literal(False)
        has_close = (
            closed & o.closed_at.notnull() & (o.closed_at <= as_of)
            if "closed_at" in o.columns
            else (ibis.literal(False))
        )
        start = o.created_at
        none = ibis.null("timestamp('UTC')")
        won_at = ibis.cases((has_close & won, o.closed_at), else_=none)
        lost_at = ibis.cases((has_close & ~won, o.closed_at), else_=none)
    event = ibis.cases(
        (won_at.notnull() & (lost_at.isnull() | (won_at <= lost_at)), WON),
        (lost_at.notnull(), LOST),
        else_=CENSORED,
    )
    end = ibis.cases((event == WON, won_at), (event == LOST, lost_at), else_=as_of)
    amount = t.amount.cast("float64") if "amount" in t.columns else ibis.literal(0.0)
    return t.select(
        opportunity_id=t.opportunity_id,
        segment=_text(t, "segment", "unknown"),
        origin=_text(t, "origin", "unknown"),
        owner_team=_text(t, "owner_team", "unassigned"),
        stage=_text(t, "stage", "unknown"),
        cohort_key=(t.created_at.year() * 100 + t.created_at.month()).cast("int64"),
        days=_days(start, end),
        event=event.cast("int64"),
        amount=amount.fill_null(0.0),
    )


def duration_counts(ctx: Any, since: pd.Timestamp | None) -> pd.DataFrame:
    """Grouped event times: (segment, origin, cohort 'YYYY-MM', days, event) -> deals, amount; negative days dropped."""
    t = deal_durations(ctx, since)
    t = t.filter(t.days >= 0)
    keys = ["segment", "origin", "cohort_key", "days", "event"]
    out = to_frame(t.group_by(keys).aggregate(deals=ibis._.count(), amount=ibis._.amount.sum()), ctx.con)
    if out.empty:
        return pd.DataFrame(columns=["segment", "origin", "cohort", "days", "event", "deals", "amount"])
    out["cohort"] = [f"{int(k) // 100:04d}-{int(k) % 100:02d}" for k in out["cohort_key"]]
    out["deals"] = out["deals"].astype("int64")
    out["days"] = out["days"].astype("int64")
    out["event"] = out["event"].astype("int64")
    out = out[["segment", "origin", "cohort", "days", "event", "deals", "amount"]]
    return out.sort_values(["segment", "origin", "cohort", "days", "event"], kind="mergesort").reset_index(drop=True)


def excluded_deals(ctx: Any) -> dict[str, int]:
    """Counts of opportunities left out of the durations: no creation date; closed before created."""
    o = ctx.tables["opportunities"]
    out = {"no_created_at": int(to_frame(o.filter(o.created_at.isnull()).aggregate(n=ibis._.count()), ctx.con)["n"][0])}
    t = deal_durations(ctx, None)
    out["negative_duration"] = int(to_frame(t.filter(t.days < 0).aggregate(n=ibis._.count()), ctx.con)["n"][0])
    return out


def stage_duration_counts(ctx: Any, since: pd.Timestamp | None) -> pd.DataFrame:
    """Grouped time in each open stage: (stage, segment, days, event) -> entries; exits after as-of are censored."""
    cols = ["stage", "segment", "days", "event", "entries"]
    if not ctx.has("stage_history", "opportunities"):
        return pd.DataFrame(columns=cols)
    open_stages, _, _ = _stage_names(ctx.definitions)
    all_stages = [*open_stages, *_stage_names(ctx.definitions)[1:]]
    as_of = _ts(ctx.as_of)
    h = ctx.tables["stage_history"]
    h = h.filter(h.entered_at <= as_of)
    rank = ibis.cases(*[(h.stage == s, i) for i, s in enumerate(all_stages)], else_=len(all_stages))
    h = h.mutate(stage_rank=rank)
    w = ibis.window(group_by=h.opportunity_id, order_by=[h.entered_at, h.stage_rank])
    h = h.mutate(next_at=h.entered_at.lead().over(w))
    cond = h.stage.isin(open_stages)
    if since is not None:
        cond = cond & (h.entered_at >= _ts(since))
    h = h.filter(cond)
    o = ctx.tables["opportunities"]
    o = o.select(
        oid=o.opportunity_id,
        segment=_text(o, "segment", "unknown"),
        closed_at=o.closed_at if "closed_at" in o.columns else ibis.null("timestamp('UTC')"),
    )
    j = h.left_join(o, h.opportunity_id == o.oid)
    closed = ibis.cases(
        (j.closed_at.notnull() & (j.closed_at <= as_of) & (j.closed_at >= j.entered_at), j.closed_at),
        else_=ibis.null("timestamp('UTC')"),
    )
    exit_at = ibis.coalesce(j.next_at, closed)
    t = j.select(
        stage=j.stage,
        segment=j.segment.fill_null("unknown"),
        days=_days(j.entered_at, ibis.coalesce(exit_at, as_of)),
        event=exit_at.notnull().cast("int64"),
    )
    t = t.filter(t.days >= 0)
    out = to_frame(t.group_by(["stage", "segment", "days", "event"]).aggregate(entries=ibis._.count()), ctx.con)
    if out.empty:
        return pd.DataFrame(columns=cols)
    for c in ("days", "event", "entries"):
        out[c] = out[c].astype("int64")
    order = {s: i for i, s in enumerate(open_stages)}
    out["_o"] = out["stage"].map(order)
    out = out.sort_values(["_o", "segment", "days", "event"], kind="mergesort").drop(columns="_o")
    return out[cols].reset_index(drop=True)


def open_deal_ages(ctx: Any) -> pd.DataFrame:
    """Open deals at the as-of instant grouped by (segment, age in days): deals, amount."""
    t = deal_durations(ctx, None)
    t = t.filter((t.event == CENSORED) & (t.days >= 0))
    out = to_frame(t.group_by(["segment", "days"]).aggregate(deals=ibis._.count(), amount=ibis._.amount.sum()), ctx.con)
    if out.empty:
        return pd.DataFrame(columns=["segment", "days", "deals", "amount"])
    out["deals"] = out["deals"].astype("int64")
    return out.sort_values(["segment", "days"], kind="mergesort").reset_index(drop=True)


def aging_deal_list(ctx: Any, thresholds: dict[str, float], top: int = 15) -> pd.DataFrame:
    """The largest open deals past their segment's threshold (opportunity id, segment, stage, age, amount, team)."""
    cols = ["opportunity_id", "segment", "stage", "age_days", "threshold_days", "amount", "owner_team"]
    usable = {k: v for k, v in thresholds.items() if v == v}
    if not usable:
        return pd.DataFrame(columns=cols)
    t = deal_durations(ctx, None)
    t = t.filter(t.event == CENSORED)
    thr = ibis.memtable(pd.DataFrame({"thr_segment": list(usable), "threshold_days": list(usable.values())}))
    j = t.inner_join(thr, t.segment == thr.thr_segment)
    j = j.filter(j.days > j.threshold_days)
    expr = (
        j.select(
            opportunity_id=j.opportunity_id,
            segment=j.segment,
            stage=j.stage,
            age_days=j.days,
            threshold_days=j.threshold_days,
            amount=j.amount,
            owner_team=j.owner_team,
        )
        .order_by([ibis.desc("amount"), "opportunity_id"])
        .limit(top)
    )
    out = to_frame(expr, ctx.con)
    if ctx.has("stage_history") and not out.empty:
        out["stage"] = _current_stages(ctx, list(out["opportunity_id"])).reindex(out["opportunity_id"]).to_numpy()
    return out[cols]


def _current_stages(ctx: Any, ids: list[str]) -> pd.Series:
    h = ctx.tables["stage_history"]
    h = h.filter(h.opportunity_id.isin(ids) & (h.entered_at <= _ts(ctx.as_of)))
    last = h.group_by("opportunity_id").aggregate(last_at=h.entered_at.max())
    j = h.inner_join(last, (h.opportunity_id == last.opportunity_id) & (h.entered_at == last.last_at))
    f = to_frame(j.select(opportunity_id=h.opportunity_id, stage=h.stage), ctx.con)
    f = f.sort_values(["opportunity_id", "stage"], kind="mergesort").drop_duplicates("opportunity_id", keep="last")
    return f.set_index("opportunity_id")["stage"]


def lead_to_opportunity_counts(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Median days lead created -> SQL of leads converting within the governed window (mature cohorts), by segment."""
    cols = ["segment", "median", "n", "window_days"]
    if not ctx.has("leads") or "sql_at" not in ctx.tables["leads"].columns:
        return pd.DataFrame(columns=cols)
    windows_days = ctx.definitions["conversion_windows"]["days"]
    w = int(windows_days.get("lead_to_mql", 30)) + int(windows_days.get("mql_to_sql", 45))
    last_created = ctx.as_of - pd.Timedelta(days=w)
    first = pd.Timestamp(windows.months[0] + "-01", tz="UTC")
    leads = ctx.tables["leads"]
    t = leads.filter((leads.created_at >= _ts(first)) & (leads.created_at < _ts(last_created)) & leads.sql_at.notnull())
    t = t.mutate(days=(t.sql_at.epoch_seconds().cast("int64") - t.created_at.epoch_seconds().cast("int64")) / DAY)
    t = t.filter((t.days >= 0) & (t.days <= w))
    frames = []
    seg = to_frame(
        t.mutate(segment=_text(t, "segment", "unknown"))
        .group_by("segment")
        .aggregate(median=ibis._.days.median(), n=ibis._.count()),
        ctx.con,
    )
    frames.append(seg)
    tot = to_frame(t.aggregate(median=t.days.median(), n=t.count()), ctx.con)
    tot["segment"] = ALL
    frames.append(tot)
    out = pd.concat(frames, ignore_index=True)
    out = out[out["n"] > 0].copy()
    out["n"] = out["n"].astype("int64")
    out["window_days"] = w
    out["_all"] = out["segment"] != ALL
    return out.sort_values(["_all", "segment"], kind="mergesort")[cols].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- statistics


def _expand(counts: pd.DataFrame, weight: str = "deals") -> tuple[np.ndarray, np.ndarray]:
    w = counts[weight].to_numpy(np.int64)
    return np.repeat(counts["days"].to_numpy(float), w), np.repeat(counts["event"].to_numpy(np.int64), w)


def survival_function(counts: pd.DataFrame, weight: str = "deals") -> SurvfuncRight | None:
    """The Kaplan-Meier estimate (statsmodels) of the duration counts, or None without any event."""
    c = counts[counts[weight] > 0]
    if c.empty or not (c["event"] > 0).any():
        return None
    return SurvfuncRight(
        c["days"].to_numpy(float), (c["event"] > 0).to_numpy(float), freq_weights=c[weight].to_numpy(float)
    )


def km_quantile(counts: pd.DataFrame, q: float, weight: str = "deals") -> float:
    """The q-quantile of time to close from the Kaplan-Meier curve (first day with 1 - S <= q reached); NaN if not."""
    sf = survival_function(counts, weight)
    if sf is None:
        return float("nan")
    reached = np.flatnonzero(sf.surv_prob <= 1.0 - q + 1e-12)
    return float(sf.surv_times[reached[0]]) if reached.size else float("nan")


def km_at(counts: pd.DataFrame, day: float, weight: str = "deals") -> tuple[float, float]:
    """(probability of having closed by `day`, its Greenwood standard error) from the Kaplan-Meier curve."""
    sf = survival_function(counts, weight)
    if sf is None:
        n = counts[weight].sum()
        return (0.0, 0.0) if n > 0 else (float("nan"), float("nan"))
    idx = np.searchsorted(sf.surv_times, day, side="right") - 1
    if idx < 0:
        return 0.0, 0.0
    return float(1.0 - sf.surv_prob[idx]), float(sf.surv_prob_se[idx])


def km_summary(counts: pd.DataFrame, by: str | None, weight: str = "deals") -> pd.DataFrame:
    """Per group: deals, closed, KM median days (with CI) and, beside it, the naive mean/median of closed deals."""
    rows = []
    groups = [(ALL, counts)] if by is None else list(counts.groupby(by, sort=True))
    for g, c in groups:
        d, e = _expand(c, weight)
        closed = e > 0
        median, low, high = stats.km_median(d, closed.astype(int)) if d.size else (np.nan,) * 3
        rows.append(
            {
                "group": g,
                "deals": int(d.size),
                "closed": int(closed.sum()),
                "won": int((e == WON).sum()),
                "lost": int((e == LOST).sum()),
                "km_median": median,
                "ci_low": low,
                "ci_high": high,
                "naive_mean_closed": float(d[closed].mean()) if closed.any() else np.nan,
                "naive_median_closed": float(np.median(d[closed])) if closed.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def closed_deal_medians(counts: pd.DataFrame) -> pd.DataFrame:
    """Naive median and mean days to close of closed deals by outcome (won, lost): the closed-only view."""
    rows = []
    for ev in (WON, LOST):
        c = counts[counts["event"] == ev]
        d, _ = _expand(c)
        rows.append(
            {
                "outcome": OUTCOME_NAMES[ev],
                "deals": int(d.size),
                "median_days": float(np.median(d)) if d.size else np.nan,
                "mean_days": float(d.mean()) if d.size else np.nan,
            }
        )
    return pd.DataFrame(rows)


def cumulative_incidence(
    counts: pd.DataFrame, by: str | None, horizons: tuple[int, ...] = CIF_HORIZONS, seed: int = 0
) -> pd.DataFrame:
    """Aalen-Johansen cumulative incidence of win (loss competing) at each horizon, per group, with 95% CI.

    lifelines' AalenJohansenFitter; open deals are censored at day t + 0.5, i.e. after the wins and losses of day t,
    the usual convention for ties, so lifelines' jitter of tied event times (seeded) cannot reorder an event and a
    censoring and the estimate equals the tie-exact Aalen-Johansen value.
    """
    from lifelines import AalenJohansenFitter

    rows = []
    groups = [(ALL, counts)] if by is None else list(counts.groupby(by, sort=True))
    for g, c in groups:
        c = c[c["deals"] > 0]
        agg = c.groupby(["days", "event"], sort=True)["deals"].sum().reset_index()
        for h in horizons:
            row = {
                "group": g,
                "horizon": h,
                "cif": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "deals": int(agg["deals"].sum()),
            }
            if (agg["event"] == WON).any():
                dur = agg["days"].to_numpy(float) + np.where(agg["event"].to_numpy() == CENSORED, 0.5, 0.0)
                aj = AalenJohansenFitter(seed=seed, calculate_variance=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    state = np.random.get_state()
                    try:
                        aj.fit(
                            dur, agg["event"].to_numpy(), event_of_interest=WON, weights=agg["deals"].to_numpy(float)
                        )
                    finally:
                        np.random.set_state(state)  # lifelines seeds numpy's global generator; leave it as found
                cd = aj.cumulative_density_.iloc[:, 0]
                upto = cd[cd.index <= h + 0.25]
                row["cif"] = float(upto.iloc[-1]) if len(upto) else 0.0
                ci = aj.confidence_interval_
                ci_upto = ci[ci.index <= h + 0.25].dropna()
                if len(ci_upto):
                    a, b = ci_upto.iloc[-1].to_numpy(float)
                    row["ci_low"], row["ci_high"] = min(a, b), max(a, b)
            elif len(agg):
                row["cif"] = 0.0
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- metrics


def _cohort_bucket(counts: pd.DataFrame, windows: PeriodWindows, tested_months: list[str]) -> pd.Series:
    base_months = [str(pd.Period(tested_months[0], freq="M") - i) for i in range(windows.baseline_months, 0, -1)]
    return pd.Series(
        np.where(
            counts["cohort"].isin(tested_months), "tested", np.where(counts["cohort"].isin(base_months), "baseline", "")
        ),
        index=counts.index,
    )


def _km_median_row(metric: str, dimensions: str, period: str, r: Any) -> dict:
    """A metrics row for a Kaplan-Meier median from a km_summary row (flag not_reached when it is NaN)."""
    return {
        "metric": metric,
        "dimensions": dimensions,
        "period": period,
        "value": r.km_median,
        "ci_low": r.ci_low,
        "ci_high": r.ci_high,
        "n": r.deals,
        "unit": "days",
        "method": "km",
        "flag": "" if r.km_median == r.km_median else "not_reached",
    }


def days_to_close_metrics(counts: pd.DataFrame, windows: PeriodWindows) -> pd.DataFrame:
    """KM median days to close (total, segment, origin) with the naive closed-only mean beside it."""
    rows = []
    trailing = counts[counts["cohort"].isin(windows.months)]
    for by in (None, "segment", "origin"):
        s = km_summary(trailing, by)
        for r in s.itertuples(index=False):
            d = dims(**({by: r.group} if by else {}))
            rows.append(_km_median_row("days_to_close_median", d, windows.label, r))
            rows.append(
                {
                    "metric": "days_to_close_naive_mean_closed",
                    "dimensions": d,
                    "period": windows.label,
                    "value": r.naive_mean_closed,
                    "n": r.closed,
                    "unit": "days",
                    "method": "naive_mean_closed_only",
                }
            )
            rows.append(
                {
                    "metric": "days_to_close_naive_median_closed",
                    "dimensions": d,
                    "period": windows.label,
                    "value": r.naive_median_closed,
                    "n": r.closed,
                    "unit": "days",
                    "method": "naive_median_closed_only",
                }
            )
    for r in closed_deal_medians(trailing).itertuples(index=False):
        rows.append(
            {
                "metric": "days_to_close_naive_median_closed",
                "dimensions": dims(outcome=r.outcome),
                "period": windows.label,
                "value": r.median_days,
                "n": r.deals,
                "unit": "days",
                "method": "naive_median_closed_only",
            }
        )
    d, e = _expand(trailing)
    seg = np.repeat(trailing["segment"].to_numpy(object), trailing["deals"].to_numpy(np.int64))
    if d.size and pd.unique(seg).size > 1:
        res = stats.logrank_test(d, (e > 0).astype(int), seg)
        rows.append(
            {
                "metric": "days_to_close_segment_difference",
                "dimensions": dims(),
                "period": windows.label,
                "value": res.statistic,
                "p_value": res.p_value,
                "n": res.n,
                "unit": "chi_square",
                "method": "logrank",
            }
        )
    return _frame(rows)


def cif_metrics(counts: pd.DataFrame, windows: PeriodWindows, seed: int) -> pd.DataFrame:
    """Cumulative incidence of win by 90 and 180 days (loss competing), total, by segment and by origin."""
    rows = []
    trailing = counts[counts["cohort"].isin(windows.months)]
    for by in (None, "segment", "origin"):
        c = cumulative_incidence(trailing, by, seed=seed)
        for r in c.itertuples(index=False):
            rows.append(
                {
                    "metric": f"win_cumulative_incidence_{r.horizon}d",
                    "dimensions": dims(**({by: r.group} if by else {})),
                    "period": windows.label,
                    "value": r.cif,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "n": r.deals,
                    "unit": "share",
                    "method": "aalen_johansen",
                }
            )
    return _frame(rows)


def early_close_metrics(
    counts: pd.DataFrame, windows: PeriodWindows, tested_months: list[str], settings: dict[str, Any]
) -> pd.DataFrame:
    """Close probability within 14 days per cohort month; tested cohort vs baseline cohorts by log-rank."""
    min_cell = int(settings.get("min_cell_size", 30))
    k = int(settings.get("baseline_months", 6))
    h = EARLY_CLOSE_DAYS
    rows = []
    for by in (None, "segment"):
        groups = [(None, counts)] if by is None else list(counts.groupby(by, sort=True))
        for g, c in groups:
            d = dims(**({by: g} if by else {}))
            for month, cm in c.groupby("cohort", sort=True):
                if month not in windows.months:
                    continue
                p, se = km_at(cm, h)
                rows.append(
                    {
                        "metric": "early_close_rate",
                        "dimensions": d,
                        "period": month,
                        "value": p,
                        "ci_low": max(0.0, p - 1.96 * se),
                        "ci_high": min(1.0, p + 1.96 * se),
                        "n": int(cm["deals"].sum()),
                        "unit": "share",
                        "method": f"km_{h}d",
                    }
                )
            bucket = _cohort_bucket(c, windows, tested_months)
            cur, base = c[bucket == "tested"], c[bucket == "baseline"]
            n1, n0 = int(cur["deals"].sum()), int(base["deals"].sum())
            p1, se1 = km_at(cur, h)
            p0, se0 = km_at(base, h)
            row = {
                "metric": "early_close_rate_change",
                "dimensions": d,
                "period": windows.label,
                "n": n1,
                "baseline": p0,
                "value": p1 - p0,
                "unit": "share_points",
            }
            if n1 < min_cell or n0 < min_cell:
                row.update(method="not_tested", flag="small_cell")
            else:
                both = pd.concat([cur.assign(_g=1), base.assign(_g=0)])
                dd, ee = _expand(both)
                gg = np.repeat(both["_g"].to_numpy(), both["deals"].to_numpy(np.int64))
                half = 1.96 * float(np.hypot(se1, se0))
                try:
                    p_value = stats.logrank_test(dd, (ee > 0).astype(int), gg).p_value
                    method = f"logrank_vs_{k}m_baseline_km_{h}d"
                except np.linalg.LinAlgError:
                    # zero variance: no closing day on which both cohorts had deals at risk, nothing to compare
                    p_value, method = np.nan, "not_tested_no_common_follow_up"
                row.update(
                    p_value=p_value,
                    ci_low=row["value"] - half,
                    ci_high=row["value"] + half,
                    method=method,
                    flag="",
                )
            rows.append(row)
    return _frame(rows)


def stage_metrics(stage_counts: pd.DataFrame, windows: PeriodWindows) -> pd.DataFrame:
    """KM median days in each open stage, total and by segment (stage entries of the trailing months)."""
    rows = []
    if stage_counts.empty:
        return _frame(rows)
    for stage, c in stage_counts.groupby("stage", sort=False):
        for by in (None, "segment"):
            s = km_summary(c, by, weight="entries")
            for r in s.itertuples(index=False):
                d = dims(stage=stage, **({by: r.group} if by else {}))
                rows.append(_km_median_row("time_in_stage_median", d, windows.label, r))
    return _frame(rows)


def aging_summary(counts: pd.DataFrame, ages: pd.DataFrame, windows: PeriodWindows, q: float = 0.75) -> pd.DataFrame:
    """Per segment: the KM 75th percentile of days to close, open deals, and open deals older than it."""
    trailing = counts[counts["cohort"].isin(windows.months)]
    rows = []
    for seg in sorted(set(ages["segment"]) | set(trailing["segment"])):
        thr = km_quantile(trailing[trailing["segment"] == seg], q)
        a = ages[ages["segment"] == seg]
        old = a[a["days"] > thr] if thr == thr else a.iloc[0:0]
        rows.append(
            {
                "segment": seg,
                "threshold_days": thr,
                "open_deals": int(a["deals"].sum()),
                "aging_deals": int(old["deals"].sum()),
                "aging_amount": float(old["amount"].sum()),
                "open_amount": float(a["amount"].sum()),
            }
        )
    return pd.DataFrame(
        rows, columns=["segment", "threshold_days", "open_deals", "aging_deals", "aging_amount", "open_amount"]
    )


def aging_metrics(aging: pd.DataFrame, windows: PeriodWindows) -> pd.DataFrame:
    """Open deals past their segment's 75th percentile of days to close: count (impact = their pipeline)."""
    rows = []
    for r in aging.itertuples(index=False):
        rows.append(
            {
                "metric": "aging_open_deals",
                "dimensions": dims(segment=r.segment),
                "period": windows.label,
                "value": float(r.aging_deals),
                "n": r.open_deals,
                "baseline": r.threshold_days,
                "impact": r.aging_amount,
                "unit": "deals",
                "method": "km_p75_threshold",
                "flag": "" if r.threshold_days == r.threshold_days else "not_reached",
            }
        )
    if len(aging):
        rows.append(
            {
                "metric": "aging_open_deals",
                "dimensions": dims(),
                "period": windows.label,
                "value": float(aging["aging_deals"].sum()),
                "n": int(aging["open_deals"].sum()),
                "impact": float(aging["aging_amount"].sum()),
                "unit": "deals",
                "method": "km_p75_threshold",
            }
        )
    return _frame(rows)


def lead_metrics(lead_counts: pd.DataFrame, windows: PeriodWindows) -> pd.DataFrame:
    """Median days from lead creation to SQL (converted leads of mature cohorts), total and by segment."""
    rows = [
        {
            "metric": "lead_to_opportunity_days_median",
            "dimensions": dims(**({} if r.segment == ALL else {"segment": r.segment})),
            "period": windows.label,
            "value": r.median,
            "n": r.n,
            "unit": "days",
            "method": f"median_of_converted_within_{r.window_days}d",
        }
        for r in lead_counts.itertuples(index=False)
    ]
    return _frame(rows)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    if out.empty:
        return normalise(out)
    out["section"] = SECTION
    return normalise(out)


def analyse(ctx: Any) -> VelocityResult:
    """The velocity section for the context's period: metrics, grouped durations, aging and notes."""
    source = velocity_source(ctx)
    empty = pd.DataFrame()
    if not ctx.has("opportunities"):
        return VelocityResult(
            normalise(empty), empty, empty, empty, empty, source, ["No opportunities provided: velocity omitted."]
        )
    settings = dict(ctx.definitions.stats)
    windows = period_windows(ctx.period, ctx.as_of, settings)
    notes = [
        f"Durations from {source}; open deals censored at {ctx.as_of:%Y-%m-%d %H:%M} UTC."
        if source == SOURCE_HISTORY
        else f"No stage_history provided: durations from {source}, time in stage omitted; open deals censored at "
        f"{ctx.as_of:%Y-%m-%d %H:%M} UTC."
    ]
    counts = duration_counts(ctx, windows.first)
    excluded = excluded_deals(ctx)
    if excluded["no_created_at"]:
        notes.append(
            f"{excluded['no_created_at']:,} opportunities without a creation date (not yet engaged) are "
            "left out of the durations."
        )
    if excluded["negative_duration"]:
        notes.append(
            f"{excluded['negative_duration']:,} opportunities close before they were created and are left out."
        )
    stage_counts = (
        stage_duration_counts(ctx, windows.first)
        if source == SOURCE_HISTORY
        else pd.DataFrame(columns=["stage", "segment", "days", "event", "entries"])
    )
    stage_counts = stage_counts[stage_counts["days"].notna()] if len(stage_counts) else stage_counts
    ages = open_deal_ages(ctx)
    aging = aging_summary(counts, ages, windows)
    thresholds = dict(zip(aging["segment"], aging["threshold_days"], strict=True))
    aging_list = aging_deal_list(ctx, thresholds)
    tested_months = list(ctx.period.months)
    seed = int(settings.get("seed", 0))
    parts = [
        days_to_close_metrics(counts, windows),
        cif_metrics(counts, windows, seed),
        early_close_metrics(counts, windows, tested_months, settings),
        stage_metrics(stage_counts, windows),
        aging_metrics(aging, windows),
        lead_metrics(lead_to_opportunity_counts(ctx, windows), windows),
    ]
    parts = [p for p in parts if not p.empty]
    metrics = normalise(pd.concat(parts, ignore_index=True)) if parts else normalise(empty)
    return VelocityResult(metrics, counts, stage_counts, aging, aging_list, source, notes, windows)
