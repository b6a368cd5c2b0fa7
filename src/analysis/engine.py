"""The compute engine: Ibis expressions over embedded DuckDB by default, PySpark or a warehouse by setting.

Only aggregates leave the engine (`to_frame`). Tables are registered with `read_parquet`; with ibis 12 and
duckdb 2.0, `con.create_table(name, pandas_df)` fails with a parser error, so small frames go in via `memtable`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import pandas as pd

from analysis.schema import TABLES

DEFAULT_ENGINE = "duckdb"


def connect(engine: str | None = None) -> ibis.BaseBackend:
    """A backend for `engine`: 'duckdb' (embedded, default), 'pyspark' (Spark) or an Ibis URL.

    The setting comes from `engine`, else FUNNEL_KIT_ENGINE, else 'duckdb'. Settings that matter:
    * duckdb: FUNNEL_KIT_DUCKDB_MEMORY_LIMIT (e.g. '16GB'; DuckDB's default is 80% of RAM) and
      FUNNEL_KIT_DUCKDB_TEMP_DIR (where larger-than-memory joins and sorts spill); FUNNEL_KIT_DUCKDB_THREADS.
    * pyspark: an active SparkSession is reused (spark-submit, a notebook on a cluster); otherwise one is built
      with master FUNNEL_KIT_SPARK_MASTER (default 'local[2]'; e.g. 'spark://host:7077', 'yarn'). The session
      time zone is always set to UTC (the canonical timestamps are UTC instants).
    * anything else is handed to `ibis.connect` (e.g. 'postgres://user@host/db', 'snowflake://...').
    """
    engine = engine or os.environ.get("FUNNEL_KIT_ENGINE", DEFAULT_ENGINE)
    if engine == "duckdb":
        con = ibis.duckdb.connect()
        # Deterministic results regardless of thread scheduling where DuckDB offers it.
        con.raw_sql("SET preserve_insertion_order = true")
        settings = {
            "memory_limit": os.environ.get("FUNNEL_KIT_DUCKDB_MEMORY_LIMIT"),
            "temp_directory": os.environ.get("FUNNEL_KIT_DUCKDB_TEMP_DIR"),
            "threads": os.environ.get("FUNNEL_KIT_DUCKDB_THREADS"),
        }
        for key, value in settings.items():
            if value:
                con.raw_sql(f"SET {key} = '{value}'")
        return con
    if engine == "pyspark":
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is None:
            master = os.environ.get("FUNNEL_KIT_SPARK_MASTER", "local[2]")
            builder = (
                SparkSession.builder.master(master)
                .appName("revenue-funnel-kit")
                .config("spark.ui.showConsoleProgress", "false")
            )
            if master.startswith("local"):
                # One machine: a few shuffle partitions instead of 200 (each a task), no web UI.
                builder = builder.config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false")
            # The JVM inherits this process's stdout/stderr: in a notebook kernel its start-up banner and logs would
            # become cell outputs (different on every run). They go to FUNNEL_KIT_SPARK_LOG (default: discarded).
            with _jvm_output_to(os.environ.get("FUNNEL_KIT_SPARK_LOG", os.devnull)):
                session = builder.getOrCreate()
        session.conf.set("spark.sql.session.timeZone", "UTC")
        return ibis.pyspark.connect(session)
    return ibis.connect(engine)


@contextmanager
def _jvm_output_to(path: str) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `path` while a child process (the Spark JVM) is started."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def load_tables(con: ibis.BaseBackend, processed_dir: str | Path, source: str | None = None) -> dict[str, ibis.Table]:
    """The canonical tables, registered on `con`, by name.

    source 'parquet' (default): `<processed_dir>/<table>.parquet` read by the engine (on a cluster the folder must
    be on storage every executor sees). source 'engine' (or FUNNEL_KIT_TABLES=engine): the tables already live in
    the engine's database under their canonical names (a warehouse loaded from data/processed); only the ingest
    manifest is read from `processed_dir`.
    """
    source = source or os.environ.get("FUNNEL_KIT_TABLES", "parquet")
    processed = Path(processed_dir)
    tables: dict[str, ibis.Table] = {}
    if source == "engine":
        for name in TABLES:
            try:  # not list_tables(): with ibis 12 + duckdb 2.0 it calls a removed DuckDB method
                tables[name] = con.table(name)
            except Exception:  # noqa: BLE001  (each backend raises its own "no such table")
                continue
        return tables
    if source != "parquet":
        raise ValueError(f"tables source must be 'parquet' or 'engine', not {source!r}")
    for name in TABLES:
        path = processed / f"{name}.parquet"
        if path.exists():
            tables[name] = con.read_parquet(str(path), table_name=name)
    return tables


@ibis.udf.scalar.builtin(name="unix_micros")
def _unix_micros(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[empty-body]
    """Microseconds since 1970 of a UTC timestamp (SQL UNIX_MICROS; sqlglot writes EPOCH_US for DuckDB)."""


# Backends where UNIX_MICROS (or its translation) exists. Elsewhere callers use the portable interval form.
_EPOCH_MICROS_BACKENDS = frozenset({"duckdb", "pyspark"})


def epoch_micros(ts: ibis.TimestampValue, con: ibis.BaseBackend | None) -> ibis.IntegerValue | None:
    """Integer microseconds since 1970 of `ts` on DuckDB and Spark, or None where the backend lacks it.

    Why: on DuckDB, `ts + INTERVAL` and `epoch_seconds()` on TIMESTAMPTZ go through ICU time-zone arithmetic per
    row (~30% of the funnel query); EPOCH_US is a plain integer read.
    """
    if con is None or con.name not in _EPOCH_MICROS_BACKENDS:
        return None
    return _unix_micros(ts)


@ibis.udf.scalar.builtin(name="timestamp_micros")
def _timestamp_micros(us: dt.int64) -> dt.Timestamp():  # type: ignore[empty-body]
    """A timestamp without time zone from epoch microseconds (Spark TIMESTAMP_MICROS; a macro on DuckDB)."""


def month_start(ts: ibis.TimestampValue, con: ibis.BaseBackend | None) -> ibis.TimestampValue:
    """The first instant of `ts`'s UTC month (a UTC wall-clock timestamp on DuckDB and Spark).

    Why: DATE_TRUNC on DuckDB's TIMESTAMPTZ runs through ICU per row and was half of the funnel's query time;
    truncating the same instant as a plain timestamp is integer calendar arithmetic.
    """
    us = epoch_micros(ts, con)
    if us is None:
        return ts.truncate("M")
    if con.name == "duckdb":
        con.raw_sql("CREATE OR REPLACE TEMP MACRO timestamp_micros(us) AS make_timestamp(us)")
    return _timestamp_micros(us).truncate("M")


def to_frame(expr: ibis.Expr, con: ibis.BaseBackend | None = None) -> pd.DataFrame:
    """Execute an aggregate expression and return it as pandas (callers order rows explicitly)."""
    result = con.execute(expr) if con is not None else expr.execute()
    if isinstance(result, pd.Series):
        result = result.to_frame()
    return result.reset_index(drop=True)


def memtable(frame: pd.DataFrame, name: str | None = None) -> ibis.Table:
    """A small pandas frame as an Ibis table (the supported path on ibis 12 + duckdb 2.0)."""
    return ibis.memtable(frame, name=name)
