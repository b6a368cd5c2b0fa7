"""The same Ibis code on PySpark (local mode) gives the same numbers as on DuckDB.

Design principle 2: the engine is one setting. One small demo export (2 000 leads, every planted effect) is
ingested once; every section's engine work runs on both backends and the results must be equal: the funnel
count table and metrics, the attribution journeys (distinct paths, time decay, lifecycle, closed deals) and the
metrics built on them, velocity, handoff/SLA and closed-lost. CI installs pyspark and a Java runtime, so this test
runs there (it is not skipped when they are missing: it fails, naming what is missing).
"""

from __future__ import annotations

import shutil

import ibis
import pandas as pd
import pytest

from analysis import attribution, closed_lost, funnel, handoff, velocity
from analysis import journeys as J
from analysis.config import MAPPINGS_DIR, load_definitions
from analysis.context import open_context
from analysis.demo import generate_demo_data
from analysis.engine import connect, load_tables, to_frame
from analysis.ingest import ingest

PERIOD = "2026-10"


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark")
    generate_demo_data(root / "raw", n_leads=2000, fmt="parquet")
    ingest(root / "raw", MAPPINGS_DIR / "canonical.yml", root / "processed", load_definitions())
    return root / "processed"


@pytest.fixture(scope="module")
def spark_ctx(processed):
    assert shutil.which("java"), "PySpark needs a Java runtime (CI installs openjdk-17-jre-headless)"
    import pyspark  # noqa: F401  (ImportError here names the missing dependency)

    ctx = open_context(processed, PERIOD, engine="pyspark")
    yield ctx
    ctx.con._session.stop()


@pytest.fixture(scope="module")
def duck_ctx(processed):
    return open_context(processed, PERIOD, engine="duckdb")


