"""End to end: papermill + nbconvert on the demo data; the pack is complete, self-contained and reproducible."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest

from analysis import brief
from analysis.config import load_definitions
from analysis.errors import RunError
from analysis.metrics import METRIC_COLUMNS, parse_dims, read_metrics
from analysis.pack import recover, run_cadence

pytestmark = pytest.mark.e2e


def _truth(demo_data) -> dict:
    return json.loads((demo_data["raw"] / "truth.json").read_text())


def _explained(row: pd.Series, effects: list[dict]) -> bool:
    """A move is explained when a planted effect names its metric and scope, in a month the effect covers.

    Composition effects (a reason's, theme's or competitor's share rising) also explain the compensating fall of
    the other shares, which truth.json lists under `compensating`.
    """
    metric = row["metric"].removesuffix("_change")
    d = parse_dims(row["dimensions"])
    for e in effects:
        if metric not in e.get("metrics", []):
            continue
        if row["period"] < e.get("start_month", "") or row["period"] > e.get("end_month", "9999"):
            continue
        ok = True
        for key in ("segment", "region", "origin", "reason", "theme", "competitor", "channel"):
            plural = f"{key}s"
            allowed = list(e.get(plural, [])) + list(e.get("compensating", {}).get(plural, []))
            if key in d and plural in e and d[key] not in allowed:
                ok = False
        if ok:
            return True
    return False


def test_outputs_are_all_there(demo_pack):
    for name in ("board_pack.html", "metrics.parquet", "manifest.json"):
        assert (demo_pack / name).is_file(), name
    names = {p.stem for p in (demo_pack / "notebooks").glob("*.ipynb")}
    assert {"01_executive_brief", "02_data_quality", "03_funnel_conversion"} <= names
    assert not list(demo_pack.parent.glob(".*.partial")), "staging folder left behind"


def test_metrics_are_long_format_with_q_values(demo_pack):
    m = read_metrics(demo_pack / "metrics.parquet")
    assert list(m.columns) == METRIC_COLUMNS
    tested = m[m["p_value"].notna()]
    assert len(tested) > 20 and tested["q_value"].notna().all()
    assert m.loc[m["p_value"].isna(), "q_value"].isna().all()
    assert (tested["q_value"] >= tested["p_value"] - 1e-15).all()


def test_planted_enterprise_drop_is_in_what_moved(demo_pack, demo_data):
    m = read_metrics(demo_pack / "metrics.parquet")
    moved = brief.moves(m, load_definitions())
    hit = moved[(moved["metric"] == "mql_to_sql_rate_change") & (moved["dimensions"] == '{"segment":"Enterprise"}')]
    assert len(hit) == 1 and hit.iloc[0]["value"] < -0.1 and hit.iloc[0]["period"] == "2026-09"
    html = (demo_pack / "board_pack.html").read_text()
    what_moved = html[html.index("What moved") : html.index("What caused it")]
    assert "Enterprise MQL→SQL conversion fell" in what_moved


def test_every_move_is_explained_by_the_truth(demo_pack, demo_data):
    m = read_metrics(demo_pack / "metrics.parquet")
    moved = brief.moves(m, load_definitions())
    effects = _truth(demo_data)["effects"]
    unexplained = [r for _, r in moved.iterrows() if not _explained(r, effects)]
    # BH at alpha controls the expected share of false moves; allow at most that share (rounded up to one).
    allowed = max(1, int(len(moved) * float(load_definitions().stats["alpha"]) + 0.999))
    assert len(unexplained) <= allowed, [(r["metric"], r["dimensions"], r["period"]) for r in unexplained]


def test_null_data_moves_nothing_beyond_the_fdr(null_pack):
    m = read_metrics(null_pack / "metrics.parquet")
    moved = brief.moves(m, load_definitions())
    assert len(moved) <= 1, moved[["metric", "dimensions", "period", "q_value"]]
    html = (null_pack / "board_pack.html").read_text()
    if moved.empty:
        assert "Nothing moved beyond noise" in html


def test_two_runs_are_byte_identical(demo_pack, demo_pack_again):
    for name in ("metrics.parquet", "board_pack.html"):
        assert (demo_pack / name).read_bytes() == (demo_pack_again / name).read_bytes(), name
    for nb in (demo_pack / "notebooks").glob("*.ipynb"):
        assert nb.read_bytes() == (demo_pack_again / "notebooks" / nb.name).read_bytes(), nb.name


def test_pack_is_self_contained_and_has_no_code(demo_pack):
    html = (demo_pack / "board_pack.html").read_text()
    assert len(html.encode()) < 5_000_000
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, flags=re.I), "external reference"
    assert "@import" not in html and "url(http" not in html
    assert "In&nbsp;[" not in html and "Out[" not in html, "prompts shown"
    assert "open_context(" not in html and "import " not in html, "code shown"
    assert "injected-parameters" not in html and 'period = "' not in html, "parameters cell shown"
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html), "charts inline"


def test_pack_has_toc_brief_first_and_provenance(demo_pack, demo_data):
    html = (demo_pack / "board_pack.html").read_text()
    assert '<nav class="kit-toc"' in html
    assert (
        html.index('id="01-executive-brief"')
        < html.index('id="02-data-quality"')
        < html.index('id="03-funnel-conversion"')
    )
    footer = html[html.index('id="provenance"') :]
    defs = load_definitions()
    assert defs.sha256 in footer and "2026-10" in footer
    ingest = json.loads((demo_data["processed"] / "ingest_manifest.json").read_text())
    assert ingest["inputs"], "the demo export has input files"
    for path, f in ingest["inputs"].items():
        assert path in footer and f["sha256"] in footer
    assert "Appendix: governed definitions" in html and defs.sha256 in html


def test_executed_notebooks_carry_no_timestamps_or_absolute_paths(demo_pack):
    for path in (demo_pack / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        text = path.read_text()
        assert "start_time" not in text and "end_time" not in text and '"duration"' not in text
        assert str(demo_pack.parent) not in text, f"{path.name} depends on where the report lives"
        assert nb.metadata["papermill"]["parameters"]["period"] == "2026-10"


def test_a_failing_run_leaves_the_previous_pack_intact(demo_data, demo_pack, tmp_path):
    before = (demo_pack / "board_pack.html").read_bytes()
    broken = tmp_path / "notebooks"
    broken.mkdir()
    from analysis.config import NOTEBOOKS_DIR

    for src in NOTEBOOKS_DIR.glob("*.ipynb"):
        nb = nbformat.read(src, as_version=4)
        if src.stem == "03_funnel_conversion":
            nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom')"))
        nbformat.write(nb, broken / src.name)
    with pytest.raises(RunError, match="03_funnel_conversion.*boom"):
        run_cadence(
            "monthly",
            "2026-10",
            data_dir=demo_data["processed"],
            out_dir=demo_pack,
            notebooks_dir=broken,
            actions_dir=demo_data["raw"] / "actions",
        )
    assert (demo_pack / "board_pack.html").read_bytes() == before
    assert not list(demo_pack.parent.glob(".*.partial")) and not list(demo_pack.parent.glob(".*.old"))


def test_recover_restores_a_pack_killed_between_renames(tmp_path):
    (tmp_path / ".2026-10.old").mkdir()
    (tmp_path / ".2026-10.old" / "board_pack.html").write_text("previous")
    (tmp_path / ".2026-10.partial").mkdir()
    recover(tmp_path, "2026-10")
    assert (tmp_path / "2026-10" / "board_pack.html").read_text() == "previous"
    assert not (tmp_path / ".2026-10.partial").exists()


def test_period_of_the_wrong_cadence_is_a_clear_error(demo_data, tmp_path):
    with pytest.raises(RunError, match="period '2026-W43' is weekly, not monthly"):
        run_cadence("monthly", "2026-W43", data_dir=demo_data["processed"], out_dir=tmp_path / "x")


def test_pack_renders_in_headless_chromium_with_the_network_off(demo_pack, tmp_path):
    from PIL import Image

    from analysis.browser import dom_text, external_requests, screenshot

    png = screenshot(demo_pack / "board_pack.html", tmp_path / "pack.png", width=1366, height=900)
    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "screenshot is blank"
    text = dom_text(demo_pack / "board_pack.html")
    for heading in ("What moved", "What caused it", "What it means for plan", "What marketing is doing"):
        assert heading in text
    assert "Enterprise MQL→SQL conversion fell" in text
    assert external_requests(demo_pack / "board_pack.html") == []
