"""Audit: the manifest records every input; re-running a report gives the same bytes; a tampered input is named
with the metrics it moved; a missing input is a one-line error.

One small demo export (3 000 leads) is generated, ingested and run once for the module; every audit re-ingests
and re-runs it (about 30-45 s each), so the property test keeps to a few examples.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from analysis.audit import METRIC_KEYS, audit_report
from analysis.errors import AuditError
from analysis.metrics import read_metrics

pytestmark = pytest.mark.e2e

PERIOD = "2026-10"
OUTPUTS = (
    "board_pack.html",
    "board_pack.eml",
    "metrics.parquet",
    "notebooks/01_executive_brief.ipynb",
    "notebooks/02_data_quality.ipynb",
    "notebooks/03_funnel_conversion.ipynb",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    from analysis.config import MAPPINGS_DIR, load_definitions
    from analysis.demo import generate_demo_data
    from analysis.ingest import ingest
    from analysis.pack import run_cadence

    root = tmp_path_factory.mktemp("audit")
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    generate_demo_data(raw, n_leads=3000)
    ingest(raw, MAPPINGS_DIR / "canonical.yml", processed, load_definitions())
    report = run_cadence(
        "monthly", PERIOD, data_dir=processed, out_dir=root / "reports" / PERIOD, actions_dir=raw / "actions"
    )
    return {"root": root, "raw": raw, "processed": processed, "report": report}


def _audit_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("funnel-audit-*")}


def _mirror(keep: Path, report: Path) -> Path:
    [found] = [p.parent for p in keep.rglob("manifest.json") if p.parent.name == report.name]
    return found


# --------------------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------------------


def test_manifest_records_code_environment_parameters_inputs_and_outputs(run):
    from analysis.manifest import sha256_file

    report = run["report"]
    m = json.loads((report / "manifest.json").read_text())
    assert m["kit"]["version"] and m["kit"]["commit"] and len(m["kit"]["package_set_sha256"]) == 64
    p = m["parameters"]
    assert (p["cadence"], p["period"], p["engine"]) == ("monthly", PERIOD, "duckdb")
    assert p["as_of"].startswith("2026-") and p["notebooks"][0] == "01_executive_brief"
    # paths relative to the report folder, as the notebooks received them
    assert os.path.normpath(report / p["paths"]["data_dir"]) == str(run["processed"])
    assert os.path.normpath(report / p["paths"]["actions"]) == str(run["raw"] / "actions" / f"{PERIOD}.md")
    assert Path(os.path.normpath(report / p["paths"]["definitions"])).name == "definitions.yml"
    inputs = m["inputs"]
    assert os.path.normpath(report / inputs["raw_dir"]) == str(run["raw"])
    raw = {f["path"]: f for f in inputs["raw_files"]}
    assert {"leads.csv", "opportunities.csv", "stage_history.csv", "touchpoints.csv"} <= set(raw)
    assert raw["leads.csv"]["rows"] == 3000 and raw["leads.csv"]["sha256"] == sha256_file(run["raw"] / "leads.csv")
    assert inputs["mapping"]["sha256"] and Path(os.path.normpath(report / inputs["mapping"]["path"])).is_file()
    processed = {f["path"]: f for f in inputs["processed_files"]}
    assert processed["leads.parquet"]["rows"] == 3000 and "ingest_manifest.json" in processed
    assert inputs["actions"]["sha256"] == sha256_file(run["raw"] / "actions" / f"{PERIOD}.md")
    assert m["definitions"]["sha256"] == inputs["definitions"]["sha256"]
    assert set(OUTPUTS) <= set(m["outputs"]) and "manifest.json" not in m["outputs"]
    for name in OUTPUTS:
        assert m["outputs"][name] == sha256_file(report / name)
    text = (report / "manifest.json").read_text()
    assert "SMTP" not in text and "PASSWORD" not in text.upper()


# --------------------------------------------------------------------------------------------------------------
# Same data, same bytes
# --------------------------------------------------------------------------------------------------------------


def test_rerun_is_byte_identical_and_audit_says_so(run, tmp_path):
    report = run["report"]
    before = _audit_dirs()
    result = audit_report(report, keep_dir=tmp_path / "keep")
    mirror = _mirror(tmp_path / "keep", report)
    for name in OUTPUTS:  # a second run, elsewhere on disk: the same bytes
        assert (mirror / name).read_bytes() == (report / name).read_bytes(), name
    assert result.identical, result.text()
    assert not result.changed_inputs and not result.different_outputs and not result.metric_changes
    assert all(c.status == "identical" for c in result.processed), "re-ingest gives the same Parquet bytes"
    assert {c.path for c in result.outputs} >= set(OUTPUTS)
    text = result.text()
    assert "IDENTICAL" in text and "  different  " not in text and "  changed  " not in text
    assert _audit_dirs() == before, "the temporary tree is removed"


def test_executed_notebooks_carry_no_run_specific_metadata(run):
    import nbformat

    for path in (run["report"] / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        pm = nb.metadata.get("papermill", {})
        assert not {"start_time", "end_time", "duration", "input_path", "output_path"} & set(pm), path.name
        for cell in nb.cells:
            assert "execution" not in cell.metadata
            assert not {"start_time", "end_time", "duration"} & set(cell.metadata.get("papermill", {}))
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert [c.id for c in injected] == ["injected-parameters"]
        assert str(run["root"]) not in path.read_text(), "no absolute path of the run in the notebook"


# --------------------------------------------------------------------------------------------------------------
# Tampered inputs are named with the metrics they moved
# --------------------------------------------------------------------------------------------------------------


def _value_diff(old: Path, new: Path) -> set[tuple]:
    """Keys of metrics rows whose value differs (or that exist on one side only): a direct pandas diff."""
    a, b = read_metrics(old), read_metrics(new)
    for f in (a, b):
        f["_dup"] = f.groupby(METRIC_KEYS).cumcount()
    m = a.merge(b, on=[*METRIC_KEYS, "_dup"], how="outer", suffixes=("_old", "_new"), indicator=True)
    same = (m["value_old"] == m["value_new"]) | (m["value_old"].isna() & m["value_new"].isna())
    changed = m[(m["_merge"] != "both") | ~same]
    return {tuple(r) for r in changed[METRIC_KEYS].itertuples(index=False)}


def _audit_tampered(run, tmp_path: Path, file: str, line_no: int, column: str, value: str):
    """Audit with one cell of one raw file changed (restored afterwards); (report, mirror folder)."""
    path = run["raw"] / file
    original = path.read_bytes()
    lines = original.decode("utf-8").split("\n")
    header = next(csv.reader([lines[0]]))
    fields = lines[line_no].split(",")
    fields[header.index(column)] = value
    lines[line_no] = ",".join(fields)
    keep = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        path.write_bytes("\n".join(lines).encode("utf-8"))
        result = audit_report(run["report"], keep_dir=keep)
    finally:
        path.write_bytes(original)
    return result, _mirror(keep, run["report"])


def _check_tamper(run, result, mirror: Path, file: str) -> set[tuple]:
    report = run["report"]
    assert result.changed_inputs == [f"raw/{file}"], result.text()
    assert not result.identical
    expected = _value_diff(report / "metrics.parquet", mirror / "metrics.parquet")
    listed = {(m.section, m.metric, m.dimensions, m.period, m.method) for m in result.metric_changes if m.value_changed}
    assert listed == expected
    metrics_status = {c.path: c.status for c in result.outputs}["metrics.parquet"]
    differs = (report / "metrics.parquet").read_bytes() != (mirror / "metrics.parquet").read_bytes()
    assert metrics_status == ("different" if differs else "identical")
    text = result.text()
    assert f"raw/{file}" in text and "DIFFERENT" in text and "\n" in text
    for m in result.metric_changes:
        if m.value_changed:
            assert f"{m.metric}  " in text or m.metric in text
    return expected


def test_a_changed_segment_is_named_with_the_conversion_rates_it_moved(run, tmp_path):
    # Lead 1 moves from its segment to another: its creation month's lead->MQL rates change in both segments.
    raw_leads = pd.read_csv(run["raw"] / "leads.csv", dtype=str, keep_default_na=False)
    lead = raw_leads.iloc[0]
    other = "Enterprise" if lead["segment"] != "Enterprise" else "SMB"
    result, mirror = _audit_tampered(run, tmp_path, "leads.csv", 1, "segment", other)
    moved = _check_tamper(run, result, mirror, "leads.csv")
    month = lead["created_at"][:7]
    touched = {(k[1], k[2]) for k in moved if k[3] == month}
    assert ("lead_to_mql_rate", json.dumps({"segment": other}, separators=(",", ":"))) in touched, sorted(moved)
    change = next(m for m in result.metric_changes if m.metric == "lead_to_mql_rate" and m.period == month)
    assert change.old is not None and change.new is not None and change.old != change.new
    assert f"{change.old:.6g} -> {change.new:.6g}" in result.text()


def _simple_lines(path: Path) -> list[int]:
    """Line numbers (0 = header) of records on one line without quoting: safe to edit as text."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    width = len(lines[0].split(","))
    return [i for i, ln in enumerate(lines[1:], 1) if ln and '"' not in ln and len(ln.split(",")) == width]


