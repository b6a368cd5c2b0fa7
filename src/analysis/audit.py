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

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq

from analysis.errors import AnalysisError, AuditError
from analysis.manifest import git_commit, outputs_of, package_set_hash, sha256_file

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


# --------------------------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    """One input or output file: recorded vs now."""

    path: str
    status: str  # inputs: identical | changed | new ; outputs: identical | different | missing | extra
    recorded: str | None
    now: str | None


@dataclass(frozen=True)
class MetricChange:
    """One metrics row that differs between the recorded and the re-executed metrics.parquet."""

    section: str
    metric: str
    dimensions: str
    period: str
    method: str
    old: float | None  # None: the row did not exist
    new: float | None
    fields: tuple[str, ...]  # the columns that differ ('value' first when the value changed)

    @property
    def value_changed(self) -> bool:
        return "value" in self.fields or self.old is None or self.new is None


@dataclass
class AuditReport:
    """The verdict of an audit and everything it compared; `text()` is the table printed by the CLI."""

    report_dir: Path
    cadence: str
    period: str
    engine: str
    inputs: list[FileCheck]
    outputs: list[FileCheck]
    metric_changes: list[MetricChange] = field(default_factory=list)
    processed: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed_inputs(self) -> list[str]:
        return [c.path for c in self.inputs if c.status != "identical"]

    @property
    def different_outputs(self) -> list[str]:
        return [c.path for c in self.outputs if c.status != "identical"]

    @property
    def identical(self) -> bool:
        return not self.changed_inputs and not self.different_outputs

    def text(self) -> str:
        return _render(self)


def _load_manifest(report_dir: Path) -> dict[str, Any]:
    path = report_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError("no manifest.json: not a report folder", file=str(path), rule="audit_manifest") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AuditError(f"unreadable manifest: {exc}", file=str(path), rule="audit_manifest") from None
    try:
        params = manifest["parameters"]
        params["paths"]["data_dir"], manifest["inputs"]["raw_files"], manifest["outputs"]  # noqa: B018
    except (KeyError, TypeError):
        raise AuditError(
            "manifest lacks parameters.paths / inputs / outputs (made by an older kit: re-run the period)",
            file=str(path),
            rule="audit_manifest",
        ) from None
    return manifest


def _at(report_dir: Path, rel: str) -> Path:
    """A path recorded relative to the report folder (normalised lexically, as the notebooks resolved it)."""
    return Path(os.path.normpath(report_dir / rel))


def _check(path: Path, recorded: str | None, shown: str) -> FileCheck:
    if not path.is_file():
        raise AuditError("recorded input is missing", file=str(path), rule="audit_input")
    now = sha256_file(path)
    return FileCheck(shown, "identical" if now == recorded else "changed", recorded, now)


def _verify_inputs(report_dir: Path, manifest: dict[str, Any]) -> tuple[list[FileCheck], dict[str, Path | None]]:
    inputs = manifest["inputs"]
    if not inputs.get("raw_dir"):
        raise AuditError(
            "the manifest does not record the raw folder the ingest read", file=MANIFEST, rule="audit_input"
        )
    raw_dir = _at(report_dir, inputs["raw_dir"])
    checks = [_check(raw_dir / f["path"], f["sha256"], f"raw/{f['path']}") for f in inputs["raw_files"]]
    mapping = inputs.get("mapping") or {}
    if not mapping.get("path"):
        raise AuditError(
            f"the manifest does not record where the mapping '{mapping.get('file')}' is", rule="audit_input"
        )
    mapping_path = _at(report_dir, mapping["path"])
    checks.append(_check(mapping_path, mapping.get("sha256"), f"mapping/{mapping_path.name}"))
    defs = inputs.get("definitions") or manifest["definitions"]
    definitions_path = _at(report_dir, defs["path"])
    checks.append(_check(definitions_path, defs["sha256"], f"definitions/{definitions_path.name}"))
    actions = inputs.get("actions") or {}
    actions_path = _at(report_dir, actions.get("path") or manifest["parameters"]["paths"]["actions"])
    if actions.get("sha256"):
        checks.append(_check(actions_path, actions["sha256"], f"actions/{actions_path.name}"))
    elif actions_path.is_file():  # not there at the run, there now: the brief's last part will differ
        checks.append(FileCheck(f"actions/{actions_path.name}", "new", None, sha256_file(actions_path)))
    paths = {"raw_dir": raw_dir, "mapping": mapping_path, "definitions": definitions_path, "actions": actions_path}
    return checks, paths


