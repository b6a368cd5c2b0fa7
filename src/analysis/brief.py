"""The executive brief: What moved, What caused it, What it means for plan, What marketing is doing.

Every sentence is generated from the assembled metrics table only (each number traceable to one row), in
the same order every period. A metric "moved" only when its test passes the pack's FDR (q < alpha) and the
change clears the minimum practical and relative effect in the definitions.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from analysis.config import Definitions
from analysis.formats import money, pct
from analysis.metrics import parse_dims
from analysis.stats import is_move

# Users' words for metric names; a metric without a label is shown by its name with spaces.
METRIC_LABELS = {
    "lead_to_mql_rate": "Lead→MQL conversion",
    "mql_to_sal_rate": "MQL→SAL acceptance",
    "sal_to_sql_rate": "SAL→SQL conversion",
    "mql_to_sql_rate": "MQL→SQL conversion",
    "sql_to_won_rate": "SQL→Won win rate",
    "sla_adherence": "SLA adherence (first touch in time)",
    "acceptance_within_48h": "MQL acceptance within 48 h",
    "rejection_reason_share": "share of rejections",
    "theme_share": "share of losses",
    "competitor_loss_share": "share of losses",
    "mql_aging_72h_share": "MQLs untouched beyond 72 h",
    "pipeline_coverage": "pipeline coverage",
    "forecast_accuracy": "forecast accuracy (actual ÷ committed)",
    "loop_closure_rate": "closed-lost loop closure",
    "days_to_close_median": "median days to close",
    "win_rate_with_marketing": "win rate with marketing touches",
}

SHARE_UNITS = {"share", "share_points"}

# How a move on a metric reads, with its dimensions filled in ({segment}, {reason} ...).
MOVE_PHRASES = {
    "rejection_reason_share": "“{reason}” share of MQL rejections",
    "theme_share": "{theme} share of losses",
    "competitor_loss_share": "share of losses to {competitor}",
    "sla_adherence": "{region} SLA adherence (first touch in time)",
    "early_close_rate": "{segment} share of deals closing within 14 days",
}

# Shares of one whole (reasons of a rejection, themes of a loss): when one rises the others fall with it.
COMPOSITIONS = {"rejection_reason_share", "theme_share", "competitor_loss_share"}

# Which pack section (notebook anchor) a metrics section is shown in.
SECTION_ANCHORS = {
    "data_quality": ("02-data-quality", "Data quality"),
    "funnel": ("03-funnel-conversion", "Funnel conversion trends"),
    "velocity": ("04-velocity", "Velocity"),
    "handoff": ("05-handoff-sla", "Handoff and SLA"),
    "closed_lost": ("06-closed-lost", "Closed-lost themes"),
    "attribution": ("07-attribution", "Attribution"),
    "plan": ("08-pipeline-plan", "Pipeline plan"),
    "operations": ("09-pipeline-operations", "Pipeline operations"),
}


def label(metric: str) -> str:
    """People's name for a metric (its '_change' suffix removed)."""
    base = metric.removesuffix("_change")
    return METRIC_LABELS.get(base, base.replace("_", " "))


def subject(metric: str, dimensions: str) -> str:
    """What moved, in users' words: 'Enterprise MQL→SQL conversion', '“budget not confirmed” share of ...'."""
    base = metric.removesuffix("_change")
    d = {k: str(v).replace("_", " ") for k, v in parse_dims(dimensions).items()}
    template = MOVE_PHRASES.get(base)
    if template:
        try:
            return _capital(template.format(**d).strip())
        except KeyError:
            pass
    return _capital(f"{scope(dimensions)} {label(metric)}".strip())


def scope(dimensions: str) -> str:
    """'Enterprise', 'EMEA', 'reason budget not confirmed' ... from a dimensions JSON ('' for the total)."""
    d = parse_dims(dimensions)
    parts = []
    for key, value in sorted(d.items()):
        text = str(value).replace("_", " ")
        parts.append(text if key in ("segment", "region", "origin") else f"{key.replace('_', ' ')} {text}")
    return ", ".join(parts)


