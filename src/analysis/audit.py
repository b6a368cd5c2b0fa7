"""Audit a report: re-execute its period from the recorded inputs and compare every output byte for byte.

    report = audit_report(Path("reports/2026-09"))
    print(report.text())          # a readable table; report.identical is the verdict (exit code 0 only if True)

What the run manifest records for this (`recorded_inputs`, called by `pack.build_manifest`): every raw file
the ingest read (path relative to the raw folder, sha256, rows), the raw folder and the import mapping
(paths relative to the report folder, mapping sha256), the processed Parquet files and the ingest manifest
(sha256, rows), the analyst's actions note and the definitions (sha256). The run's own parameters record
data_dir / definitions / actions relative to the report folder, as the notebooks received them.

The audit: read the manifest -> re-hash every recorded input (a missing one is an AuditError naming it; a
changed one is named in the report) -> re-ingest the raw folder with the recorded mapping and definitions into
a temporary mirror tree laid out like the original (so the relative paths the notebooks receive are the same
and executed notebooks can be compared byte for byte) -> `run_cadence` there with the same cadence, period and
engine -> compare every recorded output by sha256 -> for metrics.parquet, list every metric row whose value
changed (old -> new). The temporary tree is removed afterwards (unless `keep_dir` asks for a copy).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from analysis.manifest import sha256_file

if TYPE_CHECKING:
    from analysis.pack import RunSpec

MANIFEST = "manifest.json"
METRIC_KEYS = ["section", "metric", "dimensions", "period", "method"]
METRIC_STATS = ["ci_low", "ci_high", "p_value", "q_value", "n", "baseline", "impact", "flag", "unit"]


# --------------------------------------------------------------------------------------------------------------
# What the manifest records (called by pack.build_manifest while the report is written)
# --------------------------------------------------------------------------------------------------------------


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _parquet_rows(path: Path) -> int | None:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - a row count is informative only; the hash is what is checked
        return None


def _text_rows(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _raw_entries(ingest: dict) -> list[dict[str, Any]]:
    """The raw files the ingest read: [{path, sha256, rows, bytes}] sorted by path."""
    inputs = ingest.get("inputs")
    if isinstance(inputs, dict):
        out = [
            {"path": rel, "sha256": v.get("sha256"), "rows": v.get("rows"), "bytes": v.get("bytes")}
            for rel, v in inputs.items()
        ]
    else:  # an older ingest manifest layout: a list of {path, sha256, rows}
        out = [dict(f) for f in ingest.get("files", [])]
    return sorted(out, key=lambda f: f["path"])


def _find_raw_dir(spec: RunSpec, ingest: dict, raw: list[dict[str, Any]]) -> Path | None:
    """The folder holding the raw files the ingest read (ingest records paths relative to it, not the folder)."""
    from analysis.config import RAW_DATA_DIR

    candidates = []
    if ingest.get("raw_dir"):
        candidates.append((spec.data_dir / ingest["raw_dir"]).resolve())
    candidates += [spec.actions_path.parent.parent, spec.data_dir.parent / "raw", RAW_DATA_DIR]
    for c in candidates:
        if raw and all(
            (c / f["path"]).is_file() and (f.get("bytes") is None or (c / f["path"]).stat().st_size == f["bytes"])
            for f in raw
        ):
            return c
    return None


def _find_mapping(spec: RunSpec, ingest: dict, raw_dir: Path | None) -> Path | None:
    from analysis.config import MAPPINGS_DIR

    m = ingest.get("mapping", {})
    name, sha = m.get("file") or (f"{m['name']}.yml" if m.get("name") else None), m.get("sha256")
    candidates = []
    if m.get("path"):
        candidates.append((spec.data_dir / m["path"]).resolve())
    if name:
        candidates.append(MAPPINGS_DIR / name)
        if raw_dir is not None:
            candidates.append(raw_dir.parent.parent / "config" / "mappings" / name)
        candidates.append(spec.definitions_path.parent / "mappings" / name)
    for c in candidates:
        if c.is_file() and (sha is None or sha256_file(c) == sha):
            return c
    return None


def recorded_inputs(spec: RunSpec, report_dir: Path, ingest: dict) -> dict[str, Any]:
    """The manifest's `inputs`: every file the pack depends on, with sha256 and row count where it has rows."""
    raw = _raw_entries(ingest)
    raw_dir = _find_raw_dir(spec, ingest, raw)
    mapping_path = _find_mapping(spec, ingest, raw_dir)
    processed = []
    for p in sorted(spec.data_dir.rglob("*.parquet")):
        if any(part.startswith(".") for part in p.relative_to(spec.data_dir).parts):
            continue
        processed.append(
            {"path": p.relative_to(spec.data_dir).as_posix(), "sha256": sha256_file(p), "rows": _parquet_rows(p)}
        )
    ingest_manifest = spec.data_dir / "ingest_manifest.json"
    processed.append({"path": ingest_manifest.name, "sha256": sha256_file(ingest_manifest), "rows": None})
    mapping = ingest.get("mapping", {})
    return {
        "raw_dir": _rel(raw_dir, report_dir) if raw_dir is not None else None,
        "raw_files": raw,
        "mapping": {
            "name": mapping.get("name"),
            "file": mapping.get("file"),
            "path": _rel(mapping_path, report_dir) if mapping_path is not None else None,
            "sha256": mapping.get("sha256"),
        },
        "processed_dir": _rel(spec.data_dir, report_dir),
        "processed_files": processed,
        "definitions": {"path": _rel(spec.definitions_path, report_dir), "sha256": sha256_file(spec.definitions_path)},
        "actions": {
            "path": _rel(spec.actions_path, report_dir),
            "sha256": sha256_file(spec.actions_path) if spec.actions_path.exists() else None,
            "rows": _text_rows(spec.actions_path) if spec.actions_path.exists() else None,
        },
    }
