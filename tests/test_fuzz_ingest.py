"""Fuzzing ingest with hypothesis: whatever the export, ingest raises only the kit's own errors, and every row is
accounted for (rows in = kept + quarantined = the records in the file).

Two generators, each example a tiny export in a fresh folder:

* structured: CSV exports around the canonical schema (opportunities, sometimes with stage history): columns
  dropped, added, reordered, duplicated; cells valid, nearly valid or garbage (odd unicode, NULs, quotes,
  delimiters, line breaks, huge and non-finite numbers, dates out of range); written by a CSV writer (quoted,
  any line end, with or without BOM) or joined naively (broken quoting), or as Parquet.
* bytes: a valid header followed by arbitrary bytes assembled from CSV-significant fragments.

The examples are derandomised (the same ones on every run, so CI does not flake); `FUNNEL_KIT_FUZZ_EXAMPLES`
scales them up for a longer local hunt. The count of examples run is printed (`-s`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import analysis.ingest as ingest_module
from analysis.config import load_definitions
from analysis.errors import AnalysisError
from analysis.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
CANONICAL = ROOT / "config" / "mappings" / "canonical.yml"
SCALE = float(os.environ.get("FUNNEL_KIT_FUZZ_EXAMPLES", "1"))
N_STRUCTURED = int(500 * SCALE)
N_BYTES = int(1500 * SCALE)
DEFS = load_definitions()
COUNTS = {"structured": 0, "bytes": 0, "structured_refused": 0, "bytes_refused": 0, "quarantined_rows": 0,
          "kept_rows": 0}

# --------------------------------------------------------------------------------------------- values

SPECIAL = ['"', ",", ";", "\n", "\r", "\r\n", "\ufeff", " ", "\t", "\u00a0", "\u200b", "\u202e", "'",
           "=HYPERLINK(\"http://x\")", "<script>", "NaN", "inf", "-0", "null", "NULL", "\\", "😀", "e\u0301"]
garbage = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    st.lists(st.sampled_from(SPECIAL), max_size=4).map("".join),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def chance(percent: int) -> st.SearchStrategy[bool]:
    """True in about `percent` % of draws. Hypothesis favours the simplest choice (the first), so that is False."""
    return st.sampled_from(range(100)).map(lambda x: x >= 100 - percent)


def _ts() -> st.SearchStrategy[str]:
    moment = st.datetimes(min_value=pd.Timestamp("1850-01-01").to_pydatetime(),
                          max_value=pd.Timestamp("2250-12-31").to_pydatetime())
    fmt = st.sampled_from(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S.%f+02:00",
                           "%Y-%m-%dT%H:%M:%S-0530", "%m/%d/%Y", "%d %b %Y", "%Y-%m-%dT%H:%M"])
    return st.builds(lambda m, f: m.strftime(f), moment, fmt)


STAGES = ["Discovery", "Solution", "Proposal", "Negotiation", "Closed Won", "Closed Lost"]
VALUES = {
    "opportunity_id": st.sampled_from(["OPP-1", "OPP-2", "OPP-3", " OPP-1", "opp-1", ""]),
    "account_id": st.sampled_from(["ACC-1", "", "ACC-\u00e9"]),
    "segment": st.sampled_from(["SMB", "Mid-Market", "Enterprise", "smb", "Unassigned", ""]),
    "region": st.sampled_from(["NA", "EMEA", ""]),
    "source_channel": st.sampled_from(["paid_search", "webinar", "partner_referral", "Paid Search", ""]),
    "owner_id": st.sampled_from(["rep_001", ""]),
    "owner_team": st.sampled_from(["team_a", ""]),
    "amount": st.one_of(
        st.decimals(min_value=-10**6, max_value=10**17, allow_nan=False, places=2).map(str),
        st.sampled_from(["$1,200.00", "1 200", "(5.00)", "USD 10", "1e9", "9999999999999999.99", "1.005", ""]),
    ),
    "stage": st.sampled_from([*STAGES, "Won", "closed won", ""]),
    "is_closed": st.sampled_from(["true", "false", "1", "0", "yes", "maybe", ""]),
    "is_won": st.sampled_from(["true", "false", "TRUE", "f", "2", ""]),
    "lost_reason_code": st.sampled_from(["price_too_high", "", "other"]),
    "lost_reason_notes": st.text(max_size=20),
    "competitor": st.sampled_from(["Acme", "", "<b>x</b>"]),
    "industry": st.sampled_from(["software", ""]),
    "product": st.sampled_from(["GTX Pro", ""]),
    "entered_at": _ts(),
    "created_at": _ts(),
    "closed_at": _ts(),
}


@st.composite
def table_export(draw, table: str, n_max: int) -> tuple[list[str], list[list[str]]]:
    """(header, rows) around a canonical table: columns dropped, duplicated, added and reordered; each example has
    its own level of noise (from clean exports, where most rows are kept, to garbage in every other cell)."""
    columns = [c.name for c in TABLES[table].columns if c.name != "origin"]
    required = {c.name for c in TABLES[table].columns if c.required}
    keep = [c for c in columns if draw(chance(98 if c in required else 70))]
    extra = draw(st.lists(st.from_regex(r"x_[a-z]{1,4}", fullmatch=True), max_size=2, unique=True))
    header = draw(st.permutations(keep + extra))
    if header and draw(chance(1)):
        header = [*header, draw(st.sampled_from(header))]  # a duplicated column name
    noise = draw(st.sampled_from([0, 0, 3, 10, 40]))
    n = draw(st.integers(0, n_max))
    rows = [[draw(garbage if draw(chance(noise)) else VALUES.get(c, garbage)) for c in header] for _ in range(n)]
    if rows and header and draw(chance(1)):  # a NUL byte somewhere
        r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, len(header) - 1))
        rows[r][c] += "\x00"
    return header, rows


@st.composite
def export(draw) -> dict:
    """A whole export: opportunities (sometimes with stage history), how it is written, and the oracle's facts."""
    tables = {"opportunities": draw(table_export("opportunities", 6))}
    if draw(st.booleans()):
        tables["stage_history"] = draw(table_export("stage_history", 5))
    style = draw(st.sampled_from(["csv", "csv", "csv", "csv", "naive", "parquet"]))
    return {
        "tables": tables,
        "style": style,
        "newline": draw(st.sampled_from(["\n", "\r\n", "\r"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        "bom": draw(st.booleans()),
    }


# ----------------------------------------------------------------------------------------------- write


def _write(raw: Path, ex: dict) -> dict[str, list[int]]:
    """Write the export; return, per well-formed CSV table, the physical start line of each non-blank record."""
    starts: dict[str, list[int]] = {}
    for table, (header, rows) in ex["tables"].items():
        if ex["style"] == "parquet":
            names = [f"{h}#{i}" if header.count(h) > 1 and header.index(h) != i else h for i, h in enumerate(header)]
            cols = [pa.array([r[i] for r in rows], pa.string()) for i in range(len(header))]
            pq.write_table(pa.Table.from_arrays(cols, names=names), raw / f"{table}.parquet")
            continue
        if ex["style"] == "naive":
            text = ex["newline"].join(",".join(r) for r in [header, *rows]) + ex["newline"]
        else:
            buf = io.StringIO(newline="")
            w = csv.writer(buf, lineterminator=ex["newline"], quoting=ex["quoting"])
            offsets = []
            for r in [header, *rows]:
                offsets.append(len(buf.getvalue()))
                w.writerow(r)
            text = buf.getvalue()
            # Physical lines end at LF (in a CR-terminated file at CR or LF), as the kit numbers them.
            breaks = re.compile(r"\r\n|\r|\n" if ex["newline"] == "\r" else r"\n")
            lines = [len(breaks.findall(text, 0, off)) + 1 for off in offsets]
            starts[table] = [ln for ln, r in zip(lines[1:], rows, strict=True) if not _blank(r)]
        (raw / f"{table}.csv").write_bytes(("\ufeff" if ex["bom"] else "").encode() + text.encode("utf-8"))
    return starts


def _blank(row: list[str]) -> bool:
    """A record whose fields are all blank is not a row (blank as ingest trims: Unicode white space)."""
    if not row:
        return True
    trimmed = pc.utf8_trim_whitespace(pa.array(row, pa.string())).to_pylist()
    return all(v == "" for v in trimmed)


def _well_formed(ex: dict) -> bool:
    """Written by a CSV writer or as Parquet, no NUL, unique header names with every required column."""
    if ex["style"] == "naive":
        return False
    for table, (header, rows) in ex["tables"].items():
        required = {c.name for c in TABLES[table].columns if c.required}
        if len(set(header)) != len(header) or not required <= set(header) or len(header) < 2:
            return False
        if any("\x00" in v for r in [header, *rows] for v in r):
            return False
        # Python's writer quotes only the characters of its own line end: a CR or LF it leaves unquoted is a
        # line break inside a field, which no CSV reader can take back.
        stray = set("\r\n") - set(ex["newline"])
        if ex["style"] == "csv" and ex["quoting"] == csv.QUOTE_MINIMAL and any(
                stray & set(v) for r in [header, *rows] for v in r):
            return False
    return True


# ------------------------------------------------------------------------------------------------ checks


@pytest.fixture(autouse=True, scope="module")
def _mapping_read_once():
    """The mapping is parsed once (its own tests are elsewhere): the examples spend their time in ingest."""
    original = ingest_module.load_mapping
    cache = {}

    def cached(path, definitions=None):
        key = str(path)
        if key not in cache:
            cache[key] = original(path, definitions)
        return cache[key]

    ingest_module.load_mapping = cached
    yield
    ingest_module.load_mapping = original
    print(f"\nfuzzed ingest: {COUNTS['structured']} structured examples ({COUNTS['structured_refused']} refused with "
          f"a kit error) + {COUNTS['bytes']} byte-level examples ({COUNTS['bytes_refused']} refused); "
          f"{COUNTS['kept_rows']} rows kept, {COUNTS['quarantined_rows']} quarantined")


def _ingest_and_check(raw: Path, out: Path, kind: str) -> object | None:
    """Ingest; a kit error is an acceptable outcome (returned), anything else fails. Checks the accounting."""
    try:
        result = ingest_module.ingest(raw, CANONICAL, out, DEFS)
    except AnalysisError as exc:
        COUNTS[f"{kind}_refused"] += 1
        assert "\n" not in str(exc) and exc.rule, str(exc)
        assert not out.exists() or not any(out.iterdir()), "a refused export left outputs behind"
        return exc
    for name, rep in result.tables.items():
        kept = pq.read_table(out / f"{name}.parquet").num_rows
        q = pq.read_table(out / "quarantine" / f"{name}.parquet").to_pandas()
        assert rep.rows_in == rep.rows_kept + rep.rows_quarantined, name
        assert kept == rep.rows_kept and q[["source_file", "line"]].drop_duplicates().shape[0] == rep.rows_quarantined
        assert q["rule"].ne("").all() and q["column"].ne("").all()
        COUNTS["kept_rows"] += kept
        COUNTS["quarantined_rows"] += rep.rows_quarantined
    return result


# No shrinking by default (it can take minutes on these examples); FUNNEL_KIT_FUZZ_SHRINK=1 to get a minimal one.
PHASES = tuple(Phase) if os.environ.get("FUNNEL_KIT_FUZZ_SHRINK") else (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=N_STRUCTURED, deadline=None, derandomize=True, database=None, phases=PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(ex=export())
def test_structured_exports(ex):
    COUNTS["structured"] += 1
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "processed"
        raw.mkdir()
        starts = _write(raw, ex)
        outcome = _ingest_and_check(raw, out, "structured")
        if not _well_formed(ex):
            return
        # A well-formed export is never refused, and every non-blank record is a row in, found on its line.
        assert not isinstance(outcome, AnalysisError), f"well-formed export refused: {outcome}"
        for table, (_, rows) in ex["tables"].items():
            rep = outcome.tables[table]
            want = sum(not _blank(r) for r in rows)
            assert rep.rows_in == want, (table, rep.rows_in, want)
            if table in starts:
                q = pq.read_table(out / "quarantine" / f"{table}.parquet").column("line").to_pylist()
                assert set(q) <= set(starts[table]), (table, q, starts[table])
            kept_ids = pq.read_table(out / f"{table}.parquet").column("opportunity_id").to_pylist()
            assert None not in kept_ids
            if table == "opportunities":
                assert len(set(kept_ids)) == len(kept_ids)


FRAGMENTS = [b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b" ", b";",
             b"OPP-1", b"2026-01-05T10:00:00Z", b"SMB", b"Closed Won", b"1200.00", b"true", b"-1", b"\t"]
HEADER = (b"opportunity_id,account_id,created_at,segment,region,source_channel,owner_id,amount,stage,is_closed,"
          b"is_won,closed_at,lost_reason_notes")
GOOD = [b"OPP-1", b"ACC-1", b"2026-01-05T10:00:00Z", b"SMB", b"NA", b"paid_search", b"rep_001", b"1200.00",
        b"Closed Won", b"true", b"true", b"2026-02-01T12:00:00Z", b"note"]
fragment = st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS),
                     st.binary(max_size=3))


@st.composite
def records(draw) -> list[bytes]:
    """Records of the header's 13 fields, each valid or replaced by a few arbitrary bytes (CSV-significant ones
    favoured; how often depends on the example), ending with any line end; now and then a stretch of raw bytes."""
    noise = draw(st.sampled_from([0, 2, 5, 15, 40]))
    out = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(chance(8)):
            out.append(b"".join(draw(st.lists(fragment, max_size=12))))
            continue
        fields = [draw(st.lists(fragment, min_size=1, max_size=3).map(b"".join)) if draw(chance(noise)) else good
                  for good in GOOD]
        out.append(b",".join(fields) + draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r", b""])))
    return out


@settings(max_examples=N_BYTES, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=records(), header_end=st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r", b""]),
       with_header=chance(90))
def test_arbitrary_bytes_around_the_header(records, header_end, with_header):
    COUNTS["bytes"] += 1
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "processed"
        raw.mkdir()
        (raw / "opportunities.csv").write_bytes((HEADER + header_end if with_header else b"") + b"".join(records))
        _ingest_and_check(raw, out, "bytes")
