"""The mapping language: loading and its errors, value parsers, CSV line tracking, lookups, globs, unpivot."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.config import load_definitions
from analysis.errors import InputFileError, MappingError
from analysis.ingest import _read_csv, ingest
from analysis.mappings import CsvOptions, load_mapping, parse_mapping
from analysis.validation import apply_bands, parse_bool, parse_money, parse_timestamps

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "config" / "mappings"


@pytest.fixture(scope="module")
def definitions():
    return load_definitions()


def _load(tmp_path: Path, text: str, definitions) -> object:
    path = tmp_path / "m.yml"
    path.write_text(textwrap.dedent(text))
    return load_mapping(path, definitions)


MINIMAL_LEADS = """
name: t
tables:
  leads:
    source: leads.csv
    columns:
      lead_id: Id
      created_at: Created
      segment: Segment
      source_channel: Channel
"""


# -------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["canonical", "salesforce", "hubspot", "maven_crm"])
def test_shipped_mappings_load_and_are_documented(name, definitions):
    path = MAPPINGS / f"{name}.yml"
    text = path.read_text()
    assert text.startswith("# Import mapping:") and "How a mapping reads" in text
    mapping = load_mapping(path, definitions)
    assert mapping.name == name and len(mapping.sha256) == 64
    for tm in mapping.tables.values():
        assert "origin" not in tm.columns or tm.columns["origin"].source is None


def test_yaml_1_2_booleans_keep_on_and_yes_as_text(tmp_path, definitions):
    m = _load(tmp_path, """
        name: t
        tables:
          opportunities:
            source: o.csv
            lookups:
              acct: {source: a.csv, key: account, on: account}
            columns:
              opportunity_id: Id
              created_at: Created
              segment: {lookup: acct.segment}
              stage: {from: Stage, map: {Yes: Closed Won, No: Closed Lost, on: Discovery}}
    """, definitions)
    tm = m.tables["opportunities"]
    assert tm.lookups["acct"].on == "account"
    assert tm.columns["stage"].value_map == {"Yes": "Closed Won", "No": "Closed Lost", "on": "Discovery"}
    assert tm.columns["is_won"].derive == "stage"  # derived when not mapped


BAD_MAPPINGS = [
    ("unknown top-level key", "name: t\ncolour: red\ntables: {}\n", "colour"),
    ("no tables", "name: t\ntables: {}\n", "tables"),
    ("unknown table", "name: t\ntables:\n  deals: {source: d.csv, columns: {}}\n", "tables.deals"),
    ("unknown column", MINIMAL_LEADS + "      lead_score: Score\n", "tables.leads.columns.lead_score"),
    ("origin is governed", MINIMAL_LEADS + "      origin: Origin\n", "tables.leads.columns.origin"),
    ("two origins", MINIMAL_LEADS + "      region: {from: R, const: NA}\n", "tables.leads.columns.region"),
    ("unknown column option", MINIMAL_LEADS + "      region: {from: R, upper: true}\n",
     "tables.leads.columns.region.upper"),
    ("unknown lookup", MINIMAL_LEADS + "      region: {lookup: acct.region}\n", "tables.leads.columns.region.lookup"),
    ("bad time zone", MINIMAL_LEADS + "    timezone: Mars/Olympus\n", "tables.leads.timezone"),
    ("bad encoding", MINIMAL_LEADS + "    csv: {encoding: klingon}\n", "tables.leads.csv.encoding"),
    ("two-char delimiter", MINIMAL_LEADS + "    csv: {delimiter: ';;'}\n", "tables.leads.csv.delimiter"),
    ("format on text", MINIMAL_LEADS + "      region: {from: R, format: '%Y'}\n", "tables.leads.columns.region.format"),
    ("bad format", MINIMAL_LEADS + "      mql_at: {from: M, format: dd.mm.yyyy}\n",
     "tables.leads.columns.mql_at.format"),
    ("bad band", MINIMAL_LEADS.replace("segment: Segment", "segment: {from: E, bands: {SMB: 'few'}}"),
     "tables.leads.columns.segment.bands.SMB"),
    ("boolean map key", MINIMAL_LEADS + "      region: {from: R, map: {true: NA}}\n",
     "tables.leads.columns.region.map.True"),
    ("required column unmapped", MINIMAL_LEADS.replace("      segment: Segment\n", ""),
     "tables.leads.columns.segment"),
    ("required column mapped to nothing", MINIMAL_LEADS.replace("segment: Segment", "segment: ~"),
     "tables.leads.columns.segment"),
    ("pseudonymize needs a salt", MINIMAL_LEADS + "      owner_id: Owner\n    pseudonymize: {owner_id: rep}\n",
     "salt"),
    ("pseudonymize a constant", "salt: s\n" + MINIMAL_LEADS + "      owner_id: {const: x}\n"
     "    pseudonymize: [owner_id]\n", "tables.leads.pseudonymize.owner_id"),
    ("personal value leaks", "salt: s\n" + MINIMAL_LEADS + "      owner_id: Owner\n      owner_team: Owner\n"
     "    pseudonymize: {owner_id: rep}\n", "tables.leads.columns.owner_team"),
    ("as_of without offset", "as_of: '2026-01-01T00:00:00'\n" + MINIMAL_LEADS, "as_of"),
    ("absolute source", MINIMAL_LEADS.replace("source: leads.csv", "source: /etc/passwd"), "tables.leads.source[0]"),
]


@pytest.mark.parametrize(("why", "text", "key"), BAD_MAPPINGS, ids=[b[0] for b in BAD_MAPPINGS])
def test_invalid_mappings_name_the_key(tmp_path, definitions, why, text, key):
    with pytest.raises(MappingError) as info:
        _load(tmp_path, text, definitions)
    assert info.value.column == key, str(info.value)
    assert info.value.file.endswith("m.yml") and info.value.rule == "mapping"


def test_invalid_yaml_names_the_line(tmp_path, definitions):
    with pytest.raises(MappingError) as info:
        _load(tmp_path, "name: t\ntables:\n  leads: {source: [a.csv\n", definitions)
    assert info.value.rule == "yaml" and info.value.row is not None


def test_pseudonyms_are_stable_salted_and_short():
    a = parse_mapping(yaml.safe_load("name: a\nsalt: one\n" + MINIMAL_LEADS.split("\n", 2)[2]), path="a.yml")
    b = parse_mapping(yaml.safe_load("name: b\nsalt: two\n" + MINIMAL_LEADS.split("\n", 2)[2]), path="b.yml")
    assert a.pseudonym("rep", "Jane Doe") == a.pseudonym("rep", "Jane Doe")
    assert a.pseudonym("rep", "Jane Doe") != b.pseudonym("rep", "Jane Doe")
    assert a.pseudonym("rep", "Jane Doe").startswith("rep_") and len(a.pseudonym("rep", "x")) == 12


# -------------------------------------------------------------------------------------------- parsers


def _s(*values: str) -> pa.Array:
    return pa.array(list(values), pa.string())


def _iso(ts: pd.Series) -> list:
    return [None if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in ts]


def test_parse_iso_timestamps():
    ts, bad, date_only = parse_timestamps(
        _s("2026-03-04T13:22:05Z", "2026-03-04 13:22:05+02:00", "2026-03-04", "2026-03-04T08:00:00.5",
           "", "2026-02-30", "soon", "0201-03-04"), ("iso",), "UTC")
    assert _iso(ts) == ["2026-03-04T13:22:05.000000Z", "2026-03-04T11:22:05.000000Z", "2026-03-04T00:00:00.000000Z",
                        "2026-03-04T08:00:00.500000Z", None, None, None, None]
    assert bad.tolist() == [False, False, False, False, False, True, True, True]
    assert date_only.tolist() == [False, False, True, False, False, False, False, False]
    assert str(ts.dtype) == "datetime64[us, UTC]"


def test_parse_local_times_across_dst():
    ts, bad, _ = parse_timestamps(
        _s("01/15/2026 09:00 AM", "07/15/2026 09:00 AM", "3/8/2026 2:30 AM", "11/01/2026 01:30 AM",
           "13/01/2026 1:00 PM"),
        ("%m/%d/%Y %I:%M %p",), "America/New_York")
    assert _iso(ts)[:4] == [
        "2026-01-15T14:00:00.000000Z",  # EST
        "2026-07-15T13:00:00.000000Z",  # EDT
        "2026-03-08T07:00:00.000000Z",  # 02:30 does not exist: after the gap (03:00 EDT)
        "2026-11-01T06:30:00.000000Z",  # 01:30 happens twice: the later, standard-time instant
    ]
    assert bad.tolist() == [False, False, False, False, True]


def test_parse_epoch_and_format_lists():
    ts, bad, _ = parse_timestamps(_s("1772630525000", "2026-03-04T13:22:05Z", "17726305250000000000", "x"),
                                  ("epoch_ms", "iso"), "UTC")
    assert _iso(ts)[:2] == ["2026-03-04T13:22:05.000000Z", "2026-03-04T13:22:05.000000Z"]
    assert bad.tolist() == [False, False, True, True]


def test_parse_money_is_exact():
    cents, bad, reason = parse_money(
        _s("$12,345.67", "(50.00)", "EUR 10", "-0.5", "0.1", "12.345", "1e3", "", "1,5", "9999999999999999.99"),
        decimal=".", thousands=",")
    assert cents.tolist()[:5] == [1234567, -5000, 1000, -50, 10]
    assert cents.tolist()[9] == 999999999999999999
    assert bad.tolist() == [False, False, False, False, False, True, True, False, False, False]
    assert reason[5] == "more than 2 decimal places" and reason[6] == "not an amount"
    assert pd.isna(cents[7])
    eu, bad_eu, _ = parse_money(_s("1.234,56", "€ 7,5"), decimal=",", thousands=".")
    assert eu.tolist() == [123456, 750] and not bad_eu.any()


def test_parse_bool():
    flags, bad = parse_bool(_s("TRUE", "0", "yes", "", "maybe"), ("true", "1", "yes"), ("false", "0", "no"))
    assert flags.tolist()[:3] == [True, False, True] and pd.isna(flags[3])
    assert bad.tolist() == [False, False, False, False, True]


def test_governed_bands(definitions, tmp_path):
    m = _load(tmp_path, MINIMAL_LEADS.replace("segment: Segment", "segment: {from: E, bands: definitions}"),
              definitions)
    bands = m.tables["leads"].columns["segment"].bands
    labels, nan, outside = apply_bands(_s("1", "199", "200", "1999", "2000", "250000", "0", "many", ""), bands)
    assert labels.to_pylist() == ["SMB", "SMB", "Mid-Market", "Mid-Market", "Enterprise", "Enterprise", "", "", ""]
    assert outside.tolist() == [False] * 6 + [True, False, False]
    assert nan.tolist() == [False] * 7 + [True, False]


# ----------------------------------------------------------------------------------- CSV line tracking

FIELD = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\tx;é')), max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(FIELD, min_size=3, max_size=3), st.integers(0, 2), st.booleans()),
                min_size=0, max_size=12))
def test_record_lines_follow_physical_lines(records):
    """Whatever the quoting, embedded newlines and blank lines, each record reports the line it starts on."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["a", "b", "c"])
    expected, values = [], []
    for fields, blanks, crlf in records:
        buf.write("\n" * blanks)
        line = buf.getvalue().count("\n") + 1
        if not "".join(fields).strip():
            fields = [*fields[:2], "x"]  # an all-blank record is skipped by design; keep records non-blank
        row = io.StringIO(newline="")
        csv.writer(row, lineterminator="\r\n").writerow(fields)  # quotes any field holding \r or \n
        buf.write(row.getvalue() if crlf else row.getvalue()[:-2] + "\n")
        expected.append(line)
        values.append(fields)
    raw = buf.getvalue().encode()
    rf = _read_csv(Path("t.csv"), "t.csv", "t.csv", raw, CsvOptions())
    assert rf.lines.tolist() == expected
    assert [[rf.columns[c][i].as_py() for c in "abc"] for i in range(rf.n)] == values


