"""Provenance: file hashes, the installed package set, and the run manifest that ties outputs to inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from analysis import __version__


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_set_hash() -> tuple[str, list[str]]:
    """(sha256 of the sorted installed 'name==version' list, that list): the environment that made the pack."""
    names = sorted(
        {f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    )
    return hashlib.sha256("\n".join(names).encode()).hexdigest(), names


def git_commit(root: str | Path) -> str:
    """The kit's git commit (with '+dirty' when the tree has changes), or 'unknown' outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "notebooks", "config"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dump_json(data: Any) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    """Write deterministic JSON atomically; return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump_json(data), encoding="utf-8")
    tmp.replace(path)
    return path


def outputs_of(report_dir: str | Path) -> dict[str, str]:
    """sha256 of every file in a report folder (relative path -> hash), manifest.json itself excluded."""
    root = Path(report_dir)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    }


def kit_version() -> str:
    """The installed kit version."""
    return __version__
