"""Closed-lost themes: each loss themed by its reason code, else its note's keywords, else 'unthemed'.

The taxonomy is governed (definitions `closed_lost_themes`): per theme, reason codes and note keywords. The rule is
applied in the engine: a code listed under a theme gives that theme (`themed_by` = code); otherwise the first theme,
in the definitions' order, with a keyword found in the note as a whole word (case-insensitive) gives it
(`themed_by` = note); otherwise 'unthemed' (`themed_by` = none; an unknown code is listed in a note). Losses are
counted by the month they closed (flow); only counts per (month, theme, segment, origin, competitor, owner team)
reach pandas. Theme and competitor shares of the tested period are compared with the pooled trailing baseline;
loop closure follows the definitions' rule (a reason code and a competitor or a note).

Notes are CRM free text. Only unthemed notes leave the engine, grouped by text, for topic suggestions (TF-IDF +
NMF, fixed seed): they are masked (`analysis.privacy`), stripped of markup, and shown only as top terms and a short
masked excerpt, which the display helpers escape.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import ibis
import numpy as np
import pandas as pd

from analysis.engine import to_frame
from analysis.handoff import PeriodWindows, change_row, draw_rate_lines, period_windows, rate_rows
from analysis.metrics import dims, normalise, parse_dims
from analysis.privacy import EMAIL_MASK, NAME_MASK, PHONE_MASK, mask_names, mask_personal_data, safe_excerpt

SECTION = "closed_lost"
UNTHEMED = "unthemed"
NO_COMPETITOR = "none"
ALL = "All"
KEYS = ["month", "theme", "themed_by", "segment", "origin", "competitor", "owner_team", "code_known"]


@dataclass(frozen=True)
class Taxonomy:
    """Themes in precedence order with their reason codes and note keywords (lower case)."""

    themes: tuple[str, ...]
    codes: dict[str, tuple[str, ...]]
    keywords: dict[str, tuple[str, ...]]
    loop_closure_rule: str = ""

    @property
    def all_codes(self) -> tuple[str, ...]:
        """Every reason code the taxonomy knows."""
        return tuple(c for t in self.themes for c in self.codes[t])


def taxonomy_from_definitions(definitions: Any) -> Taxonomy:
    """The closed-lost theme taxonomy of the definitions."""
    section = definitions["closed_lost_themes"]
    themes = section.get("themes") or {}
    names = tuple(str(t) for t in themes)
    return Taxonomy(
        themes=names,
        codes={t: tuple(str(c).strip().lower() for c in (themes[t] or {}).get("codes", []) or []) for t in names},
        keywords={t: tuple(str(k).strip().lower() for k in (themes[t] or {}).get("keywords", []) or []) for t in names},
        loop_closure_rule=str(section.get("loop_closure_rule", "")),
    )


def keyword_pattern(keywords: tuple[str, ...]) -> str:
    """A regular expression matching any keyword as whole words (RE2 / Java / Python compatible)."""
    parts = [r"\s+".join(re.escape(w) for w in k.split()) for k in keywords if k.strip()]
    return r"\b(?:" + "|".join(parts) + r")\b" if parts else r"(?!)"


@dataclass
class ClosedLostResult:
    """Everything the closed-lost notebook shows."""

    metrics: pd.DataFrame
    counts: pd.DataFrame  # grouped losses per KEYS: losses, amount, has_code, has_note, debriefed
    topics: pd.DataFrame
    unknown_codes: pd.DataFrame
    win_rates: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    windows: PeriodWindows | None = None


# --------------------------------------------------------------------------------------------- engine side


def _ts(value: pd.Timestamp) -> ibis.Expr:
    return ibis.literal(pd.Timestamp(value).to_pydatetime(), type="timestamp('UTC')")


def _str(t: ibis.Table, name: str) -> ibis.Expr:
    return t[name].cast("string") if name in t.columns else ibis.null("string")


def _nonblank(e: ibis.Expr) -> ibis.Expr:
    return (e.notnull() & (e.strip() != "")).fill_null(False)


def closed_deals(ctx: Any, windows: PeriodWindows) -> ibis.Table:
    """Ibis: opportunities closed (won or lost) in [window start, as_of] with their month key and outcome."""
    o = ctx.tables["opportunities"]
    if "closed_at" not in o.columns:
        return o.filter(ibis.literal(False))
    closed = o.is_closed.fill_null(False) if "is_closed" in o.columns else o.closed_at.notnull()
    t = o.filter(closed & o.closed_at.notnull() & (o.closed_at >= _ts(windows.first)) & (o.closed_at <= _ts(ctx.as_of)))
    won = t.is_won.fill_null(False) if "is_won" in t.columns else ibis.literal(False)
    return t.mutate(
        month=(t.closed_at.year() * 100 + t.closed_at.month()).cast("int64"),
        won=won,
    )


def themed_losses(ctx: Any, windows: PeriodWindows) -> ibis.Table:
    """Ibis: one row per loss with theme, themed_by and the loop-closure flags."""
    tax = taxonomy_from_definitions(ctx.definitions)
    t = closed_deals(ctx, windows)
    t = t.filter(~t.won)
    code = _str(t, "lost_reason_code").strip().lower()
    note = _str(t, "lost_reason_notes")
    note_l = note.lower()
    none = ibis.null("string")
    code_theme = (
        ibis.cases(*[(code.isin(tax.codes[th]), th) for th in tax.themes if tax.codes[th]], else_=none)
        if any(tax.codes.values())
        else none
    )
    note_theme = (
        ibis.cases(
            *[(note_l.re_search(keyword_pattern(tax.keywords[th])), th) for th in tax.themes if tax.keywords[th]],
            else_=none,
        )
        if any(tax.keywords.values())
        else none
    )
    has_code = _nonblank(code)
    has_note = _nonblank(note)
    competitor = _str(t, "competitor").strip()
    has_comp = _nonblank(competitor)
    amount = t.amount.cast("float64").fill_null(0.0) if "amount" in t.columns else ibis.literal(0.0)
    theme = ibis.coalesce(code_theme, note_theme, ibis.literal(UNTHEMED))
    themed_by = ibis.cases((code_theme.notnull(), "code"), (note_theme.notnull(), "note"), else_="none")
    return t.select(
        month=t.month,
        theme=theme,
        themed_by=themed_by,
        segment=_str(t, "segment").fill_null("unknown"),
        origin=_str(t, "origin").fill_null("unknown"),
        competitor=ibis.cases((has_comp, competitor), else_=NO_COMPETITOR),
        owner_team=_str(t, "owner_team").fill_null("unassigned"),
        code_known=(has_code & code.isin(list(tax.all_codes) or ["\x00"])).fill_null(False),
        has_code=has_code.cast("int64"),
        has_note=has_note.cast("int64"),
        debriefed=(has_code & (has_comp | has_note)).cast("int64"),
        amount=amount,
        code=code,
        note=note,
    )


def loss_counts(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Losses per (month 'YYYY-MM', theme, themed_by, segment, origin, competitor, owner_team, code_known)."""
    t = themed_losses(ctx, windows)
    expr = t.group_by(KEYS).aggregate(
        losses=ibis._.count(),
        amount=ibis._.amount.sum(),
        has_code=ibis._.has_code.sum(),
        has_note=ibis._.has_note.sum(),
        debriefed=ibis._.debriefed.sum(),
    )
    out = to_frame(expr, ctx.con)
    cols = [*KEYS, "losses", "amount", "has_code", "has_note", "debriefed"]
    if out.empty:
        return pd.DataFrame(columns=cols)
    out["month"] = [f"{int(k) // 100:04d}-{int(k) % 100:02d}" for k in out["month"]]
    for c in ("losses", "has_code", "has_note", "debriefed"):
        out[c] = out[c].astype("int64")
    out["code_known"] = out["code_known"].astype(bool)
    return out[cols].sort_values(KEYS, kind="mergesort").reset_index(drop=True)