def moves(metrics: pd.DataFrame, definitions: Definitions) -> pd.DataFrame:
    """The tested changes that moved (q < alpha and beyond the practical effect), largest money impact first.

    Within a composition (shares of one whole), a share that moved against the largest move of its metric and
    period is that move's mechanical counterpart: it is marked `offset_of` (the leader's dimensions) and shown
    under What caused it rather than as a move of its own.
    """
    s = definitions.stats
    tests = metrics[metrics["metric"].str.endswith("_change") & metrics["p_value"].notna()].copy()
    if tests.empty:
        return tests.assign(offset_of=pd.Series(dtype=str))
    moved = is_move(
        tests["q_value"].to_numpy(),
        tests["value"].to_numpy(),
        tests["baseline"].to_numpy(),
        alpha=float(s["alpha"]),
        min_practical_effect=float(s["min_practical_effect"]),
        min_relative_effect=float(s.get("min_relative_effect", 0.0)),
    )
    out = tests[moved].copy()
    out["offset_of"] = ""
    for (metric, _period), group in out.groupby(["metric", "period"], sort=True):
        if metric.removesuffix("_change") not in COMPOSITIONS or len(group) < 2:
            continue
        leader = group.iloc[group["value"].abs().argmax()]
        against = group.index[(group["value"] * leader["value"]) < 0]
        out.loc[against, "offset_of"] = leader["dimensions"]
    out["abs_impact"] = out["impact"].abs().fillna(-1.0)
    out = out.sort_values(
        ["abs_impact", "q_value", "section", "metric", "dimensions"],
        ascending=[False, True, True, True, True],
        kind="mergesort",
    )
    return out.drop(columns="abs_impact").reset_index(drop=True)


def headline_moves(moved: pd.DataFrame) -> pd.DataFrame:
    """The moves leadership reads: offsets of a composition left out (they appear as causes)."""
    return moved[moved["offset_of"] == ""] if "offset_of" in moved else moved


def _pts(x: float) -> str:
    return f"{x * 100:+.1f} pts".replace("-", "−")


def _q(q: float) -> str:
    return "q < 0.001" if q < 0.001 else f"q = {q:.3f}"


def move_sentence(row: pd.Series, baseline_months: int) -> str:
    """One plain-English sentence for a move, with the number, its interval and the comparison."""
    what = subject(row["metric"], row["dimensions"])
    change, base = float(row["value"]), float(row["baseline"])
    direction = "fell" if change < 0 else "rose"
    if row["unit"] in SHARE_UNITS:
        text = (
            f"{what} {direction} from {pct(base)} to {pct(base + change)} in {row['period']} "
            f"({_pts(change)}; 95% CI {_pts(row['ci_low']).removesuffix(' pts')} to {_pts(row['ci_high'])}; "
            f"{_q(row['q_value'])}; n = {int(row['n']):,})."
        )
    else:
        text = (
            f"{what} {direction} from {base:,.1f} to {base + change:,.1f} in {row['period']} "
            f"({change:+,.1f}; 95% CI {row['ci_low']:+,.1f} to {row['ci_high']:+,.1f}; {_q(row['q_value'])})."
        )
    if row["impact"] == row["impact"]:
        text += f" About {money(float(row['impact']))} of pipeline."
    return text


