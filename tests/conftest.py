"""Shared fixtures: the demo export (planted and null), ingested once, and monthly packs run once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "config" / "mappings"
DEMO_PERIOD = "2026-10"


def shared_data(name: str) -> Path:
    """A public sample data set vendored under tests/fixtures (copied unchanged from ../shared/data; see its
    SOURCES.md), so every clone and CI run has it."""
    return ROOT / "tests" / "fixtures" / name


def _demo(root: Path, plant: bool) -> dict[str, Path]:
    from analysis.config import load_definitions
    from analysis.demo import generate_demo_data
    from analysis.ingest import ingest

    raw, processed = root / "data" / "raw", root / "data" / "processed"
    generate_demo_data(raw, plant=plant)
    ingest(raw, MAPPINGS / "canonical.yml", processed, load_definitions())
    return {"root": root, "raw": raw, "processed": processed}


def _pack(demo: dict[str, Path], name: str = DEMO_PERIOD) -> Path:
    from analysis.pack import run_cadence

    return run_cadence(
        "monthly",
        DEMO_PERIOD,
        data_dir=demo["processed"],
        out_dir=demo["root"] / "reports" / name,
        actions_dir=demo["raw"] / "actions",
    )


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    """The default demo export (50 000 leads, planted effects), ingested: keys root, raw, processed."""
    return _demo(tmp_path_factory.mktemp("demo"), plant=True)


@pytest.fixture(scope="session")
def null_data(tmp_path_factory) -> dict[str, Path]:
    """The demo export with no planted effects, ingested."""
    return _demo(tmp_path_factory.mktemp("null"), plant=False)


@pytest.fixture(scope="session")
def demo_pack(demo_data) -> Path:
    """The monthly pack for 2026-10 on the planted demo data (report folder)."""
    return _pack(demo_data)


@pytest.fixture(scope="session")
def null_pack(null_data) -> Path:
    """The monthly pack for 2026-10 on the null demo data."""
    return _pack(null_data)


@pytest.fixture(scope="session")
def demo_pack_again(demo_data, demo_pack) -> Path:
    """A second run of the same period on the same data, into another folder."""
    return _pack(demo_data, name="rerun")
