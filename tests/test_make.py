"""End to end through the user interface: the Makefile targets, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

pytestmark = pytest.mark.e2e


def make(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    # -o marks the set-up stamp as up to date: the tests run inside the environment `make setup` built.
    cmd = ["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.installed", *args]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_make_lists_every_target_with_one_line():
    out = make().stdout
    for target in ("setup", "monthly", "weekly", "quarterly", "lab", "test", "audit", "email", "bench", "clean"):
        assert f"make {target} " in out, target


def test_make_monthly_generates_demo_data_then_writes_the_pack(tmp_path):
    raw, processed, reports = tmp_path / "raw", tmp_path / "processed", tmp_path / "reports"
    raw.mkdir()
    env = {"FUNNEL_KIT_REPORTS": str(reports)}
    r = make(f"RAW={raw}", f"PROCESSED={processed}", "monthly", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (raw / "truth.json").exists(), "demo data generated into the empty raw folder"
    pack = reports / "2026-10" / "board_pack.html"
    assert pack.exists(), r.stdout[-2000:]
    assert "What moved" in pack.read_text()
    assert "IPKernelApp" not in r.stderr, "kernel start-up chatter leaked to the console"
    # A second call keeps the user's export and rebuilds the same pack.
    before = pack.read_bytes()
    r = make(f"RAW={raw}", f"PROCESSED={processed}", "monthly", "PERIOD=2026-10", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "demo data not generated" in r.stdout
    assert pack.read_bytes() == before


def test_bad_period_fails_with_one_line_reason(tmp_path):
    processed = tmp_path / "processed"
    processed.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "analysis", "run", "--period", "2026-13", "--data", str(processed)],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
