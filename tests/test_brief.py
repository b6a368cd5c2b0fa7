"""The executive brief: only tested moves, grouped offsets, fixed order, and every number traceable to metrics."""

from __future__ import annotations

import html as htmllib
import math
import re

import pandas as pd
import pytest

from analysis import brief
from analysis.config import load_definitions
from analysis.formats import money, pct
from analysis.metrics import dims, normalise, read_metrics

DEFS = load_definitions()


def _test_row(metric, d, value, baseline, q, n=500, section="handoff", impact=float("nan")):
    return {
        "section": section,
        "metric": metric,
        "dimensions": d,
        "period": "2026-10",
        "value": value,
        "ci_low": value - 0.02,
        "ci_high": value + 0.02,
        "p_value": q / 10,
        "q_value": q,
        "n": n,
        "baseline": baseline,
        "unit": "share_points",
        "method": "score_vs_6m_baseline",
        "impact": impact,
    }


def test_only_moves_past_fdr_and_practical_effect():
    m = normalise(
        pd.DataFrame(
            [
                _test_row("sla_adherence_change", dims(region="EMEA"), -0.30, 0.80, 1e-6),  # moves
                _test_row("sla_adherence_change", dims(region="NA"), -0.30, 0.80, 0.20),  # q too large
                _test_row("sla_adherence_change", dims(region="APAC"), -0.02, 0.80, 1e-9),  # below practical effect
                _test_row("sla_adherence_change", dims(region="LATAM"), -0.05, 0.80, 1e-9),  # below relative effect
            ]
        )
    )
    moved = brief.moves(m, DEFS)
    assert list(moved["dimensions"]) == [dims(region="EMEA")]


def test_composition_offsets_are_causes_not_moves():
    m = normalise(
        pd.DataFrame(
            [
                _test_row("rejection_reason_share_change", dims(reason="budget_not_confirmed"), 0.30, 0.10, 1e-9),
                _test_row("rejection_reason_share_change", dims(reason="no_need"), -0.08, 0.20, 1e-4),
            ]
        )
    )
    moved = brief.moves(m, DEFS)
    assert list(brief.headline_moves(moved)["dimensions"]) == [dims(reason="budget_not_confirmed")]
    causes = brief.cause_sentences(moved.iloc[0], m, moved, DEFS)
    assert any("at the expense of reason no need −8.0 pts" in c for c in causes)


def test_moves_rank_by_money_impact():
    m = normalise(
        pd.DataFrame(
            [
                _test_row(
                    "mql_to_sql_rate_change", dims(segment="SMB"), -0.10, 0.35, 1e-5, section="funnel", impact=-1e5
                ),
                _test_row(
                    "mql_to_sql_rate_change",
                    dims(segment="Enterprise"),
                    -0.20,
                    0.35,
                    1e-5,
                    section="funnel",
                    impact=-5e6,
                ),
            ]
        )
    )
    assert list(brief.moves(m, DEFS)["dimensions"]) == [dims(segment="Enterprise"), dims(segment="SMB")]


def test_sentence_reads_as_business_english():
    row = pd.Series(_test_row("sla_adherence_change", dims(region="EMEA"), -0.332, 0.80, 1e-6, n=389))
    text = brief.move_sentence(row, 6)
    assert text.startswith("EMEA SLA adherence (first touch in time) fell from 80.0% to 46.8% in 2026-10")
    assert "−33.2 pts" in text and "q < 0.001" in text and "n = 389" in text


def test_missing_actions_note_is_a_visible_placeholder(tmp_path):
    text, provided = brief.marketing_actions(tmp_path / "2026-10.md")
    assert not provided and "data/raw/actions/2026-10.md" in text


def test_actions_markdown_renders_but_markup_stays_text(tmp_path):
    note = tmp_path / "2026-10.md"
    note.write_text("# Title\n- **Bold** plan <script>alert(1)</script> <img src=x onerror=alert(1)>\n")
    out = brief.brief_html(normalise(pd.DataFrame()), DEFS, "2026-10", ["2026-10"], note)
    assert "<strong>Bold</strong>" in out
    assert "<script>" not in out and "<img" not in out and "&lt;script&gt;" in out


