"""Ingest: bad input, the Maven CRM reference figures, three CRM layouts to one canonical model, determinism."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import shared_data

from analysis import errors
from analysis.config import load_definitions
from analysis.ingest import MANIFEST_NAME, QUARANTINE_SCHEMA, ingest
from analysis.mappings import load_mapping
from analysis.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAPPINGS = ROOT / "config" / "mappings"
BAD = FIXTURES / "bad_input"
CASES = sorted(p.name for p in BAD.iterdir() if (p / "expected.yml").exists())
KEYS = {name: list(t.key) for name, t in TABLES.items()}


@pytest.fixture(scope="module")
def definitions():
    return load_definitions()


def maven_dir() -> Path:
    return shared_data("maven_crm")


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ bad input


def test_bad_input_set_is_large_enough():
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, definitions):
    raw = BAD / case
    exp = yaml.safe_load((raw / "expected.yml").read_text())
    mapping = exp.get("mapping", "canonical")
    mapping_path = raw / mapping if (raw / mapping).is_file() else MAPPINGS / f"{mapping}.yml"
    out = tmp_path / "processed"
    if exp["expect"] == "error":
        with pytest.raises(getattr(errors, exp["error"])) as info:
            ingest(raw, mapping_path, out, definitions)
        err = info.value
        assert Path(err.file).name == exp["file"], str(err)
        assert err.rule == exp["rule"], str(err)
        if "column" in exp:
            assert err.column == exp["column"], str(err)
        if "line" in exp:
            assert err.row == exp["line"], str(err)
        if "message_contains" in exp:
            assert exp["message_contains"] in str(err)
        assert "\n" not in str(err)
        assert not out.exists() or not any(out.iterdir()), "a refused input must not leave outputs behind"
        return

    result = ingest(raw, mapping_path, out, definitions)
    manifest = json.loads(result.manifest_path.read_text())
    expected_tables = {exp["table"]: exp, **(exp.get("also") or {})}
    for table, want in expected_tables.items():
        rep = result.tables[table]
        for field in ("rows_in", "rows_kept", "rows_quarantined", "quarantined_by_rule"):
            if field in want:
                assert getattr(rep, field) == want[field], (table, field)
        q = pd.read_parquet(out / "quarantine" / f"{table}.parquet")
        got = sorted((int(r.line), r.column, r.rule) for r in q.itertuples())
        assert got == sorted(tuple(p) for p in want["problems"]), table
        kept = pq.read_table(out / f"{table}.parquet")
        assert kept.num_rows == rep.rows_kept
        assert manifest["tables"][table]["rows_kept"] == rep.rows_kept
        assert len({(r.source_file, r.line) for r in q.itertuples()}) == rep.rows_quarantined
    for rep in result.tables.values():  # the invariant, everywhere
        assert rep.rows_in == rep.rows_kept + rep.rows_quarantined
        for f in rep.files.values():
            assert f.rows_in == f.rows_kept + f.rows_quarantined
    if "ignored_columns" in exp:
        assert manifest["tables"][exp["table"]]["ignored_columns"] == exp["ignored_columns"]
    for column, values in (exp.get("values") or {}).items():
        got = pq.read_table(out / f"{exp['table']}.parquet").column(column).to_pylist()
        assert [None if v is None else str(v) for v in got] == values
    blob = b"".join(_files(out).values())
    for text in exp.get("absent") or []:
        assert text.encode() not in blob, f"{text!r} reached the processed folder"


def test_quarantine_detail(tmp_path, definitions):
    out = tmp_path / "p"
    ingest(BAD / "salesforce_formats", MAPPINGS / "salesforce.yml", out, definitions)
    q = pq.read_table(out / "quarantine" / "opportunities.parquet")
    assert q.schema.equals(QUARANTINE_SCHEMA)
    rows = q.to_pylist()
    assert {r["source_file"] for r in rows} == {"Opportunity.csv"}
    first = rows[0]
    raw = json.loads(first["raw_record"])
    assert list(raw) == sorted(raw)
    assert raw["Amount"] == "($50.00)" and raw["Close Date"] == "03/03/2026"
    assert raw["Opportunity Owner"].startswith("rep_")  # the personal name is pseudonymized here too
    assert "Secret Phone" not in raw  # unmapped columns (possibly personal) are left out
    assert "negative amount" in first["message"]


# ------------------------------------------------------------------------------------------ Maven CRM


@pytest.fixture(scope="module")
def maven(tmp_path_factory, definitions):
    out = tmp_path_factory.mktemp("maven") / "processed"
    result = ingest(maven_dir(), MAPPINGS / "maven_crm.yml", out, definitions)
    return result, out, pd.read_parquet(out / "opportunities.parquet")


def test_maven_accounting(maven):
    result, out, opp = maven
    rep = result.tables["opportunities"]
    assert (rep.rows_in, rep.rows_kept, rep.rows_quarantined) == (8800, 8800, 0)
    assert set(result.tables) == {"opportunities"}
    assert set(result.missing_tables) == {"leads", "stage_history", "touchpoints", "targets", "forecasts"}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["tables_present"] == ["opportunities"]
    assert manifest["inputs"]["sales_pipeline.csv"]["sha256"] == (
        "825ce8f6c32d4009548b468df3173d55a46fd73f2531f532c5459371dc52adf2")
    assert manifest["inputs"]["sales_pipeline.csv"]["rows"] == 8800
    assert result.as_of == "2018-01-01T00:00:00Z"
    assert opp["stage"].value_counts().to_dict() == {
        "Closed Won": 4238, "Closed Lost": 2473, "Solution": 1589, "Discovery": 500}
    assert opp.loc[opp.stage == "Discovery", "created_at"].isna().all()  # Prospecting: no engage_date
    assert (opp.loc[opp.account_id.isna(), "segment"] == "Unassigned").sum() == 1425
    assert "GTXPro" not in set(opp["product"]) and (opp["product"] == "GTX Pro").sum() > 0
    assert "technolgy" in set(opp["industry"])


def test_maven_reference_figures(maven):
    _, _, opp = maven
    closed = opp[opp["is_closed"]]
    won = int(closed["is_won"].sum())
    assert (won, len(closed)) == (4238, 6711)
    assert round(won / len(closed), 6) == 0.631501

    def table(by: pd.Series) -> dict:
        g = closed.groupby(by)["is_won"]
        return {k: (int(w), int(n - w), round(w / n, 6)) for k, w, n in zip(g.sum().index, g.sum(), g.count(),
                                                                              strict=True)}

    assert table(closed["closed_at"].dt.strftime("%Y-%m")) == {
        "2017-03": (531, 116, 0.820711), "2017-04": (285, 301, 0.486348), "2017-05": (438, 367, 0.544099),
        "2017-06": (531, 110, 0.828393), "2017-07": (308, 319, 0.491228), "2017-08": (446, 339, 0.568153),
        "2017-09": (503, 132, 0.792126), "2017-10": (279, 287, 0.492933), "2017-11": (406, 362, 0.528646),
        "2017-12": (511, 140, 0.784946),
    }
    assert table(closed["industry"]) == {
        "employment": (179, 107, 0.625874), "entertainment": (260, 142, 0.646766), "finance": (375, 238, 0.611746),
        "marketing": (404, 219, 0.648475), "medical": (592, 358, 0.623158), "retail": (799, 468, 0.630624),
        "services": (223, 129, 0.633523), "software": (450, 254, 0.639205), "technolgy": (671, 387, 0.634216),
        "telecommunications": (285, 171, 0.625),
    }
    assert table(closed["region"]) == {
        "Central": (1629, 975, 0.625576), "East": (1171, 687, 0.630248), "West": (1438, 811, 0.639395)}
    days = (closed["closed_at"] - closed["created_at"]).dt.days
    medians = days.groupby(closed["stage"]).median().to_dict()
    assert medians == {"Closed Won": 57, "Closed Lost": 14}
    assert closed.loc[closed.is_won, "amount"].sum() == Decimal("10005534")  # exact money, no float


def test_maven_no_personal_names(maven):
    _, out, opp = maven
    teams = pd.read_csv(maven_dir() / "sales_teams.csv", dtype=str)
    names = set(teams["sales_agent"]) | set(teams["manager"])
    blob = b"".join(_files(out).values())
    leaked = sorted(n for n in names if n.encode() in blob)
    assert not leaked, f"personal names in data/processed: {leaked[:5]}"
    assert opp["owner_id"].str.fullmatch(r"rep_[0-9a-f]{8}").all()
    assert opp["owner_team"].str.fullmatch(r"team_[0-9a-f]{8}").all()
    assert opp["owner_id"].nunique() == 30 and opp["owner_team"].nunique() == 6


# ------------------------------------------------------------------------- three layouts, one model


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, definitions):
    outs = {}
    for name in ("canonical", "salesforce", "hubspot"):
        out = tmp_path_factory.mktemp(name) / "processed"
        outs[name] = (ingest(FIXTURES / name, MAPPINGS / f"{name}.yml", out, definitions), out)
    return outs


def _to_canonical_ids(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Translate a CRM's ids to the canonical fixture's ids with the crosswalk (owners via their pseudonym)."""
    cw = pd.read_csv(FIXTURES / "crosswalk.csv", dtype=str)
    mapping = load_mapping(MAPPINGS / f"{source}.yml")
    kinds = {"lead_id": "lead", "opportunity_id": "opportunity", "account_id": "account",
             "touchpoint_id": "touchpoint", "owner_id": "owner"}
    df = df.copy()
    for col, kind in kinds.items():
        if col not in df:
            continue
        sub = cw[cw.kind == kind]
        if kind == "owner":
            tr = {mapping.pseudonym("rep", name): rep for rep, name in zip(sub.canonical, sub[source], strict=True)}
        else:
            tr = dict(zip(sub[source], sub.canonical, strict=True))
        df[col] = [None if v is None else tr.get(v, f"<untranslated {v}>") for v in df[col]]
    return df


