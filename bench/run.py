"""`make bench`: run every benchmark and print its tables.

    python bench/run.py                                  # quick: pipeline at 100k and 1M leads, attribution peers
    python bench/run.py --sizes 100k,1M,10M              # the full scale run (10M: ~64M touchpoints; see README)
    python bench/run.py --sizes 1M --steps funnel,paths  # some steps only
    python bench/run.py --no-attribution                 # the pipeline only

1. The pipeline (`bench/bench_pipeline.py`), once per size in a child process so one size's memory never leaks
   into the next: demo data generated as Parquet (cached in --data-dir, default $TMPDIR/funnel-kit-bench), then
   ingest, the section aggregations against raw DuckDB SQL and pandas on the same Parquet, every section and the
   whole monthly run. A watchdog stops a size whose process tree grows past --max-memory (default 22 GiB, leaving
   room for the machine) and reports it instead of letting the kernel's OOM killer pick a victim.
2. The scaling table: seconds per million input rows per step across the sizes (flat = linear).
3. The attribution models against ChannelAttribution and marketing-attribution-models
   (`bench/bench_attribution.py`, sizes --attribution-sizes).

Only prints; timed assertions never go into the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pipeline import STEPS, format_table, tree_rss  # noqa: E402


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    if text == "never":
        return sys.maxsize
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def run_size(n: int, args, out_json: Path) -> tuple[int, float, float, str]:
    """Run bench_pipeline for one size under the memory watchdog: (exit code, seconds, peak GiB, reason)."""
    cmd = [sys.executable, str(HERE / "bench_pipeline.py"), "--size", str(n), "--data-dir", args.data_dir,
           "--steps", args.steps, "--json", str(out_json)]
    if args.repeat:
        cmd += ["--repeat", str(args.repeat)]
    cmd += ["--pandas-paths-max", str(args.pandas_paths_max)]
    if n >= args.bypass_ingest_from:
        cmd += ["--bypass-ingest"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak, reason = 0, ""
    limit = args.max_memory * 2**30
    while proc.poll() is None:
        try:
            rss = tree_rss(ps)
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        if rss > limit:
            reason = f"stopped: process tree above {args.max_memory:g} GiB"
            for child in ps.children(recursive=True):
                child.kill()
            proc.kill()
            break
        time.sleep(0.1)
    code = proc.wait()
    return code, time.perf_counter() - t0, peak / 2**30, reason


def scaling_table(df: pd.DataFrame) -> str:
    """Seconds per million input rows for each (step, contender) across sizes."""
    df = df[df["rows"] > 0].copy()
    df["s per M rows"] = df["seconds"] / (df["rows"] / 1e6)
    t = df.pivot_table(index=["step", "contender"], columns="leads", values="s per M rows", aggfunc="first")
    t.columns = [f"{c:,} leads" for c in t.columns]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        return t.to_string(float_format=lambda v: f"{v:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1M", help="demo lead counts, e.g. 100k,1M,10M (default 100k,1M)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"pipeline steps (default all: {','.join(STEPS)})")
    ap.add_argument("--repeat", type=int, default=0, help="runs per engine step (default 3 up to 1M leads, else 2)")
    ap.add_argument("--data-dir", default=os.environ.get("FUNNEL_KIT_BENCH_DATA",
                                                         str(Path(tempfile.gettempdir()) / "funnel-kit-bench")),
                    help="where generated demo exports are cached (10M leads take ~3 GB)")
    ap.add_argument("--max-memory", type=float, default=22.0, help="GiB; a size above it is stopped and reported")
    ap.add_argument("--bypass-ingest-from", type=parse_size, default="never",
                    help="from this size on, data/processed is written by a DuckDB copy instead of the kit's "
                         "ingest (default never: the kit's ingest is out of core at every size; say 0 to always "
                         "bypass)")
    ap.add_argument("--pandas-paths-max", type=parse_size, default=2_000_000,
                    help="largest size for the pandas path baseline (~1.5 GB per million leads; 10M took 15 GB)")
    ap.add_argument("--no-attribution", action="store_true", help="skip the attribution peers benchmark")
    ap.add_argument("--attribution-sizes", default="10000,100000",
                    help="journeys for bench_attribution.py (default 10000,100000)")
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    out_json = Path(tempfile.mkstemp(prefix="bench_", suffix=".jsonl", dir=args.data_dir)[1])
    status = []
    for n in sizes:
        print(f"== pipeline at {n:,} leads", file=sys.stderr, flush=True)
        code, sec, peak, reason = run_size(n, args, out_json)
        status.append({"leads": n, "exit": code, "wall s": round(sec, 1), "peak GiB (tree)": round(peak, 2),
                       "note": reason or ("ok" if code == 0 else "failed (see stderr)")})
    rows = [json.loads(line) for line in out_json.read_text().splitlines() if line.strip()]
    out_json.unlink()
    print("\n# Pipeline: seconds, input rows per second, peak memory above the step's start (MB), absolute peak "
          "(MB), kit/baseline ratios (< 1: the kit is faster / smaller)\n")
    if rows:
        print(format_table(pd.DataFrame(rows)))
        print("\n# Scaling: seconds per million input rows (flat across sizes = linear cost)\n")
        print(scaling_table(pd.DataFrame(rows)))
    print("\n# Runs\n")
    print(pd.DataFrame(status).to_string(index=False))
    failed = any(s["exit"] != 0 for s in status)
    if not args.no_attribution:
        print("\n# Attribution models vs peers (bench/bench_attribution.py)\n", flush=True)
        code = subprocess.call([sys.executable, str(HERE / "bench_attribution.py"), "--sizes",
                                args.attribution_sizes])
        failed = failed or code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
