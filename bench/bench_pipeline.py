"""Benchmark: the kit's pipeline at one size (demo leads), against raw DuckDB SQL and pandas on the same Parquet.

    python bench/bench_pipeline.py --size 1000000 [--data-dir DIR] [--steps ingest,funnel,...] [--json FILE]

`bench/run.py` (`make bench`) calls this once per size and prints the tables side by side. Every measured step
(the kit's and each baseline's) runs in a fresh Python process on the same cached Parquet, so its peak memory is
its own (allocators keep freed memory, which would otherwise be credited to whoever runs next). Steps:

* generate      the demo generator writing Parquet (cached in --data-dir; timed only when it runs)
* ingest        `analysis.ingest.ingest` (map, validate, quarantine, write canonical Parquet); baseline: a pyarrow
                read + write of the same files (the floor of any ingest);
* funnel        `analysis.funnel.cohort_counts` (Ibis on DuckDB); baselines: the same counts in hand-written
                DuckDB SQL and in pandas (read the columns, groupby), checked equal to the kit's;
* paths         the attribution path aggregation `journeys.path_table` for the revenue basis (journeys -> distinct
                paths in the engine); baselines: hand-written DuckDB SQL (string_agg ordered) and pandas (merge,
                sort, groupby-join), checked equal;
* attribution   `attribution.run_attribution` (both bases, time decay, lifecycle, closed deals, every model);
* velocity, handoff, closed_lost, plan, data_quality: each section's `analyse` (engine aggregation + statistics);
* monthly       the whole monthly run, `analysis.pack.run_cadence` (notebooks in two kernels, render, e-mail).

Columns: seconds (best of --repeat for the engine steps), rows/s (input rows the step reads / seconds), peak MB
(resident memory of the step's process and its children above the level after its set-up, sampled every 10 ms),
abs peak MB (the same, absolute), and the kit's
ratio to each baseline (kit seconds / baseline seconds: < 1 means the kit is faster; memory likewise).
Timed assertions never go into the unit tests; this script only prints.
"""

from __future__ import annotations

import os

# Arrow on the C allocator, so memory freed by one step goes back to the OS (malloc_trim) before the next is measured.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import duckdb  # noqa: E402
import psutil  # noqa: E402

from analysis import attribution, closed_lost, data_quality, funnel, handoff, plan, velocity  # noqa: E402
from analysis import journeys as J  # noqa: E402
from analysis.config import MAPPINGS_DIR, load_definitions  # noqa: E402
from analysis.context import open_context  # noqa: E402

PERIOD = "2026-10"
STEPS = ("ingest", "funnel", "paths", "attribution", "velocity", "handoff", "closed_lost", "plan", "data_quality",
         "monthly")
TABLE_NAMES = ("leads", "opportunities", "stage_history", "touchpoints", "targets", "forecasts")


# ------------------------------------------------------------------------------------------- measuring


def _trim() -> None:
    """Give freed heap back to the OS so the next step's memory starts from what is really in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (bytes)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class Peak:
    """Peak resident memory (this process + children) above the start while the block runs."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.proc = psutil.Process()

    def __enter__(self):
        _trim()
        self.start = tree_rss(self.proc)
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.proc))

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, tree_rss(self.proc))
        self.mb = (self.peak - self.start) / 2**20
        self.abs_mb = self.peak / 2**20


def timed(fn, repeat: int = 1):
    """(result, best seconds, peak MB above start of the first run, absolute peak MB)."""
    best, mb, abs_mb, out = np.inf, np.nan, np.nan, None
    for i in range(max(1, repeat)):
        out = None
        _trim()
        with Peak() as mem:
            t0 = time.perf_counter()
            out = fn()
            sec = time.perf_counter() - t0
        best = min(best, sec)
        if i == 0:
            mb, abs_mb = mem.mb, mem.abs_mb
    return out, best, mb, abs_mb


# ------------------------------------------------------------------------------------------- data


