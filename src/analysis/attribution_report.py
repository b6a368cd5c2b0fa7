"""Attribution as people read it: the chosen model's sentence, display tables and charts of an AttributionReport.

The journeys, models, reconciliation and metrics live in `analysis.attribution`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.attribution import BASES, MODEL_ORDER, AttributionReport, marketing_contribution
from analysis.charts import new_figure
from analysis.formats import pct

# ----------------------------------------------------------------------------------------- display tables


def credit_share_table(credits: pd.DataFrame, basis: str) -> pd.DataFrame:
    """Channels x models, credit shares of the basis (a wide table for display)."""
    c = credits[credits["basis"] == basis]
    wide = c.pivot(index="channel", columns="model", values="credit_share")
    cols = [m for m in MODEL_ORDER if m in wide.columns] + sorted(set(wide.columns) - set(MODEL_ORDER))
    return wide[cols].reset_index().rename_axis(columns=None)


def chosen_model_table(report: AttributionReport) -> pd.DataFrame:
    """The definitions' chosen model, per basis and channel, with its origin."""
    m = report.settings.chosen_model
    c = report.credits[report.credits["model"] == m].copy()
    c["origin"] = c["channel"].map(lambda ch: report.settings.origin_by_channel.get(ch, "unknown"))
    wide = c.pivot(index=["channel", "origin"], columns="basis", values="credit_value").reset_index()
    return wide.rename_axis(columns=None).sort_values("channel").reset_index(drop=True)


def _money(x: float) -> str:
    return f"{x:,.0f}"


def headline(report: AttributionReport) -> str:
    """The one number the definitions choose, in a sentence per basis."""
    m = report.settings.chosen_model
    contrib = marketing_contribution(report)
    parts = []
    for basis, what in (("pipeline", "pipeline created"), ("revenue", "revenue won")):
        total = report.coverage[basis]["value_cents_attributed"] / 100.0
        if total:
            parts.append(f"{_money(contrib[basis])} of {_money(total)} {what} ({pct(contrib[basis] / total)})")
    if not parts:
        return "No conversions with touches in the period: nothing to attribute."
    return (f"Under the governed model ({m.replace('_', '-')}, definitions attribution.chosen_model), marketing "
            f"channels earn {' and '.join(parts)} in {report.period}.")


def display_chosen(report: AttributionReport) -> pd.DataFrame:
    """The chosen model's credit per channel and basis, with shares (for display)."""
    t = chosen_model_table(report)
    out = pd.DataFrame({"channel": t["channel"], "origin": t["origin"]})
    for basis in BASES:
        if basis in t:
            total = t[basis].sum()
            out[f"{basis} credit"] = t[basis].map(_money)
            out[f"{basis} share"] = (t[basis] / total if total else t[basis] * np.nan).map(pct)
    return out


def display_two_truth(two_truth: pd.DataFrame) -> pd.DataFrame:
    t = two_truth
    return pd.DataFrame({
        "channel": t["channel"],
        "platform first touch": t["first_touch_share"].map(pct),
        "CRM last touch": t["last_touch_share"].map(pct),
        "gap (pts)": (t["share_gap"] * 100).map(lambda v: f"{v:+.1f}"),
        "first-touch pipeline": t["first_touch_value"].map(_money),
        "last-touch pipeline": t["last_touch_value"].map(_money),
        "gap (money)": t["value_gap"].map(lambda v: f"{v:+,.0f}"),
    })


def two_truth_text(two_truth: pd.DataFrame) -> str:
    if two_truth.empty:
        return ""
    top = two_truth.iloc[0]
    side = "first touch (the marketing platform)" if top["share_gap"] > 0 else "last touch (the CRM)"
    return (f"The two truths disagree most on {top['channel']}: {side} gives it "
            f"{abs(top['share_gap']) * 100:.1f} points more of the opportunities "
            f"({pct(top['first_touch_share'])} first touch vs {pct(top['last_touch_share'])} last touch, "
            f"{top['value_gap']:+,.0f} of pipeline).")


def display_roles(roles: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"pipeline by marketing role": roles["label"], "opportunities": roles["opportunities"],
                        "pipeline": roles["value"].map(_money), "share": roles["share"].map(pct)})
    total = pd.DataFrame({"pipeline by marketing role": ["Total pipeline created in the period"],
                          "opportunities": [int(roles["opportunities"].sum())],
                          "pipeline": [_money(roles["value"].sum())], "share": [pct(1.0)]})
    return pd.concat([out, total], ignore_index=True)