@pytest.mark.parametrize("source", ["salesforce", "hubspot"])
@pytest.mark.parametrize("table", ["leads", "opportunities", "stage_history", "touchpoints"])
def test_crm_layouts_ingest_to_the_same_tables(layouts, source, table):
    canon_result, canon_out = layouts["canonical"]
    result, out = layouts[source]
    assert result.tables[table].rows_quarantined == 0
    assert canon_result.tables[table].rows_quarantined == 0
    want = pd.read_parquet(canon_out / f"{table}.parquet")
    got = _to_canonical_ids(pd.read_parquet(out / f"{table}.parquet"), source)
    got = got.sort_values(KEYS[table]).reset_index(drop=True)
    assert len(want) > 20
    pd.testing.assert_frame_equal(got, want)


def test_crm_layouts_details(layouts):
    sf_result, sf_out = layouts["salesforce"]
    assert sf_result.tables["stage_history"].rows_filtered > 0  # Amount / created rows of the field history
    manifest = json.loads(sf_result.manifest_path.read_text())
    assert "Email" in manifest["tables"]["leads"]["ignored_columns"]
    assert manifest["inputs"]["Campaign.csv"]["used_by"] == ["lookup:touchpoints.campaign"]
    blob = b"".join(_files(sf_out).values()) + b"".join(_files(layouts["hubspot"][1]).values())
    for personal in (b"Dana Whitfield", b"@example.com", b"@example.net", b"Novak", b"010-0199"):
        assert personal not in blob
    canon = layouts["canonical"][1]
    assert (canon / "targets.parquet").exists() and not (sf_out / "targets.parquet").exists()
    assert set(layouts["hubspot"][0].missing_tables) == {"targets", "forecasts"}


