"""Ingest: map a CRM export onto the canonical model, validate it, quarantine bad rows, write Parquet.

    result = ingest(Path("data/raw"), Path("config/mappings/canonical.yml"), Path("data/processed"))

The sequence: load the mapping -> open every source file (analysis.ingest_read: CSV read whole as strings with
the physical line on which each record starts; Parquet read in record batches) -> per table, chunk by chunk of
`chunk_rows` records: apply the mapping (renames, value maps, lookups, bands, defaults, typed parsing,
pseudonymization, governed derivations) and the row-local rules (pandera column checks, date order), and spill the
mapped rows -> the cross-row rules over the whole table in DuckDB (analysis.ingest_chunks: duplicate keys, stage
order per opportunity, orphans; pseudonym collisions over the whole column) -> write `<table>.parquet` (kept rows,
sorted by key), `quarantine/<table>.parquet` (one row per problem) and `ingest_manifest.json`. File-level problems
raise InputFileError before anything is written; row-level problems never stop the run. Per table and per file,
rows_in == rows_kept + rows_quarantined. Outputs are deterministic (same inputs, same bytes, whatever the chunk
size) and each file is replaced atomically. Memory is bounded by the chunk size and DuckDB's memory limit
(FUNNEL_KIT_DUCKDB_MEMORY_LIMIT), not by the size of the export; spills go to FUNNEL_KIT_INGEST_TMP (default: the
system's temporary folder).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.config import Definitions, load_definitions
from analysis.errors import InputFileError
from analysis.ingest_chunks import CHUNK_ROWS, CrossRow, Spill, connect, prefetch, work_dir
from analysis.ingest_read import _fail, _Raw, _read_csv, _Reader, _sha256  # noqa: F401 (_read_csv: tests)
from analysis.mappings import ColumnSpec, Mapping, TableMapping, load_mapping, resolve_sources
from analysis.schema import MONEY, TABLES, TS
from analysis.validation import (
    Problem,
    apply_bands,
    check_consistency,
    check_date_order,
    check_orphans,
    check_schema,
    check_stage_history_order,
    parse_bool,
    parse_money,
    parse_timestamps,
)

__all__ = ["IngestResult", "TableReport", "FileReport", "ingest", "load_mapping", "QUARANTINE_SCHEMA"]

MANIFEST_NAME = "ingest_manifest.json"
QUARANTINE_DIR = "quarantine"
# One row per problem. `line` is the physical line on which the record starts in the source file (header = 1,
# embedded newlines counted); for a Parquet source it is the 1-based row number. `raw_record` is the JSON (sorted
# keys) of the source values the mapping reads, with pseudonymized values replaced by their pseudonym.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("raw_record", pa.string(), nullable=False),
    ]
)
MAIN_TIMESTAMP = {
    "leads": "created_at",
    "opportunities": "created_at",
    "stage_history": "entered_at",
    "touchpoints": "occurred_at",
    "forecasts": "committed_at",
    "targets": "period",
}
TABLE_ORDER = ("opportunities", "leads", "stage_history", "touchpoints", "targets", "forecasts")
# A table that arrives in one chunk of at most this many rows is checked in memory (pandas and pandera): DuckDB's
# fixed costs (tens of milliseconds a table) would double the time of a small export's ingest.
SMALL_TABLE_ROWS = 100_000
PSEUDONYM_PAIRS = pa.schema([("value", pa.string()), ("pseudonym", pa.string())])
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": True, "write_statistics": True}


@dataclass
class FileReport:
    path: str  # relative to the raw folder
    rows_in: int = 0
    rows_kept: int = 0
    rows_quarantined: int = 0


@dataclass
class TableReport:
    name: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]  # rows failing each rule (a row failing two rules counts in both)
    source_files: tuple[str, ...]
    files: dict[str, FileReport] = field(default_factory=dict)
    rows_filtered: int = 0  # records left out by the mapping's `where`
    ignored_columns: tuple[str, ...] = ()
    missing_columns: tuple[str, ...] = ()  # optional mapped columns absent from the export (all null)
    timestamp_column: str | None = None
    min_timestamp: str | None = None
    max_timestamp: str | None = None


@dataclass
class IngestResult:
    tables: dict[str, TableReport]  # canonical tables present in the export
    manifest_path: Path
    as_of: str  # ISO UTC instant: the mapping's `as_of`, else the end of the UTC day of the latest event
    missing_tables: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- mapping a table


@dataclass
class _Src:
    """The records a table is built from: needed source columns (Arrow strings) and where each came from."""

    cols: dict[str, pa.Array]
    file: np.ndarray  # index into the table's files
    rec: np.ndarray  # record position in that file
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.line)

    def take(self, idx: np.ndarray) -> _Src:
        ix = pa.array(idx, pa.int64())
        return _Src({k: v.take(ix) for k, v in self.cols.items()}, self.file[idx], self.rec[idx], self.line[idx])


@dataclass
class _Mapped:
    name: str
    canon: pd.DataFrame  # typed canonical columns (money as Int64 cents)
    files: list[_Raw]
    src: _Src
    problems: list[Problem]
    type_bad: dict[str, np.ndarray]
    date_only: dict[str, np.ndarray]
    pseudonyms: dict[str, dict[str, str]]  # source column -> {trimmed raw value: pseudonym}
    pseudonymized: dict[str, dict[str, str]]  # canonical column -> {value: pseudonym} (for the whole-column check)


def _trim(arr: pa.Array) -> pa.Array:
    if not pa.types.is_string(arr.type):  # typed Parquet column used as text
        arr = pc.fill_null(arr.cast(pa.string()), "")
    return pc.utf8_trim_whitespace(arr)


def _np(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def _concat(arrays: list[pa.Array]) -> pa.Array:
    """Concatenate source columns; text wins when files disagree on a column's type (CSV vs typed Parquet)."""
    if not arrays:
        return pa.array([], pa.string())
    if len({a.type for a in arrays}) > 1:
        arrays = [a if pa.types.is_string(a.type) else pc.fill_null(a.cast(pa.string()), "") for a in arrays]
    return pa.concat_arrays(arrays)


