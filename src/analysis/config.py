"""Project paths and the governed definitions loader."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.errors import DefinitionsError

PROJ_ROOT = Path(os.environ.get("FUNNEL_KIT_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_DIR = PROJ_ROOT / "config"
DEFINITIONS_FILE = CONFIG_DIR / "definitions.yml"
MAPPINGS_DIR = CONFIG_DIR / "mappings"
DATA_DIR = PROJ_ROOT / "data"
RAW_DATA_DIR = DATA_DIR / "raw"
PROCESSED_DATA_DIR = DATA_DIR / "processed"
REPORTS_DIR = Path(os.environ.get("FUNNEL_KIT_REPORTS", PROJ_ROOT / "reports"))
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"

DEMO_SEED = 20251101


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML safe loader that refuses a key repeated in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges, and explicit keys may override merged ones
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Definitions:
    """The governed definitions: the parsed YAML, its source text and its sha256."""

    data: dict[str, Any]
    text: str
    sha256: str
    path: str

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def stats(self) -> dict[str, Any]:
        return self.data["statistics"]["settings"]

    def window_days(self, pair: str) -> int:
        """Conversion window in days for a stage pair such as 'mql_to_sql'."""
        return int(self.data["conversion_windows"]["days"][pair])

    def origin_of(self, channel: str) -> str:
        """Origin (marketing/sales/partner) the definitions assign to a channel; 'unknown' if unlisted."""
        return self.data["channels"]["origin_by_channel"].get(channel, "unknown")


def load_definitions(path: str | Path | None = None) -> Definitions:
    """The definitions at `path` (default config/definitions.yml), validated, with their hash."""
    from analysis.definitions import validate_definitions  # local: keeps config import-light

    p = Path(path) if path is not None else DEFINITIONS_FILE
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DefinitionsError(f"cannot read definitions: {exc.strerror}", file=str(p)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionsError(
            f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x})",
            file=str(p),
            row=raw.count(b"\n", 0, exc.start) + 1,
            rule="encoding",
        ) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DefinitionsError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}",
            file=str(p),
            row=(mark.line + 1) if mark else None,
            rule="yaml",
        ) from exc
    validate_definitions(data, file=str(p))
    return Definitions(data=data, text=text, sha256=hashlib.sha256(raw).hexdigest(), path=str(p))
