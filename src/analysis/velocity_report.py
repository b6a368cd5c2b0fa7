"""Velocity as people read it: tables and charts of the velocity section's counts and metrics.

Computation (durations, Kaplan-Meier and cumulative incidence, metrics) lives in `analysis.velocity`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.handoff import PeriodWindows
from analysis.metrics import parse_dims
from analysis.velocity import ALL, CENSORED, EARLY_CLOSE_DAYS, LOST, WON, survival_function

# --------------------------------------------------------------------------------------------- tables and charts


def summary_table(metrics: pd.DataFrame, by: str = "segment") -> pd.DataFrame:
    """KM median days to close (with CI) beside the naive closed-only mean and the win incidence, per group."""
    m = metrics
    rows = []
    for r in m[m["metric"] == "days_to_close_median"].itertuples(index=False):
        d = parse_dims(r.dimensions)
        if list(d) not in ([by], []):
            continue
        g = d.get(by, ALL)

        def pick(metric: str, dd: str = r.dimensions) -> float:
            x = m[(m["metric"] == metric) & (m["dimensions"] == dd)]
            return float(x["value"].iloc[0]) if len(x) else np.nan

        rows.append(
            {
                by: g,
                "deals": int(r.n),
                "median days (KM)": r.value,
                "95% CI": ""
                if r.ci_low != r.ci_low
                else (f"{r.ci_low:.0f} to {r.ci_high:.0f}" if r.ci_high == r.ci_high else f"{r.ci_low:.0f} to ∞"),
                "mean days, closed only": pick("days_to_close_naive_mean_closed"),
                "won by 90 d": pick("win_cumulative_incidence_90d"),
                "won by 180 d": pick("win_cumulative_incidence_180d"),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_all"] = out[by] != ALL
    return out.sort_values(["_all", by], kind="mergesort").drop(columns="_all").reset_index(drop=True)


def early_close_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Tested cohort vs baseline cohorts: probability of closing within 14 days, change, log-rank p."""
    from analysis.handoff import tests_table

    out = tests_table(metrics, "early_close_rate_change", "segment")
    return out.rename(columns={"rate": f"closed within {EARLY_CLOSE_DAYS} d", "period": "cohort"})


def lead_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Median days from lead creation to opportunity (converted leads of mature cohorts), total and by segment."""
    m = metrics[metrics["metric"] == "lead_to_opportunity_days_median"]
    out = pd.DataFrame(
        {
            "segment": [parse_dims(d).get("segment", ALL) for d in m["dimensions"]],
            "median days": m["value"].to_numpy(),
            "converted leads": m["n"].to_numpy(),
            "rule": m["method"]
            .str.replace(r"^median_of_converted_within_(\d+)d$", r"converted within \1 days", regex=True)
            .to_numpy(),
        }
    )
    if out.empty:
        return out
    out["_all"] = out["segment"] != ALL
    return out.sort_values(["_all", "segment"], kind="mergesort").drop(columns="_all").reset_index(drop=True)


def aging_table(aging: pd.DataFrame) -> pd.DataFrame:
    """Per segment: the 75th-percentile threshold, open deals, aging deals and their pipeline."""
    return pd.DataFrame(
        {
            "segment": aging["segment"],
            "p75 days to close (KM)": aging["threshold_days"],
            "open deals": aging["open_deals"],
            "aging deals": aging["aging_deals"],
            "aging pipeline": aging["aging_amount"],
            "open pipeline": aging["open_amount"],
        }
    )


def stage_table(metrics: pd.DataFrame, stages: list[str] | None = None) -> pd.DataFrame:
    """Median days in each open stage (KM) by segment, one row per stage (in `stages` order when given)."""
    m = metrics[metrics["metric"] == "time_in_stage_median"].copy()
    if m.empty:
        return pd.DataFrame()
    m["d"] = m["dimensions"].map(parse_dims)
    m["stage"] = m["d"].map(lambda d: d["stage"])
    m["segment"] = m["d"].map(lambda d: d.get("segment", ALL))
    wide = m.pivot_table(index="stage", columns="segment", values="value", aggfunc="first", sort=False)
    cols = [ALL] + sorted(c for c in wide.columns if c != ALL)
    order = [s for s in (stages or []) if s in wide.index] + sorted(s for s in wide.index if s not in (stages or []))
    out = wide.reindex(index=order, columns=cols)
    out.columns.name = None
    return out.reset_index()


def _duration_figure(counts: pd.DataFrame, windows: PeriodWindows, by: str, ylabel: str):
    """(figure, axes, [(colour, group, counts)]) for per-group curves over the trailing months' cohorts."""
    import seaborn as sns

    from analysis.charts import new_figure

    trailing = counts[counts["cohort"].isin(windows.months)]
    fig, ax = new_figure(8, 3.4)
    colors = sns.color_palette()
    ax.set_xlabel("days since creation")
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    groups = [(colors[i % len(colors)], g, c) for i, (g, c) in enumerate(trailing.groupby(by, sort=True))]
    return fig, ax, groups