def test_origin_is_governed(layouts, definitions):
    leads = pd.read_parquet(layouts["hubspot"][1] / "leads.parquet")
    by_channel = definitions["channels"]["origin_by_channel"]
    assert (leads["origin"] == leads["source_channel"].map(by_channel)).all()


# --------------------------------------------------------------------------- outputs and determinism


def test_outputs_follow_the_schema(layouts):
    _, out = layouts["canonical"]
    for name, table in TABLES.items():
        assert pq.read_schema(out / f"{name}.parquet").remove_metadata().equals(table.arrow_schema), name
        q = pq.read_table(out / "quarantine" / f"{name}.parquet")
        assert q.schema.equals(QUARANTINE_SCHEMA) and q.num_rows == 0
    opp = pq.read_table(out / "opportunities.parquet")
    assert opp.schema.field("amount").type == pa.decimal128(18, 2)
    assert opp.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    ids = opp.column("opportunity_id").to_pylist()
    assert ids == sorted(ids)
    text = (out / MANIFEST_NAME).read_text()
    assert text.endswith("}\n")
    manifest = json.loads(text)
    assert json.dumps(manifest, sort_keys=True, indent=2) + "\n" == text
    assert manifest["mapping"]["name"] == "canonical" and len(manifest["definitions"]["sha256"]) == 64
    assert manifest["tables"]["leads"]["ignored_columns"] == ["origin"]
    assert manifest["tables"]["leads"]["freshness"]["column"] == "created_at"


