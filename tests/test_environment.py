"""environment.yml and pyproject.toml list the same dependencies, pinned to the same versions."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_deps() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])


def _environment_deps() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {d for d in pip if not d.startswith("-e")}


def test_environment_matches_pyproject():
    missing = _pyproject_deps() - _environment_deps()
    extra = _environment_deps() - _pyproject_deps()
    assert not missing and not extra, f"run tools/sync_environment.py: missing {sorted(missing)}, extra {sorted(extra)}"


def test_python_version_agrees():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "python=3.11" in env["dependencies"]
    assert project["requires-python"] == ">=3.11,<3.12"


def test_every_runtime_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert all("==" in d for d in project["dependencies"]), "the pack's bytes depend on exact versions"