def test_blank_records_are_skipped_and_counted():
    raw = b"a,b\n1,2\n,\n  \n\n3,4\n"
    rf = _read_csv(Path("t.csv"), "t.csv", "t.csv", raw, CsvOptions())
    assert rf.lines.tolist() == [2, 6] and rf.blank_rows == 1


def test_unbalanced_quote_falls_back_to_exact_parsing():
    raw = b'a,b\n1,5" screen\n2,"x\ny"\n3,ok\n'  # a stray quote inside an unquoted field
    rf = _read_csv(Path("t.csv"), "t.csv", "t.csv", raw, CsvOptions())
    assert rf.lines.tolist() == [2, 3, 5]
    assert rf.columns["b"].to_pylist() == ['5" screen', "x\ny", "ok"]


# -------------------------------------------------------------------------- lookups, globs, unpivot


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


LOOKUP_MAPPING = """
    name: lookups
    tables:
      opportunities:
        source: deals_*.csv
        lookups:
          acct: {source: accounts.csv, key: Account, on: Account, unmatched: quarantine}
        columns:
          opportunity_id: Id
          account_id: Account
          created_at: {from: Created, format: "%d.%m.%Y"}
          segment: {lookup: acct.Employees, bands: definitions, default: Unassigned}
          industry: {lookup: acct.Sector, default: unknown}
          stage: {from: Stage, map: {won: Closed Won, lost: Closed Lost}, otherwise: Discovery}
          source_channel: {const: partner_referral}
"""


