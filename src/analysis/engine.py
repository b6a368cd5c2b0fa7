"""The compute engine: Ibis expressions over embedded DuckDB by default, PySpark or a warehouse by setting.

Only aggregates leave the engine (`to_frame`). Tables are registered with `read_parquet`; with ibis 12 and
duckdb 2.0, `con.create_table(name, pandas_df)` fails with a parser error, so small frames go in via `memtable`.
"""

from __future__ import annotations

import os
from pathlib import Path

import ibis
import pandas as pd

from analysis.schema import TABLES

DEFAULT_ENGINE = "duckdb"


def connect(engine: str | None = None) -> ibis.BaseBackend:
    """A backend for `engine`: 'duckdb' (embedded, default), 'pyspark' (local Spark) or an Ibis URL."""
    engine = engine or os.environ.get("FUNNEL_KIT_ENGINE", DEFAULT_ENGINE)
    if engine == "duckdb":
        con = ibis.duckdb.connect()
        # Deterministic results regardless of thread scheduling where DuckDB offers it.
        con.raw_sql("SET preserve_insertion_order = true")
        return con
    if engine == "pyspark":
        from pyspark.sql import SparkSession

        session = (
            SparkSession.builder.master("local[2]")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        return ibis.pyspark.connect(session)
    return ibis.connect(engine)


def load_tables(con: ibis.BaseBackend, processed_dir: str | Path) -> dict[str, ibis.Table]:
    """The canonical tables present in `processed_dir`, registered on `con`, by name."""
    processed = Path(processed_dir)
    tables: dict[str, ibis.Table] = {}
    for name in TABLES:
        path = processed / f"{name}.parquet"
        if path.exists():
            tables[name] = con.read_parquet(str(path), table_name=name)
    return tables


def to_frame(expr: ibis.Expr, con: ibis.BaseBackend | None = None) -> pd.DataFrame:
    """Execute an aggregate expression and return it as pandas (callers order rows explicitly)."""
    result = con.execute(expr) if con is not None else expr.execute()
    if isinstance(result, pd.Series):
        result = result.to_frame()
    return result.reset_index(drop=True)


def memtable(frame: pd.DataFrame, name: str | None = None) -> ibis.Table:
    """A small pandas frame as an Ibis table (the supported path on ibis 12 + duckdb 2.0)."""
    return ibis.memtable(frame, name=name)