def _const(value: str, n: int) -> pa.Array:
    return pa.array(np.full(n, value, dtype=object), pa.string())


@dataclass
class _Sources:
    """A table's source files, the columns it reads, and what the column checks found."""

    files: list[_Raw]
    needed: list[str]
    ignored: set[str]
    missing: set[str]
    text: set[str]  # columns whose type differs between files: read as text from every file
    filtered: int = 0  # records left out by `where` (counted as the chunks are read)


def _sources(tm: TableMapping, reader: _Reader, raw_dir: Path) -> _Sources:
    """Open the table's source files and check they have the columns the mapping needs (file-level errors)."""
    files = [reader.read(p, tm.csv, tm.table) for p in resolve_sources(raw_dir, tm.sources)]
    needed = sorted(set(tm.source_columns()) | {lk.on for lk in tm.lookups.values()})
    schema = TABLES[tm.table]
    ignored, missing = set(), set()
    for rf in files:
        have = set(rf.header)
        for cname, spec in tm.columns.items():
            if spec.source is not None and spec.source not in have:
                if schema.column(cname).required:
                    _fail(rf.shown, f"missing required column (mapped from '{spec.source}')",
                          rule="required_column", column=cname)
                missing.add(cname)
        for src in [*tm.where, *(lk.on for lk in tm.lookups.values())]:
            if src not in have:
                _fail(rf.shown, "missing column the mapping filters or joins on", rule="required_column", column=src)
        if tm.unpivot is not None and not set(tm.unpivot.columns) & have:
            _fail(rf.shown, "none of the unpivot columns is present", rule="required_column",
                  column=tm.unpivot.value_to)
        ignored |= have - set(needed)
    # Text wins when files disagree on a column's type (CSV vs typed Parquet): the same rule for every chunk.
    text = {c for c in needed if len({rf.types.get(c, pa.string()) for rf in files}) > 1}
    return _Sources(files, needed, ignored, missing, text)


def _as_text(arr: pa.Array) -> pa.Array:
    return arr if pa.types.is_string(arr.type) else pc.fill_null(arr.cast(pa.string()), "")


def _source_chunks(tm: TableMapping, srcs: _Sources, chunk_rows: int) -> Iterator[_Src]:
    """The table's records chunk by chunk, in file order, after `where` and `unpivot` (both row-local)."""
    yielded = False
    for i, rf in enumerate(srcs.files):
        have = [c for c in srcs.needed if c in rf.header]
        for start, cols, lines in rf.chunks(have, chunk_rows):
            n = len(lines)
            part = _Src({c: (_as_text(cols[c]) if c in srcs.text else cols[c]) if c in cols else _const("", n)
                         for c in srcs.needed},
                        np.full(n, i, dtype=np.int64), np.arange(start, start + n, dtype=np.int64), lines)
            for col, keep in tm.where.items():
                mask = _np(pc.is_in(_trim(part.cols[col]), value_set=pa.array(list(keep), pa.string())))
                srcs.filtered += int((~mask).sum())
                part = part.take(np.flatnonzero(mask))
            yielded = True
            yield _unpivot(tm, part) if tm.unpivot is not None else part
    if not yielded:  # no records: map an empty chunk all the same (lookups and pseudonyms are still checked)
        empty = np.zeros(0, np.int64)
        part = _Src({c: pa.array([], pa.string()) for c in srcs.needed}, empty, empty, empty)
        yield _unpivot(tm, part) if tm.unpivot is not None else part


def _unpivot(tm: TableMapping, src: _Src) -> _Src:
    """Wide -> long: one row per non-blank unpivot cell, in record order, then unpivot column order."""
    up = tm.unpivot
    cells, names, order = [], [], []
    for j, col in enumerate(sorted(up.columns)):
        if col not in src.cols:
            continue
        pos = np.flatnonzero(_np(pc.not_equal(_trim(src.cols[col]), "")))
        cells.append((pos, src.cols[col].take(pa.array(pos, pa.int64()))))
        names.append(np.full(len(pos), up.columns[col], dtype=object))
        order.append(np.full(len(pos), j))
    pos = np.concatenate([p for p, _ in cells])
    rank = np.lexsort((np.concatenate(order), pos))  # record order, then unpivot column order
    long = src.take(pos[rank])
    long.cols["_unpivot_value"] = _concat([c for _, c in cells]).take(pa.array(rank, pa.int64()))
    long.cols["_unpivot_name"] = pa.array(np.concatenate(names)[rank], pa.string())
    return long