@pytest.mark.parametrize("source", ["canonical", "salesforce", "hubspot", "bad_input/embedded_newline"])
def test_two_ingests_are_byte_identical(tmp_path, definitions, source):
    mapping = source if "/" not in source else "canonical"
    first, second = tmp_path / "a", tmp_path / "b"
    r1 = ingest(FIXTURES / source, MAPPINGS / f"{mapping}.yml", first, definitions)
    ingest(FIXTURES / source, MAPPINGS / f"{mapping}.yml", second, definitions)
    assert _files(first) == _files(second)
    again = ingest(FIXTURES / source, MAPPINGS / f"{mapping}.yml", first, definitions)  # over its own output
    assert _files(first) == _files(second) and again.as_of == r1.as_of


def test_parquet_export_equals_csv_export(tmp_path, layouts, definitions):
    """The canonical layout also accepts Parquet with the same base names; same tables, same bytes."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in TABLES:
        shutil.copy(layouts["canonical"][1] / f"{name}.parquet", raw / f"{name}.parquet")
    out = tmp_path / "processed"
    ingest(raw, MAPPINGS / "canonical.yml", out, definitions)
    for name in TABLES:
        assert (out / f"{name}.parquet").read_bytes() == (layouts["canonical"][1] / f"{name}.parquet").read_bytes()


def test_stale_tables_are_removed_and_errors_keep_previous_outputs(tmp_path, definitions):
    out = tmp_path / "processed"
    ingest(FIXTURES / "canonical", MAPPINGS / "canonical.yml", out, definitions)
    before = _files(out)
    with pytest.raises(errors.InputFileError):
        ingest(BAD / "non_utf8", MAPPINGS / "canonical.yml", out, definitions)
    assert _files(out) == before  # a refused input leaves the previous outputs untouched
    ingest(BAD / "header_only", MAPPINGS / "canonical.yml", out, definitions)
    assert not (out / "leads.parquet").exists()  # not in this export: no stale table left behind
    assert (out / "quarantine" / "leads.parquet").exists()  # quarantine files always exist
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert "leads" not in manifest["tables"] and "leads" in manifest["tables_missing"]


def test_as_of_defaults_to_the_end_of_the_day_of_the_latest_event(layouts):
    result, out = layouts["canonical"]
    latest = max(
        pd.read_parquet(out / f"{t}.parquet").select_dtypes("datetimetz").max().max()
        for t in ("leads", "opportunities", "stage_history", "touchpoints", "forecasts")
    )
    assert result.as_of == (latest.floor("D") + pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert json.loads(result.manifest_path.read_text())["as_of_source"] == "end_of_day_of_latest_event"


def test_demo_export_ingests_clean(tmp_path, definitions):
    import analysis.demo as demo
    raw = tmp_path / "raw"
    demo.generate_demo_data(raw, n_leads=1500, fmt="parquet")
    result = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "p", definitions)
    for name, rep in result.tables.items():
        assert rep.rows_quarantined == 0, (name, rep.quarantined_by_rule)
        src = pq.read_table(raw / f"{name}.parquet").sort_by([(k, "ascending") for k in KEYS[name]])
        assert pq.read_table(tmp_path / "p" / f"{name}.parquet").equals(src), name


# ------------------------------------------------------------------------------------------ chunked ingest


def _plant_problems(raw: Path) -> None:
    """Bad rows across a demo export: duplicates far from their first occurrence, orphans, stage order, bad values."""
    def edit(name: str, change) -> None:
        t = pq.read_table(raw / f"{name}.parquet")
        pq.write_table(change(t), raw / f"{name}.parquet")

    def set_value(t: pa.Table, col: str, row: int, value) -> pa.Table:
        vals = t.column(col).to_pylist()
        vals[row] = value
        return t.set_column(t.schema.get_field_index(col), col, pa.array(vals, t.schema.field(col).type))

    def dup(t: pa.Table, row: int) -> pa.Table:
        return pa.concat_tables([t, t.slice(row, 1)])

    edit("leads", lambda t: set_value(set_value(dup(dup(t, 3), 40), "segment", 5, "Galactic"), "created_at", 9, None))
    opp = pq.read_table(raw / "opportunities.parquet")
    gone = opp.column("opportunity_id")[2].as_py()  # quarantined below: its history and touches become orphans
    edit("opportunities", lambda t: set_value(dup(t, 1), "amount", 2, Decimal("-5.00")))
    sh = pq.read_table(raw / "stage_history.parquet").to_pandas()
    opp_id = sh["opportunity_id"].value_counts().index[0]  # an opportunity with several stages
    rows = sh.index[sh["opportunity_id"] == opp_id]
    first = rows[sh.loc[rows, "entered_at"].argmin()]  # its first stage, moved after its last one
    late_at = sh.loc[rows, "entered_at"].max() + pd.Timedelta(days=1)
    edit("stage_history", lambda t: dup(set_value(t, "entered_at", int(first), late_at), 5))
    edit("touchpoints", lambda t: set_value(set_value(dup(t, 0), "opportunity_id", 11, "OPP-NOWHERE"),
                                            "opportunity_id", 12, gone))


def test_chunked_ingest_equals_whole_table_ingest(tmp_path, definitions):
    """Tiny chunks give the same tables, quarantines and manifest, byte for byte, as one chunk per table."""
    import analysis.demo as demo
    raw = tmp_path / "raw"
    demo.generate_demo_data(raw, n_leads=150, fmt="parquet")
    _plant_problems(raw)
    whole = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "whole", definitions)
    small = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "small", definitions, chunk_rows=7)
    assert _files(tmp_path / "whole") == _files(tmp_path / "small")
    assert whole.tables == small.tables and whole.as_of == small.as_of
    rules = {name: set(rep.quarantined_by_rule) for name, rep in whole.tables.items()}
    assert {"unique", "allowed_values", "not_null"} <= rules["leads"]
    assert {"unique", "non_negative"} <= rules["opportunities"]
    assert {"unique", "stage_order", "orphan"} <= rules["stage_history"]
    assert {"unique", "orphan"} <= rules["touchpoints"]


def test_one_chunk_above_the_in_memory_limit_equals_whole_table_ingest(tmp_path, definitions, monkeypatch):
    """A table read as a single chunk too large for the in-memory rules goes through the spill and DuckDB rules
    alone (the demo's 316 214 touchpoints once raised a TypeError here) and gives the same bytes."""
    import analysis.demo as demo
    import analysis.ingest as ingest_module
    raw = tmp_path / "raw"
    demo.generate_demo_data(raw, n_leads=150, fmt="parquet")
    _plant_problems(raw)
    whole = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "whole", definitions)
    monkeypatch.setattr(ingest_module, "SMALL_TABLE_ROWS", 5)
    spilled = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "spilled", definitions)
    assert _files(tmp_path / "whole") == _files(tmp_path / "spilled")
    assert whole.tables == spilled.tables and whole.as_of == spilled.as_of


