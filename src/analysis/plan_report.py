"""The pipeline plan as people read it: tables, summary sentences and charts of a `plan.PlanResult`.

Computation lives in `analysis.plan`; this module only formats what it returns.
"""

from __future__ import annotations

import pandas as pd

from analysis.formats import money, pct
from analysis.plan import ALL, PlanResult

# ------------------------------------------------------------------------------------------------ tables


def money_m(x: float) -> str:
    """Plan tables' money: millions to two decimals, blank when missing."""
    return money(x, millions_digits=2, missing="")


def performance_table(result: PlanResult) -> pd.DataFrame:
    """Per origin over the trailing four quarters: closed deals, win rate with interval, deal size, cycle, split."""
    p = result.performance.merge(result.split, on="origin", how="left")
    return pd.DataFrame(
        {
            "origin": p["origin"],
            "closed deals": p["closed"],
            "won": p["won"],
            "win rate": [pct(v) for v in p["win_rate"]],
            "95% CI": [
                f"{pct(lo)} – {pct(hi)}" if lo == lo else "" for lo, hi in zip(p["ci_low"], p["ci_high"], strict=True)
            ],
            "avg deal size (won)": [money_m(v) for v in p["avg_deal_size"]],
            "median cycle, closed deals (days)": p["cycle_days_median"].round(1),
            "revenue split": [pct(v) for v in p["share"]],
            "note": ["below minimum cell size" if f == "small_cell" else "" for f in p["flag"]],
        }
    )


def model_table(result: PlanResult) -> pd.DataFrame:
    """The contribution model per period and origin: target share, win rate, needed, created, gap."""
    m = result.model
    return pd.DataFrame(
        {
            "period": [
                f"{p} (next quarter)" if k == "next_quarter" else p for p, k in zip(m["period"], m["kind"], strict=True)
            ],
            "origin": m["origin"],
            "revenue target": [money_m(v) for v in m["revenue_target"]],
            "split": [pct(v) for v in m["split"]],
            "win rate": [pct(v) for v in m["win_rate"]],
            "pipeline needed": [money_m(v) for v in m["pipeline_needed"]],
            "pipeline created": [money_m(v) for v in m["pipeline_created"]],
            "deals created": m["deals_created"],
            "gap (created − needed)": [money_m(v) for v in m["pipeline_gap"]],
            "note": m["flag"].map(_FLAG_TEXT).fillna(""),
        }
    )


_FLAG_TEXT = {
    "": "",
    "incomplete": "period not over at the as-of date",
    "no_target": "no revenue target",
    "partial_target": "targets missing for part of the period",
    "no_win_rate": "no closed deals for this origin in the trailing window",
    "unknown_origin": "origin unknown: in totals only",
    "no_quota": "targets do not cover the window",
    "small_cell": "below minimum cell size",
}


def coverage_table(result: PlanResult) -> pd.DataFrame:
    """Coverage at each month-end snapshot: segments as columns, plus the latest snapshot's detail."""
    c = result.coverage
    if result.period.cadence == "quarterly":
        c = c[c["period"] != result.period.label]
    if c.empty:
        return pd.DataFrame()
    wide = c.pivot(index="period", columns="segment", values="coverage")
    order = [s for s in c["segment"].drop_duplicates() if s in wide.columns]
    wide = wide[order].reset_index().rename(columns={"period": "month end"})
    wide.columns.name = None
    return wide


def coverage_detail_table(result: PlanResult) -> pd.DataFrame:
    """The latest snapshot by segment: open pipeline, remaining quota, coverage against the threshold."""
    c = result.coverage
    if c.empty:
        return pd.DataFrame()
    latest = c[c["period"] == result.period.months[-1]]
    return pd.DataFrame(
        {
            "segment": latest["segment"],
            "snapshot": [t.strftime("%Y-%m-%d %H:%M UTC") for t in latest["snapshot"]],
            "open deals counted": latest["open_deals"],
            "open pipeline": [money_m(v) for v in latest["open_pipeline"]],
            f"quota next {result.settings.coverage_window_days} days": [money_m(v) for v in latest["remaining_quota"]],
            "coverage": [("" if v != v else f"{v:.2f}x") for v in latest["coverage"]],
            "status": [
                ""
                if v != v
                else ("meets" if v >= result.settings.coverage_min else "below")
                + f" {result.settings.coverage_min:.1f}x"
                for v in latest["coverage"]
            ],
        }
    )