def _lookup(tm: TableMapping, name: str, reader: _Reader, raw_dir: Path, cache: dict) -> tuple[dict, _Raw]:
    """The lookup file(s) of `name`, keyed (trimmed key -> row), checked for a unique key."""
    if name in cache:
        return cache[name]
    lk = tm.lookups[name]
    paths = resolve_sources(raw_dir, lk.source)
    if not paths:
        _fail(str(raw_dir / lk.source[0]), f"lookup '{name}' file not found", rule="missing_file")
    files = [reader.read(p, lk.csv, f"lookup:{tm.table}.{name}") for p in paths]
    for rf in files:
        if lk.key not in rf.header:
            _fail(rf.shown, f"lookup key column '{lk.key}' is missing", rule="required_column", column=lk.key)
    keys = _concat([_trim(rf.full()[lk.key]) for rf in files])
    lines = np.concatenate([rf.all_lines() for rf in files])
    keyed = pd.Series(_np(keys))
    dup = keyed.duplicated(keep=False) & keyed.ne("")
    if dup.any():
        first = keyed[dup].iloc[0]
        at = lines[(keyed == first).to_numpy()].tolist()
        _fail(files[0].shown, f"lookup key '{lk.key}' is not unique: '{first}' on lines {at}", rule="unique",
              column=lk.key, row=int(at[1]))
    cache[name] = ({"keys": keys, "files": files}, files[0])
    return cache[name]


def _lookup_values(tm: TableMapping, name: str, col: str, keys: pa.Array, reader: _Reader, raw_dir: Path,
                   cache: dict) -> tuple[pa.Array, np.ndarray]:
    table, first = _lookup(tm, name, reader, raw_dir, cache)
    if any(col not in rf.header for rf in table["files"]):
        _fail(first.shown, f"column '{col}' used by lookup '{name}' is missing", rule="required_column", column=col)
    values = _concat([_trim(rf.full()[col]) for rf in table["files"]])
    idx = pc.index_in(keys, value_set=table["keys"])
    out = pc.fill_null(values.take(idx), "")
    unmatched = _np(idx.is_null()) & _np(pc.not_equal(keys, ""))
    return out, unmatched


def _map_chunk(tm: TableMapping, mapping: Mapping, defs: dict, reader: _Reader, raw_dir: Path, files: list[_Raw],
               src: _Src, lookup_cache: dict) -> _Mapped:
    """Map one chunk of a table's records onto the canonical columns (typed), with the row-local problems."""
    schema = TABLES[tm.table]
    n = len(src)
    problems: list[Problem] = []
    type_bad: dict[str, np.ndarray] = {}
    date_only: dict[str, np.ndarray] = {}
    canon: dict[str, pd.Series] = {}
    pseudonymized: dict[str, dict[str, str]] = {}
    orphan_reported: set[str] = set()
    given_flags: dict[str, pd.Series] = {}
    pseudonyms: dict[str, dict[str, str]] = {}

    def strings(spec: ColumnSpec) -> pa.Array:
        if spec.source is not None:
            return _trim(src.cols[spec.source])
        if spec.lookup is not None:
            lk = tm.lookups[spec.lookup[0]]
            vals, unmatched = _lookup_values(tm, spec.lookup[0], spec.lookup[1], _trim(src.cols[lk.on]), reader,
                                             raw_dir, lookup_cache)
            if lk.unmatched == "quarantine" and unmatched.any() and lk.name not in orphan_reported:
                orphan_reported.add(lk.name)  # once per lookup, however many columns it feeds
                problems.append(Problem(np.flatnonzero(unmatched), spec.name, "orphan",
                                        f"'{lk.on}' value not found in lookup '{lk.name}' ({', '.join(lk.source)})"))
            return _trim(vals)
        if spec.unpivot_value:
            return _trim(src.cols["_unpivot_value"])
        if spec.derive == "unpivot":
            return src.cols["_unpivot_name"]
        return _const("" if spec.const is None else spec.const, n)

    for cname in sorted(c for c in tm.columns if tm.columns[c].derive != "stage"):
        spec = tm.columns[cname]
        typ = schema.column(cname).type
        if typ == TS and spec.source is not None and pa.types.is_timestamp(src.cols[spec.source].type):
            canon[cname], type_bad[cname], date_only[cname] = _typed_timestamps(src.cols[spec.source], spec.timezone)
            continue
        s = strings(spec)
        if spec.value_map is not None:
            keys = pa.array(list(spec.value_map), pa.string())
            vals = pa.array([v or "" for v in spec.value_map.values()], pa.string())
            idx = pc.index_in(s, value_set=keys)
            other = _const(spec.otherwise or "", n) if spec.has_otherwise else s
            other = pc.if_else(pc.equal(s, ""), "", other)
            s = pc.if_else(idx.is_valid(), vals.take(pc.fill_null(idx, 0)), other)
        if spec.bands is not None:
            s, nan_bad, outside = apply_bands(s, spec.bands, tm.csv.thousands)
            if nan_bad.any():
                problems.append(Problem(np.flatnonzero(nan_bad), cname, "type:number",
                                        f"not a number (banded from {spec.described})"))
            if outside.any():
                problems.append(Problem(np.flatnonzero(outside), cname, "allowed_values",
                                        f"value outside every band (banded from {spec.described})"))
            type_bad[cname] = nan_bad | outside
        if spec.default is not None:
            s = pc.if_else(pc.equal(s, ""), spec.default, s)
        if typ == TS:
            ts, bad, d_only = parse_timestamps(s, spec.formats, spec.timezone)
            if bad.any():
                vals = _np(s.filter(pa.array(bad))).astype(str)
                msg = np.char.add(np.char.add("'", vals), f"' is not a valid timestamp ({' or '.join(spec.formats)}; "
                                  f"mapped from {spec.described})")
                problems.append(Problem(np.flatnonzero(bad), cname, "type:timestamp", msg))
            canon[cname], type_bad[cname], date_only[cname] = ts, bad, d_only
        elif typ == MONEY:
            cents, bad, reason = parse_money(s, tm.csv.decimal, tm.csv.thousands)
            if bad.any():
                vals = _np(s.filter(pa.array(bad))).astype(str)
                msg = np.char.add(np.char.add(np.char.add("'", vals), "': "), reason[bad].astype(str))
                problems.append(Problem(np.flatnonzero(bad), cname, "type:decimal",
                                        np.char.add(msg, f" (mapped from {spec.described})")))
            canon[cname], type_bad[cname] = cents, bad
        elif typ == pa.bool_():
            flags, bad = parse_bool(s, spec.true_values, spec.false_values)
            if bad.any():
                problems.append(Problem(np.flatnonzero(bad), cname, "type:boolean",
                                        f"not a boolean (mapped from {spec.described})"))
            canon[cname], type_bad[cname] = flags, bad
            if spec.source is not None or spec.lookup is not None:
                given_flags[cname] = flags
        else:
            if cname in tm.pseudonymize:
                uniq = [v for v in pc.unique(s).to_pylist() if v]
                table = {v: mapping.pseudonym(tm.pseudonymize[cname], v) for v in sorted(uniq)}
                if len(set(table.values())) != len(table):
                    _fail(files[0].shown, "two values share a pseudonym; raise pseudonym_digits in the mapping",
                          rule="pseudonymize", column=cname)
                keys = pa.array(list(table), pa.string())
                idx = pc.index_in(s, value_set=keys)
                s = pc.fill_null(pa.array(list(table.values()), pa.string()).take(idx), "")
                if spec.source is not None:
                    pseudonyms[spec.source] = table
                pseudonymized[cname] = table
            canon[cname] = _pd_strings(pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s))

    st = defs["stages"]["opportunity"]
    for cname in sorted(c for c in tm.columns if tm.columns[c].derive == "stage"):
        stage = canon["stage"]
        vals = stage.isin([st["won"], st["lost"]]) if cname == "is_closed" else stage.eq(st["won"])
        canon[cname] = vals.astype("boolean").where(stage.notna(), pd.NA)
    if "origin" in {c.name for c in schema.columns} and "source_channel" in canon:
        by_channel = defs["channels"]["origin_by_channel"]
        chan = pa.array(canon["source_channel"].array)
        idx = pc.index_in(chan, value_set=pa.array(list(by_channel), pa.string()))
        origin = pc.if_else(idx.is_valid(), pa.array(list(by_channel.values()), pa.string()).take(idx), "unknown")
        canon["origin"] = _pd_strings(pc.if_else(chan.is_valid(), origin, pa.scalar(None, pa.string())))
    for c in schema.columns:
        if c.name not in canon:
            canon[c.name] = _null_series(c.type, n)
    df = pd.DataFrame({c.name: canon[c.name].reset_index(drop=True) for c in schema.columns})
    if given_flags:
        problems += check_consistency(df, given_flags, defs)
    return _Mapped(tm.table, df, files, src, problems, type_bad, date_only, pseudonyms, pseudonymized)