def test_demo_export_chunked_equals_whole(tmp_path, definitions):
    """A 3 000-lead demo export read 997 records at a time: the same bytes as read whole."""
    import analysis.demo as demo
    raw = tmp_path / "raw"
    demo.generate_demo_data(raw, n_leads=3000, fmt="parquet")
    ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "whole", definitions)
    ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "small", definitions, chunk_rows=997)
    assert _files(tmp_path / "whole") == _files(tmp_path / "small")


def _canonical_csv(raw: Path, leads: list[dict], opportunities: list[dict] | None = None,
                   touchpoints: list[dict] | None = None) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name, rows in (("leads", leads), ("opportunities", opportunities), ("touchpoints", touchpoints)):
        if rows is not None:
            pd.DataFrame(rows).to_csv(raw / f"{name}.csv", index=False)


def _lead(i: int, **kw) -> dict:
    return {"lead_id": f"L{i}", "created_at": "2026-01-05T10:00:00Z", "segment": "SMB", "source_channel": "webinar",
            **kw}


def test_cross_row_rules_span_chunks(tmp_path, definitions):
    """With 2-row chunks: a key first seen in chunk 1 and again in chunk 3 is a duplicate (first kept); a touch in
    chunk 3 naming an opportunity quarantined in chunk 1 is an orphan; as_of comes from the last chunk."""
    raw = tmp_path / "raw"
    leads = [_lead(i) for i in range(6)]
    leads[4] = _lead(0, segment="Enterprise")  # chunk 3 (rows 5-6): repeats L0 of chunk 1
    leads[5] = _lead(5, created_at="2026-02-27T23:00:00Z")
    opps = [{"opportunity_id": f"O{i}", "created_at": "2026-01-06T00:00:00Z", "segment": "SMB", "stage": "Discovery",
             "amount": "-1.00" if i == 0 else "10.00"} for i in range(4)]
    touches = [{"touchpoint_id": f"T{i}", "occurred_at": "2026-01-07T00:00:00Z", "channel": "webinar",
                "opportunity_id": "O0" if i == 4 else f"O{i % 4}" if i else ""} for i in range(6)]
    touches[5]["touchpoint_id"] = "T1"
    _canonical_csv(raw, leads, opps, touches)
    ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "whole", definitions)
    result = ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "out", definitions, chunk_rows=2)
    assert _files(tmp_path / "whole") == _files(tmp_path / "out")
    q = pd.read_parquet(tmp_path / "out" / "quarantine" / "leads.parquet")
    assert [(r.line, r.rule, r.message) for r in q.itertuples()] == [
        (6, "unique", "duplicate lead_id 'L0' (first occurrence kept)")]
    kept = pq.read_table(tmp_path / "out" / "leads.parquet").to_pydict()
    assert kept["lead_id"][0] == "L0" and kept["segment"][0] == "SMB"
    q = pd.read_parquet(tmp_path / "out" / "quarantine" / "touchpoints.parquet")
    assert sorted((r.line, r.rule, r.message) for r in q.itertuples()) == [
        (6, "orphan", "opportunity 'O0' was quarantined"),
        (7, "unique", "duplicate touchpoint_id 'T1' (first occurrence kept)")]
    assert result.tables["touchpoints"].quarantined_by_rule == {"orphan": 1, "unique": 1}
    assert result.as_of == "2026-02-28T00:00:00Z"
    for rep in result.tables.values():
        assert rep.rows_in == rep.rows_kept + rep.rows_quarantined