# Touchpoints per lead in the benchmark data: ~10, a large B2B company's density (the demo's default is ~6.4).
TOUCHES_PER_LEAD = 10.3


def raw_dir_for(data_dir: Path, n: int) -> Path:
    return data_dir / f"raw_{n}_tpl{TOUCHES_PER_LEAD:g}"


def processed_dir_for(data_dir: Path, n: int) -> Path:
    return data_dir / f"processed_{n}_tpl{TOUCHES_PER_LEAD:g}"


def ensure_raw(data_dir: Path, n: int) -> tuple[Path, float | None]:
    """The demo export at n leads (Parquet), generated once and cached; seconds if generated now."""
    from analysis.demo import generate_demo_data

    raw = raw_dir_for(data_dir, n)
    if (raw / "truth.json").exists():
        return raw, None
    t0 = time.perf_counter()
    generate_demo_data(raw, n_leads=n, fmt="parquet", touches_per_lead=TOUCHES_PER_LEAD)
    return raw, time.perf_counter() - t0


def parquet_rows(folder: Path, names=TABLE_NAMES) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {n: pq.ParquetFile(folder / f"{n}.parquet").metadata.num_rows for n in names
            if (folder / f"{n}.parquet").exists()}


def warm(folder: Path) -> None:
    """Read every Parquet file once so each contender finds it in the page cache."""
    for p in folder.glob("*.parquet"):
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


# ------------------------------------------------------------------------------------------- funnel baselines


def _pair_sql(pair: funnel.StagePair, window_days: int, path: str, as_of: str) -> str:
    if pair.source == "leads":
        src = f"SELECT *, source_channel AS channel FROM read_parquet('{path}')"
    else:
        src = (f"SELECT *, CASE WHEN coalesce(is_won, false) THEN closed_at END AS won_at, "
               f"coalesce(source_channel, 'unknown') AS channel FROM read_parquet('{path}')")
    e, x = pair.entry, pair.exit
    # The fastest form found by hand on DuckDB: integer epoch microseconds for the window, and the month taken
    # from a plain (UTC wall-clock) timestamp; DATE_TRUNC and interval arithmetic on TIMESTAMPTZ go through ICU.
    return f"""
        SELECT date_trunc('month', make_timestamp(epoch_us({e}))) AS month, segment, channel, count(*) AS entered,
               sum(CASE WHEN {x} IS NOT NULL AND {x} < TIMESTAMPTZ '{as_of}' AND {x} >= {e}
                         AND epoch_us({x}) - epoch_us({e}) <= {window_days * 86400 * 1_000_000}
                        THEN 1 ELSE 0 END) AS converted
        FROM ({src}) s
        WHERE {e} IS NOT NULL AND {e} < TIMESTAMPTZ '{as_of}'
        GROUP BY ALL"""