def accuracy_table(result: PlanResult) -> pd.DataFrame:
    """Forecast accuracy by month (and quarter) and segment, with the band status."""
    a = result.accuracy
    if a.empty:
        return pd.DataFrame()
    band = result.settings.forecast_band
    return pd.DataFrame(
        {
            "period": a["period"],
            "segment": a["segment"],
            "committed forecast": [money_m(v) for v in a["forecast"]],
            "actual won": [money_m(v) for v in a["actual"]],
            "actual ÷ forecast": [pct(v) for v in a["accuracy"]],
            f"within ±{band:.0%}": [
                "" if v != v else ("no" if o else "yes") for v, o in zip(a["accuracy"], a["outside_band"], strict=True)
            ],
            "note": a["flag"].map(_FLAG_TEXT).fillna(""),
        }
    )


def outside_band(result: PlanResult) -> pd.DataFrame:
    """The (period, segment) cells whose accuracy fell outside the band (complete months and quarters)."""
    a = result.accuracy
    if a.empty:
        return a
    return a[a["outside_band"] & (a["flag"] == "")].reset_index(drop=True)


def summary_sentences(result: PlanResult) -> list[str]:
    """Plain sentences for the section's opening: gap, coverage, forecast band, each from the computed frames."""
    out = []
    m = result.model
    head = m[(m["period"] == result.headline) & (m["origin"] == ALL)]
    if not head.empty and head["pipeline_gap"].iloc[0] == head["pipeline_gap"].iloc[0]:
        g = float(head["pipeline_gap"].iloc[0])
        out.append(
            f"{result.headline}: {money_m(float(head['pipeline_created'].iloc[0]))} of pipeline created against "
            f"{money_m(float(head['pipeline_needed'].iloc[0]))} needed by the contribution model — "
            f"{money_m(abs(g))} {'short' if g < 0 else 'ahead'}."
        )
    c = result.coverage
    latest = c[(c["period"] == result.period.months[-1]) & (c["segment"] == ALL)]
    if not latest.empty and latest["coverage"].iloc[0] == latest["coverage"].iloc[0]:
        v = float(latest["coverage"].iloc[0])
        out.append(
            f"Coverage {v:.2f}x at {latest['snapshot'].iloc[0]:%Y-%m-%d} "
            f"({'meets' if v >= result.settings.coverage_min else 'below'} the {result.settings.coverage_min:.1f}x "
            "threshold)."
        )
    bad = outside_band(result)
    bad = bad[bad["kind"] == "month"]
    if not result.accuracy.empty:
        if bad.empty:
            out.append(f"Every complete month's forecast landed within ±{result.settings.forecast_band:.0%}.")
        else:
            cells = ", ".join(f"{r.period} {r.segment}" for r in bad.itertuples())
            out.append(f"Forecast outside ±{result.settings.forecast_band:.0%}: {cells}.")
    return out


# ------------------------------------------------------------------------------------------------ charts