def cause_sentences(row: pd.Series, metrics: pd.DataFrame, moved: pd.DataFrame, definitions: Definitions) -> list[str]:
    """Evidence the sections found for one move: decomposition, the sub-stage, concentration, offsets, related moves."""
    out: list[str] = []
    base = row["metric"].removesuffix("_change")
    d = parse_dims(row["dimensions"])
    same_month = metrics[metrics["period"] == row["period"]]
    # Mix vs rate decomposition of a total (funnel).
    if not d:
        for by in ("segment", "origin"):
            cut = same_month[same_month["method"] == f"midpoint_decomposition_by_{by}"]
            totals = cut[cut["dimensions"] == "{}"]
            rate = cut[(cut["metric"] == f"{base}_rate_effect") & (cut["dimensions"] != "{}")]
            rate_total = totals[totals["metric"] == f"{base}_rate_effect"]
            mix_total = totals[totals["metric"] == f"{base}_mix_effect"]
            if rate.empty or rate_total.empty or mix_total.empty:
                continue
            top = rate.iloc[rate["value"].abs().argmax()]
            out.append(
                f"By {by}: rates within {by}s account for {_pts(rate_total['value'].iloc[0])}, mix shifts for "
                f"{_pts(mix_total['value'].iloc[0])}; the largest rate effect is {scope(top['dimensions'])} "
                f"({_pts(top['value'])})."
            )
    # Which hand-off carries a two-step move (MQL→SQL = MQL→SAL then SAL→SQL).
    if base == "mql_to_sql_rate":
        subs = []
        for sub in ("mql_to_sal_rate_change", "sal_to_sql_rate_change"):
            hit = moved[(moved["metric"] == sub) & (moved["dimensions"] == row["dimensions"])]
            if not hit.empty:
                subs.append(f"{label(sub)} ({_pts(hit.iloc[0]['value'])})")
        if subs:
            out.append(f"The drop sits in {' and '.join(subs)}: look at that hand-off first.")
        else:
            out.append("Neither hand-off (MQL→SAL, SAL→SQL) moved on its own: the change is spread across both.")
    # Concentration: did the same metric move for the other values of this dimension?
    if len(d) == 1:
        ((key, value),) = d.items()
        peers = metrics[
            (metrics["metric"] == row["metric"])
            & (metrics["period"] == row["period"])
            & (metrics["section"] == row["section"])
        ]
        peers = peers[[parse_dims(x).keys() == {key} and parse_dims(x)[key] != value for x in peers["dimensions"]]]
        peers = peers[peers["p_value"].notna()]
        if not peers.empty:
            others_moved = moved[
                (moved["metric"] == row["metric"])
                & (moved["period"] == row["period"])
                & (moved["dimensions"].isin(peers["dimensions"]))
                & (moved["offset_of"] == "")
            ]
            listed = ", ".join(
                f"{scope(p.dimensions)} {_pts(p.value)}" for p in peers.itertuples() if p.unit in SHARE_UNITS
            )
            if others_moved.empty and base not in COMPOSITIONS and listed:
                out.append(f"Concentrated in {scope(row['dimensions'])}: no other {key} moved ({listed}).")
    # Offsets of a composition: the shares that fell because this one rose.
    offsets = moved[
        (moved["metric"] == row["metric"])
        & (moved["period"] == row["period"])
        & (moved["offset_of"] == row["dimensions"])
    ]
    if not offsets.empty:
        listed = ", ".join(f"{scope(o.dimensions)} {_pts(o.value)}" for o in offsets.itertuples())
        out.append(f"A composition shift: the rise came at the expense of {listed}.")
    # Moves in the same section and period on another measure (e.g. a theme and a competitor rising together).
    if row["section"] != "funnel":
        along = moved[
            (moved["section"] == row["section"])
            & (moved["period"] == row["period"])
            & (moved["metric"] != row["metric"])
            & (moved["offset_of"] == "")
        ]
        for a in along.itertuples(index=False):
            out.append(f"Moving with it: {subject(a.metric, a.dimensions)} ({_pts(a.value)}).")
    # Related moves elsewhere in the pack for the same scope and period.
    related = moved[(moved["section"] != row["section"]) & (moved["period"] == row["period"])]
    for r in related.itertuples(index=False):
        rd = parse_dims(r.dimensions)
        if set(rd.items()) & set(d.items()):
            out.append(f"Also in {r.period}: {subject(r.metric, r.dimensions)} moved {_pts(r.value)}.")
    return out


def section_link(section: str) -> str:
    """An HTML link to the pack section that shows a metrics section ('' when unknown)."""
    anchor, title = SECTION_ANCHORS.get(section, ("", ""))
    return f' <a class="kit-see" href="#{anchor}">see {html.escape(title)}</a>' if anchor else ""


def marketing_actions(path: str | Path) -> tuple[str, bool]:
    """(the analyst's 'What marketing is doing' markdown, True) or (a visible placeholder, False)."""
    p = Path(path)
    if p.exists() and p.read_text(encoding="utf-8").strip():
        return p.read_text(encoding="utf-8"), True
    return (
        f"Not provided: write data/raw/actions/{p.stem}.md (what marketing changed and plans) before the run.",
        False,
    )


SCORECARD_COLUMNS = ["measure", "value", "previous", "trend", "threshold", "status", "period"]