def sql_cohort_counts(processed: Path, definitions, as_of: pd.Timestamp) -> pd.DataFrame:
    """funnel.cohort_counts' engine work in hand-written DuckDB SQL (one query per stage pair)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frames = []
    for pair in funnel.STAGE_PAIRS:
        w = definitions.window_days(pair.key)
        f = con.execute(_pair_sql(pair, w, str(processed / f"{pair.source}.parquet"), as_of.isoformat())).df()
        f["pair"] = pair.key
        frames.append(f)
    con.close()
    return pd.concat(frames, ignore_index=True)


def pandas_cohort_counts(processed: Path, definitions, as_of: pd.Timestamp) -> pd.DataFrame:
    """The same counts as an analyst writes them in pandas: read the columns, derive, groupby."""
    leads = pd.read_parquet(processed / "leads.parquet",
                            columns=["created_at", "mql_at", "sal_at", "sql_at", "segment", "source_channel"])
    leads = leads.rename(columns={"source_channel": "channel"})
    opps = pd.read_parquet(processed / "opportunities.parquet",
                           columns=["created_at", "closed_at", "is_won", "segment", "source_channel"])
    opps["won_at"] = opps["closed_at"].where(opps["is_won"].fillna(False).astype(bool))
    opps["channel"] = opps["source_channel"].fillna("unknown")
    frames = []
    for pair in funnel.STAGE_PAIRS:
        df = leads if pair.source == "leads" else opps
        w = definitions.window_days(pair.key)
        e = df[df[pair.entry].notna() & (df[pair.entry] < as_of)]
        elapsed = (e[pair.exit] - e[pair.entry]).dt.total_seconds()
        conv = e[pair.exit].notna() & (e[pair.exit] < as_of) & (elapsed >= 0) & (elapsed <= w * 86400)
        g = pd.DataFrame({"month": e[pair.entry].dt.tz_localize(None).dt.to_period("M").dt.to_timestamp(),
                          "segment": e["segment"], "channel": e["channel"], "converted": conv.astype("int64")})
        f = g.groupby(["month", "segment", "channel"], observed=True).agg(
            entered=("converted", "size"), converted=("converted", "sum")).reset_index()
        f["pair"] = pair.key
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _norm_counts(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["pair", "month", "segment", "channel", "entered", "converted"]].copy()
    out["month"] = pd.to_datetime(out["month"], utc=True).dt.strftime("%Y-%m")
    out[["entered", "converted"]] = out[["entered", "converted"]].fillna(0).astype("int64")
    return out.sort_values(["pair", "month", "segment", "channel"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------- path baselines


def sql_revenue_paths(processed: Path, w: J.JourneyWindow) -> pd.DataFrame:
    """journeys.path_table(basis='revenue') in hand-written DuckDB SQL."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    p = {n: str(processed / f"{n}.parquet") for n in ("opportunities", "touchpoints", "leads")}
    start, end, as_of = (x.isoformat() for x in (w.start, w.end, w.as_of))
    df = con.execute(f"""
        WITH j AS (
            SELECT opportunity_id AS jid, segment, created_at - INTERVAL {int(w.lookback_days)} DAY AS win_start,
                   closed_at AS win_end, created_at AS creation_at, coalesce(is_won, false)::INT AS conv,
                   coalesce(CAST(round(amount * 100) AS BIGINT), 0) AS cents
            FROM read_parquet('{p["opportunities"]}')
            WHERE closed_at >= TIMESTAMPTZ '{start}' AND closed_at < TIMESTAMPTZ '{end}'
              AND closed_at <= TIMESTAMPTZ '{as_of}'
        ), t AS (
            SELECT tp.touchpoint_id AS t_id, coalesce(tp.opportunity_id, l.opportunity_id) AS t_opp,
                   tp.occurred_at AS t_at, replace(tp.channel, ' > ', ' - ') AS t_key
            FROM read_parquet('{p["touchpoints"]}') tp
            LEFT JOIN (SELECT lead_id, opportunity_id FROM read_parquet('{p["leads"]}')) l USING (lead_id)
            WHERE tp.occurred_at <= TIMESTAMPTZ '{as_of}' AND tp.channel IS NOT NULL
        ), jp AS (
            SELECT j.jid, string_agg(t.t_key, ' > ' ORDER BY t.t_at, t.t_id) AS path,
                   count(*) FILTER (WHERE t.t_at <= j.creation_at) AS n_pre
            FROM j JOIN t ON t.t_opp = j.jid AND t.t_at BETWEEN j.win_start AND j.win_end
            GROUP BY j.jid
        )
        SELECT j.segment, coalesce(jp.path, '') AS path, coalesce(jp.n_pre, 0) - 1 AS creation_index,
               count(*) AS journeys, sum(j.conv) AS conversions, sum(1 - j.conv) AS nulls,
               sum(j.cents * j.conv) AS value_cents
        FROM j LEFT JOIN jp USING (jid)
        GROUP BY ALL
    """).df()
    con.close()
    return df


