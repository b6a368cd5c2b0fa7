"""Out-of-core pieces of ingest: the per-table spill file, the cross-row rules in DuckDB, the sorted writer.

Ingest maps and checks a table chunk by chunk (row-local rules), appending every mapped row to a spill Parquet file
with its global position (`_pos`), source file, record, line and whether a row-local rule failed (`_bad`). The
rules that compare rows (duplicate keys, stage order per opportunity, orphans) then run as DuckDB queries over the
spill, which spills to disk itself under a memory limit, and the kept rows are written sorted by key with a fixed
row-group size, so the output bytes do not depend on the chunk size.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Rows mapped and validated at a time: big enough that per-chunk overhead vanishes, small enough that a chunk of
# touchpoints (a few hundred MB as pandas) leaves room for DuckDB under the memory limit.
CHUNK_ROWS = 1_000_000
# Rows per row group of the written tables: pyarrow's default for one table, so a table below this size is written
# exactly as `pq.write_table` writes it, and bigger tables get the same row groups whatever the chunk size.
ROW_GROUP_ROWS = 1024 * 1024
SPILL_COLUMNS = [("_pos", pa.int64()), ("_file", pa.int32()), ("_rec", pa.int64()), ("_line", pa.int64()),
                 ("_bad", pa.bool_())]
LATE_SCHEMA = pa.schema([("_pos", pa.int64()), ("column", pa.string()), ("rule", pa.string()),
                         ("message", pa.string())])


def memory_limit() -> str:
    """DuckDB's memory limit: FUNNEL_KIT_DUCKDB_MEMORY_LIMIT, else half the machine's RAM (ingest holds a chunk)."""
    env = os.environ.get("FUNNEL_KIT_DUCKDB_MEMORY_LIMIT")
    if env:
        return env
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "4GB"
    return f"{max(1, int(ram * 0.5 / 2**20))}MB"


def connect(tmp_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to tmp_dir under the memory limit; timestamps in UTC."""
    con = duckdb.connect(config={"memory_limit": memory_limit(),
                                 "temp_directory": os.environ.get("FUNNEL_KIT_DUCKDB_TEMP_DIR") or str(tmp_dir),
                                 "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    threads = os.environ.get("FUNNEL_KIT_DUCKDB_THREADS")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    return con


TMP_PREFIX = "funnel-ingest-"


def work_dir() -> Path:
    """A fresh folder for spills (FUNNEL_KIT_INGEST_TMP, else the system's temporary folder), named after this
    process; folders left by killed ingests (their process is gone) are removed first: they can hold gigabytes."""
    parent = Path(os.environ.get("FUNNEL_KIT_INGEST_TMP") or tempfile.gettempdir())
    for old in parent.glob(f"{TMP_PREFIX}*-*"):
        pid = old.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Spill:
    """The mapped rows of one table, appended chunk by chunk to a Parquet file (fast codec: it is read once)."""

    def __init__(self, path: Path, schema: pa.Schema, key: list[str]) -> None:
        self.path, self.key = path, key
        self.in_key_order = True  # the rows no row-local rule failed are already sorted by key (the usual export)
        self._last: pa.Table | None = None  # key of the last such row so far
        self.schema = pa.schema([*(f.with_nullable(True) for f in schema), *(pa.field(n, t) for n, t in SPILL_COLUMNS)])
        self._writer = pq.ParquetWriter(path, self.schema, compression="lz4", use_dictionary=False,
                                        write_statistics=False)
        self.rows = 0
        # One write in flight in a background thread (Parquet encoding releases the GIL): the next chunk is mapped
        # meanwhile. Its error, if any, is raised by the next append or by close.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-spill")
        self._pending: Future | None = None

    def append(self, canon: pa.Table, file: np.ndarray, rec: np.ndarray, line: np.ndarray, bad: np.ndarray) -> None:
        """Append one chunk; positions continue from the previous chunk."""
        n = canon.num_rows
        if self.in_key_order:
            self._check_order(canon, bad)
        extra = [np.arange(self.rows, self.rows + n, dtype=np.int64), file.astype(np.int32), rec.astype(np.int64),
                 line.astype(np.int64), bad.astype(bool)]
        arrays = [*canon.columns, *(pa.array(v, t) for v, (_, t) in zip(extra, SPILL_COLUMNS, strict=True))]
        self._wait()
        self._pending = self._pool.submit(self._writer.write_table, pa.Table.from_arrays(arrays, schema=self.schema),
                                          row_group_size=max(n, 1))
        self.rows += n

    def _check_order(self, canon: pa.Table, bad: np.ndarray) -> None:
        """Keep `in_key_order` true while the good rows come in non-decreasing key order (byte order, as DuckDB)."""
        keys = canon.select(self.key).filter(pa.array(~bad))
        if any(keys.column(c).null_count for c in self.key):
            self.in_key_order = False
            return
        if self._last is not None:
            keys = pa.concat_tables([self._last, keys])
        if keys.num_rows > 1:
            before = None  # rows out of order on the keys compared so far (lexicographic, last key first)
            for c in reversed(self.key):
                col = keys.column(c).combine_chunks()
                prev, cur = col.slice(0, len(col) - 1), col.slice(1)
                less = pc.less(cur, prev)
                before = less if before is None else pc.or_(less, pc.and_(pc.equal(cur, prev), before))
            if pc.any(before).as_py():
                self.in_key_order = False
                return
        if keys.num_rows:
            self._last = keys.slice(keys.num_rows - 1)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self._writer.close()


class CrossRow:
    """Cross-row rules of one table over its spill; problems found here accumulate in the DuckDB table `late`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spill: Spill, name: str) -> None:
        self.con, self.name = con, name
        self.path = spill.path
        self.src = f"spill_{name}"
        self.late = f"late_{name}"
        con.execute(f"CREATE OR REPLACE VIEW {self.src} AS SELECT * FROM read_parquet({_lit(spill.path)})")
        con.execute(f"CREATE OR REPLACE TABLE {self.late} (_pos BIGINT, \"column\" VARCHAR, rule VARCHAR, "
                    "message VARCHAR)")

    def _ok(self) -> str:
        """Rows no rule has failed so far (row-local or cross-row): the rows the next rule looks at."""
        return f"NOT s._bad AND s._pos NOT IN (SELECT _pos FROM {self.late})"

    def duplicates(self, key: list[str]) -> None:
        """Every row after the first (in file order) with the same non-null key, whatever else is wrong with it."""
        cols = ", ".join(_q(c) for c in key)
        notnull = " AND ".join(f"{_q(c)} IS NOT NULL" for c in key)
        on = " AND ".join(f"s.{_q(c)} = d.{_q(c)}" for c in key)
        shown = " || ' / ' || ".join(f"s.{_q(c)}" for c in key)
        # Grouping 64-bit hashes is several times cheaper than grouping strings; the (few) rows whose hash repeats
        # are then grouped by the key itself, so a hash collision never makes a duplicate.
        self.con.execute(f"""
            INSERT INTO {self.late}
            WITH h AS (SELECT hash({cols}) AS h FROM {self.src} WHERE {notnull} GROUP BY ALL HAVING count(*) > 1),
            c AS MATERIALIZED (SELECT _pos, {cols} FROM {self.src}
                               WHERE {notnull} AND hash({cols}) IN (SELECT h FROM h)),
            d AS (SELECT {cols}, min(_pos) AS first FROM c GROUP BY {cols} HAVING count(*) > 1)
            SELECT s._pos, '{','.join(key)}', 'unique',
                   'duplicate {'/'.join(key)} ''' || {shown} || ''' (first occurrence kept)'
            FROM c s JOIN d ON {on} WHERE s._pos > d.first""")

    def stage_order(self, rank: dict[str, int], order: str) -> None:
        """Per opportunity, a stage entered after a later stage (ties in time broken by stage rank, then position)."""
        ranks = pa.table({"stage": list(rank), "rank": list(rank.values())})
        self.con.register("_stage_ranks", ranks)
        msg = f"' entered after a later stage (order: {order})".replace("'", "''")
        self.con.execute(f"""
            INSERT INTO {self.late}
            SELECT _pos, 'stage', 'stage_order', 'stage ''' || stage || '{msg}' FROM (
                SELECT s._pos, s.stage, r.rank, max(r.rank) OVER (
                    PARTITION BY s.opportunity_id ORDER BY s.entered_at, r.rank, s._pos
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
                FROM {self.src} s JOIN _stage_ranks r ON s.stage = r.stage
                WHERE {self._ok()} AND s.entered_at IS NOT NULL AND s.opportunity_id IS NOT NULL)
            WHERE rank < prev""")
        self.con.unregister("_stage_ranks")

    def orphans(self, kept_ids: pa.Array, all_ids: pa.Array) -> None:
        """opportunity_id must name a kept opportunity; the message says whether it was quarantined or never there."""
        self.con.register("_kept_ids", pa.table({"id": kept_ids}))
        self.con.register("_all_ids", pa.table({"id": all_ids}))
        self.con.execute(f"""
            INSERT INTO {self.late}
            SELECT s._pos, 'opportunity_id', 'orphan', 'opportunity ''' || s.opportunity_id || ''' ' ||
                   CASE WHEN s.opportunity_id IN (SELECT id FROM _all_ids) THEN 'was quarantined'
                        ELSE 'is not in opportunities' END
            FROM {self.src} s ANTI JOIN _kept_ids k ON s.opportunity_id = k.id
            WHERE s.opportunity_id IS NOT NULL AND {self._ok()}""")
        self.con.unregister("_kept_ids")
        self.con.unregister("_all_ids")

    def late_problems(self) -> pa.Table:
        """The cross-row problems with where each row came from (_file, _rec, _line) and its row-local verdict."""
        return self.con.sql(f"""
            SELECT l._pos, l."column", l.rule, l.message, s._file, s._rec, s._line, s._bad
            FROM {self.late} l JOIN {self.src} s USING (_pos) ORDER BY l._pos, l.rule, l.message""").to_arrow_table()

    def _kept(self) -> str:
        return f"FROM {self.src} s WHERE NOT s._bad AND s._pos NOT IN (SELECT _pos FROM {self.late})"

    def kept_column(self, column: str) -> pa.Array:
        """One column of the kept rows (opportunity ids for the orphan rule)."""
        res = self.con.sql(f"SELECT DISTINCT s.{_q(column)} AS v {self._kept()} AND v IS NOT NULL ORDER BY v")
        return _as_array(res.to_arrow_table().column(0), pa.string())

    def all_column(self, column: str) -> pa.Array:
        res = self.con.sql(f"SELECT DISTINCT {_q(column)} AS v FROM {self.src} WHERE v IS NOT NULL ORDER BY v")
        return _as_array(res.to_arrow_table().column(0), pa.string())

    def extremes(self, columns: list[str]) -> dict[str, tuple]:
        """(min, max) over the kept rows of each column."""
        if not columns:
            return {}
        sel = ", ".join(f"min(s.{_q(c)}), max(s.{_q(c)})" for c in columns)
        row = self.con.execute(f"SELECT {sel} {self._kept()}").fetchall()[0]
        return {c: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(columns)}

    def write_sorted(self, schema: pa.Schema, key: list[str], path: Path, options: dict, in_key_order: bool) -> None:
        """The kept rows sorted by key (file order among equal keys) as Parquet, ROW_GROUP_ROWS rows per group.

        When the export is already in key order the spill is streamed as it is: no sort."""
        batches = self._file_order(schema) if in_key_order else self._sorted(schema, key)
        with pq.ParquetWriter(path, schema, **options) as writer:
            empty = True
            for group in prefetch(_regroup(batches, ROW_GROUP_ROWS)):  # fetching overlaps with writing
                writer.write_table(_conform(group, schema), row_group_size=ROW_GROUP_ROWS)
                empty = False
            if empty:  # as pq.write_table writes an empty table: one empty row group
                writer.write_table(schema.empty_table(), row_group_size=ROW_GROUP_ROWS)

    def _sorted(self, schema: pa.Schema, key: list[str]) -> Iterator[pa.RecordBatch]:
        cols = ", ".join(f"s.{_q(f.name)}" for f in schema)
        order = ", ".join(f"s.{_q(c)} NULLS LAST" for c in key)
        yield from self.con.sql(f"SELECT {cols} {self._kept()} ORDER BY {order}, s._pos").to_arrow_reader(
            ROW_GROUP_ROWS)

    def _file_order(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        late = self.con.sql(f"SELECT DISTINCT _pos FROM {self.late}").to_arrow_table().column(0).to_numpy()
        names = [f.name for f in schema]
        pf = pq.ParquetFile(self.path)
        for batch in pf.iter_batches(batch_size=ROW_GROUP_ROWS, columns=[*names, "_pos", "_bad"]):
            keep = ~batch.column("_bad").to_numpy(zero_copy_only=False)
            if len(late):
                keep &= ~np.isin(batch.column("_pos").to_numpy(), late)
            yield batch.select(names).filter(pa.array(keep))


def _regroup(reader: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of batches into tables of exactly `rows` rows (the last one shorter)."""
    buf: list[pa.RecordBatch] = []
    have = 0
    for batch in reader:
        while batch.num_rows:
            take = min(rows - have, batch.num_rows)
            buf.append(batch.slice(0, take))
            have += take
            batch = batch.slice(take)
            if have == rows:
                yield pa.Table.from_batches(buf).combine_chunks()
                buf, have = [], 0
    if have:
        yield pa.Table.from_batches(buf).combine_chunks()


def _as_array(col: pa.ChunkedArray, typ: pa.DataType) -> pa.Array:
    return col.cast(typ).combine_chunks() if len(col.chunks) else pa.array([], typ)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """DuckDB's Arrow types (string views, its own field names) -> the canonical schema, without metadata."""
    arrays = [table.column(i).cast(f.type).combine_chunks() for i, f in enumerate(schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


_DONE = object()


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Produce the items of `items` in a background thread, `depth` ahead: reading the next chunk (Arrow releases
    the GIL) overlaps with mapping this one. Exceptions reach the consumer; a consumer that stops early stops it."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((_DONE, exc))

    worker = threading.Thread(target=run, name="ingest-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
