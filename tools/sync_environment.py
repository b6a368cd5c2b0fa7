"""Write environment.yml from pyproject.toml so the conda description never drifts from the pip one."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    lines = [
        "# conda environment for the revenue funnel review kit.",
        "# Generated from pyproject.toml by tools/sync_environment.py; tests/test_environment.py fails on drift.",
        "# The supported install path is pip into a virtual environment (`make setup`); conda channels may be",
        "# unreachable, so every package is installed by pip inside the conda environment.",
        "name: revenue-funnel-kit",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {d}" for d in deps]
    lines += ["      - -e ."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "environment.yml").write_text(render(), encoding="utf-8")