def pandas_revenue_paths(processed: Path, w: J.JourneyWindow) -> pd.DataFrame:
    """The same distinct paths as an analyst writes them in pandas."""
    o = pd.read_parquet(processed / "opportunities.parquet",
                        columns=["opportunity_id", "segment", "created_at", "closed_at", "is_won", "amount"])
    o = o[(o["closed_at"] >= w.start) & (o["closed_at"] < w.end) & (o["closed_at"] <= w.as_of)]
    j = pd.DataFrame({
        "jid": o["opportunity_id"], "segment": o["segment"],
        "win_start": o["created_at"] - pd.Timedelta(days=int(w.lookback_days)), "win_end": o["closed_at"],
        "creation_at": o["created_at"], "conv": o["is_won"].fillna(False).astype("int64"),
        "cents": (o["amount"].map(lambda d: int(d * 100), na_action="ignore").fillna(0).astype("int64")),
    })
    tp = pd.read_parquet(processed / "touchpoints.parquet",
                         columns=["touchpoint_id", "lead_id", "opportunity_id", "occurred_at", "channel"])
    tp = tp[(tp["occurred_at"] <= w.as_of) & tp["channel"].notna()]
    leads = pd.read_parquet(processed / "leads.parquet", columns=["lead_id", "opportunity_id"])
    tp = tp.merge(leads.rename(columns={"opportunity_id": "lead_opp"}), on="lead_id", how="left")
    tp["t_opp"] = tp["opportunity_id"].fillna(tp["lead_opp"])
    rows = j.merge(tp, left_on="jid", right_on="t_opp")
    rows = rows[(rows["occurred_at"] >= rows["win_start"]) & (rows["occurred_at"] <= rows["win_end"])]
    rows = rows.sort_values(["jid", "occurred_at", "touchpoint_id"])
    rows["key"] = rows["channel"].str.replace(" > ", " - ", regex=False)
    rows["pre"] = (rows["occurred_at"] <= rows["creation_at"]).astype("int64")
    per = rows.groupby("jid").agg(path=("key", " > ".join), n_pre=("pre", "sum")).reset_index()
    j = j.merge(per, on="jid", how="left")
    j["path"] = j["path"].fillna("")
    j["creation_index"] = j["n_pre"].fillna(0).astype("int64") - 1
    j["value_cents"] = j["cents"] * j["conv"]
    j["nulls"] = 1 - j["conv"]
    return j.groupby(["segment", "path", "creation_index"]).agg(
        journeys=("jid", "size"), conversions=("conv", "sum"), nulls=("nulls", "sum"),
        value_cents=("value_cents", "sum")).reset_index()