def needed_vs_created_chart(result: PlanResult):
    """Bars per origin: pipeline needed vs created in the headline period (and next quarter's need, quarterly)."""
    import seaborn as sns

    from analysis.charts import new_figure

    m = result.model
    origins = list(result.settings.origins)
    cur = m[(m["period"] == result.headline) & m["origin"].isin(origins)]
    parts = [
        pd.DataFrame(
            {"origin": cur["origin"], "measure": f"needed {result.headline}", "value": cur["pipeline_needed"]}
        ),
        pd.DataFrame(
            {"origin": cur["origin"], "measure": f"created {result.headline}", "value": cur["pipeline_created"]}
        ),
    ]
    nxt = m[(m["kind"] == "next_quarter") & m["origin"].isin(origins)]
    if not nxt.empty:
        parts.append(
            pd.DataFrame(
                {
                    "origin": nxt["origin"],
                    "measure": f"needed {nxt['period'].iloc[0]} (next)",
                    "value": nxt["pipeline_needed"],
                }
            )
        )
    data = pd.concat(parts, ignore_index=True)
    data["value"] = data["value"] / 1e6
    fig, ax = new_figure(8, 3.4)
    sns.barplot(data=data, x="origin", y="value", hue="measure", order=origins, ax=ax, errorbar=None)
    ax.set_title(f"Pipeline needed vs created by origin, {result.headline}")
    ax.set_xlabel("")
    ax.set_ylabel("pipeline ($M)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return fig


def _segment_lines(ax, data: pd.DataFrame, y: str) -> None:
    """Segments as seaborn lines (one colour and marker each) and the total as a thicker dark line."""
    import seaborn as sns

    segs = data[data["segment"] != ALL]
    if not segs.empty:
        order = list(dict.fromkeys(segs["segment"]))
        sns.lineplot(
            data=segs,
            x="month",
            y=y,
            hue="segment",
            hue_order=order,
            style="segment",
            style_order=order,
            markers=True,
            dashes=False,
            ax=ax,
        )
    total = data[data["segment"] == ALL].sort_values("month")
    if not total.empty:
        ax.plot(total["month"], total[y], color="#1f2937", lw=2.4, marker="o", ms=4, label="All segments")


def _legend_below(ax) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncols=8, frameon=False)


def coverage_chart(result: PlanResult):
    """Lines: coverage by segment (and total) at month-end snapshots, with the governed minimum as a dashed line."""
    from analysis.charts import new_figure

    c = result.coverage
    if result.period.cadence == "quarterly":
        c = c[c["period"] != result.period.label]
    c = c.dropna(subset=["coverage"])
    fig, ax = new_figure(8, 3.6)
    if not c.empty:
        _segment_lines(ax, c.assign(month=pd.PeriodIndex(c["period"], freq="M").to_timestamp()), "coverage")
    ax.axhline(
        result.settings.coverage_min,
        ls="--",
        color="#c0392b",
        lw=1.2,
        label=f"threshold {result.settings.coverage_min:.1f}x",
    )
    ax.set_title(f"Pipeline coverage: open pipeline ÷ next {result.settings.coverage_window_days} days' quota")
    ax.set_xlabel("")
    ax.set_ylabel("coverage (x)")
    ax.xaxis.set_major_formatter(lambda v, _: f"{pd.Timestamp(matplotlib_date(v)):%Y-%m}")
    _legend_below(ax)
    return fig


def matplotlib_date(value: float):
    """A matplotlib date number as a datetime (for tick labels)."""
    import matplotlib.dates as mdates

    return mdates.num2date(value).replace(tzinfo=None)


def accuracy_chart(result: PlanResult):
    """Forecast accuracy (actual ÷ committed) by month, total and segments, with the ± band shaded."""
    from analysis.charts import new_figure

    a = result.accuracy
    a = a[a["kind"] == "month"].dropna(subset=["accuracy"])
    band = result.settings.forecast_band
    fig, ax = new_figure(8, 3.6)
    ax.axhspan(1 - band, 1 + band, color="#2e86de", alpha=0.12, label=f"±{band:.0%} band")
    ax.axhline(1.0, color="#5b6475", lw=0.8)
    if not a.empty:
        data = a.assign(month=pd.PeriodIndex(a["period"], freq="M").to_timestamp())
        done = data[data["flag"] == ""]
        _segment_lines(ax, done, "accuracy")
        out = done[done["outside_band"]]
        if not out.empty:
            ax.scatter(
                out["month"],
                out["accuracy"],
                s=90,
                facecolors="none",
                edgecolors="#c0392b",
                linewidths=1.6,
                label="outside band",
                zorder=5,
            )
        open_ = data[data["flag"] != ""]
        if not open_.empty:
            ax.scatter(
                open_["month"],
                open_["accuracy"],
                s=30,
                marker="x",
                color="#5b6475",
                label="month not over",
                zorder=4,
            )
    ax.set_title("Forecast accuracy: actual closed-won ÷ committed forecast")
    ax.set_xlabel("")
    ax.set_ylabel("actual ÷ forecast")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.xaxis.set_major_formatter(lambda v, _: f"{pd.Timestamp(matplotlib_date(v)):%Y-%m}")
    _legend_below(ax)
    return fig