def display_won_rates(rates: pd.DataFrame) -> pd.DataFrame:
    r = rates

    def ci(lo, hi):
        return [("" if a != a else f"{a * 100:.1f}–{b * 100:.1f}%") for a, b in zip(lo, hi, strict=True)]

    return pd.DataFrame({
        "segment": r["segment"],
        "with marketing": [f"{w}/{n} = {pct(x)}" for w, n, x in zip(r["won_with"], r["deals_with"], r["rate_with"],
                                                                        strict=True)],
        "95% CI": ci(r["with_low"], r["with_high"]),
        "without": [f"{w}/{n} = {pct(x)}" for w, n, x in zip(r["won_without"], r["deals_without"],
                                                              r["rate_without"], strict=True)],
        "95% CI ": ci(r["without_low"], r["without_high"]),
        "difference": [("" if d != d else f"{d * 100:+.1f} pts") for d in r["difference"]],
        "95% CI (Newcombe)": [("" if a != a else f"{a * 100:+.1f} to {b * 100:+.1f} pts")
                              for a, b in zip(r["diff_low"], r["diff_high"], strict=True)],
        "p-value": [("" if p != p else f"{p:.3f}") for p in r["p_value"]],
        "test": r["test"],
    })


def method_text(report: AttributionReport) -> str:
    st = report.settings
    return (
        f"Journeys: touches linked to the opportunity (directly or through its lead) from {st.lookback_days} days "
        "before the opportunity was created up to the conversion event: creation for pipeline, the close for "
        "won revenue; touches after the event or after the as-of instant are left out. Non-converting journeys "
        "(MQLs of the period without an opportunity; deals lost in the period) feed the Markov chain. Position "
        "weights come from the definitions; time decay halves every "
        f"{st.half_life_days:g} days; Markov removal effects (order {st.markov_order}) are solved exactly; "
        "Shapley values are exact (Zhao et al. 2018). Every model's credits add up to the credited total to the "
        f"cent. Won rates use deals closed in the {st.trailing_months} months to the end of the period."
    )


# ----------------------------------------------------------------------------------------- charts


def heatmap_chart(credits: pd.DataFrame, basis: str, title: str | None = None):
    """Model x channel heat map of credit shares for one basis."""
    import seaborn as sns

    c = credits[credits["basis"] == basis]
    if c.empty:
        return _empty_chart(title or f"Credit share by model and channel ({basis})", "No credited conversions.")
    wide = c.pivot(index="model", columns="channel", values="credit_share")
    wide = wide.reindex([m for m in MODEL_ORDER if m in wide.index] + sorted(set(wide.index) - set(MODEL_ORDER)))
    fig, ax = new_figure(9, 0.42 * len(wide) + 1.8)
    sns.heatmap(wide * 100, annot=True, fmt=".0f", cmap="Blues", cbar_kws={"label": "% of credit"}, ax=ax,
                linewidths=0.5)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title or f"Credit share by model and channel ({basis}), %")
    ax.tick_params(axis="x", rotation=35)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    return fig


def gap_chart(two_truth: pd.DataFrame, title: str | None = None):
    """Bars of first-touch minus last-touch share per channel (largest |gap| on top)."""
    import seaborn as sns

    if two_truth.empty:
        return _empty_chart(title or "Two truths: platform first touch vs CRM last touch", "No credited pipeline.")
    t = two_truth.copy()
    t["gap_pts"] = t["share_gap"] * 100
    t["direction"] = np.where(t["share_gap"] >= 0, "first touch higher", "last touch higher")
    fig, ax = new_figure(8, 0.32 * len(t) + 1.4)
    sns.barplot(data=t, y="channel", x="gap_pts", hue="direction", dodge=False, ax=ax,
                hue_order=["first touch higher", "last touch higher"])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("first-touch share minus last-touch share (percentage points)")
    ax.set_ylabel("")
    ax.set_title(title or "Two truths: platform first touch vs CRM last touch (pipeline)")
    ax.legend(loc="lower right", frameon=False)
    return fig


def _empty_chart(title: str, message: str):
    fig, ax = new_figure(8, 1.6)
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    return fig