def _mirror_layout(report_dir: Path, rels: list[str], root: Path) -> Path:
    """Where the re-run's report folder goes under `root` so that every recorded relative path stays inside."""
    depth = max((Path(r).parts.count("..") for r in rels), default=0)  # relpath puts every '..' first
    parts = report_dir.parts[-(depth + 1) :] if depth + 1 <= len(report_dir.parts) - 1 else report_dir.parts[1:]
    mirror = root.joinpath(*parts)
    for r in rels:
        target = Path(os.path.normpath(mirror / r))
        if root not in (target, *target.parents):
            raise AuditError(f"recorded path {r} leaves the audit folder", file=MANIFEST, rule="audit_layout")
    return mirror


def _metric_frame(path: Path) -> pd.DataFrame:
    from analysis.metrics import read_metrics

    frame = read_metrics(path)
    frame["_dup"] = frame.groupby(METRIC_KEYS, sort=False).cumcount()
    return frame.set_index([*METRIC_KEYS, "_dup"])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b or (pd.isna(a) and pd.isna(b))


def diff_metrics(old_path: Path, new_path: Path) -> list[MetricChange]:
    """Every metrics row added, removed or changed between two metrics.parquet files (value first)."""
    old, new = _metric_frame(old_path), _metric_frame(new_path)
    cols = ["value", *METRIC_STATS]
    out = []
    for key in sorted(old.index.union(new.index)):
        o = old.loc[key] if key in old.index else None
        n = new.loc[key] if key in new.index else None
        if o is not None and n is not None:
            fields = tuple(c for c in cols if not _same(o[c], n[c]))
            if not fields:
                continue
        else:
            fields = ("value",)
        out.append(
            MetricChange(
                *key[:5],
                old=None if o is None else float(o["value"]),
                new=None if n is None else float(n["value"]),
                fields=fields,
            )
        )
    return out