def scorecard(metrics: pd.DataFrame, definitions: Definitions, period_months: list[str]) -> pd.DataFrame:
    """The alignment scorecard: each measure's latest value and the one before, against its governed threshold."""
    thresholds = definitions["scorecard"]["thresholds"]
    rows = []
    for key, rule in thresholds.items():
        m = metrics[(metrics["metric"] == key) & (metrics["dimensions"] == "{}") & (metrics["flag"] == "")]
        m = m[m["period"].str.match(r"^\d{4}-\d{2}$")]  # monthly values: comparable across cadences
        if period_months:
            m = m[m["period"] <= max(period_months)]
        m = m.drop_duplicates("period", keep="first").sort_values("period")
        shown = (lambda v: f"{v:.2f}x") if rule.get("unit") == "x" else pct
        if m.empty:
            rows.append(
                {
                    "measure": _capital(label(key)),
                    "value": "not measured",
                    "previous": "",
                    "trend": "",
                    "threshold": _threshold_text(rule),
                    "status": "n/a",
                    "period": "",
                }
            )
            continue
        latest = m.iloc[-1]
        value = float(latest["value"])
        previous = float(m.iloc[-2]["value"]) if len(m) > 1 else float("nan")
        trend = "" if previous != previous else ("▲" if value > previous else "▼" if value < previous else "=")
        rows.append(
            {
                "measure": _capital(label(key)),
                "value": shown(value),
                "previous": "" if previous != previous else shown(previous),
                "trend": trend,
                "threshold": _threshold_text(rule),
                "status": "on track" if _meets(value, rule) else "off track",
                "period": latest["period"],
            }
        )
    return pd.DataFrame(rows, columns=SCORECARD_COLUMNS)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _meets(value: float, rule: dict) -> bool:
    if "min" in rule:
        return value >= float(rule["min"])
    if "band" in rule:
        return abs(value - 1.0) <= float(rule["band"])
    return True


def _threshold_text(rule: dict) -> str:
    if "min" in rule:
        return f"≥ {rule['min']:.2f}x" if rule.get("unit") == "x" else f"≥ {pct(float(rule['min']))}"
    if "band" in rule:
        return f"within ±{pct(float(rule['band']))}"
    return ""


def plan_sentences(metrics: pd.DataFrame, period: str, definitions: Definitions | None = None) -> list[str]:
    """What the period means for plan, from the pipeline-plan section's metrics (empty when absent)."""
    thresholds = definitions["scorecard"]["thresholds"] if definitions is not None else {}
    band = float(thresholds.get("forecast_accuracy", {}).get("band", 0.10))
    cover_min = thresholds.get("pipeline_coverage", {}).get("min")
    out = []
    plan = metrics[metrics["section"] == "plan"]
    gap = plan[(plan["metric"] == "pipeline_gap") & (plan["dimensions"] == "{}")]
    if not gap.empty:
        g = gap.sort_values("period").iloc[-1]
        text = (
            f"Pipeline created is {money(abs(g['value']))} {'short of' if g['value'] < 0 else 'ahead of'} "
            f"what the contribution model needs for {g['period']}."
        )
        by_origin = plan[
            (plan["metric"] == "pipeline_gap") & (plan["period"] == g["period"]) & (plan["dimensions"] != "{}")
        ]
        if not by_origin.empty:
            listed = ", ".join(f"{scope(o.dimensions)} {money(o.value)}" for o in by_origin.itertuples())
            text += f" By origin: {listed}."
        out.append(text)
    cov = plan[(plan["metric"] == "pipeline_coverage") & (plan["dimensions"] == "{}")]
    if not cov.empty:
        c = cov.sort_values("period").iloc[-1]
        text = f"Coverage is {c['value']:.2f}x open pipeline to quota ({c['period']})"
        if cover_min is not None:
            text += (
                f", {'below' if c['value'] < float(cover_min) else 'at or above'} the {float(cover_min):.2f}x threshold"
            )
        out.append(text + ".")
    acc = plan[(plan["metric"] == "forecast_accuracy") & (plan["dimensions"] == "{}")]
    if not acc.empty:
        a = acc.sort_values("period").iloc[-1]
        inside = abs(a["value"] - 1) <= band + 1e-9
        out.append(
            f"Forecast accuracy {a['value']:.0%} of committed ({a['period']}): "
            f"{'inside' if inside else 'outside'} the ±{band:.0%} band."
        )
    return out


