"""Weekly operations: new pipeline by source against its recent run rate, and the open deals most likely to slip.

A deal is likely to slip when it has been open longer than most deals of its segment take to close: older than
the segment's 75th percentile of days-to-close among deals won in the trailing year. Its stage is the one it was
in at the as-of instant (from stage_history when provided, else the export's current stage). The list shows ids,
segment, stage, owner team and amounts: never names.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from analysis.context import SectionContext
from analysis.engine import to_frame
from analysis.metrics import dims, normalise

SECTION = "operations"
RUN_RATE_WEEKS = 8
SLIP_PERCENTILE = 0.75


def _lit(ts: pd.Timestamp) -> ibis.Expr:
    return ibis.literal(ts.to_pydatetime())


def _origin_of(ctx: SectionContext, channels: pd.Series) -> list[str]:
    return [ctx.definitions.origin_of(c) if isinstance(c, str) else "unknown" for c in channels]


def new_pipeline_by_source(ctx: SectionContext) -> pd.DataFrame:
    """Per source channel: deals and amount created in the period against the weekly average of the prior weeks."""
    o = ctx.tables["opportunities"]
    start, end = ctx.period.start, min(ctx.period.end, ctx.as_of)
    span_days = max((ctx.period.end - ctx.period.start).days, 1)
    run_start = start - pd.Timedelta(days=RUN_RATE_WEEKS * 7)
    o = o.mutate(channel=o.source_channel.fill_null("unknown"))
    window = o.filter((o.created_at >= _lit(run_start)) & (o.created_at < _lit(end)))
    in_period = window.created_at >= _lit(start)
    agg = window.group_by("channel").aggregate(
        deals=in_period.cast("int64").sum(),
        amount=ibis.cases((in_period, window.amount), else_=0).sum(),
        prior_deals=(~in_period).cast("int64").sum(),
        prior_amount=ibis.cases((~in_period, window.amount), else_=0).sum(),
    )
    frame = to_frame(agg, ctx.con).sort_values("channel").reset_index(drop=True)
    scale = span_days / (RUN_RATE_WEEKS * 7)  # prior weeks' total -> one period's worth
    frame["origin"] = _origin_of(ctx, frame["channel"])
    frame["amount"] = frame["amount"].astype(float)
    frame["run_rate_amount"] = frame["prior_amount"].astype(float) * scale
    frame["run_rate_deals"] = frame["prior_deals"].astype(float) * scale
    frame["vs_run_rate"] = np.where(
        frame["run_rate_amount"] > 0,
        frame["amount"] / frame["run_rate_amount"].where(frame["run_rate_amount"] > 0, 1) - 1,
        np.nan,
    )
    cols = ["channel", "origin", "deals", "amount", "run_rate_deals", "run_rate_amount", "vs_run_rate"]
    return (
        frame[cols].sort_values(["amount", "channel"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    )


def slip_thresholds(ctx: SectionContext) -> pd.DataFrame:
    """Per segment: the 75th percentile of days-to-close of deals won in the trailing 365 days."""
    o = ctx.tables["opportunities"]
    won = o.filter(
        o.is_won.fill_null(False)
        & (o.closed_at < _lit(ctx.as_of))
        & (o.closed_at >= _lit(ctx.as_of - pd.Timedelta(days=365)))
        & o.created_at.notnull()
    )
    days = (won.closed_at.epoch_seconds() - won.created_at.epoch_seconds()) / 86_400
    agg = (
        won.mutate(days=days)
        .group_by("segment")
        .aggregate(p75_days_to_close=ibis._.days.quantile(SLIP_PERCENTILE), won_deals=ibis._.count())
    )
    return to_frame(agg, ctx.con).sort_values("segment").reset_index(drop=True)


def deals_likely_to_slip(ctx: SectionContext, limit: int = 12) -> pd.DataFrame:
    """Open deals older than their segment's 75th-percentile cycle, largest first (ids and teams, no names)."""
    o = ctx.tables["opportunities"]
    as_of = _lit(ctx.as_of)
    open_deals = o.filter(
        o.created_at.notnull() & (o.created_at < as_of) & (o.closed_at.isnull() | (o.closed_at >= as_of))
    )
    thresholds = slip_thresholds(ctx)
    if thresholds.empty:
        return pd.DataFrame(
            columns=["opportunity_id", "segment", "stage", "owner_team", "age_days", "p75_days", "amount"]
        )
    t = ibis.memtable(thresholds[["segment", "p75_days_to_close"]])
    age = (as_of.epoch_seconds() - open_deals.created_at.epoch_seconds()) / 86_400
    open_deals = _stage_at_as_of(ctx, open_deals)
    joined = open_deals.mutate(age_days=age).join(t, "segment")
    late = joined.filter(joined.age_days > joined.p75_days_to_close)
    expr = late.select(
        "opportunity_id",
        "segment",
        "stage",
        "owner_team",
        "age_days",
        p75_days=late.p75_days_to_close,
        amount=late.amount,
    ).order_by([ibis.desc("amount"), "opportunity_id"])
    frame = to_frame(expr.limit(limit), ctx.con)
    frame["amount"] = frame["amount"].astype(float)
    frame["age_days"] = frame["age_days"].round(0)
    frame["p75_days"] = frame["p75_days"].round(0)
    return frame