def audit_report(report_dir: Path, *, keep_dir: Path | None = None) -> AuditReport:
    """Re-execute the report's period from its recorded inputs in a temporary tree and compare every output.

    Raises AuditError (one line, naming the file) when the manifest or a recorded input is missing or the re-run
    fails. `keep_dir`: copy the temporary tree there before it is removed (to inspect the re-run).
    """
    from analysis.config import load_definitions
    from analysis.ingest import ingest
    from analysis.pack import run_cadence

    report_dir = Path(report_dir).resolve()
    manifest = _load_manifest(report_dir)
    params = manifest["parameters"]
    inputs, paths = _verify_inputs(report_dir, manifest)
    rel = params["paths"]
    report = AuditReport(
        report_dir, params["cadence"], params["period"], params.get("engine", "duckdb"), inputs, outputs=[]
    )
    report.notes += _environment_notes(manifest)

    root = Path(tempfile.mkdtemp(prefix="funnel-audit-"))
    try:
        mirror = _mirror_layout(report_dir, [rel["data_dir"], rel["definitions"], rel["actions"]], root)
        data_dir = _at(mirror, rel["data_dir"])
        definitions_path = _at(mirror, rel["definitions"])
        actions_path = _at(mirror, rel["actions"])
        definitions_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(paths["definitions"], definitions_path)
        actions_path.parent.mkdir(parents=True, exist_ok=True)
        if paths["actions"] is not None and paths["actions"].is_file():
            shutil.copy2(paths["actions"], actions_path)
        try:
            ingest(paths["raw_dir"], paths["mapping"], data_dir, load_definitions(definitions_path))
            run_cadence(
                report.cadence,
                report.period,
                data_dir=data_dir,
                out_dir=mirror,
                definitions_path=definitions_path,
                actions_dir=actions_path.parent,
                engine=report.engine,
            )
        except AnalysisError as exc:
            raise AuditError(f"re-execution failed: {exc}", rule="audit_rerun") from None
        report.processed = _compare_processed(manifest, data_dir)
        report.outputs = _compare_outputs(manifest["outputs"], outputs_of(mirror))
        if "metrics.parquet" in report.different_outputs and (mirror / "metrics.parquet").is_file():
            report.metric_changes = diff_metrics(report_dir / "metrics.parquet", mirror / "metrics.parquet")
        if keep_dir is not None:
            shutil.copytree(root, keep_dir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report


def _environment_notes(manifest: dict[str, Any]) -> list[str]:
    from analysis.config import PROJ_ROOT

    kit = manifest.get("kit", {})
    notes = []
    commit = git_commit(PROJ_ROOT)
    if kit.get("commit") != commit:
        notes.append(f"kit commit differs: recorded {kit.get('commit')}, now {commit}")
    lock, _ = package_set_hash()
    if kit.get("package_set_sha256") != lock:
        notes.append(f"installed packages differ: recorded {str(kit.get('package_set_sha256'))[:12]}, now {lock[:12]}")
    return notes


def _compare_processed(manifest: dict[str, Any], data_dir: Path) -> list[FileCheck]:
    out = []
    for f in manifest["inputs"].get("processed_files", []):
        p = data_dir / f["path"]
        now = sha256_file(p) if p.is_file() else None
        status = "identical" if now == f["sha256"] else ("missing" if now is None else "different")
        out.append(FileCheck(f["path"], status, f["sha256"], now))
    return out


def _compare_outputs(recorded: dict[str, str], now: dict[str, str]) -> list[FileCheck]:
    out = []
    for path in sorted(set(recorded) | set(now)):
        r, n = recorded.get(path), now.get(path)
        status = "identical" if r == n else ("missing" if n is None else "extra" if r is None else "different")
        out.append(FileCheck(path, status, r, n))
    return out


# --------------------------------------------------------------------------------------------------------------
# The printed report
# --------------------------------------------------------------------------------------------------------------

MAX_STAT_ROWS = 40


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "—"


def _num(x: float | None) -> str:
    if x is None:
        return "(absent)"
    if math.isnan(x):
        return "NaN"
    return f"{x:.6g}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _render(r: AuditReport) -> str:
    lines = [f"Audit of {r.report_dir} ({r.cadence} {r.period}, engine {r.engine})", ""]
    lines += _table(
        ["input", "status", "recorded", "now"],
        [[c.path, c.status, _short(c.recorded), _short(c.now)] for c in r.inputs],
    )
    lines.append("")
    lines += _table(
        ["output", "status", "recorded", "re-run"],
        [[c.path, c.status, _short(c.recorded), _short(c.now)] for c in r.outputs],
    )
    moved = [m for m in r.metric_changes if m.value_changed]
    stats = [m for m in r.metric_changes if not m.value_changed]
    if moved:
        lines += ["", f"Metric values changed ({len(moved)}):"]
        lines += _table(
            ["section", "metric", "dimensions", "period", "old -> new"],
            [[m.section, m.metric, m.dimensions, m.period, f"{_num(m.old)} -> {_num(m.new)}"] for m in moved],
        )
    if stats:
        lines += ["", f"Rows whose value is the same but whose statistics changed ({len(stats)}):"]
        lines += _table(
            ["section", "metric", "dimensions", "period", "changed"],
            [[m.section, m.metric, m.dimensions, m.period, ", ".join(m.fields)] for m in stats[:MAX_STAT_ROWS]],
        )
        if len(stats) > MAX_STAT_ROWS:
            lines.append(f"... and {len(stats) - MAX_STAT_ROWS} more")
    different_processed = [c.path for c in r.processed if c.status != "identical"]
    if different_processed:
        lines += ["", "Re-ingested tables that differ from the recorded ones: " + ", ".join(different_processed)]
    for note in r.notes:
        lines.append(f"Note: {note}")
    lines.append("")
    if r.identical:
        lines.append(f"IDENTICAL: {len(r.inputs)} inputs unchanged, {len(r.outputs)} outputs byte-identical.")
    else:
        parts = []
        if r.changed_inputs:
            parts.append("changed input(s): " + ", ".join(r.changed_inputs))
        if r.different_outputs:
            parts.append(f"{len(r.different_outputs)} output(s) differ: " + ", ".join(r.different_outputs))
        if moved:
            parts.append(f"{len(moved)} metric value(s) changed")
        lines.append("DIFFERENT: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"