def unknown_codes(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Reason codes on losses that the taxonomy does not list (as entered, lower-cased), with counts."""
    t = themed_losses(ctx, windows)
    t = t.filter((t.has_code == 1) & ~t.code_known)
    out = to_frame(t.group_by("code").aggregate(losses=ibis._.count()), ctx.con)
    if out.empty:
        return pd.DataFrame(columns=["code", "losses"])
    out["losses"] = out["losses"].astype("int64")
    return out.sort_values(["losses", "code"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


def unthemed_notes(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Distinct notes of unthemed losses in the trend months with their counts (raw text; mask before showing)."""
    t = themed_losses(ctx, windows)
    first_key = int(windows.months[0].replace("-", ""))
    t = t.filter((t.theme == UNTHEMED) & _nonblank(t.note) & (t.month >= first_key))
    out = to_frame(t.group_by("note").aggregate(losses=ibis._.count()), ctx.con)
    if out.empty:
        return pd.DataFrame(columns=["note", "losses"])
    out["losses"] = out["losses"].astype("int64")
    return out.sort_values("note", kind="mergesort").reset_index(drop=True)


def win_rate_counts(ctx: Any, windows: PeriodWindows) -> pd.DataFrame:
    """Closed deals naming a competitor, per (month, competitor): won, closed."""
    t = closed_deals(ctx, windows)
    comp = _str(t, "competitor").strip()
    t = t.filter(_nonblank(comp)).mutate(competitor=comp, won_i=t.won.cast("int64"))
    out = to_frame(
        t.group_by(["month", "competitor"]).aggregate(won=ibis._.won_i.sum(), closed=ibis._.count()), ctx.con
    )
    if out.empty:
        return pd.DataFrame(columns=["month", "competitor", "won", "closed"])
    out["month"] = [f"{int(k) // 100:04d}-{int(k) % 100:02d}" for k in out["month"]]
    out[["won", "closed"]] = out[["won", "closed"]].astype("int64")
    return out.sort_values(["month", "competitor"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- buckets and metrics


def month_buckets(
    frame: pd.DataFrame, windows: PeriodWindows, tested_months: list[str], keys: list[str], values: list[str]
) -> pd.DataFrame:
    """Monthly counts summed per bucket: each trend month, 'tested' (the period's months), 'baseline' (k before)."""
    cols = ["bucket", *keys, *values]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    first = pd.Period(tested_months[0], freq="M")
    base = [str(first - i) for i in range(windows.baseline_months, 0, -1)]
    parts = [
        frame[frame["month"].isin(windows.months)].assign(bucket=lambda f: f["month"]),
        frame[frame["month"].isin(tested_months)].assign(bucket="tested"),
        frame[frame["month"].isin(base)].assign(bucket="baseline"),
    ]
    f = pd.concat(parts, ignore_index=True)
    if f.empty:
        return pd.DataFrame(columns=cols)
    return f.groupby(["bucket", *keys], sort=True, dropna=False)[values].sum().reset_index()[cols]


def _share_frame(counts: pd.DataFrame, windows: PeriodWindows, tested_months: list[str], key: str) -> pd.DataFrame:
    by = month_buckets(counts, windows, tested_months, [key], ["losses", "amount"])
    totals = (
        by.groupby("bucket", sort=True)[["losses", "amount"]]
        .sum()
        .rename(columns={"losses": "all_losses", "amount": "all_amount"})
        .reset_index()
    )
    levels = sorted(by[key].dropna().unique())
    grid = pd.MultiIndex.from_product([totals["bucket"], levels], names=["bucket", key]).to_frame(index=False)
    out = grid.merge(by, how="left", on=["bucket", key]).merge(totals, on="bucket")
    out["losses"] = out["losses"].fillna(0).astype("int64")
    out["amount"] = out["amount"].fillna(0.0)
    return out


def share_metrics(
    counts: pd.DataFrame,
    windows: PeriodWindows,
    tested_months: list[str],
    settings: dict[str, Any],
    *,
    key: str,
    metric: str,
    levels: list[str] | None = None,
    tested_levels: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Monthly shares of losses per level of `key` and each level's tested change vs baseline (impact = excess loss)."""
    min_cell = int(settings.get("min_cell_size", 30))
    s = _share_frame(counts, windows, tested_months, key)
    if levels is not None:
        s = s[s[key].isin(levels)]
    rows = rate_rows(
        s, metric=metric, success="losses", trials="all_losses", by=key, windows=windows, min_cell=min_cell
    )
    for level in sorted(s[key].unique()):
        if tested_levels is not None and level not in tested_levels:
            continue
        r = s[s[key] == level]
        cur, base = r[r["bucket"] == "tested"], r[r["bucket"] == "baseline"]
        n1 = cur["all_losses"].sum()
        mean_loss = float(cur["all_amount"].sum() / n1) if n1 else np.nan
        row = change_row(
            cur["losses"].sum(),
            n1,
            base["losses"].sum(),
            base["all_losses"].sum(),
            settings,
            metric=f"{metric}_change",
            dimensions=dims(**{key: level}),
            period=windows.label,
        )
        value = row.get("value", np.nan)
        row["impact"] = value * n1 * mean_loss if value == value and mean_loss == mean_loss else np.nan
        rows.append(row)
    return rows


def breakdown_shares(
    counts: pd.DataFrame, tested_months: list[str], label: str, by: str, min_cell: int
) -> list[dict[str, Any]]:
    """Theme shares within each level of `by` (segment, origin, competitor) for the tested period."""
    cur = counts[counts["month"].isin(tested_months)]
    g = cur.groupby([by, "theme"], sort=True)["losses"].sum().reset_index()
    tot = cur.groupby(by, sort=True)["losses"].sum()
    rows = []
    from analysis.stats import wilson_interval

    for r in g.itertuples(index=False):
        n = int(tot[getattr(r, by)])
        lo, hi = wilson_interval(r.losses, n)
        rows.append(
            {
                "metric": "theme_share",
                "dimensions": dims(theme=r.theme, **{by: getattr(r, by)}),
                "period": label,
                "value": r.losses / n if n else np.nan,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "n": n,
                "unit": "share",
                "method": "wilson",
                "flag": "small_cell" if n < min_cell else "",
            }
        )
    return rows


def loop_closure_metrics(
    counts: pd.DataFrame, windows: PeriodWindows, tested_months: list[str], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """Loop-closure rate (debriefed losses / losses) per month, and by owner team for the tested period."""
    min_cell = int(settings.get("min_cell_size", 30))
    tot = month_buckets(counts, windows, tested_months, [], ["losses", "debriefed"])
    rows = rate_rows(
        tot,
        metric="loop_closure_rate",
        success="debriefed",
        trials="losses",
        by=None,
        windows=windows,
        min_cell=min_cell,
        method="wilson_definitions_rule",
    )
    team = month_buckets(counts, windows, tested_months, ["owner_team"], ["losses", "debriefed"])
    team = team[team["bucket"] == "tested"].assign(bucket=windows.label)
    tw = PeriodWindows(
        windows.label,
        windows.start,
        windows.end,
        windows.baseline_start,
        windows.baseline_end,
        (windows.label,),
        windows.as_of,
        windows.baseline_months,
    )
    rows += rate_rows(
        team,
        metric="loop_closure_rate",
        success="debriefed",
        trials="losses",
        by="owner_team",
        windows=tw,
        min_cell=min_cell,
        method="wilson_definitions_rule",
    )
    return rows


def themed_by_metrics(counts: pd.DataFrame, tested_months: list[str], label: str) -> list[dict[str, Any]]:
    """Share of the period's losses themed by code, by note, or not themed."""
    cur = counts[counts["month"].isin(tested_months)]
    n = int(cur["losses"].sum())
    g = cur.groupby("themed_by", sort=True)["losses"].sum()
    return [
        {
            "metric": "themed_by_share",
            "dimensions": dims(themed_by=k),
            "period": label,
            "value": v / n if n else np.nan,
            "n": n,
            "unit": "share",
            "method": "count",
        }
        for k, v in g.items()
    ]


def win_rate_metrics(
    win_counts: pd.DataFrame, windows: PeriodWindows, tested_months: list[str], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """Win rate of closed deals naming each competitor, per month (only when won deals record competitors)."""
    if win_counts.empty or win_counts["won"].sum() == 0:
        return []
    min_cell = int(settings.get("min_cell_size", 30))
    b = month_buckets(win_counts, windows, tested_months, ["competitor"], ["won", "closed"])
    return rate_rows(
        b,
        metric="win_rate_vs_competitor",
        success="won",
        trials="closed",
        by="competitor",
        windows=windows,
        min_cell=min_cell,
    )


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    if out.empty:
        return normalise(out)
    out["section"] = SECTION
    return normalise(out)


# --------------------------------------------------------------------------------------------- topic suggestions

_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]{0,500}>")


def clean_note(text: object) -> str:
    """Note text for topic modelling: scripts and tags removed, entities decoded, personal data masked and dropped."""
    s = "" if text is None else str(text)
    s = _TAG.sub(" ", _SCRIPT.sub(" ", s))
    s = mask_names(mask_personal_data(html.unescape(s)))  # names must not become suggested terms either
    return s.replace(EMAIL_MASK, " ").replace(PHONE_MASK, " ").replace(NAME_MASK, " ")


def topic_suggestions(notes: pd.DataFrame, seed: int, n_topics: int | None = None, n_terms: int = 6) -> pd.DataFrame:
    """Suggested topics for unthemed notes: TF-IDF + NMF (seeded, deterministic); top terms, note count, an excerpt."""
    cols = ["topic", "notes", "top_terms", "example"]
    if notes.empty:
        return pd.DataFrame(columns=cols)
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = notes.sort_values("note", kind="mergesort")
    texts = np.repeat(np.array([clean_note(t) for t in docs["note"]], dtype=object), docs["losses"].to_numpy(np.int64))
    raw = np.repeat(docs["note"].to_numpy(object), docs["losses"].to_numpy(np.int64))
    n_docs = len(texts)
    if n_docs < 5:
        return pd.DataFrame(columns=cols)
    # min_df: a term must recur across notes, which also keeps one-off names and ids out of the suggestions.
    vec = TfidfVectorizer(
        stop_words="english",
        min_df=max(2, int(0.01 * n_docs)),
        token_pattern=r"(?u)\b[a-zA-Z]{3,}\b",
        ngram_range=(1, 2),
        sublinear_tf=True,
    )
    try:
        x = vec.fit_transform(texts)
    except ValueError:  # no term left
        return pd.DataFrame(columns=cols)
    k = n_topics or int(min(8, max(2, round(np.sqrt(n_docs / 4)))))
    k = max(1, min(k, x.shape[1] - 1, n_docs - 1))
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=1000)
    w = model.fit_transform(x)
    terms = vec.get_feature_names_out()
    assign = w.argmax(axis=1)
    rows = []
    for j in range(k):
        order = np.lexsort((terms, -model.components_[j]))  # by weight, ties by term
        top = [str(terms[i]) for i in order[:n_terms] if model.components_[j, i] > 0]
        members = np.flatnonzero(assign == j)
        if not len(members) or not top:
            continue
        best = members[np.lexsort((raw[members].astype(str), -w[members, j]))[0]]
        rows.append(
            {
                "topic": 0,
                "notes": int(len(members)),
                "top_terms": ", ".join(top),
                "example": safe_excerpt(raw[best], 120),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    out = out.sort_values(["notes", "top_terms"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    out["topic"] = np.arange(1, len(out) + 1)
    return out


# --------------------------------------------------------------------------------------------- section


def analyse(ctx: Any) -> ClosedLostResult:
    """The closed-lost section for the context's period: metrics, counts, topic suggestions and notes."""
    empty = pd.DataFrame()
    if not ctx.has("opportunities"):
        return ClosedLostResult(
            normalise(empty), empty, empty, empty, empty, ["No opportunities provided: closed-lost themes omitted."]
        )
    settings = dict(ctx.definitions.stats)
    windows = period_windows(ctx.period, ctx.as_of, settings)
    tested = list(ctx.period.months)
    o = ctx.tables["opportunities"]
    notes: list[str] = []
    if "lost_reason_notes" not in o.columns:
        notes.append("No lost_reason_notes provided: themes from reason codes only; no topic suggestions.")
    if "lost_reason_code" not in o.columns:
        notes.append("No lost_reason_code provided: themes from note keywords only.")
    if "competitor" not in o.columns:
        notes.append("No competitor provided: competitor shares and win rates omitted.")
    counts = loss_counts(ctx, windows)
    unknown = unknown_codes(ctx, windows)
    if len(unknown):
        shown = ", ".join(
            f"{mask_personal_data(c)[:40]} ({n})"
            for c, n in zip(unknown["code"].head(10), unknown["losses"].head(10), strict=True)
        )
        notes.append(f"Reason codes not in the taxonomy (themed by note where possible, else unthemed): {shown}.")
    if counts.empty:
        notes.append("No closed-lost deals in the window.")
        return ClosedLostResult(normalise(empty), counts, pd.DataFrame(), unknown, pd.DataFrame(), notes, windows)
    no_codes = "lost_reason_code" in o.columns and counts["has_code"].sum() == 0
    no_notes = "lost_reason_notes" in o.columns and counts["has_note"].sum() == 0
    if no_codes and no_notes:
        notes.append("No loss in the window has a reason code or a note: every loss is unthemed.")
    elif no_codes:
        notes.append("No loss in the window has a reason code: themes from note keywords only.")
    elif no_notes:
        notes.append("No loss in the window has a note: themes from reason codes only; no topic suggestions.")
    has_competitor = "competitor" in o.columns and bool((counts["competitor"] != NO_COMPETITOR).any())
    if "competitor" in o.columns and not has_competitor:
        notes.append("No loss in the window names a competitor: competitor shares and win rates omitted.")
    min_cell = int(settings.get("min_cell_size", 30))
    tax = taxonomy_from_definitions(ctx.definitions)
    rows: list[dict[str, Any]] = []
    # 'unthemed' is shown but not tested: it measures the debrief's coverage, not a reason deals are lost.
    rows += share_metrics(
        counts,
        windows,
        tested,
        settings,
        key="theme",
        metric="theme_share",
        levels=[*tax.themes, UNTHEMED],
        tested_levels=list(tax.themes),
    )
    if has_competitor:
        comp = counts[counts["competitor"] != NO_COMPETITOR]
        rows += share_metrics(
            counts,
            windows,
            tested,
            settings,
            key="competitor",
            metric="competitor_loss_share",
            levels=sorted(comp["competitor"].unique()),
        )
    for by in ("segment", "origin", "competitor"):
        if by == "competitor" and not has_competitor:
            continue
        rows += breakdown_shares(counts, tested, windows.label, by, min_cell)
    rows += loop_closure_metrics(counts, windows, tested, settings)
    rows += themed_by_metrics(counts, tested, windows.label)
    wins = win_rate_counts(ctx, windows) if has_competitor else pd.DataFrame()
    win_rows = win_rate_metrics(wins, windows, tested, settings) if len(wins) else []
    if has_competitor and not win_rows:
        notes.append(
            "Competitors are recorded on lost deals only: win rate against each competitor cannot be "
            "measured until won deals record the competitor they beat."
        )
    rows += win_rows
    topics = pd.DataFrame()
    if "lost_reason_notes" in o.columns and counts["has_note"].sum() > 0:
        topics = topic_suggestions(unthemed_notes(ctx, windows), seed=int(settings.get("seed", 0)))
    return ClosedLostResult(_frame(rows), counts, topics, unknown, wins, notes, windows)


# --------------------------------------------------------------------------------------------- tables and charts


def loop_closure_threshold(definitions: Any) -> float | None:
    """The scorecard's minimum loop-closure rate (None when the definitions set none)."""
    rule = (definitions.get("scorecard") or {}).get("thresholds", {}).get("loop_closure_rate") or {}
    return float(rule["min"]) if "min" in rule else None


def win_rate_table(metrics: pd.DataFrame, months: int = 6) -> pd.DataFrame:
    """Win rate against each competitor for the last `months` months (rows: competitors)."""
    m = _monthly(metrics, "win_rate_vs_competitor", "competitor")
    if m.empty:
        return pd.DataFrame()
    keep = sorted(m["period"].unique())[-months:]
    wide = m[m["period"].isin(keep)].pivot_table(index="group", columns="period", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.reset_index().rename(columns={"group": "competitor"})


def themed_by_table(metrics: pd.DataFrame, period: str) -> pd.DataFrame:
    """Share of the period's losses themed by code, by note keywords, or not at all."""
    m = metrics[(metrics["metric"] == "themed_by_share") & (metrics["period"] == period)]
    return pd.DataFrame(
        {
            "themed by": [parse_dims(d).get("themed_by") for d in m["dimensions"]],
            "share of losses": m["value"].to_numpy(),
            "losses": m["n"].to_numpy(),
        }
    )


def tests_table(metrics: pd.DataFrame, metric: str, key: str) -> pd.DataFrame:
    """Tested period vs baseline for a share: share, baseline, change (pts), interval, p, n, excess loss."""
    t = metrics[metrics["metric"] == metric]
    rows = []
    for r in t.itertuples(index=False):
        d = parse_dims(r.dimensions)
        rows.append(
            {
                key: d.get(key, ALL),
                "period": r.period,
                "share": r.baseline + r.value if r.value == r.value else np.nan,
                "baseline": r.baseline,
                "change (pts)": r.value * 100,
                "95% CI (pts)": "" if r.ci_low != r.ci_low else f"{r.ci_low * 100:+.1f} to {r.ci_high * 100:+.1f}",
                "p": r.p_value,
                "losses": int(r.n),
                "excess lost amount": r.impact,
                "note": "below minimum cell size: not tested" if r.flag == "small_cell" else "",
            }
        )
    out = pd.DataFrame(rows)
    return (
        out.sort_values("change (pts)", ascending=False, kind="mergesort").reset_index(drop=True) if len(out) else out
    )


def crosstab(metrics: pd.DataFrame, by: str, period: str) -> pd.DataFrame:
    """Theme shares of the period's losses within each level of `by` (rows: themes; columns: levels)."""
    m = metrics[(metrics["metric"] == "theme_share") & (metrics["period"] == period)].copy()
    m["d"] = m["dimensions"].map(parse_dims)
    m = m[m["d"].map(lambda d: set(d) == {"theme", by}).astype(bool)]
    if m.empty:
        return pd.DataFrame()
    m["theme"] = m["d"].map(lambda d: d["theme"])
    m[by] = m["d"].map(lambda d: d[by])
    wide = m.pivot_table(index="theme", columns=by, values="value", aggfunc="first").fillna(0.0)
    n = m.groupby(by)["n"].first()
    wide.loc["(losses)"] = n.reindex(wide.columns).astype(float)
    wide.columns.name = None
    return wide.reset_index()


def team_table(metrics: pd.DataFrame, period: str) -> pd.DataFrame:
    """Loop-closure rate by owner team for the period, lowest first."""
    m = metrics[(metrics["metric"] == "loop_closure_rate") & (metrics["period"] == period)].copy()
    m["team"] = m["dimensions"].map(lambda d: parse_dims(d).get("owner_team"))
    m = m[m["team"].notna()]
    out = pd.DataFrame(
        {
            "owner team": m["team"],
            "loop closure": m["value"],
            "95% CI low": m["ci_low"],
            "95% CI high": m["ci_high"],
            "losses": m["n"],
        }
    )
    return out.sort_values(["loop closure", "owner team"], kind="mergesort").reset_index(drop=True)


def _monthly(metrics: pd.DataFrame, metric: str, key: str | None) -> pd.DataFrame:
    m = metrics[metrics["metric"] == metric].copy()
    m = m[m["period"].str.match(r"^\d{4}-\d{2}$")]
    m["d"] = m["dimensions"].map(parse_dims)
    m = m[m["d"].map(lambda d: list(d) == ([key] if key else [])).astype(bool)]
    m["group"] = m["d"].map(lambda d: d.get(key, ALL) if key else ALL)
    m["month"] = pd.PeriodIndex(m["period"], freq="M").to_timestamp()
    return m.sort_values(["group", "month"])


def theme_chart(metrics: pd.DataFrame):
    """Stacked bars: theme shares of losses by month closed."""
    from analysis.charts import new_figure

    m = _monthly(metrics, "theme_share", "theme")
    fig, ax = new_figure(8, 3.6)
    if m.empty:
        ax.text(0.5, 0.5, "no losses", ha="center", va="center", transform=ax.transAxes)
        return fig
    wide = m.pivot_table(index="period", columns="group", values="value", aggfunc="first").fillna(0.0)
    order = [t for t in wide.mean().sort_values(ascending=False, kind="mergesort").index]
    wide[order].plot(kind="bar", stacked=True, ax=ax, width=0.85, legend=False)
    ax.set_xlabel("")
    ax.set_ylabel("share of losses")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("Closed-lost themes by month closed")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticklabels([pd.Period(p, freq="M").strftime("%b %y") for p in wide.index], rotation=0, fontsize=8)
    return fig


def competitor_chart(metrics: pd.DataFrame):
    """Lines: share of losses to each competitor by month closed, with Wilson bands."""
    from analysis.charts import new_figure

    m = _monthly(metrics, "competitor_loss_share", "competitor")
    fig, ax = new_figure(8, 3.2)
    if m.empty:
        ax.text(0.5, 0.5, "no competitor recorded", ha="center", va="center", transform=ax.transAxes)
        return fig
    draw_rate_lines(ax, m)
    ax.set_xlabel("")
    ax.set_ylabel("share of losses")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("Losses to each competitor")
    ax.legend(title="", fontsize=8)
    return fig


def loop_closure_chart(metrics: pd.DataFrame, threshold: float | None = None):
    """Line: loop-closure rate by month with its Wilson band and the scorecard threshold."""
    from analysis.charts import new_figure

    m = _monthly(metrics, "loop_closure_rate", None)
    fig, ax = new_figure(8, 2.8)
    if m.empty:
        ax.text(0.5, 0.5, "no losses", ha="center", va="center", transform=ax.transAxes)
        return fig
    ax.plot(m["month"], m["value"], marker="o")
    ax.fill_between(m["month"], m["ci_low"], m["ci_high"], alpha=0.15)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.text(m["month"].iloc[0], threshold, " threshold", va="bottom", fontsize=8, color="grey")
    ax.set_ylabel("losses debriefed")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("Closed-lost loop closure")
    return fig
