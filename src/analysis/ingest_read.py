"""Reading a CRM export's files for ingest: CSV whole (with the physical line of each record), Parquet in chunks.

Every value is read as the string in the file (not trimmed); typed Parquet timestamps stay typed. File-level
problems (unreadable, empty, wrong encoding, malformed CSV) raise InputFileError naming the file, line and column.
"""

from __future__ import annotations

import csv as _csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from analysis.errors import InputFileError
from analysis.mappings import CsvOptions

# ------------------------------------------------------------------------------------------- reading


@dataclass
class _Raw:
    """One source file: every value a string exactly as in the file (not trimmed), typed Parquet timestamps kept.

    A CSV file is read whole (`columns`, `lines`); a Parquet file is read in chunks of records (`chunks`), and
    whole only when a lookup needs it (`full`)."""

    path: Path
    rel: str  # relative to the raw folder (posix)
    shown: str  # the path as the user gave it, for messages
    header: list[str]
    columns: dict[str, pa.Array]  # blank records dropped (Parquet: empty until `full` is called)
    lines: np.ndarray | None  # physical line where each record starts (header = line 1); Parquet: None
    sha256: str = ""
    size: int = 0
    blank_rows: int = 0
    rows: int = -1  # records (CSV: len(lines))
    parquet_names: dict[str, str] = field(default_factory=dict)  # Parquet: stripped name -> name in the file
    types: dict[str, pa.DataType] = field(default_factory=dict)  # the type each column is read as

    def __post_init__(self) -> None:
        if self.lines is not None:
            self.rows = len(self.lines)
        if not self.types:
            self.types = dict.fromkeys(self.header, pa.string())

    @property
    def n(self) -> int:
        return self.rows

    def full(self) -> dict[str, pa.Array]:
        """Every column of the whole file (lookups)."""
        if self.parquet_names and not self.columns:
            parts = list(self.chunks(self.header, max(self.rows, 1)))
            self.columns = {c: pa.concat_arrays([p[1][c] for p in parts]) if parts else pa.array([], self.types[c])
                            for c in self.header}
        return self.columns

    def all_lines(self) -> np.ndarray:
        return self.lines if self.lines is not None else np.arange(1, self.rows + 1, dtype=np.int64)

    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[tuple[int, dict[str, pa.Array], np.ndarray]]:
        """(first record, columns, line of each record) for consecutive chunks of at most chunk_rows records."""
        if not self.parquet_names:
            for start in range(0, self.rows, chunk_rows):
                n = min(chunk_rows, self.rows - start)
                yield start, {c: self.columns[c].slice(start, n) for c in names}, self.lines[start:start + n]
            return
        try:
            pf = pq.ParquetFile(self.path)
            start = 0
            if not names:  # nothing to read but the record count
                for i in range(pf.metadata.num_row_groups):
                    k = pf.metadata.row_group(i).num_rows
                    for s in range(0, k, chunk_rows):
                        n = min(chunk_rows, k - s)
                        yield start, {}, np.arange(start + 1, start + n + 1, dtype=np.int64)
                        start += n
                return
            cols = [self.parquet_names[c] for c in names]
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols, use_threads=True):
                n = batch.num_rows
                out = {c: _parquet_text(batch.column(i)) for i, c in enumerate(names)}
                yield start, out, np.arange(start + 1, start + n + 1, dtype=np.int64)
                start += n
        except (pa.ArrowException, OSError) as exc:
            _fail(self.shown, f"unreadable Parquet file: {exc}", rule="unreadable")


def _fail(shown: str, message: str, *, rule: str, column: str | None = None, row: int | None = None) -> None:
    raise InputFileError(message, file=shown, row=row, column=column, rule=rule)


def _record_starts(data: bytes, quote: str, multi_column: bool) -> np.ndarray:
    """Byte offset and physical line of each CSV record, as Arrow's reader sees records.

    A newline ends a record when an even number of quote characters precede it (RFC 4180 doubled quotes keep
    the parity). Empty lines are skipped, like the reader does, and so are whitespace-only lines when the
    header has several columns. Returns the start line of each record."""
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    if quote:
        qpos = np.flatnonzero(arr == ord(quote))
        ends = nl[np.searchsorted(qpos, nl) % 2 == 0]
    else:
        ends = nl
    starts = np.concatenate([[0], ends + 1]).astype(np.int64)
    starts = starts[starts < len(arr)]
    first = arr[starts]
    cand = np.flatnonzero((first == 10) | (first == 13) | (first == 32) | (first == 9))
    if len(cand):
        stops = np.append(starts[1:], len(arr))
        drop = [i for i in cand if not data[starts[i]:stops[i]].strip() and (
            multi_column or not data[starts[i]:stops[i]].strip(b"\r\n"))]
        starts = np.delete(starts, drop)
    return np.searchsorted(nl, starts) + 1


# Python's csv module refuses fields over 128 KiB by default; a CRM note can be megabytes long.
_csv.field_size_limit(2**31 - 1)