def _typed_timestamps(arr: pa.Array, tz: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    if arr.type.tz is None:
        arr = pc.assume_timezone(arr, timezone=tz, ambiguous="latest", nonexistent="latest")
    ts = pd.Series(arr.cast(pa.timestamp("us", tz="UTC")).to_pandas(), dtype="datetime64[us, UTC]")
    return ts.reset_index(drop=True), np.zeros(len(arr), dtype=bool), np.zeros(len(arr), dtype=bool)


def _pd_strings(arr: pa.Array) -> pd.Series:
    """Arrow strings as a pandas Series without copying (ArrowDtype: vectorised isin / isna / compare)."""
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def _null_series(typ: pa.DataType, n: int) -> pd.Series:
    if typ == TS:
        return pd.Series(pd.NaT, index=pd.RangeIndex(n), dtype="datetime64[us, UTC]")
    if typ == MONEY:
        return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="Int64")
    if typ == pa.bool_():
        return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="boolean")
    return _pd_strings(pa.nulls(n, pa.string()))


# ------------------------------------------------------------------------------------------- writing


def _arrow(df: pd.DataFrame, table: str) -> pa.Table:
    schema = TABLES[table].arrow_schema
    arrays = []
    for f in schema:
        s = df[f.name]
        if f.type == MONEY:
            mask = s.isna().to_numpy()
            cents = s.to_numpy(dtype=np.int64, na_value=0)
            words = np.empty((len(s), 2), dtype="<i8")
            words[:, 0], words[:, 1] = cents, np.where(cents < 0, -1, 0)
            validity = pa.array(~mask).buffers()[1] if mask.any() else None
            arrays.append(pa.Array.from_buffers(MONEY, len(s), [validity, pa.py_buffer(words.tobytes())],
                                                null_count=int(mask.sum())))
        elif f.type == TS:
            arrays.append(pa.array(s, type=TS, from_pandas=True))
        elif f.type == pa.bool_():
            arrays.append(pa.array(s.astype(object).where(s.notna(), None).to_numpy(), type=pa.bool_()))
        else:
            arrays.append(pa.array(s.array, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_parquet(table: pa.Table, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, **PARQUET_OPTIONS)
    os.replace(tmp, path)
    return _sha256(path)


def _iso(ts: pd.Timestamp | None) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    ts = pd.Timestamp(ts).tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ts.microsecond:06d}" if ts.microsecond else "") + "Z"


def _quarantine_rows(problems: list[Problem], src: _Src, files: list[_Raw], read_cols: list[str],
                     pseudo_sources: dict[str, dict[str, str]], offset: int) -> pd.DataFrame:
    """One row per problem of a chunk: where (file, line), what (column, rule, message) and the raw source values
    the mapping reads (JSON, sorted keys; pseudonymized columns show their pseudonym, unmapped columns are left out
    because they may hold contact data). `_row` is the row's position in the whole table."""
    rows = np.concatenate([p.rows for p in problems]).astype(np.int64)
    detail = pd.DataFrame({
        "_row": rows + offset,
        "column": np.concatenate([np.full(len(p.rows), p.column, dtype=object) for p in problems]),
        "rule": np.concatenate([np.full(len(p.rows), p.rule, dtype=object) for p in problems]),
        "message": np.concatenate([
            np.full(len(p.rows), p.message, dtype=object) if isinstance(p.message, str)
            else np.asarray(p.message, dtype=object) for p in problems
        ]),
    })
    uniq = np.unique(rows)
    records: dict[int, str] = {}
    for fi in np.unique(src.file[uniq]):
        sel = uniq[src.file[uniq] == fi]
        rf = files[fi]
        ix = pa.array(sel, pa.int64())
        cols = {c: _np(src.cols[c].take(ix)) for c in read_cols if c in rf.header}
        for c in cols:
            if c in pseudo_sources:
                cols[c] = np.array([pseudo_sources[c].get(v.strip(), v) for v in cols[c]], dtype=object)
        for k, r in enumerate(sel):
            records[int(r)] = json.dumps({c: str(v[k]) for c, v in cols.items()}, sort_keys=True, ensure_ascii=False)
    detail["source_file"] = [files[i].rel for i in src.file[rows]]
    detail["line"] = src.line[rows].astype(np.int64)
    detail["raw_record"] = pd.Series(rows).map(records).to_numpy()
    return detail


def _quarantine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The table's quarantine: every chunk's problems and the cross-row ones, once each, in file order."""
    if not parts:
        return _quarantine_empty()
    detail = pd.concat(parts, ignore_index=True)
    detail = detail.drop_duplicates(["_row", "column", "rule", "message"])
    detail = detail.sort_values(["source_file", "line", "_row", "column", "rule", "message"], kind="mergesort")
    return detail[[f.name for f in QUARANTINE_SCHEMA]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- one table


@dataclass
class _TableRun:
    """One table after its chunks and cross-row rules: the rows to write (in DuckDB), the quarantine, the counts."""

    name: str
    rows: CrossRow | _InMemory
    quarantine: pd.DataFrame
    report: TableReport
    latest: pd.Timestamp | None  # the latest timestamp of any kind in the kept rows
    in_key_order: bool  # the export is already sorted by key: written without a sort


class _Work:
    """The spill folder and the DuckDB connection, made when the first table too big for memory needs them."""

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.con: duckdb.DuckDBPyConnection | None = None

    def open(self) -> tuple[Path, duckdb.DuckDBPyConnection]:
        if self.tmp is None or self.con is None:
            self.tmp = work_dir()
            self.con = connect(self.tmp / "duckdb")
        return self.tmp, self.con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class _Tally:
    """Counts gathered chunk by chunk: per file rows in and rows quarantined, rows per rule."""

    rows_in: np.ndarray
    rows_bad: np.ndarray
    by_rule: dict[str, int] = field(default_factory=dict)

    def add(self, files: np.ndarray, bad: np.ndarray, rule_rows: dict[str, np.ndarray]) -> None:
        n = len(self.rows_in)
        self.rows_in += np.bincount(files, minlength=n)
        self.rows_bad += np.bincount(files[bad], minlength=n)
        for rule, rows in rule_rows.items():  # chunks (and row-local vs cross-row rules) never share a row
            self.by_rule[rule] = self.by_rule.get(rule, 0) + len(np.unique(rows))


def _run_table(tm: TableMapping, mapping: Mapping, defs: Definitions, reader: _Reader, raw_dir: Path,
               work: _Work, chunk_rows: int, opp: CrossRow | _InMemory | None) -> _TableRun:
    """Map and check a table chunk by chunk into a spill file, then run the cross-row rules over the spill."""
    name, schema = tm.table, TABLES[tm.table]
    srcs = _sources(tm, reader, raw_dir)
    read_cols = tm.source_columns()
    tally = _Tally(np.zeros(len(srcs.files), np.int64), np.zeros(len(srcs.files), np.int64))
    parts: list[pd.DataFrame] = []
    pseudo: dict[str, list[pa.Table]] = {}
    lookup_cache: dict = {}
    chunks = prefetch(_source_chunks(tm, srcs, chunk_rows))
    first = next(chunks)  # there is always one, if empty
    second = next(chunks, None)
    if second is None and len(first) <= SMALL_TABLE_ROWS:
        return _run_small(tm, mapping, defs, reader, raw_dir, srcs, first, opp)
    tmp, con = work.open()
    spill = Spill(tmp / f"{name}.spill.parquet", schema.arrow_schema, list(schema.key))
    try:
        # One large chunk (second is None) is as valid as many.
        for src in itertools.chain([first] if second is None else [first, second], chunks):
            m = _map_chunk(tm, mapping, defs.data, reader, raw_dir, srcs.files, src, lookup_cache)
            m.problems += check_schema(m.canon, schema, defs.data, m.type_bad, unique=False)
            m.problems += check_date_order(m.canon, name, m.date_only, np.zeros(len(m.canon), bool))
            bad = _bad_mask(m)
            if m.problems:
                pseudo_sources = {c: m.pseudonyms.get(c, {}) for c in tm.pseudonymized_sources()}
                parts.append(_quarantine_rows(m.problems, m.src, srcs.files, read_cols, pseudo_sources, spill.rows))
            tally.add(m.src.file, bad, _rule_rows(m.problems))
            for cname, table in m.pseudonymized.items():
                pairs = {"value": pa.array(list(table), pa.string()), "pseudonym": pa.array(list(table.values()))}
                pseudo.setdefault(cname, []).append(pa.table(pairs, schema=PSEUDONYM_PAIRS))
            spill.append(_arrow(m.canon, name), m.src.file, m.src.rec, m.src.line, bad)
    finally:
        chunks.close()  # stops the reading thread at once if a chunk failed
        spill.close()
    _check_pseudonyms(pseudo, srcs.files[0].shown)

    rows = CrossRow(con, spill, name)
    for c in schema.columns:
        if c.unique:
            rows.duplicates([c.name])
    if len(schema.key) > 1:
        rows.duplicates(list(schema.key))
    if name == "stage_history":
        st = defs.data["stages"]["opportunity"]
        rank = {s: i for i, s in enumerate(st["open"])}
        rank[st["won"]] = rank[st["lost"]] = len(st["open"])
        rows.stage_order(rank, " > ".join([*st["open"], f"{st['won']}/{st['lost']}"]))
    if opp is not None and name in ("stage_history", "touchpoints"):
        rows.orphans(opp.kept_column("opportunity_id"), opp.all_column("opportunity_id"))
    late = rows.late_problems()
    if late.num_rows:
        filtered = srcs.filtered  # the records are read again: `where` must not count twice
        parts += _late_quarantine(late, tm, mapping, srcs, chunk_rows, read_cols)
        srcs.filtered = filtered
        pos, rule = late.column("_pos").to_numpy(), late.column("rule").to_numpy(zero_copy_only=False)
        fresh = ~late.column("_bad").to_numpy(zero_copy_only=False)  # not already quarantined by a row-local rule
        _, first = np.unique(pos[fresh], return_index=True)
        tally.rows_bad += np.bincount(late.column("_file").to_numpy()[fresh][first], minlength=len(tally.rows_bad))
        for r in np.unique(rule):
            tally.by_rule[r] = tally.by_rule.get(r, 0) + len(np.unique(pos[rule == r]))
    return _finish_table(tm, srcs, rows, _quarantine(parts), tally, spill.in_key_order)


class _InMemory:
    """The kept rows of a table small enough to check in memory (the rules run in pandas and pandera, as they did
    before ingest was chunked): the same interface as CrossRow for what follows."""

    def __init__(self, kept: pa.Table, ids: pa.Array | None) -> None:
        self.kept, self.ids = kept, ids

    def kept_column(self, column: str) -> pa.Array:
        return pc.unique(self.kept.column(column).combine_chunks().drop_null())

    def all_column(self, column: str) -> pa.Array:
        return self.ids if self.ids is not None else self.kept_column(column)

    def extremes(self, columns: list[str]) -> dict[str, tuple]:
        out = {}
        for c in columns:
            mm = pc.min_max(self.kept.column(c))
            out[c] = (mm["min"].as_py(), mm["max"].as_py())
        return out

    def write_sorted(self, schema: pa.Schema, key: list[str], path: Path, options: dict, in_key_order: bool) -> None:
        pq.write_table(self.kept, path, **options)  # sorted already; one row group, as ROW_GROUP_ROWS >= its size


def _run_small(tm: TableMapping, mapping: Mapping, defs: Definitions, reader: _Reader, raw_dir: Path,
               srcs: _Sources, src: _Src, opp: CrossRow | _InMemory | None) -> _TableRun:
    """A table that arrives in one small chunk: every rule in memory, no spill and no DuckDB (whose fixed costs
    would dominate a small export); the chunked path must give the same bytes (tests compare them)."""
    name, schema = tm.table, TABLES[tm.table]
    m = _map_chunk(tm, mapping, defs.data, reader, raw_dir, srcs.files, src, {})
    m.problems += check_schema(m.canon, schema, defs.data, m.type_bad)
    m.problems += check_date_order(m.canon, name, m.date_only, np.zeros(len(m.canon), bool))
    if name == "stage_history":
        m.problems += check_stage_history_order(m.canon, defs.data, _bad_mask(m))
    if opp is not None and name in ("stage_history", "touchpoints"):
        kept_ids, all_ids = (pd.Index(pd.arrays.ArrowExtensionArray(a.cast(pa.string())))
                             for a in (opp.kept_column("opportunity_id"), opp.all_column("opportunity_id")))
        m.problems += check_orphans(m.canon, kept_ids, all_ids, _bad_mask(m))
    bad = _bad_mask(m)
    tally = _Tally(np.zeros(len(srcs.files), np.int64), np.zeros(len(srcs.files), np.int64))
    tally.add(m.src.file, bad, _rule_rows(m.problems))
    parts = []
    if m.problems:
        pseudo_sources = {c: m.pseudonyms.get(c, {}) for c in tm.pseudonymized_sources()}
        parts.append(_quarantine_rows(m.problems, m.src, srcs.files, tm.source_columns(), pseudo_sources, 0))
    kept = m.canon[~bad].sort_values(list(schema.key), kind="mergesort", na_position="last").reset_index(drop=True)
    ids = None
    if name == "opportunities":
        ids = pc.unique(pa.array(m.canon["opportunity_id"].array, pa.string()).drop_null())
    return _finish_table(tm, srcs, _InMemory(_arrow(kept, name), ids), _quarantine(parts), tally, False)


def _rule_rows(problems: list[Problem]) -> dict[str, np.ndarray]:
    return {rule: np.concatenate([p.rows for p in problems if p.rule == rule]) for rule in {p.rule for p in problems}}


def _check_pseudonyms(pseudo: dict[str, list[pa.Table]], shown: str) -> None:
    """Two different values of a column must not share a pseudonym, over the whole column (not per chunk)."""
    for cname in sorted(pseudo):
        pairs = pa.concat_tables(pseudo[cname]).group_by(["value", "pseudonym"]).aggregate([])
        per = pairs.group_by("pseudonym").aggregate([("value", "count")])
        if len(per) and pc.max(per.column("value_count")).as_py() > 1:
            _fail(shown, "two values share a pseudonym; raise pseudonym_digits in the mapping", rule="pseudonymize",
                  column=cname)


def _late_quarantine(late: pa.Table, tm: TableMapping, mapping: Mapping, srcs: _Sources, chunk_rows: int,
                     read_cols: list[str]) -> list[pd.DataFrame]:
    """Quarantine rows of the cross-row problems: their chunks are read again for the raw records."""
    pos = late.column("_pos").to_numpy()
    column = late.column("column").to_numpy(zero_copy_only=False)
    rule = late.column("rule").to_numpy(zero_copy_only=False)
    message = late.column("message").to_numpy(zero_copy_only=False)
    order = np.argsort(pos, kind="stable")
    pos, column, rule, message = pos[order], column[order], rule[order], message[order]
    prefixes = tm.pseudonymized_sources()
    parts, offset, done = [], 0, 0
    for src in _source_chunks(tm, srcs, chunk_rows):
        n = len(src)
        hi = np.searchsorted(pos, offset + n)
        if hi > done:
            sel = np.arange(done, hi)
            problems = [Problem(pos[sel[m]] - offset, c, r, message[sel[m]])
                        for c, r in sorted(set(zip(column[sel], rule[sel], strict=True)))
                        for m in [(column[sel] == c) & (rule[sel] == r)]]
            local = np.unique(pos[sel] - offset)
            pseudo_sources = {}
            for c, prefix in prefixes.items():
                vals = {v.strip() for v in _np(src.cols[c].take(pa.array(local, pa.int64()))).astype(str)} - {""}
                pseudo_sources[c] = {v: mapping.pseudonym(prefix, v) for v in vals}
            parts.append(_quarantine_rows(problems, src, srcs.files, read_cols, pseudo_sources, offset))
            done = hi
        offset += n
        if done == len(pos):
            break
    return parts


def _finish_table(tm: TableMapping, srcs: _Sources, rows: CrossRow | _InMemory, quarantine: pd.DataFrame,
                  tally: _Tally, in_key_order: bool) -> _TableRun:
    """The table's report (row accounting checked) and the extremes of its kept timestamps."""
    name = tm.table
    files = {rf.rel: FileReport(rf.rel, int(tally.rows_in[i]), int(tally.rows_in[i] - tally.rows_bad[i]),
                                int(tally.rows_bad[i])) for i, rf in enumerate(srcs.files)}
    rows_in, rows_q = int(tally.rows_in.sum()), int(tally.rows_bad.sum())
    rep = TableReport(
        name=name, rows_in=rows_in, rows_kept=rows_in - rows_q, rows_quarantined=rows_q,
        quarantined_by_rule=dict(sorted(tally.by_rule.items())), source_files=tuple(rf.rel for rf in srcs.files),
        files=files, rows_filtered=srcs.filtered, ignored_columns=tuple(sorted(srcs.ignored)),
        missing_columns=tuple(sorted(srcs.missing)), timestamp_column=MAIN_TIMESTAMP.get(name),
    )
    for f in [*files.values(), rep]:
        if f.rows_in != f.rows_kept + f.rows_quarantined or f.rows_quarantined < 0:
            raise RuntimeError(f"row accounting broken for {name} ({f}): rows_in != kept + quarantined")
    ts_cols = [c.name for c in TABLES[name].columns if c.type == TS]
    col = rep.timestamp_column
    ext = rows.extremes(sorted(set(ts_cols) | ({col} if col else set())))
    if col and ext[col][0] is not None:
        lo, hi = ext[col]
        rep.min_timestamp, rep.max_timestamp = (str(lo), str(hi)) if col == "period" else (_iso(lo), _iso(hi))
    latest = [pd.Timestamp(ext[c][1]) for c in ts_cols if ext[c][1] is not None]
    return _TableRun(name, rows, quarantine, rep, max(latest) if latest else None, in_key_order)


# --------------------------------------------------------------------------------------------- ingest


def ingest(raw_dir: Path, mapping_path: Path, out_dir: Path, definitions: Definitions | None = None,
           chunk_rows: int = CHUNK_ROWS) -> IngestResult:
    """Map, validate and write the canonical tables; bad rows to out_dir/quarantine; return the row accounting.

    Tables are read `chunk_rows` records at a time (Parquet; a CSV file is read whole), so the size of an export
    is bounded by disk, not memory: rows spill to a temporary folder (FUNNEL_KIT_INGEST_TMP, else the system's)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    defs = definitions if definitions is not None else load_definitions()
    mapping = load_mapping(mapping_path, defs)
    if not raw_dir.is_dir():
        raise InputFileError("raw data folder not found", file=str(raw_dir), rule="missing_file")
    reader = _Reader(raw_dir)
    work = _Work()
    try:
        runs: dict[str, _TableRun] = {}
        for name in TABLE_ORDER:  # a table the mapping lacks, or whose file is absent, is simply not present
            tm = mapping.tables.get(name)
            if tm is not None and resolve_sources(raw_dir, tm.sources):
                opp = runs["opportunities"].rows if "opportunities" in runs else None
                runs[name] = _run_table(tm, mapping, defs, reader, raw_dir, work, max(1, chunk_rows), opp)
        if not runs:
            wanted = ", ".join(sorted({s for tm in mapping.tables.values() for s in tm.sources}))
            raise InputFileError(f"no file matches the mapping '{mapping.name}' (expected: {wanted})",
                                 file=str(raw_dir), rule="missing_file")
        return _publish(runs, mapping, defs, reader, raw_dir, out_dir)
    finally:
        work.close()


def _publish(runs: dict[str, _TableRun], mapping: Mapping, defs: Definitions, reader: _Reader, raw_dir: Path,
             out_dir: Path) -> IngestResult:
    """Everything is validated: write (each file atomically), drop stale tables, then the manifest."""
    # Without a stated snapshot, the export is taken to be made at the end of the UTC day of its latest record:
    # an export holding events up to 23:59 on 31 October covers October completely.
    latest = max((r.latest for r in runs.values() if r.latest is not None), default=None)
    as_of_ts = mapping.as_of if mapping.as_of is not None else (
        latest.floor("D") + pd.Timedelta(days=1) if latest is not None else None
    )
    as_of = _iso(as_of_ts) or ""

    out_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    for name in TABLES:
        path = out_dir / f"{name}.parquet"
        if name in runs:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            run = runs[name]
            run.rows.write_sorted(TABLES[name].arrow_schema, list(TABLES[name].key), tmp, PARQUET_OPTIONS,
                                  run.in_key_order)
            os.replace(tmp, path)
            hashes[f"{name}.parquet"] = _sha256(path)
        elif path.exists():
            path.unlink()
        q = runs[name].quarantine if name in runs else _quarantine_empty()
        qt = pa.Table.from_pandas(q, schema=QUARANTINE_SCHEMA, preserve_index=False).replace_schema_metadata(None)
        hashes[f"{QUARANTINE_DIR}/{name}.parquet"] = _write_parquet(qt, out_dir / QUARANTINE_DIR / f"{name}.parquet")

    reports = {name: r.report for name, r in runs.items()}
    manifest = _manifest(mapping, defs, as_of, reader, raw_dir, reports, hashes)
    manifest_path = out_dir / MANIFEST_NAME
    tmp = manifest_path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return IngestResult(tables=reports, manifest_path=manifest_path, as_of=as_of,
                        missing_tables=tuple(t for t in TABLES if t not in reports))


def _quarantine_empty() -> pd.DataFrame:
    return pd.DataFrame({f.name: pd.Series([], dtype="int64" if f.name == "line" else object)
                         for f in QUARANTINE_SCHEMA})


def _bad_mask(m: _Mapped) -> np.ndarray:
    bad = np.zeros(len(m.canon), dtype=bool)
    for p in m.problems:
        bad[p.rows] = True
    return bad


def _manifest(mapping: Mapping, defs: Definitions, as_of: str, reader: _Reader, raw_dir: Path,
              reports: dict[str, TableReport], hashes: dict[str, str]) -> dict:
    """The ingest manifest: what was read (hashes), how it was mapped, what was kept; no wall-clock time."""
    inputs = {}
    for rf in {id(r): r for r in reader.cache.values()}.values():
        inputs[rf.rel] = {"sha256": rf.sha256, "bytes": rf.size, "rows": rf.n,
                          "blank_rows": rf.blank_rows, "used_by": sorted(reader.used.get(rf.rel, ()))}
    all_files = sorted(p.relative_to(raw_dir).as_posix() for p in raw_dir.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(raw_dir).parts))
    tables = {}  # present tables only; `tables_missing` names the others
    for name in TABLES:
        r = reports.get(name)
        if r is None:
            continue
        tables[name] = {
            "present": True,
            "source_files": list(r.source_files),
            "files": {k: {"rows_in": f.rows_in, "rows_kept": f.rows_kept, "rows_quarantined": f.rows_quarantined}
                      for k, f in r.files.items()},
            "rows_in": r.rows_in, "rows_kept": r.rows_kept, "rows_quarantined": r.rows_quarantined,
            "rows_filtered": r.rows_filtered,
            "quarantined_by_rule": r.quarantined_by_rule,
            "ignored_columns": list(r.ignored_columns),
            "missing_columns": list(r.missing_columns),
            "freshness": {"column": r.timestamp_column, "min": r.min_timestamp, "max": r.max_timestamp},
            "invariant_rows_in_eq_kept_plus_quarantined": True,
        }
    return {
        "mapping": {"name": mapping.name, "file": Path(mapping.path).name, "sha256": mapping.sha256},
        "definitions": {"sha256": defs.sha256},
        "as_of": as_of or None,
        "as_of_source": "mapping" if mapping.as_of is not None else "end_of_day_of_latest_event",
        "inputs": inputs,
        "unused_files": [f for f in all_files if f not in inputs],
        "tables": tables,
        "tables_present": sorted(reports),
        "tables_missing": sorted(set(TABLES) - set(reports)),
        "outputs": hashes,
    }
