"""Data quality: rows in / kept / quarantined by rule, freshness, and what each source covers."""

from __future__ import annotations

import pandas as pd

from analysis.context import SectionContext
from analysis.engine import to_frame
from analysis.metrics import dims, normalise
from analysis.schema import TABLES

SECTION = "data_quality"

# The timestamp that says how fresh each table is.
FRESHNESS_COLUMN = {
    "leads": "created_at",
    "opportunities": "created_at",
    "stage_history": "entered_at",
    "touchpoints": "occurred_at",
    "forecasts": "committed_at",
}

# Which sections need which tables (a missing table switches the section off, visibly).
SECTION_NEEDS = {
    "Funnel conversion": ("leads",),
    "Velocity": ("opportunities",),
    "Handoff and SLA": ("leads",),
    "Closed-lost themes": ("opportunities",),
    "Attribution": ("touchpoints", "opportunities"),
    "Pipeline plan": ("targets", "opportunities"),
}


def row_accounting(manifest: dict) -> pd.DataFrame:
    """Per table: rows in, kept, quarantined (rows in = kept + quarantined, checked), from the ingest manifest."""
    rows = []
    for name, t in sorted(manifest.get("tables", {}).items()):
        rows.append(
            {
                "table": name,
                "rows_in": int(t["rows_in"]),
                "rows_kept": int(t["rows_kept"]),
                "rows_quarantined": int(t["rows_quarantined"]),
            }
        )
    out = pd.DataFrame(rows, columns=["table", "rows_in", "rows_kept", "rows_quarantined"])
    out["balanced"] = out["rows_in"] == out["rows_kept"] + out["rows_quarantined"]
    return out


def quarantine_by_rule(manifest: dict) -> pd.DataFrame:
    """Per table and rule: rows quarantined, most frequent first."""
    rows = [
        {"table": name, "rule": rule, "rows": int(n)}
        for name, t in manifest.get("tables", {}).items()
        for rule, n in t.get("quarantined_by_rule", {}).items()
    ]
    out = pd.DataFrame(rows, columns=["table", "rule", "rows"])
    return out.sort_values(["rows", "table", "rule"], ascending=[False, True, True], kind="mergesort").reset_index(
        drop=True
    )


def freshness(ctx: SectionContext) -> pd.DataFrame:
    """Per table: latest timestamp and days between it and the as-of instant."""
    rows = []
    for name, col in FRESHNESS_COLUMN.items():
        if name not in ctx.tables:
            continue
        t = ctx.tables[name]
        latest = to_frame(t.aggregate(latest=t[col].max()), ctx.con)["latest"].iloc[0]
        latest = pd.Timestamp(latest) if latest is not None and not pd.isna(latest) else None
        if latest is not None and latest.tzinfo is None:
            latest = latest.tz_localize("UTC")
        lag = (ctx.as_of - latest).total_seconds() / 86_400 if latest is not None else float("nan")
        rows.append(
            {"table": name, "latest": latest.strftime("%Y-%m-%d %H:%M") if latest else "", "days_behind_as_of": lag}
        )
    return pd.DataFrame(rows, columns=["table", "latest", "days_behind_as_of"])


def coverage(ctx: SectionContext) -> pd.DataFrame:
    """Per table and canonical column: share of rows with a value (computed in the engine)."""
    rows = []
    for name, t in sorted(ctx.tables.items()):
        columns = [c.name for c in TABLES[name].columns if c.name in t.columns]
        aggs = {f"filled__{c}": t[c].notnull().cast("int64").sum() for c in columns}
        aggs["n"] = t.count()
        counts = to_frame(t.aggregate(**aggs), ctx.con).iloc[0]
        n = int(counts["n"])
        for c in columns:
            rows.append(
                {"table": name, "column": c, "filled_share": (int(counts[f"filled__{c}"]) / n) if n else float("nan")}
            )
    return pd.DataFrame(rows, columns=["table", "column", "filled_share"])


def sections_enabled(ctx: SectionContext) -> pd.DataFrame:
    """Which sections the provided tables switch on, and what is missing for the others."""
    rows = []
    for section, needs in SECTION_NEEDS.items():
        missing = [n for n in needs if n not in ctx.tables]
        rows.append({"section": section, "status": "on" if not missing else "off", "missing": ", ".join(missing)})
    return pd.DataFrame(rows)


def quarantine_sample(ctx: SectionContext, limit: int = 10) -> pd.DataFrame:
    """The first quarantined rows (file, line, column, rule): where to look, without the raw values."""
    qdir = ctx.data_dir / "quarantine"
    frames = []
    for path in sorted(qdir.glob("*.parquet")):
        con = ctx.con
        q = con.read_parquet(str(path), table_name=f"quarantine_{path.stem}")
        cols = [c for c in ("source_file", "line", "column", "rule") if c in q.columns]
        if not cols:
            continue
        frame = to_frame(q.select(cols).order_by(cols).limit(limit), con)
        frame.insert(0, "table", path.stem)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["table", "source_file", "line", "column", "rule"])
    return pd.concat(frames, ignore_index=True).head(limit)


def quality_metrics(ctx: SectionContext) -> pd.DataFrame:
    """Long-format metrics: row accounting, quarantine by rule, freshness and coverage."""
    manifest = ctx.ingest_manifest
    rows = []
    for r in row_accounting(manifest).itertuples(index=False):
        for metric in ("rows_in", "rows_kept", "rows_quarantined"):
            rows.append(
                {"metric": metric, "dimensions": dims(table=r.table), "value": getattr(r, metric), "unit": "rows"}
            )
    for r in quarantine_by_rule(manifest).itertuples(index=False):
        rows.append(
            {
                "metric": "rows_quarantined_by_rule",
                "dimensions": dims(table=r.table, rule=r.rule),
                "value": r.rows,
                "unit": "rows",
            }
        )
    for r in freshness(ctx).itertuples(index=False):
        rows.append(
            {
                "metric": "days_behind_as_of",
                "dimensions": dims(table=r.table),
                "value": r.days_behind_as_of,
                "unit": "days",
            }
        )
    for r in coverage(ctx).itertuples(index=False):
        rows.append(
            {
                "metric": "column_filled_share",
                "dimensions": dims(table=r.table, column=r.column),
                "value": r.filled_share,
                "unit": "share",
            }
        )
    out = pd.DataFrame(rows)
    out["section"] = SECTION
    out["period"] = ctx.period.label
    out["method"] = "count"
    return normalise(out)


