"""The long-format metrics table every section writes and the executive brief reads.

One row per number shown in the pack. Columns (the contract, see DESIGN.md "Interfaces"):
section, metric, dimensions, period, value, ci_low, ci_high, p_value, q_value, n, baseline, unit, method, impact.
`dimensions` is a canonical JSON object with sorted keys ('{}' for the total); `period` is the cohort month or
period label the value belongs to; rows with a p_value form the pack's single FDR family and receive q_value
when the pack is assembled; `impact` is the money at stake (used to rank moves), NaN where not applicable;
`flag` marks values shown but not tested: 'immature' (cohort younger than its window), 'small_cell' (below the
minimum cell size), '' otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METRIC_COLUMNS = [
    "section",
    "metric",
    "dimensions",
    "period",
    "value",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "n",
    "baseline",
    "unit",
    "method",
    "impact",
    "flag",
]

ARROW_SCHEMA = pa.schema(
    [
        ("section", pa.string()),
        ("metric", pa.string()),
        ("dimensions", pa.string()),
        ("period", pa.string()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("q_value", pa.float64()),
        ("n", pa.int64()),
        ("baseline", pa.float64()),
        ("unit", pa.string()),
        ("method", pa.string()),
        ("impact", pa.float64()),
        ("flag", pa.string()),
    ]
)

SORT_KEYS = ["section", "metric", "dimensions", "period", "method"]


def dims(**values: object) -> str:
    """Canonical JSON for a dimensions mapping: sorted keys, no spaces; None values dropped."""
    return json.dumps({k: v for k, v in sorted(values.items()) if v is not None}, separators=(",", ":"))


def dims_from_mapping(values: Mapping[str, object]) -> str:
    """Canonical JSON for a dimensions mapping given as a dict."""
    return dims(**{str(k): v for k, v in values.items()})


def parse_dims(text: str) -> dict[str, object]:
    """The dimensions mapping of a metrics row."""
    return json.loads(text) if text else {}


def metric_rows(
    frame: pd.DataFrame,
    *,
    section: str,
    metric: str | None = None,
    dimension_columns: Iterable[str] = (),
    unit: str = "",
    method: str = "",
) -> pd.DataFrame:
    """Long-format metric rows from a frame holding value (and optional ci/p/n...) columns per dimension."""
    dimension_columns = list(dimension_columns)
    out = pd.DataFrame(index=frame.index)
    out["section"] = section
    out["metric"] = frame["metric"] if metric is None else metric
    out["dimensions"] = (
        [dims_from_mapping({c: _plain(r[c]) for c in dimension_columns}) for _, r in frame.iterrows()]
        if dimension_columns
        else "{}"
    )
    for col in METRIC_COLUMNS[3:]:
        if col in ("section", "metric", "dimensions"):
            continue
        if col in frame.columns:
            out[col] = frame[col]
        elif col == "unit":
            out[col] = unit
        elif col == "method":
            out[col] = method
        elif col == "flag":
            out[col] = ""
        elif col == "period":
            out[col] = ""
        else:
            out[col] = np.nan
    return normalise(out)


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value


def empty() -> pd.DataFrame:
    """An empty metrics table with the contract's columns and types."""
    return normalise(pd.DataFrame(columns=METRIC_COLUMNS))


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame coerced to the contract's columns and types, sorted deterministically."""
    out = frame.reindex(columns=METRIC_COLUMNS).copy()
    for col in ("section", "metric", "dimensions", "period", "unit", "method", "flag"):
        out[col] = out[col].fillna("").astype(str)
    for col in ("value", "ci_low", "ci_high", "p_value", "q_value", "baseline", "impact"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["n"] = pd.to_numeric(out["n"], errors="coerce").fillna(0).astype("int64")
    return out.sort_values(SORT_KEYS, kind="mergesort").reset_index(drop=True)


def write_metrics(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a metrics table as Parquet, deterministically and atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(normalise(frame), schema=ARROW_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata is not needed and adds noise
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    tmp.replace(path)
    return path


def write_section_metrics(frame: pd.DataFrame, out_dir: str | Path, section: str) -> Path:
    """Write one section's metrics to out_dir/metrics/<section>.parquet (the pack assembles them)."""
    frame = frame.copy()
    frame["section"] = section
    return write_metrics(frame, Path(out_dir) / "metrics" / f"{section}.parquet")


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metrics table from Parquet (one file, or every *.parquet under a folder)."""
    path = Path(path)
    if path.is_dir():
        frames = [pq.read_table(p).to_pandas() for p in sorted(path.glob("*.parquet"))]
        return normalise(pd.concat(frames, ignore_index=True)) if frames else empty()
    return normalise(pq.read_table(path).to_pandas())


def lookup(frame: pd.DataFrame, metric: str, period: str | None = None, **dimensions: object) -> pd.Series | None:
    """The single metrics row for (metric, dimensions[, period]), or None when absent."""
    mask = (frame["metric"] == metric) & (frame["dimensions"] == dims(**dimensions))
    if period is not None:
        mask &= frame["period"] == period
    rows = frame[mask]
    return None if rows.empty else rows.iloc[0]
