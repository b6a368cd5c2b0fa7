"""The weekly and quarterly packs render end to end with their own sections and a brief in the same format."""

from __future__ import annotations

import pytest

from analysis.metrics import read_metrics
from analysis.pack import run_cadence

pytestmark = pytest.mark.e2e

BRIEF_PARTS = (
    "What moved",
    "What caused it",
    "What it means for plan",
    "What marketing is doing",
    "Alignment scorecard",
)


@pytest.fixture(scope="module")
def weekly(demo_data):
    return run_cadence(
        "weekly",
        None,
        data_dir=demo_data["processed"],
        out_dir=demo_data["root"] / "reports" / "wk",
        actions_dir=demo_data["raw"] / "actions",
    )


@pytest.fixture(scope="module")
def quarterly(demo_data):
    return run_cadence(
        "quarterly",
        None,
        data_dir=demo_data["processed"],
        out_dir=demo_data["root"] / "reports" / "qt",
        actions_dir=demo_data["raw"] / "actions",
    )


def test_weekly_defaults_to_the_last_complete_week(weekly):
    metrics = read_metrics(weekly / "metrics.parquet")
    html = (weekly / "board_pack.html").read_text()
    assert "Weekly operating review · 2026-W43" in html
    for part in BRIEF_PARTS:
        assert part in html
    for anchor in ("01-executive-brief", "05-handoff-sla", "09-pipeline-operations", "02-data-quality"):
        assert f'id="{anchor}"' in html
    assert 'id="07-attribution"' not in html
    ops = metrics[metrics["section"] == "operations"]
    assert not ops.empty and set(ops["period"]) == {"2026-W43"}
    assert not metrics[metrics["section"] == "handoff"].empty


def test_quarterly_has_the_plan_for_this_and_the_next_quarter(quarterly):
    metrics = read_metrics(quarterly / "metrics.parquet")
    html = (quarterly / "board_pack.html").read_text()
    assert "Quarterly plan · 2026-Q3" in html
    for part in BRIEF_PARTS:
        assert part in html
    for anchor in ("08-pipeline-plan", "06-closed-lost", "03-funnel-conversion"):
        assert f'id="{anchor}"' in html
    plan = metrics[metrics["section"] == "plan"]
    assert "2026-Q3" in set(plan["period"]) and "2026-Q4" in set(
        plan.loc[plan["metric"] == "pipeline_needed", "period"]
    )
    assert "for 2026-Q3" in html  # what it means for plan speaks of the quarter
