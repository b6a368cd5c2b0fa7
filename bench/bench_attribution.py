"""Benchmark: the kit's attribution models vs ChannelAttribution and marketing-attribution-models (mam).

    python bench/bench_attribution.py [--sizes 10000,1000000,10000000] [--no-engine] [--ca-data FILE]

For each size: synthetic journeys drawn with numpy (10 channels, a Markov-chain walk, conversion depending on
the channels seen, lognormal amounts), aggregated to distinct paths with numpy (the peers' input). Then, in this
process and on the same journeys:

* kit engine: touches -> transitions  the pack's engine step for Markov (``journeys.journey_transitions``, the
                   end of ``transition_table``) on Ibis/DuckDB, from journey x touch rows held as Arrow
                   memtables: LAG/LEAD over each journey's time-ordered touches + GROUP BY; at most (K+1)(K+2) rows
                   come back. Checked (not timed) equal to the transitions counted from the distinct paths;
* kit engine: touches -> paths        the engine step the other models (and the peers) start from
                   (``journeys.distinct_paths``, the end of ``path_table``);
* kit markov from engine transitions  what the pack does at order 1 with the engine's counts: exact removal
                   effects (absorbing chain, numpy.linalg.solve) + credits allocated to the cent. With
                   --no-engine the counts come from the distinct paths (numpy) instead;
* kit markov from path strings        parse the " > "-joined distinct paths, count transitions, solve, allocate
                   (kept for comparison: the route the peers' input format implies);
* kit markov solve (parsed paths)     the same from paths parsed beforehand;
* kit first+last+linear               the three heuristics the peers also compute, from the path strings;
* kit all models   first, last, linear, U, W, full path, J, inverse J, Markov, Shapley (exact), allocated to the cent;
* CA markov        ChannelAttribution.markov_model with its defaults (simulated removal effects);
* CA heuristics    ChannelAttribution.heuristic_models;
* mam markov       mam.MAM(grouped journeys) + run_markov (analytic);
* mam heuristics   run_first_click + run_last_click + run_linear.

Columns: seconds (best of 3 for steps under 2 s, the machine may be shared; longer steps run once), journeys per
second, peak memory (the step's peak resident memory above its starting point, sampled every 2 ms, so C++ / Rust
allocations of the peers and DuckDB's count too), and on the peer rows: kit/peer (kit markov from engine
transitions, or kit first+last+linear, over the peer), strings/peer (kit markov from path strings over the peer)
and engine+kit / engine+peer ((engine transitions + kit markov) over (engine paths + peer): from touch rows to
removal effects on both sides). < 1 means the kit is faster. A second table gives seconds per million journeys
per step and size (constant = linear scaling). ChannelAttribution's example data (its sdist's Data.csv) is timed
too when --ca-data points at it. Timed assertions never go into the unit tests; this script only prints.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_pipeline import Peak  # noqa: E402  (one memory sampler for every benchmark)

from analysis import attribution as A  # noqa: E402
from analysis.config import load_definitions  # noqa: E402

CHANNELS = np.array(["paid_search", "paid_social", "organic_search", "content_syndication", "webinar", "events",
                     "email", "website_direct", "outbound_sdr", "partner_referral"])
MAX_LEN = 18  # 11 ** 18 < 2 ** 63: a path is one int64 key (base 11, 0 = padding)
SEED = 20251101


# ------------------------------------------------------------------------------------------- data


def synthetic_journeys(n: int, seed: int = SEED):
    """n journeys: (padded channel codes 1..10, lengths, converted, cents), drawn with numpy."""
    rng = np.random.default_rng(seed)
    k = len(CHANNELS)
    first_p = np.array([0.16, 0.08, 0.12, 0.18, 0.08, 0.06, 0.07, 0.10, 0.10, 0.05])
    trans = rng.dirichlet(np.full(k, 0.8), size=k)
    lengths = np.minimum(rng.geometric(0.38, n), MAX_LEN).astype(np.int64)  # mean ~2.6 touches
    codes = np.zeros((n, MAX_LEN), np.int8)
    cur = rng.choice(k, n, p=first_p)
    codes[:, 0] = cur + 1
    cum = np.cumsum(trans, axis=1)
    for j in range(1, MAX_LEN):
        live = lengths > j
        if not live.any():
            break
        u = rng.random(int(live.sum()))
        nxt = (u[:, None] > cum[cur[live]]).sum(axis=1)
        cur = cur.copy()
        cur[live] = np.minimum(nxt, k - 1)
        codes[live, j] = cur[live] + 1
    effect = np.linspace(-0.4, 0.6, k)
    seen = np.zeros(n)
    for c in range(k):
        seen += effect[c] * (codes == c + 1).any(axis=1)
    p = 1 / (1 + np.exp(-(-2.2 + seen + 0.08 * lengths)))
    converted = rng.random(n) < p
    cents = np.where(converted, np.rint(rng.lognormal(np.log(20_000_00), 0.8, n)), 0).astype(np.int64)
    return codes, lengths, converted, cents


def distinct_paths(codes, lengths, converted, cents) -> pd.DataFrame:
    """Aggregate journeys to distinct paths with numpy: one int64 key per path, np.unique, bincount."""
    powers = (11 ** np.arange(MAX_LEN, dtype=np.int64)).astype(np.int64)
    keys = codes.astype(np.int64) @ powers
    uniq, inv = np.unique(keys, return_inverse=True)
    conv = np.bincount(inv, weights=converted, minlength=len(uniq)).astype(np.int64)
    journeys = np.bincount(inv, minlength=len(uniq)).astype(np.int64)
    value = np.bincount(inv, weights=cents, minlength=len(uniq)).astype(np.int64)
    digits = (uniq[:, None] // powers[None, :]) % 11
    names = np.concatenate([[""], CHANNELS])
    paths = [" > ".join(names[d[d > 0]]) for d in digits]
    return pd.DataFrame({"path": paths, "conversions": conv, "nulls": journeys - conv, "value_cents": value,
                         "value": value / 100.0})


def grouped_for_mam(paths: pd.DataFrame) -> pd.DataFrame:
    conv = paths[paths["conversions"] > 0]
    nulls = paths[paths["nulls"] > 0]
    return pd.concat([
        pd.DataFrame({"path": conv["path"], "has_conv": True, "occ": conv["conversions"], "value": conv["value"]}),
        pd.DataFrame({"path": nulls["path"], "has_conv": False, "occ": nulls["nulls"], "value": 0.0}),
    ], ignore_index=True)


# ------------------------------------------------------------------------------------------- steps


def kit_markov_transitions(transitions):
    """Exact removal effects from the engine's transition counts + credits allocated to the cent (the pack's route
    at order 1: ``journeys.transition_table`` -> ``attribution.markov_from_transitions``)."""
    res = A.markov_removal_effects_from_transitions(transitions)
    A.markov_from_transitions(transitions, "revenue")
    return res


def kit_markov(paths):
    """Parse the distinct path strings, solve the chain exactly, allocate the credits (returns the removal effects)."""
    ps = A.PathSet.from_frame(paths)
    res = A.markov_removal_effects(ps)
    A.credit_frame(ps.channels, res.removal_effect, res.removal_effect_value, model="markov", basis="revenue",
                   total_conversions=ps.total_conversions, total_cents=ps.total_cents)
    return res


def kit_markov_solve(ps):
    """The same, from paths already parsed (transition counting over the paths + exact solve + credits)."""
    res = A.markov_removal_effects(ps)
    A.credit_frame(ps.channels, res.removal_effect, res.removal_effect_value, model="markov", basis="revenue",
                   total_conversions=ps.total_conversions, total_cents=ps.total_cents)
    return res


def kit_heuristics(paths):
    ps = A.PathSet.from_frame(paths)
    return [A.position_model(ps, m, "revenue") for m in ("first_touch", "last_touch", "linear")]


def kit_all(paths, settings):
    return A.all_models(paths, "revenue", settings)


def kit_engine(codes, lengths, converted, cents):
    """Journey touch rows as Ibis memtables on DuckDB, and the two engine steps of analysis.journeys over them:
    touches -> transition counts (``journey_transitions``) and touches -> distinct paths (``distinct_paths``), the
    expressions ``transition_table`` and ``path_table`` end with. Returns {step name: run()}."""
    import ibis
    import pyarrow as pa

    from analysis import journeys as J

    n = len(lengths)
    jid = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(jid)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ch = codes[jid, pos].astype(np.int32) - 1
    base = np.datetime64("2026-01-01T00:00:00", "us")
    t_at = base + (pos * 3_600_000_000).astype("timedelta64[us]")
    keys = pa.DictionaryArray.from_arrays(pa.array(ch), pa.array(CHANNELS)).cast(pa.string())
    touches = pa.table({
        "t_id": pa.array(np.arange(len(jid))), "t_lead": pa.nulls(len(jid), pa.string()), "t_opp": pa.array(jid),
        "t_at": pa.array(t_at, pa.timestamp("us", tz="UTC")), "t_key": keys, "t_channel": keys,
        "t_mkt": pa.array(np.ones(len(jid), bool)),
    })
    ts = pa.timestamp("us", tz="UTC")
    jt = pa.table({
        "jid": pa.array(np.arange(n)), "opp_id": pa.array(np.arange(n)),
        "lead_id": pa.nulls(n, pa.string()), "segment": pa.array(np.full(n, "All")),
        "win_start": pa.array(np.full(n, base - np.timedelta64(1, "D")), ts),
        "win_end": pa.array(np.full(n, base + np.timedelta64(30, "D")), ts),
        "creation_at": pa.array(np.full(n, base + np.timedelta64(30, "D")), ts),
        "converted": pa.array(converted), "cents": pa.array(cents),
    })
    del jid, pos, ch, t_at
    con = ibis.duckdb.connect()
    jt_t, touches_t = ibis.memtable(jt), ibis.memtable(touches)
    tr_expr = J.journey_transitions(jt_t, touches_t)
    path_expr = J.distinct_paths(jt_t, touches_t)
    return {
        "kit engine: touches -> transitions": lambda: J.fetch_transitions(tr_expr, con),
        "kit engine: touches -> paths": lambda: J.fetch_paths(path_expr, con),
    }


def ca_markov(paths):
    import ChannelAttribution as ca

    return ca.markov_model(paths, "path", "conversions", var_value="value", var_null="nulls")


def ca_heuristics(paths):
    import ChannelAttribution as ca

    return ca.heuristic_models(paths, "path", "conversions", var_value="value")


def mam_markov(grouped):
    import mam

    m = mam.MAM(grouped, format_type="grouped_journey", channels_colname="path", journey_with_conv_colname="has_conv",
                occurrences_colname="occ", conversion_value_colname="value")
    return m.run_markov()


def mam_heuristics(grouped):
    import mam

    m = mam.MAM(grouped, format_type="grouped_journey", channels_colname="path", journey_with_conv_colname="has_conv",
                occurrences_colname="occ", conversion_value_colname="value")
    return [m.run_first_click(), m.run_last_click(), m.run_linear()]


# ------------------------------------------------------------------------------------------- main

KIT_TR = "kit markov from engine transitions"
KIT_STR = "kit markov from path strings"
KIT_SOLVE = "kit markov solve (parsed paths)"
KIT_H = "kit first+last+linear"
ENG_TR = "kit engine: touches -> transitions"
ENG_P = "kit engine: touches -> paths"
CA_M = "CA markov_model (defaults)"
MAM_M = "mam markov (analytic)"


def bench_paths(label: str, n_journeys: int, paths: pd.DataFrame, settings, rows: list, engine=None):
    """Time every step on the same journeys; append one row per step to `rows`; return {step: (s, MB, out)}."""
    grouped = grouped_for_mam(paths)
    parsed = A.PathSet.from_frame(paths)
    res = {}

    def run(name, fn, *args):
        try:
            out, sec, mb = timed(fn, *args)
        except Exception as exc:  # a peer failing at a size is reported, not fatal
            print(f"  {name}: failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            return None
        res[name] = (sec, mb, out)
        print(f"  {label:>10} {name:<38} {sec:9.3f} s  {mb:8.0f} MB", file=sys.stderr, flush=True)
        return out

    transitions = None
    if engine is not None:
        transitions = run(ENG_TR, engine[ENG_TR])
        run(ENG_P, engine[ENG_P])
    numpy_tr = A.transition_counts(parsed)  # the same counts from the distinct paths (not timed): a check
    if transitions is None:
        transitions = numpy_tr
    else:
        pd.testing.assert_frame_equal(transitions, numpy_tr, check_dtype=False)
    run(KIT_TR, kit_markov_transitions, transitions)
    run(KIT_STR, kit_markov, paths)
    run(KIT_SOLVE, kit_markov_solve, parsed)
    run(KIT_H, kit_heuristics, paths)
    run("kit all models", kit_all, paths, settings)
    run(CA_M, ca_markov, paths)
    run("CA heuristic_models", ca_heuristics, paths)
    run(MAM_M, mam_markov, grouped)
    run("mam first+last+linear", mam_heuristics, grouped)

    def sec(name):
        return res.get(name, (np.nan,))[0]

    for name, (s, mb, _) in res.items():
        r = {"journeys": label, "n": n_journeys, "distinct paths": len(paths), "transitions": len(transitions),
             "step": name, "seconds": s, "journeys/s": n_journeys / s if s > 0 else np.nan, "peak MB": mb,
             "kit/peer": np.nan, "strings/peer": np.nan, "engine+kit / engine+peer": np.nan}
        if name in (CA_M, MAM_M):
            r["kit/peer"] = sec(KIT_TR) / s
            r["strings/peer"] = sec(KIT_STR) / s
            r["engine+kit / engine+peer"] = (sec(ENG_TR) + sec(KIT_TR)) / (sec(ENG_P) + s)
        elif name.startswith(("CA heur", "mam first")):
            r["kit/peer"] = sec(KIT_H) / s
        rows.append(r)
    return res


def timed(fn, *args, repeat: int = 3, **kwargs):
    """(result, best seconds, peak MB of the first run); stdout of the peers swallowed. Runs under 2 s are
    repeated (best of `repeat`: the machine is shared), longer ones run once."""
    best, mb = np.inf, np.nan
    for i in range(max(1, repeat)):
        with Peak(interval=0.002) as mem, contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sec = time.perf_counter() - t0
        best = min(best, sec)
        mb = mem.mb if i == 0 else mb
        if sec >= 2.0:
            break
    return out, best, mb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,1000000,10000000", help="journey counts, comma separated")
    ap.add_argument("--no-engine", action="store_true", help="skip the Ibis/DuckDB steps (transitions counted "
                                                              "from the distinct paths with numpy instead)")
    ap.add_argument("--engine-max", type=int, default=10_000_000, help="largest size for the engine steps")
    ap.add_argument("--ca-data", default=None, help="ChannelAttribution's Data.csv (from its sdist) to time too")
    args = ap.parse_args(argv)
    settings = A.AttributionSettings.from_definitions(load_definitions())
    rows: list[dict] = []
    # warm-up: imports and first-call costs out of the timings
    warm = synthetic_journeys(2000, seed=1)
    bench_paths("warm-up", 2000, distinct_paths(*warm), settings, [], None if args.no_engine else kit_engine(*warm))
    if args.ca_data:
        d = pd.read_csv(args.ca_data, sep=";")
        paths = pd.DataFrame({"path": d["path"].str.replace(r"\s*>\s*", " > ", regex=True),
                              "conversions": d["total_conversions"], "nulls": d["total_null"],
                              "value": d["total_conversion_value"]})
        paths["value_cents"] = np.rint(paths["value"] * 100).astype(np.int64)
        n = int(paths["conversions"].sum() + paths["nulls"].sum())
        res = bench_paths("CA Data.csv", n, paths, settings, rows)
        _compare_markov(res, "CA Data.csv")
    for n in [int(s) for s in args.sizes.split(",") if s]:
        t0 = time.perf_counter()
        data = synthetic_journeys(n)
        paths = distinct_paths(*data)
        agg = time.perf_counter() - t0
        print(f"{n:,} journeys ({int(data[1].sum()):,} touches) -> {len(paths):,} distinct paths (generated + "
              f"aggregated in {agg:.1f} s)", file=sys.stderr, flush=True)
        engine = None if args.no_engine or n > args.engine_max else kit_engine(*data)
        del data
        res = bench_paths(f"{n:,}", n, paths, settings, rows, engine)
        _compare_markov(res, f"{n:,}")
        del res, paths, engine
        gc.collect()
    _print_tables(pd.DataFrame(rows))
    return 0


def _print_tables(table: pd.DataFrame) -> None:
    ratio = lambda v: "" if pd.isna(v) else f"{v:.4f}"  # noqa: E731
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_rows", 300):
        print(table.drop(columns="n").to_string(index=False, formatters={
            "seconds": "{:.3f}".format, "journeys/s": "{:,.0f}".format, "peak MB": "{:,.0f}".format,
            "kit/peer": ratio, "strings/peer": ratio, "engine+kit / engine+peer": ratio,
            "distinct paths": "{:,}".format}))
        synth = table[table["journeys"] != "CA Data.csv"]
        if synth["journeys"].nunique() > 1:
            per_m = synth.assign(v=synth["seconds"] / (synth["n"] / 1e6)).pivot(
                index="step", columns="n", values="v")
            per_m = per_m[sorted(per_m.columns)].reindex(synth["step"].drop_duplicates())
            per_m.columns = [f"{c:,} j" for c in per_m.columns]
            print("\nScaling: seconds per million journeys (constant across sizes = linear in journeys)")
            print(per_m.to_string(float_format=lambda v: f"{v:.4f}"))


def _compare_markov(res: dict, label: str) -> None:
    """Print how far the peers' Markov removal effects are from the kit's exact ones (not timed)."""
    if KIT_TR not in res:
        return
    kit = res[KIT_TR][2].frame().set_index("channel")["removal_effect"]
    kit = kit / kit.sum()
    msg = [f"  {label}: max |normalised removal effect - kit exact|:"]
    if "CA markov_model (defaults)" in res:
        ca = res["CA markov_model (defaults)"][2]
        ca = ca["result"] if isinstance(ca, dict) else ca
        s = ca.set_index("channel_name")["total_conversions"]
        msg.append(f"CA {np.abs(s / s.sum() - kit.reindex(s.index)).max():.2e}")
    if "mam markov (analytic)" in res:
        re = res["mam markov (analytic)"][2].metadata["removal_effect"]["removal_effect"]
        re.index = re.index.astype(str)
        msg.append(f"mam {np.abs(re / re.sum() - kit.reindex(re.index)).max():.2e}")
    print(" ".join(msg), file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