def _same(a: pd.DataFrame, b: pd.DataFrame, keys: list[str] | None = None) -> None:
    """Equal frames up to row order (sorted by `keys`, default every column) and integer/float widths."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    if keys is not None:
        a = a.sort_values(keys, kind="mergesort", na_position="last")
        b = b.sort_values(keys, kind="mergesort", na_position="last")
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, check_exact=False, rtol=1e-9
    )


def test_engine_setting_selects_the_backend(monkeypatch, spark_ctx):
    assert spark_ctx.con.name == "pyspark"
    assert connect("duckdb").name == "duckdb"
    monkeypatch.setenv("FUNNEL_KIT_ENGINE", "pyspark")
    assert connect().name == "pyspark"  # the running session is reused
    assert spark_ctx.con._session.conf.get("spark.sql.session.timeZone") == "UTC"


def test_tables_have_the_canonical_types_on_both(spark_ctx, duck_ctx):
    assert set(spark_ctx.tables) == set(duck_ctx.tables)
    for name, t in duck_ctx.tables.items():
        s = spark_ctx.tables[name]
        assert s.columns == t.columns, name
        for col in t.columns:
            dt, st = t[col].type(), s[col].type()
            if dt.is_timestamp():
                assert st.is_timestamp(), (name, col, st)
            elif dt.is_decimal():
                assert st.is_decimal() and st.scale == dt.scale, (name, col, st)
            else:
                assert type(dt) is type(st), (name, col, dt, st)
        n_duck = int(to_frame(t.count().name("n").as_table(), duck_ctx.con)["n"][0])
        n_spark = int(to_frame(s.count().name("n").as_table(), spark_ctx.con)["n"][0])
        assert n_duck == n_spark, name


def test_funnel_counts_and_metrics_equal(spark_ctx, duck_ctx):
    args = lambda c: (c.tables, c.definitions, c.as_of)  # noqa: E731
    d_counts = funnel.cohort_counts(*args(duck_ctx), duck_ctx.con)
    s_counts = funnel.cohort_counts(*args(spark_ctx), spark_ctx.con)
    assert d_counts["entered"].sum() > 1000
    _same(d_counts, s_counts)
    last = duck_ctx.period.months[-1]
    _, d_metrics = funnel.funnel_metrics(*args(duck_ctx), last, duck_ctx.con)
    _, s_metrics = funnel.funnel_metrics(*args(spark_ctx), last, spark_ctx.con)
    assert len(d_metrics) > 100
    _same(d_metrics, s_metrics)


def test_value_per_success_equal(spark_ctx, duck_ctx):
    counts = funnel.cohort_counts(duck_ctx.tables, duck_ctx.definitions, duck_ctx.as_of, duck_ctx.con)
    d = funnel.value_per_success(duck_ctx.tables, counts, duck_ctx.as_of, duck_ctx.con)
    s = funnel.value_per_success(spark_ctx.tables, counts, spark_ctx.as_of, spark_ctx.con)
    assert d.keys() == s.keys()
    for k in d:
        assert s[k] == pytest.approx(d[k], rel=1e-12, nan_ok=True), k


@pytest.mark.parametrize("basis", J.BASES)
def test_attribution_journeys_equal(spark_ctx, duck_ctx, basis):
    w = J.JourneyWindow.for_context(duck_ctx)
    ob = duck_ctx.definitions["channels"]["origin_by_channel"]
    half_life = float(duck_ctx.definitions["attribution"]["time_decay_half_life_days"])
    d = J.fetch_paths(J.path_table(duck_ctx.tables, basis, w, ob), duck_ctx.con)
    s = J.fetch_paths(J.path_table(spark_ctx.tables, basis, w, ob), spark_ctx.con)
    assert d["journeys"].sum() > 20 and (d["path"].str.contains(J.SEP, regex=False)).any()
    _same(d, s)
    keys = ["segment", "key"]
    d = J.fetch_sorted(J.time_decay_table(duck_ctx.tables, basis, w, ob, half_life), duck_ctx.con, keys)
    s = J.fetch_sorted(J.time_decay_table(spark_ctx.tables, basis, w, ob, half_life), spark_ctx.con, keys)
    assert len(d) > 5
    _same(d, s)


def test_lifecycle_and_closed_tables_equal(spark_ctx, duck_ctx):
    w = J.JourneyWindow.for_context(duck_ctx)
    ob = duck_ctx.definitions["channels"]["origin_by_channel"]
    keys = ["segment", "first_channel", "first_marketing", "marketing_before", "marketing_after"]
    d = J.fetch_sorted(J.lifecycle_table(duck_ctx.tables, w, ob), duck_ctx.con, keys)
    s = J.fetch_sorted(J.lifecycle_table(spark_ctx.tables, w, ob), spark_ctx.con, keys)
    assert len(d) > 3
    _same(d, s)
    keys = ["segment", "marketing", "won"]
    d = J.fetch_sorted(J.closed_table(duck_ctx.tables, w, ob), duck_ctx.con, keys)
    s = J.fetch_sorted(J.closed_table(spark_ctx.tables, w, ob), spark_ctx.con, keys)
    _same(d, s)


def test_attribution_section_equal(spark_ctx, duck_ctx):
    d = attribution.run_attribution(duck_ctx)
    s = attribution.run_attribution(spark_ctx)
    _same(d.credits, s.credits)
    _same(d.metrics, s.metrics)


def test_velocity_equal(spark_ctx, duck_ctx):
    d, s = velocity.analyse(duck_ctx), velocity.analyse(spark_ctx)
    assert d.source == s.source
    assert len(d.metrics) > 20
    _same(d.durations, s.durations, keys=list(d.durations.columns[:5]))
    _same(d.stage_durations, s.stage_durations, keys=list(d.stage_durations.columns[:4]))
    _same(d.aging, s.aging)
    _same(d.aging_list, s.aging_list)
    _same(d.metrics, s.metrics)
    assert d.notes == s.notes


def test_handoff_equal(spark_ctx, duck_ctx):
    d, s = handoff.analyse(duck_ctx), handoff.analyse(spark_ctx)
    assert len(d.metrics) > 20
    _same(d.metrics, s.metrics)
    _same(d.aging_list, s.aging_list)
    assert d.notes == s.notes


def test_closed_lost_equal(spark_ctx, duck_ctx):
    d, s = closed_lost.analyse(duck_ctx), closed_lost.analyse(spark_ctx)
    assert len(d.metrics) > 20
    _same(d.counts, s.counts)
    _same(d.metrics, s.metrics)
    _same(d.win_rates, s.win_rates)
    assert d.notes == s.notes


def test_a_warehouse_url_with_tables_already_loaded(tmp_path, monkeypatch, processed, duck_ctx):
    """An Ibis URL whose database already holds the canonical tables: used in place, same counts."""
    url = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    con = ibis.connect(url)
    for name in duck_ctx.tables:
        con.raw_sql(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{processed / f'{name}.parquet'}')")
    con.disconnect()
    monkeypatch.setenv("FUNNEL_KIT_TABLES", "engine")
    ctx = open_context(processed, PERIOD, engine=url)
    assert set(ctx.tables) == set(duck_ctx.tables)
    d = funnel.cohort_counts(duck_ctx.tables, duck_ctx.definitions, duck_ctx.as_of, duck_ctx.con)
    w = funnel.cohort_counts(ctx.tables, ctx.definitions, ctx.as_of, ctx.con)
    _same(d, w)


def test_load_tables_reads_the_processed_folder_on_any_backend(processed, spark_ctx):
    tables = load_tables(spark_ctx.con, processed)
    assert {"leads", "opportunities", "touchpoints"} <= set(tables)


@pytest.mark.e2e
def test_a_monthly_pack_on_spark_is_byte_identical_to_duckdb(processed, tmp_path):
    """The engine is one setting end to end: notebooks get it as a parameter, the JVM's console output stays out
    of them, and the pack's metrics and HTML are the same bytes as on DuckDB."""
    from analysis.pack import run_cadence

    actions = processed.parent / "raw" / "actions"
    duck = run_cadence("monthly", PERIOD, data_dir=processed, out_dir=tmp_path / "duck", actions_dir=actions)
    spark = run_cadence(
        "monthly", PERIOD, data_dir=processed, out_dir=tmp_path / "spark", actions_dir=actions, engine="pyspark"
    )
    assert (spark / "metrics.parquet").read_bytes() == (duck / "metrics.parquet").read_bytes()
    assert (spark / "board_pack.html").read_bytes() == (duck / "board_pack.html").read_bytes()
    for nb in sorted((spark / "notebooks").glob("*.ipynb")):
        assert "log4j" not in nb.read_text(encoding="utf-8"), nb.name