def brief_html(
    metrics: pd.DataFrame,
    definitions: Definitions,
    period_label: str,
    period_months: list[str],
    actions_path: str | Path,
) -> str:
    """The brief as escaped HTML: four parts in fixed order plus the alignment scorecard."""
    from analysis.display import table_html  # local: keeps this module importable without IPython

    k = int(definitions.stats["baseline_months"])
    moved = moves(metrics, definitions)
    e = html.escape
    parts = ['<div class="kit-brief">']
    parts.append("<h2>What moved</h2>")
    headline = headline_moves(moved)
    if headline.empty:
        parts.append(
            "<p>Nothing moved beyond noise: no tested change passed the false-discovery control "
            f"(q &lt; {definitions.stats['alpha']}) and the minimum practical effect.</p>"
        )
    else:
        n_tests = int(metrics["p_value"].notna().sum())
        parts.append(
            f'<p class="kit-lede">Each change is against the previous {k} months pooled; q is the p-value adjusted '
            f"for false discoveries across all {n_tests} tests in this pack.</p>"
        )
        parts.append("<ul>")
        for _, r in headline.iterrows():
            cls = "kit-moved-down" if r["value"] < 0 else "kit-moved-up"
            parts.append(
                f'<li><span class="{cls}">{"▼" if r["value"] < 0 else "▲"}</span> {e(move_sentence(r, k))}</li>'
            )
        parts.append("</ul>")
    parts.append("<h2>What caused it</h2>")
    causes = []
    for _, r in headline.iterrows():
        found = cause_sentences(r, metrics, moved, definitions)
        if found:
            causes.append(
                f"<li><b>{e(subject(r['metric'], r['dimensions']))}:</b> {e(' '.join(found))}"
                f"{section_link(r['section'])}</li>"
            )
    parts.append("<ul>" + "".join(causes) + "</ul>" if causes else "<p>No moves to explain this period.</p>")
    parts.append('<div class="kit-brief-grid"><div>')
    parts.append("<h2>What it means for plan</h2>")
    plan = plan_sentences(metrics, period_label, definitions)
    parts.append(
        "<ul>" + "".join(f"<li>{e(s)}</li>" for s in plan) + "</ul>"
        if plan
        else "<p>No pipeline plan in this pack (targets not provided or plan section not in this cadence).</p>"
    )
    parts.append("</div><div>")
    parts.append("<h2>What marketing is doing</h2>")
    text, provided = marketing_actions(actions_path)
    if provided:
        from analysis.display import markdown_html
        from analysis.privacy import mask_personal_data

        # Analyst text is rendered as markdown: formatting yes, markup, script links and fetched images no; an
        # e-mail address or phone number pasted in (a contact's, say) is masked like anywhere else in the pack.
        # The section already has its heading: the analyst's own top heading is dropped, the rest kept.
        body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
        parts.append(f'<div class="kit-actions">{markdown_html(mask_personal_data(body))}</div>')
    else:
        parts.append(f'<div class="kit-warning">{e(text)}</div>')
    parts.append("</div></div>")
    parts.append("<h2>Alignment scorecard</h2>")
    card = table_html(scorecard(metrics, definitions, period_months))
    card = card.replace('class="dataframe kit-table"', 'class="dataframe kit-table kit-scorecard"')
    card = card.replace("<td>on track</td>", '<td class="kit-ok">on track</td>')
    parts.append(card.replace("<td>off track</td>", '<td class="kit-off">off track</td>'))
    parts.append("</div>")
    return "\n".join(parts)


def moves_table(moved: pd.DataFrame) -> pd.DataFrame:
    """The moves as a compact table (formatted for people) below the brief."""
    cols = ["section", "metric", "scope", "period", "change", "95% CI", "q-value", "impact"]
    if moved.empty:
        return pd.DataFrame(columns=cols)
    shares = moved["unit"].isin(SHARE_UNITS)
    return pd.DataFrame(
        {
            "section": moved["section"],
            "metric": [label(m) for m in moved["metric"]],
            "scope": [scope(d) or "All" for d in moved["dimensions"]],
            "period": moved["period"],
            "change": [_pts(v) if s else f"{v:+,.2f}" for v, s in zip(moved["value"], shares, strict=True)],
            "95% CI": [
                f"{_pts(lo)} to {_pts(hi)}" if s else f"{lo:+,.2f} to {hi:+,.2f}"
                for lo, hi, s in zip(moved["ci_low"], moved["ci_high"], shares, strict=True)
            ],
            "q-value": [_q(q) for q in moved["q_value"]],
            "impact": [money(float(v)) for v in moved["impact"]],
        },
        columns=cols,
    )