def km_chart(counts: pd.DataFrame, windows: PeriodWindows, by: str = "segment", max_days: int = 365):
    """Kaplan-Meier share of deals still open by days since creation, per group (trailing months' cohorts)."""
    fig, ax, groups = _duration_figure(counts, windows, by, "still open")
    for color, g, c in groups:
        sf = survival_function(c)
        if sf is None:
            continue
        x = np.concatenate([[0.0], sf.surv_times])
        y = np.concatenate([[1.0], sf.surv_prob])
        keep = x <= max_days
        ax.step(x[keep], y[keep], where="post", label=str(g), color=color)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_title("Time to close (Kaplan-Meier, open deals censored)")
    ax.legend(title="", fontsize=8)
    return fig


def cif_chart(counts: pd.DataFrame, windows: PeriodWindows, by: str = "segment", max_days: int = 365):
    """Cumulative incidence of win and of loss by days since creation (competing outcomes), per group."""
    fig, ax, groups = _duration_figure(counts, windows, by, "cumulative incidence")
    for color, g, c in groups:
        curve = _cif_curve(c)
        if curve.empty:
            continue
        curve = curve[curve["days"] <= max_days]
        ax.step(curve["days"], curve["won"], where="post", color=color, label=f"{g} won")
        ax.step(curve["days"], curve["lost"], where="post", color=color, ls="--", label=f"{g} lost")
    ax.set_title("Won (solid) and lost (dashed): Aalen-Johansen cumulative incidence")
    ax.legend(title="", fontsize=7, ncol=3)
    return fig


def _cif_curve(c: pd.DataFrame) -> pd.DataFrame:
    """Tie-exact Aalen-Johansen curves of win and loss on grouped counts (for drawing both outcomes at once)."""
    agg = c.pivot_table(index="days", columns="event", values="deals", aggfunc="sum", fill_value=0).sort_index()
    for ev in (CENSORED, WON, LOST):
        if ev not in agg.columns:
            agg[ev] = 0
    if agg[[WON, LOST]].to_numpy().sum() == 0:
        return pd.DataFrame(columns=["days", "won", "lost"])
    total = agg[[CENSORED, WON, LOST]].sum(axis=1).to_numpy(float)
    at_risk = total[::-1].cumsum()[::-1]
    events = (agg[WON] + agg[LOST]).to_numpy(float)
    surv = np.cumprod(1.0 - events / at_risk)
    lag = np.concatenate([[1.0], surv[:-1]])
    won = np.cumsum(lag * agg[WON].to_numpy(float) / at_risk)
    lost = np.cumsum(lag * agg[LOST].to_numpy(float) / at_risk)
    return pd.DataFrame({"days": agg.index.to_numpy(float), "won": won, "lost": lost})


def stage_chart(metrics: pd.DataFrame, stages: list[str] | None = None):
    """Bar chart: KM median days in each open stage by segment (stages in `stages` order when given)."""
    import seaborn as sns

    from analysis.charts import new_figure

    m = metrics[metrics["metric"] == "time_in_stage_median"].copy()
    fig, ax = new_figure(8, 3.2)
    m["d"] = m["dimensions"].map(parse_dims)
    m = m[m["d"].map(lambda d: "segment" in d).astype(bool)]
    if m.empty:
        ax.text(0.5, 0.5, "no stage history", ha="center", va="center", transform=ax.transAxes)
        return fig
    m["stage"] = m["d"].map(lambda d: d["stage"])
    m["segment"] = m["d"].map(lambda d: d["segment"])
    order = [s for s in (stages or []) if s in set(m["stage"])] + sorted(set(m["stage"]) - set(stages or []))
    sns.barplot(
        data=m, x="stage", y="value", hue="segment", order=order, hue_order=sorted(m["segment"].unique()), ax=ax
    )
    ax.set_xlabel("")
    ax.set_ylabel("median days in stage (KM)")
    ax.set_title("Time in stage")
    ax.legend(title="", fontsize=8)
    return fig