def test_lookups_globs_defaults_and_constants(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "accounts.csv", "Account,Sector,Employees\nAcme,retail,150\nGlobex,energy,5200\nInitech,,\n")
    _write(raw / "deals_2026-01.csv", "Id,Account,Created,Stage\nD1,Acme,05.01.2026,won\nD2,,06.01.2026,new\n")
    _write(raw / "deals_2026-02.csv", "Id,Account,Created,Stage,Extra\nD3,Globex,01.02.2026,lost,x\n"
           "D4,Umbrella,02.02.2026,won,y\nD5,Initech,03.02.2026,,z\n")
    _write(tmp_path / "m.yml", LOOKUP_MAPPING)
    result = ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    rep = result.tables["opportunities"]
    assert rep.source_files == ("deals_2026-01.csv", "deals_2026-02.csv")
    assert {k: (f.rows_in, f.rows_kept) for k, f in rep.files.items()} == {
        "deals_2026-01.csv": (2, 2), "deals_2026-02.csv": (3, 1)}
    opp = pd.read_parquet(tmp_path / "out" / "opportunities.parquet").set_index("opportunity_id")
    assert opp["segment"].to_dict() == {"D1": "SMB", "D2": "Unassigned", "D3": "Enterprise"}
    assert opp["industry"].to_dict() == {"D1": "retail", "D2": "unknown", "D3": "energy"}
    assert opp["stage"].to_dict() == {"D1": "Closed Won", "D2": "Discovery", "D3": "Closed Lost"}
    assert set(opp["origin"]) == {"partner"}
    q = pd.read_parquet(tmp_path / "out" / "quarantine" / "opportunities.parquet")
    assert sorted(zip(q.source_file, q.line, q.rule, strict=True)) == [
        ("deals_2026-02.csv", 3, "orphan"),  # Umbrella: not in accounts.csv (reported once per lookup)
        ("deals_2026-02.csv", 4, "not_null")]  # blank stage
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["tables"]["opportunities"]["ignored_columns"] == ["Extra"]
    assert manifest["inputs"]["accounts.csv"]["rows"] == 3