def test_scorecard_against_governed_thresholds():
    rows = [
        {"section": "plan", "metric": "pipeline_coverage", "dimensions": "{}", "period": "2026-09", "value": 3.4},
        {"section": "plan", "metric": "pipeline_coverage", "dimensions": "{}", "period": "2026-10", "value": 2.5},
        {"section": "plan", "metric": "forecast_accuracy", "dimensions": "{}", "period": "2026-10", "value": 1.08},
    ]
    card = brief.scorecard(normalise(pd.DataFrame(rows)), DEFS, ["2026-10"]).set_index("measure")
    assert card.loc["Pipeline coverage", "value"] == "2.50x" and card.loc["Pipeline coverage", "status"] == "off track"
    assert card.loc["Pipeline coverage", "previous"] == "3.40x" and card.loc["Pipeline coverage", "trend"] == "▼"
    assert card.loc["Forecast accuracy (actual ÷ committed)", "status"] == "on track"
    assert card.loc["Closed-lost loop closure", "value"] == "not measured"


# ---------------------------------------------------------------- on the demo pack (end to end)

NUMBER = re.compile(r"[−+-]?\$?\d[\d,]*(?:\.\d+)?(?:%|x| pts|M|k)?")


def _formats(v: float) -> set[str]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return set()
    out = {
        pct(v),
        brief._pts(v),
        brief._pts(v).removesuffix(" pts"),
        money(v),
        f"{v:.2f}x",
        f"{v:.0%}",
        f"{v:.3f}",
        f"{v:,.1f}",
        f"{v:+,.1f}",
    }
    if float(v).is_integer():
        out.add(f"{int(v):,}")
    return out


def _brief_text(pack) -> str:
    page = (pack / "board_pack.html").read_text()
    start = page.index(">", page.index('id="01-executive-brief"')) + 1
    section = page[start : page.index('id="02-data-quality"')]
    section = section.split("What marketing is doing")[0] + section.split("Alignment scorecard")[1]  # analyst text out
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", section))


@pytest.mark.e2e
def test_every_number_in_the_brief_is_traceable_to_metrics(demo_pack):
    metrics = read_metrics(demo_pack / "metrics.parquet")
    allowed: set[str] = set()
    for r in metrics.itertuples(index=False):
        for v in (r.value, r.ci_low, r.ci_high, r.baseline, r.q_value, r.n, r.impact):
            allowed |= _formats(v)
        if r.value == r.value and r.baseline == r.baseline:
            allowed |= _formats(r.baseline + r.value)
    allowed.add(f"{int(metrics['p_value'].notna().sum())}")  # the size of the pack's test family
    # From the definitions (thresholds, windows, baseline months) and fixed wording.
    s = DEFS.stats
    allowed |= {str(s["baseline_months"]), "0.001", "95%", str(s["alpha"])}
    for rule in DEFS["scorecard"]["thresholds"].values():
        for v in rule.values():
            if isinstance(v, int | float):
                allowed |= _formats(float(v)) | {f"±{float(v):.0%}", f"±{pct(float(v))}", f"≥ {float(v):.2f}x"}
    for text in list(brief.METRIC_LABELS.values()) + list(brief.MOVE_PHRASES.values()):
        allowed |= set(NUMBER.findall(text))
    text = re.sub(r"\d{4}-(?:\d{2}|W\d{2}|Q\d)(?:-\d{2})?", " ", _brief_text(demo_pack))  # period labels, dates
    tokens = NUMBER.findall(text)
    tokens = [t.lstrip("±≥ ") for t in tokens]
    untraced = sorted(
        {t for t in tokens if t not in allowed and t.lstrip("+") not in allowed and t.replace("-", "−") not in allowed}
    )
    assert not untraced, untraced


@pytest.mark.e2e
def test_brief_names_each_planted_move_with_its_cause(demo_pack):
    text = _brief_text(demo_pack)
    moved, caused = text.split("What caused it")[0], text.split("What caused it")[1].split("What it means")[0]
    assert "Enterprise MQL→SQL conversion fell" in moved and "sits in SAL→SQL" in caused
    assert "“budget not confirmed” share of MQL rejections rose" in moved and "at the expense of" in caused
    assert "EMEA SLA adherence" in moved and "Concentrated in EMEA" in caused
    assert "Share of losses to Northwind Analytics rose" in moved
    assert "bad contact data" not in moved, "a composition offset is not a headline move"