def _stage_at_as_of(ctx: SectionContext, deals: ibis.Table) -> ibis.Table:
    """The deals with `stage` replaced by the stage they were in at the as-of instant, when history exists."""
    if "stage_history" not in ctx.tables:
        return deals
    h = ctx.tables["stage_history"]
    h = h.filter(h.entered_at < _lit(ctx.as_of))
    last = h.group_by("opportunity_id").aggregate(last_entry=h.entered_at.max())
    at = h.join(last, (h.opportunity_id == last.opportunity_id) & (h.entered_at == last.last_entry)).select(
        opportunity_id=h.opportunity_id, stage_then=h.stage
    )
    at = at.group_by("opportunity_id").aggregate(stage_then=at.stage_then.max())
    joined = deals.left_join(at, deals.opportunity_id == at.opportunity_id)
    return joined.mutate(stage=joined.stage_then.fill_null(joined.stage)).drop("stage_then", "opportunity_id_right")


def slip_summary(ctx: SectionContext) -> pd.DataFrame:
    """Per segment: open deals and amount past the segment's 75th-percentile cycle."""
    o = ctx.tables["opportunities"]
    as_of = _lit(ctx.as_of)
    thresholds = slip_thresholds(ctx)
    if thresholds.empty:
        return pd.DataFrame(columns=["segment", "open_deals", "late_deals", "late_amount", "late_share"])
    open_deals = o.filter(
        o.created_at.notnull() & (o.created_at < as_of) & (o.closed_at.isnull() | (o.closed_at >= as_of))
    )
    t = ibis.memtable(thresholds[["segment", "p75_days_to_close"]])
    age = (as_of.epoch_seconds() - open_deals.created_at.epoch_seconds()) / 86_400
    j = open_deals.mutate(age_days=age).join(t, "segment")
    late = j.age_days > j.p75_days_to_close
    agg = j.group_by("segment").aggregate(
        open_deals=j.count(),
        late_deals=late.cast("int64").sum(),
        late_amount=ibis.cases((late, j.amount), else_=0).sum(),
    )
    frame = to_frame(agg, ctx.con).sort_values("segment").reset_index(drop=True)
    frame["late_amount"] = frame["late_amount"].astype(float)
    frame["late_share"] = frame["late_deals"] / frame["open_deals"]
    return frame


def operations_metrics(ctx: SectionContext, pipeline: pd.DataFrame, slip: pd.DataFrame) -> pd.DataFrame:
    """Long-format metrics of the operations section (period = the week, or whatever period the pack covers)."""
    rows = []
    for r in pipeline.itertuples(index=False):
        d = dims(channel=r.channel, origin=r.origin)
        rows += [
            {
                "metric": "new_pipeline_amount",
                "dimensions": d,
                "value": r.amount,
                "baseline": r.run_rate_amount,
                "unit": "money",
            },
            {
                "metric": "new_pipeline_deals",
                "dimensions": d,
                "value": r.deals,
                "baseline": r.run_rate_deals,
                "unit": "count",
            },
        ]
    if not pipeline.empty:
        rows.append(
            {
                "metric": "new_pipeline_amount",
                "dimensions": dims(),
                "value": pipeline["amount"].sum(),
                "baseline": pipeline["run_rate_amount"].sum(),
                "unit": "money",
            }
        )
    for r in slip.itertuples(index=False):
        d = dims(segment=r.segment)
        rows += [
            {"metric": "late_open_deals", "dimensions": d, "value": r.late_deals, "n": r.open_deals, "unit": "count"},
            {"metric": "late_open_amount", "dimensions": d, "value": r.late_amount, "unit": "money"},
        ]
    out = pd.DataFrame(rows)
    if out.empty:
        return normalise(out)
    out["section"] = SECTION
    out["period"] = ctx.period.label
    out["method"] = f"run_rate_{RUN_RATE_WEEKS}w"
    out.loc[out["metric"].str.startswith("late_"), "method"] = f"p{int(SLIP_PERCENTILE * 100)}_cycle_of_won_deals"
    return normalise(out)


def new_pipeline_chart(pipeline: pd.DataFrame):
    """Bars: new pipeline by source channel against its run rate."""
    from analysis.charts import new_figure

    fig, ax = new_figure(8, 3.2)
    data = pipeline.sort_values("amount", ascending=True)
    y = np.arange(len(data))
    ax.barh(y + 0.2, data["amount"] / 1e3, height=0.4, label="this period")
    ax.barh(
        y - 0.2, data["run_rate_amount"] / 1e3, height=0.4, label=f"run rate (prior {RUN_RATE_WEEKS} weeks)", alpha=0.6
    )
    ax.set_yticks(y, data["channel"])
    ax.set_xlabel("new pipeline ($k)")
    ax.set_title("New pipeline by source")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def pipeline_table(pipeline: pd.DataFrame) -> pd.DataFrame:
    """New pipeline by source for people: money in $k, change against the run rate in percent."""
    return pd.DataFrame(
        {
            "source": pipeline["channel"],
            "origin": pipeline["origin"],
            "deals": pipeline["deals"],
            "amount ($k)": (pipeline["amount"] / 1e3).round(1),
            "run-rate deals": pipeline["run_rate_deals"].round(1),
            "run-rate amount ($k)": (pipeline["run_rate_amount"] / 1e3).round(1),
            "vs run rate": [f"{v:+.0%}" if v == v else "n/a" for v in pipeline["vs_run_rate"]],
        }
    )