@pytest.fixture(scope="module")
def tamper_space(run) -> dict[str, dict]:
    space = {}
    for file in ("leads.csv", "opportunities.csv"):
        frame = pd.read_csv(io.StringIO((run["raw"] / file).read_text()), dtype=str, keep_default_na=False)
        space[file] = {"lines": _simple_lines(run["raw"] / file), "frame": frame}
    return space


TAMPERS = [("leads.csv", "segment"), ("leads.csv", "mql_at"), ("opportunities.csv", "amount"),
           ("opportunities.csv", "segment")]  # fmt: skip


@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: every example re-runs the pack
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_single_cell_tamper_is_named_with_the_metrics_it_moved(run, tamper_space, tmp_path, data):
    file, column = data.draw(st.sampled_from(TAMPERS), label="cell")
    space = tamper_space[file]
    line_no = data.draw(st.sampled_from(space["lines"]), label="line")
    current = space["frame"].iloc[line_no - 1][column]
    if column == "segment":
        value = data.draw(st.sampled_from(sorted(set(space["frame"][column]) - {current})), label="value")
    elif column == "mql_at":  # another lead's MQL time, or none
        others = sorted(set(space["frame"][column]) - {current})
        value = data.draw(st.sampled_from(others), label="value")
    else:  # another amount in cents
        cents = data.draw(st.integers(100, 50_000_000), label="cents")
        value = f"{cents // 100}.{cents % 100:02d}"
        if value == current:
            value = f"{cents // 100 + 1}.{cents % 100:02d}"
    result, mirror = _audit_tampered(run, tmp_path, file, line_no, column, value)
    _check_tamper(run, result, mirror, file)
    shutil.rmtree(mirror.parent, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Missing inputs and manifests
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["targets.csv", "actions/2026-10.md"])
def test_a_missing_input_is_a_one_line_error_naming_it(run, relative, capsys):
    from analysis.cli import main

    path = run["raw"] / relative
    hidden = path.with_name(f".{path.name}.hidden")
    path.rename(hidden)
    try:
        with pytest.raises(AuditError) as info:
            audit_report(run["report"])
        text = str(info.value)
        assert "\n" not in text and path.name in text and "missing" in text, text
        assert main(["audit", str(run["report"])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and path.name in err
    finally:
        hidden.rename(path)


def test_a_folder_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(AuditError, match="no manifest.json"):
        audit_report(tmp_path)