def test_pseudonym_collision_across_chunks_is_refused(tmp_path, definitions):
    """Two owners sharing a pseudonym in different chunks stop the run, as they do in one chunk."""
    mapping = yaml.safe_load((MAPPINGS / "canonical.yml").read_text())
    mapping.update(salt="s3cret", pseudonym_digits=6)
    mapping["tables"]["leads"]["pseudonymize"] = {"owner_id": "rep"}
    path = tmp_path / "mapping.yml"
    path.write_text(yaml.safe_dump(mapping))
    m = load_mapping(path, definitions)
    seen: dict[str, str] = {}
    for i in range(200_000):
        p = m.pseudonym("rep", f"owner{i}")
        if p in seen:
            a, b = seen[p], f"owner{i}"
            break
        seen[p] = f"owner{i}"
    leads = [_lead(i, owner_id=f"x{i}") for i in range(6)]
    leads[0]["owner_id"], leads[5]["owner_id"] = a, b
    _canonical_csv(tmp_path / "raw", leads)
    for chunk in (2, 100):
        with pytest.raises(errors.InputFileError) as info:
            ingest(tmp_path / "raw", path, tmp_path / "out", definitions, chunk_rows=chunk)
        assert info.value.rule == "pseudonymize" and info.value.column == "owner_id"
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_in_tiny_chunks(case, tmp_path, definitions):
    """Every bad-input case read 2 records at a time: the same outputs, or the same refusal, as read whole."""
    raw = BAD / case
    exp = yaml.safe_load((raw / "expected.yml").read_text())
    mapping = exp.get("mapping", "canonical")
    mapping_path = raw / mapping if (raw / mapping).is_file() else MAPPINGS / f"{mapping}.yml"
    outcomes = []
    for chunk, out in ((1_000_000, tmp_path / "whole"), (2, tmp_path / "small")):
        try:
            ingest(raw, mapping_path, out, definitions, chunk_rows=chunk)
            outcomes.append(_files(out))
        except errors.AnalysisError as err:
            outcomes.append((type(err), str(err), err.rule, getattr(err, "row", None), err.column))
    assert outcomes[0] == outcomes[1]