def _parse_records(text: str, opts: CsvOptions) -> list[list[str]]:
    return list(_csv.reader(io.StringIO(text, newline=""), delimiter=opts.delimiter, quotechar=opts.quote or None,
                            quoting=_csv.QUOTE_MINIMAL if opts.quote else _csv.QUOTE_NONE))


def _unclosed_quote(record: str, opts: CsvOptions) -> bool:
    """True when the text of a file's last record ends inside a quoted field (its closing quote is missing).

    CSV readers (Arrow's and Python's) silently take such a field to the end of the file, swallowing every record
    after the opening quote into one value. A closing quote appended to an unclosed field only closes it (the
    records parse the same); appended to anything else it adds a character or a record."""
    if not opts.quote or opts.quote not in record:
        return False
    return _parse_records(record, opts) == _parse_records(record + opts.quote, opts)


def _fail_unclosed(shown: str, line: int) -> None:
    _fail(shown, "a quoted field on this record is never closed: it would swallow every later line of the file "
          "(a missing closing quote)", rule="csv_format", row=line)


_LINE_END = re.compile(r"\r\n|\r|\n")


def _lf_lines(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _slow_read(text: str, opts: CsvOptions, shown: str, ncols: int) -> tuple[list[list[str]], np.ndarray]:
    """Python csv module parse with exact line tracking: the fallback, and the locator of malformed records."""
    consumed: list[str] = []  # the physical lines of the record being read

    def physical_lines() -> Iterator[str]:
        # Lines end at LF, as for the fast path's scan (and wc, grep, editors): a lone CR inside a quoted value
        # does not shift the line numbers of later records. A file whose header ends with a lone CR (classic Mac)
        # ends its lines at CR or LF.
        first_end = _LINE_END.search(text)
        lines = io.StringIO(text, newline="") if first_end and first_end.group() == "\r" else _lf_lines(text)
        for line in lines:
            consumed.append(line)
            yield line

    reader = _csv.reader(physical_lines(), delimiter=opts.delimiter, quotechar=opts.quote or None,
                         quoting=_csv.QUOTE_MINIMAL if opts.quote else _csv.QUOTE_NONE)
    rows, lines, prev, record = [], [], 0, ""
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except _csv.Error as exc:
            _fail(shown, f"unreadable CSV record: {exc}", rule="csv_format", row=prev + 1)
        start, prev = prev + 1, reader.line_num
        record = "".join(consumed)
        consumed.clear()
        if not rec or (ncols > 1 and len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) != ncols:
            if _unclosed_quote(record, opts):
                _fail_unclosed(shown, start)
            _fail(shown, f"record has {len(rec)} fields, the header has {ncols}", rule="csv_format", row=start)
        rows.append(rec)
        lines.append(start)
    if lines and _unclosed_quote(record, opts):
        _fail_unclosed(shown, lines[-1])
    return rows, np.asarray(lines, dtype=np.int64)


def _decode(raw: bytes, shown: str, opts: CsvOptions) -> str:
    enc = opts.encoding.lower().replace("_", "-")
    codec = "utf-8-sig" if enc in ("utf-8", "utf8") else opts.encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        header = raw.split(b"\n", 1)[0].decode(codec, errors="replace").strip().split(opts.delimiter)
        idx = raw[line_start : exc.start].count(opts.delimiter.encode())
        column = header[idx].strip().strip(opts.quote) if line > 1 and idx < len(header) else None
        hint = "" if opts.encoding_declared else "; declare the file's encoding in the mapping (csv: {encoding: ...})"
        _fail(shown, f"not valid {opts.encoding} text (byte 0x{raw[exc.start]:02x}){hint}", rule="encoding",
              column=column, row=line)
    nul = text.find("\x00")
    if nul >= 0:  # valid UTF-8, but not text: UTF-16 without a byte order mark, a binary file, a damaged export
        line = text.count("\n", 0, nul) + 1
        header = text.split("\n", 1)[0].lstrip("\ufeff").split(opts.delimiter)
        idx = text[text.rfind("\n", 0, nul) + 1 : nul].count(opts.delimiter)
        column = header[idx].strip().strip(opts.quote) if line > 1 and idx < len(header) else None
        _fail(shown, "NUL byte (0x00) in the text: the file is binary, UTF-16 or damaged, not a "
              f"{opts.encoding} CSV export", rule="encoding", column=column, row=line)
    return text[1:] if text.startswith("\ufeff") else text


def _read_csv(path: Path, rel: str, shown: str, raw: bytes, opts: CsvOptions) -> _Raw:
    text = _decode(raw, shown, opts)
    if not text.strip():
        _fail(shown, "empty file: no header row", rule="empty_file")
    first = next(_csv.reader(io.StringIO(text, newline=""), delimiter=opts.delimiter, quotechar=opts.quote or None))
    header = [h.strip() for h in first]
    if len(header) == 1:
        for other in (";", "\t", "|", ","):
            if other != opts.delimiter and other in header[0]:
                name = {"\t": "tab"}.get(other, f"'{other}'")
                _fail(shown, f"the header is one column containing {name}: the file is not delimited by "
                      f"'{opts.delimiter}' as the mapping expects (set csv.delimiter)", rule="delimiter",
                      column=header[0][:60])
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        _fail(shown, f"column name repeated in the header: {', '.join(dupes)}", rule="duplicate_column",
              column=dupes[0])
    # Fast path: Arrow's multi-threaded reader on UTF-8 bytes + a vectorised scan for record start lines.
    enc = opts.encoding.lower().replace("_", "-")
    data = (raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw) if enc in ("utf-8", "utf8") else text.encode()
    ncols = len(header)
    names = [f"c{i}" for i in range(ncols)]
    table = None
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=opts.delimiter, quote_char=opts.quote or False, double_quote=True, newlines_in_values=True,
                ignore_empty_lines=True, invalid_row_handler=_skip_blank_rows),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False,
                                                 null_values=[]),
        )
        lines = _record_starts(data, opts.quote, ncols > 1)
        if len(lines) != table.num_rows:
            table = None
        elif len(lines) and opts.quote:
            nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            last = int(nl[lines[-1] - 2]) + 1 if lines[-1] > 1 else 0
            if _unclosed_quote(data[last:].decode("utf-8"), opts):
                _fail_unclosed(shown, int(lines[-1]))
    except pa.ArrowInvalid:
        table = None
    if table is None:  # malformed record (located and reported here) or a quoting the scan cannot follow
        rows, lines = _slow_read(text, opts, shown, ncols)
        cols = [pa.array([r[i] for r in rows], pa.string()) for i in range(ncols)]
    else:
        cols = [table.column(i).combine_chunks() for i in range(ncols)]
    cols = [c.slice(1) for c in cols]  # drop the header record
    lines = lines[1:]
    # A record whose fields are all blank is not a row. Candidates first (blank first field), then the rest.
    blank = pc.equal(pc.utf8_trim_whitespace(cols[0]), "").to_numpy(zero_copy_only=False) if cols else np.zeros(0, bool)
    cand = np.flatnonzero(blank)
    if len(cand):
        ix = pa.array(cand, pa.int64())
        for c in cols[1:]:
            blank[cand] &= pc.equal(pc.utf8_trim_whitespace(c.take(ix)), "").to_numpy(zero_copy_only=False)
    if blank.any():
        keep = pa.array(~blank)
        cols = [c.filter(keep) for c in cols]
    columns = dict(zip(header, cols, strict=True))
    return _Raw(path, rel, shown, header, columns, lines[~blank], blank_rows=int(blank.sum()))