def _norm_paths(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["segment", "path", "creation_index", "journeys", "conversions", "nulls", "value_cents"]
    out = df[cols].copy()
    for c in cols[2:]:
        out[c] = pd.to_numeric(out[c]).fillna(0).astype("int64")
    return out.sort_values(cols[:3]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------- main


def canonical_copy(raw: Path, processed: Path, work: Path) -> None:
    """--bypass-ingest: the demo export is already canonical; copy it sorted by key with DuckDB (out of core) and
    write an ingest manifest shaped like the kit's (from a 1 000-lead ingest, row counts replaced)."""
    from analysis.demo import generate_demo_data
    from analysis.ingest import ingest
    from analysis.schema import TABLES

    small_raw, small = work / "small_raw", work / "small_processed"
    generate_demo_data(small_raw, n_leads=1000, fmt="parquet")
    ingest(small_raw, MAPPINGS_DIR / "canonical.yml", small, load_definitions())
    processed.mkdir(parents=True, exist_ok=True)
    shutil.copytree(small / "quarantine", processed / "quarantine", dirs_exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    counts = {}
    for name, table in TABLES.items():
        src = raw / f"{name}.parquet"
        if not src.exists():
            continue
        cols = ", ".join(c.name for c in table.columns)
        key = ", ".join(table.key)
        con.execute(f"COPY (SELECT {cols} FROM read_parquet('{src}') ORDER BY {key}) TO "
                    f"'{processed / f'{name}.parquet'}' (FORMAT parquet, COMPRESSION zstd)")
        counts[name] = parquet_rows(processed, (name,))[name]
    con.close()
    manifest = json.loads((small / "ingest_manifest.json").read_text())
    for name, t in manifest["tables"].items():
        n_rows = counts.get(name, 0)
        t.update(rows_in=n_rows, rows_kept=n_rows, rows_quarantined=0, quarantined_by_rule={})
        t["files"] = {k: {"rows_in": n_rows, "rows_kept": n_rows, "rows_quarantined": 0} for k in t["files"]}
    manifest["bypassed"] = "written by bench_pipeline --bypass-ingest, not by analysis.ingest"
    (processed / "ingest_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _ingest_copy(raw: Path, work: Path):
    import pyarrow.parquet as pq

    out = work / "copy"
    out.mkdir(parents=True, exist_ok=True)
    for name in parquet_rows(raw):
        pq.write_table(pq.read_table(raw / f"{name}.parquet"), out / f"{name}.parquet", compression="zstd")
    shutil.rmtree(out)


def task(name: str, n: int, data_dir: Path, work: Path):
    """Set up one measured step (not timed) and return the zero-argument callable that is timed."""
    definitions = load_definitions()
    raw, processed = raw_dir_for(data_dir, n), processed_dir_for(data_dir, n)
    if name == "ingest_copy":
        return lambda: _ingest_copy(raw, work)
    if name == "ingest_kit":
        from analysis.ingest import ingest

        return lambda: ingest(raw, MAPPINGS_DIR / "canonical.yml", processed, definitions)
    if name == "ingest_bypass":
        return lambda: canonical_copy(raw, processed, work)
    ctx = open_context(processed, PERIOD)
    as_of = ctx.as_of
    w = J.JourneyWindow.for_context(ctx)
    ob = definitions["channels"]["origin_by_channel"]
    tasks = {
        "funnel_kit": lambda: funnel.cohort_counts(ctx.tables, definitions, as_of, ctx.con),
        "funnel_sql": lambda: sql_cohort_counts(processed, definitions, as_of),
        "funnel_pandas": lambda: pandas_cohort_counts(processed, definitions, as_of),
        "paths_kit": lambda: J.fetch_paths(J.path_table(ctx.tables, "revenue", w, ob), ctx.con),
        "paths_sql": lambda: sql_revenue_paths(processed, w),
        "paths_pandas": lambda: pandas_revenue_paths(processed, w),
        "paths_kit_pipeline": lambda: J.fetch_paths(J.path_table(ctx.tables, "pipeline", w, ob), ctx.con),
        "attribution": lambda: attribution.run_attribution(ctx),
        "velocity": lambda: velocity.analyse(ctx),
        "handoff": lambda: handoff.analyse(ctx),
        "closed_lost": lambda: closed_lost.analyse(ctx),
        "plan": lambda: plan.plan_analysis(ctx.tables, definitions, ctx.period, as_of, ctx.con),
        "data_quality": lambda: data_quality.quality_metrics(ctx),
    }
    if name == "monthly":
        from analysis.pack import run_cadence

        return lambda: run_cadence("monthly", PERIOD, data_dir=processed, out_dir=work / "reports" / PERIOD,
                                   actions_dir=raw / "actions")
    return tasks[name]


def child(args) -> int:
    """--child TASK: set up, time the task (best of --repeat), write seconds / peak memory / result (pickle)."""
    import pickle

    work = Path(tempfile.mkdtemp(prefix=f"work_{args.size}_", dir=args.data_dir))
    try:
        fn = task(args.child, args.size, Path(args.data_dir), work)
        out, sec, mb, abs_mb = timed(fn, args.repeat)
        keep = out if isinstance(out, pd.DataFrame) else None
        with open(args.result, "wb") as fh:
            pickle.dump({"seconds": sec, "mb": mb, "abs_mb": abs_mb, "result": keep}, fh)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(name: str, n: int, data_dir: Path, repeat: int) -> dict:
    """Run one task in a fresh Python process: its memory is its own (no allocator reuse between contenders)."""
    import pickle
    import subprocess

    fd, result = tempfile.mkstemp(suffix=".pkl", dir=data_dir)
    os.close(fd)
    try:
        cmd = [sys.executable, __file__, "--child", name, "--size", str(n), "--data-dir", str(data_dir),
               "--repeat", str(repeat), "--result", result]
        code = subprocess.call(cmd)
        if code != 0:
            raise RuntimeError(f"{name} at {n:,} leads failed (exit {code})")
        with open(result, "rb") as fh:
            return pickle.load(fh)
    finally:
        os.unlink(result)


def run(n: int, data_dir: Path, steps: list[str], repeat: int, bypass_ingest: bool = False,
        json_path: str | None = None, pandas_paths_max: int = 2_000_000) -> list[dict]:
    rows: list[dict] = []

    def add(step, contender, m, n_rows, note=""):
        sec = m["seconds"]
        rows.append({"leads": n, "step": step, "contender": contender, "seconds": sec,
                     "rows/s": n_rows / sec if sec > 0 else np.nan, "peak MB": m["mb"], "abs peak MB": m["abs_mb"],
                     "rows": n_rows, "note": note})
        print(f"  {n:>10,} {step:<12} {contender:<22} {sec:9.2f} s {m['mb']:9,.0f} MB", file=sys.stderr, flush=True)
        if json_path:  # row by row: a size stopped by run.py's memory watchdog keeps what it measured
            with open(json_path, "a") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")

    raw, gen_sec = ensure_raw(data_dir, n)
    raw_rows = parquet_rows(raw)
    if gen_sec is not None:
        add("generate", "demo generator", {"seconds": gen_sec, "mb": np.nan, "abs_mb": np.nan},
            sum(raw_rows.values()))
    processed = processed_dir_for(data_dir, n)
    if bypass_ingest and not (processed / "ingest_manifest.json").exists():
        add("ingest", "bypass: DuckDB copy", measure("ingest_bypass", n, data_dir, 1), sum(raw_rows.values()),
            "not the kit's ingest")
    elif "ingest" in steps or not (processed / "ingest_manifest.json").exists():
        warm(raw)
        if "ingest" in steps:
            add("ingest", "pyarrow read+write", measure("ingest_copy", n, data_dir, 1), sum(raw_rows.values()))
        add("ingest", "kit", measure("ingest_kit", n, data_dir, 1), sum(raw_rows.values()))
    rows_p = parquet_rows(processed)
    warm(processed)

    if "funnel" in steps:
        n_rows = rows_p["leads"] + rows_p.get("opportunities", 0)
        kit = measure("funnel_kit", n, data_dir, repeat)
        add("funnel", "kit (Ibis/DuckDB)", kit, n_rows)
        for name, label in (("funnel_sql", "raw DuckDB SQL"), ("funnel_pandas", "pandas")):
            m = measure(name, n, data_dir, repeat if name.endswith("sql") else 1)
            same = _norm_counts(m["result"]).equals(_norm_counts(kit["result"]))
            add("funnel", label, m, n_rows, "equal" if same else "DIFFERENT")

    if "paths" in steps:
        n_rows = rows_p["touchpoints"] + rows_p["leads"] + rows_p["opportunities"]
        kit = measure("paths_kit", n, data_dir, repeat)
        add("paths", "kit (Ibis/DuckDB)", kit, n_rows, f"{int(kit['result']['journeys'].sum()):,} journeys")
        contenders = [("paths_sql", "raw DuckDB SQL")]
        if n <= pandas_paths_max:  # ~2.5 GB per million leads: 10 M would not fit beside the rest
            contenders.append(("paths_pandas", "pandas"))
        for name, label in contenders:
            m = measure(name, n, data_dir, repeat if name.endswith("sql") else 1)
            same = _norm_paths(m["result"]).equals(_norm_paths(kit["result"]))
            add("paths", label, m, n_rows, "equal" if same else "DIFFERENT")
        add("paths", "kit pipeline basis", measure("paths_kit_pipeline", n, data_dir, 1), n_rows)

    reads = {
        "attribution": ("touchpoints", "leads", "opportunities"),
        "velocity": ("opportunities", "stage_history", "leads"),
        "handoff": ("leads",),
        "closed_lost": ("opportunities",),
        "plan": ("opportunities", "targets", "forecasts"),
        "data_quality": tuple(rows_p),
    }
    for step, tables in reads.items():
        if step in steps:
            add(step, "kit section", measure(step, n, data_dir, 1), sum(rows_p.get(t, 0) for t in tables))
    if "monthly" in steps:
        add("monthly", "run_cadence", measure("monthly", n, data_dir, 1), sum(rows_p.values()))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, required=True, help="demo leads")
    ap.add_argument("--data-dir", default=os.environ.get("FUNNEL_KIT_BENCH_DATA",
                                                         str(Path(tempfile.gettempdir()) / "funnel-kit-bench")))
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma separated, of {','.join(STEPS)}")
    ap.add_argument("--repeat", type=int, default=0, help="runs per engine step (default 3 up to 1 M leads, else 2)")
    ap.add_argument("--json", default=None, help="append the rows as JSON lines to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pandas-paths-max", type=int, default=2_000_000,
                    help="largest size for the pandas path baseline (it needs ~2.5 GB per million leads)")
    ap.add_argument("--bypass-ingest", action="store_true",
                    help="when no processed copy is cached, write one with DuckDB instead of analysis.ingest "
                         "(reported as such; no longer needed for size: analysis.ingest is out of core)")
    args = ap.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps: {sorted(unknown)}")
    repeat = args.repeat or (3 if args.size <= 1_000_000 else 2)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        return child(args)
    rows = run(args.size, data_dir, steps, repeat, args.bypass_ingest, args.json, args.pandas_paths_max)
    print(format_table(pd.DataFrame(rows)))
    return 0


def format_table(df: pd.DataFrame) -> str:
    """The rows with the kit's ratios to the baselines of the same step."""
    df = df.copy()
    ratio_t, ratio_m = [], []
    for _, r in df.iterrows():
        same = df[(df["leads"] == r["leads"]) & (df["step"] == r["step"])]
        kit = same[same["contender"].str.startswith("kit (") | (same["contender"] == "kit")]
        if r["contender"].startswith(("raw DuckDB", "pandas", "pyarrow")) and len(kit):
            ratio_t.append(kit["seconds"].iloc[0] / r["seconds"])
            ratio_m.append(kit["peak MB"].iloc[0] / r["peak MB"] if r["peak MB"] > 0 else np.nan)
        else:
            ratio_t.append(np.nan)
            ratio_m.append(np.nan)
    df["kit/this time"] = ratio_t
    df["kit/this mem"] = ratio_m
    cols = ["leads", "step", "contender", "seconds", "rows/s", "peak MB", "abs peak MB", "kit/this time",
            "kit/this mem", "note"]
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_rows", 500):
        return df[cols].to_string(index=False, formatters={
            "leads": "{:,}".format, "seconds": "{:.2f}".format, "rows/s": "{:,.0f}".format,
            "peak MB": "{:,.0f}".format, "abs peak MB": "{:,.0f}".format,
            "kit/this time": lambda v: "" if pd.isna(v) else f"{v:.2f}",
            "kit/this mem": lambda v: "" if pd.isna(v) else f"{v:.2f}"})


if __name__ == "__main__":
    raise SystemExit(main())