def test_lookup_key_must_be_unique(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "accounts.csv", "Account,Sector,Employees\nAcme,retail,150\nAcme,energy,5200\n")
    _write(raw / "deals_1.csv", "Id,Account,Created,Stage\nD1,Acme,05.01.2026,won\n")
    _write(tmp_path / "m.yml", LOOKUP_MAPPING)
    with pytest.raises(InputFileError) as info:
        ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    assert (info.value.rule, info.value.column, info.value.row) == ("unique", "Account", 3)


def test_a_folder_without_any_mapped_file_is_refused(tmp_path, definitions):
    (tmp_path / "raw").mkdir()
    with pytest.raises(InputFileError) as info:
        ingest(tmp_path / "raw", MAPPINGS / "salesforce.yml", tmp_path / "out", definitions)
    assert info.value.rule == "missing_file" and "Opportunity.csv" in str(info.value)


def test_missing_lookup_file(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "deals_1.csv", "Id,Account,Created,Stage\nD1,Acme,05.01.2026,won\n")
    _write(tmp_path / "m.yml", LOOKUP_MAPPING)
    with pytest.raises(InputFileError) as info:
        ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    assert info.value.rule == "missing_file" and info.value.file.endswith("accounts.csv")


def test_unpivot_and_where(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "deals.csv", """
        Id,Kind,Entered Discovery,Entered Proposal,Entered Won
        D1,deal,2026-01-05,2026-01-09,2026-01-20
        D2,deal,2026-01-06,,
        D3,test,2026-01-06,,
        D4,deal,,,
    """)
    _write(tmp_path / "m.yml", """
        name: unpivot
        tables:
          stage_history:
            source: deals.csv
            where: {Kind: [deal]}
            unpivot:
              columns: {Entered Discovery: Discovery, Entered Proposal: Proposal, Entered Won: Closed Won}
              name_to: stage
              value_to: entered_at
            columns:
              opportunity_id: Id
              entered_at: {format: "%Y-%m-%d"}
    """)
    result = ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    rep = result.tables["stage_history"]
    assert (rep.rows_in, rep.rows_kept, rep.rows_filtered) == (4, 4, 1)
    sh = pd.read_parquet(tmp_path / "out" / "stage_history.parquet")
    assert list(zip(sh.opportunity_id, sh.stage, strict=True)) == [
        ("D1", "Closed Won"), ("D1", "Discovery"), ("D1", "Proposal"), ("D2", "Discovery")]