def _skip_blank_rows(row: pacsv.InvalidRow) -> str:
    return "skip" if not (row.text or "").strip() else "error"


def _parquet_text(col: pa.Array) -> pa.Array:
    """A Parquet column as ingest reads it: timestamps typed (no detour through text), anything else as text."""
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.timestamp("us", tz="UTC" if col.type.tz else None))
    if pa.types.is_boolean(col.type):
        col = pc.if_else(col, "true", "false")
    elif not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    return pc.fill_null(col.cast(pa.string()), "")


def _read_parquet(path: Path, rel: str, shown: str) -> _Raw:
    """Open a Parquet file (schema and row count only; the records are read chunk by chunk)."""
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        _fail(shown, f"unreadable Parquet file: {exc}", rule="unreadable")
    names, types = {}, {}
    for f in schema:
        names[f.name.strip()] = f.name
        types[f.name.strip()] = (pa.timestamp("us", tz="UTC" if f.type.tz else None)
                                 if pa.types.is_timestamp(f.type) else pa.string())
    return _Raw(path, rel, shown, list(names), {}, None, rows=pf.metadata.num_rows, parquet_names=names,
                types=types)


def _sha256(path: Path) -> str:
    """The file's hash, read in blocks (a Parquet export can be larger than memory)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


class _Reader:
    """Reads each file once (a file may feed several tables and lookups), with its hash."""

    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir
        self.cache: dict[tuple[Path, CsvOptions], _Raw] = {}
        self.used: dict[str, set[str]] = {}

    def read(self, path: Path, opts: CsvOptions, used_by: str) -> _Raw:
        rel = path.relative_to(self.raw_dir).as_posix()
        self.used.setdefault(rel, set()).add(used_by)
        is_parquet = path.suffix.lower() == ".parquet"
        key = (path, CsvOptions() if is_parquet else opts)
        if key not in self.cache:
            shown = str(self.raw_dir / rel)
            try:
                size = path.stat().st_size
                raw = b"" if is_parquet else path.read_bytes()
                digest = _sha256(path) if is_parquet else hashlib.sha256(raw).hexdigest()
            except OSError as exc:
                _fail(shown, f"unreadable file: {exc.strerror}", rule="unreadable")
            if not size:
                _fail(shown, "empty file (0 bytes)", rule="empty_file")
            rf = _read_parquet(path, rel, shown) if is_parquet else _read_csv(path, rel, shown, raw, opts)
            rf.sha256, rf.size = digest, size
            self.cache[key] = rf
        return self.cache[key]