def test_export_in_key_order_and_shuffled_give_the_same_bytes(tmp_path, definitions):
    """An export already sorted by key is written without a sort; shuffled, it is sorted in DuckDB: same bytes."""
    import analysis.demo as demo
    raw, shuffled = tmp_path / "raw", tmp_path / "shuffled"
    demo.generate_demo_data(raw, n_leads=400, fmt="parquet")
    shutil.copytree(raw, shuffled)
    for name in ("leads", "touchpoints", "opportunities"):
        t = pq.read_table(raw / f"{name}.parquet")
        order = list(reversed(range(t.num_rows)))
        pq.write_table(t.take(order), shuffled / f"{name}.parquet")
    ingest(raw, MAPPINGS / "canonical.yml", tmp_path / "a", definitions, chunk_rows=50)
    ingest(shuffled, MAPPINGS / "canonical.yml", tmp_path / "b", definitions, chunk_rows=50)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for name in TABLES:
        assert a[f"{name}.parquet"] == b[f"{name}.parquet"], name


def test_spill_folder_is_removed_and_stale_ones_too(tmp_path, definitions, monkeypatch):
    """Spills (tables in more than one chunk) go to FUNNEL_KIT_INGEST_TMP and are removed after the run, failed or
    not; a folder left by a killed ingest (its process gone) is removed by the next one that spills."""
    import subprocess
    import sys

    spills = tmp_path / "spills"
    spills.mkdir()
    monkeypatch.setenv("FUNNEL_KIT_INGEST_TMP", str(spills))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = spills / f"funnel-ingest-{int(dead.stdout)}-x1y2"
    (stale / "duckdb").mkdir(parents=True)
    (stale / "leads.spill.parquet").write_bytes(b"left by a killed run")
    ingest(FIXTURES / "canonical", MAPPINGS / "canonical.yml", tmp_path / "out", definitions, chunk_rows=5)
    assert list(spills.iterdir()) == []
    with pytest.raises(errors.InputFileError):
        ingest(BAD / "non_utf8", MAPPINGS / "canonical.yml", tmp_path / "out2", definitions, chunk_rows=5)
    assert list(spills.iterdir()) == []


def test_vendored_maven_sample_is_the_documented_download():
    """tests/fixtures/maven_crm holds the official files unchanged: each sha256 as SOURCES.md records it."""
    folder = maven_dir()
    documented = dict(re.findall(r"\| `([a-z_]+\.csv)` \| `([0-9a-f]{64})` \|", (folder / "SOURCES.md").read_text()))
    assert len(documented) == 5
    for name, digest in documented.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
