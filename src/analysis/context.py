"""What a section notebook works with: the engine connection, the tables present, the definitions, the period."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import pandas as pd

from analysis.config import Definitions, load_definitions
from analysis.engine import connect, load_tables
from analysis.periods import Period, as_of_for, parse_period


@dataclass
class SectionContext:
    """Connection, canonical tables, definitions, period and as-of instant for one pack run."""

    con: ibis.BaseBackend
    tables: dict[str, ibis.Table]
    definitions: Definitions
    period: Period
    as_of: pd.Timestamp
    data_dir: Path
    notes: list[str] = field(default_factory=list)

    def has(self, *names: str) -> bool:
        """True when every named canonical table was provided."""
        return all(n in self.tables for n in names)

    def missing_note(self, section: str, *names: str) -> str | None:
        """A visible note naming the tables a section needs but did not get; None when all are present."""
        missing = [n for n in names if n not in self.tables]
        if not missing:
            return None
        note = f"No {', '.join(missing)} provided: {section} omitted."
        self.notes.append(note)
        return note

    @property
    def ingest_manifest(self) -> dict:
        """The ingest manifest written beside the processed tables."""
        return json.loads((self.data_dir / "ingest_manifest.json").read_text(encoding="utf-8"))


def snapshot_of(data_dir: str | Path) -> pd.Timestamp:
    """The export's snapshot instant recorded by ingest (UTC)."""
    manifest = json.loads((Path(data_dir) / "ingest_manifest.json").read_text(encoding="utf-8"))
    return pd.Timestamp(manifest["as_of"]).tz_convert("UTC")


def open_context(
    data_dir: str | Path,
    period: str,
    as_of: str | None = None,
    definitions_path: str | Path | None = None,
    engine: str | None = None,
) -> SectionContext:
    """A SectionContext for `period` over the processed tables in `data_dir` (as-of defaults to period end)."""
    data_dir = Path(data_dir)
    p = parse_period(period)
    if as_of:
        instant = pd.Timestamp(as_of)
        instant = instant.tz_localize("UTC") if instant.tzinfo is None else instant.tz_convert("UTC")
    else:
        instant = as_of_for(p, snapshot_of(data_dir))
    con = connect(engine)
    return SectionContext(
        con=con,
        tables=load_tables(con, data_dir),
        definitions=load_definitions(definitions_path),
        period=p,
        as_of=instant,
        data_dir=data_dir,
    )