def test_unpivot_without_any_cell(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "deals.csv", "Id,Entered Discovery\nD1,\n")
    _write(tmp_path / "m.yml", """
        name: unpivot
        tables:
          stage_history:
            source: deals.csv
            unpivot: {columns: {Entered Discovery: Discovery}, name_to: stage, value_to: entered_at}
            columns: {opportunity_id: Id}
    """)
    result = ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    assert result.tables["stage_history"].rows_in == 0
    assert pq.read_table(tmp_path / "out" / "stage_history.parquet").num_rows == 0


def test_money_is_written_as_decimal(tmp_path, definitions):
    raw = tmp_path / "raw"
    _write(raw / "targets.csv", "period,segment,revenue_target\n2026-01,SMB,-0.01\n2026-02,SMB,12345678901234.5\n"
           "2026-03,SMB,0\n")
    _write(tmp_path / "m.yml", """
        name: t
        tables:
          targets:
            source: targets.csv
            columns: {period: period, segment: segment, revenue_target: revenue_target}
    """)
    ingest(raw, tmp_path / "m.yml", tmp_path / "out", definitions)
    col = pq.read_table(tmp_path / "out" / "targets.parquet").column("revenue_target")
    assert [str(v) for v in col.to_pylist()] == ["12345678901234.50", "0.00"]
    assert col.type == pa.decimal128(18, 2)
    assert np.array_equal(pd.read_parquet(tmp_path / "out" / "quarantine" / "targets.parquet")["line"], [2])
