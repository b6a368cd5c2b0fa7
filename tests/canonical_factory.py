"""Small random canonical tables written with the schema's Arrow types, for unit tests of the sections."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.manifest import write_json
from analysis.schema import TABLES

SEGMENTS = ["SMB", "Mid-Market", "Enterprise"]
CHANNELS = ["paid_search", "webinar", "outbound_sdr", "partner_referral", "content_syndication"]


def write_table(name: str, frame: pd.DataFrame, out: Path) -> None:
    """Write `frame` as the canonical table `name` (missing columns null)."""
    schema = TABLES[name].arrow_schema
    cols = {}
    for field in schema:
        values = frame[field.name] if field.name in frame else pd.Series([None] * len(frame))
        cols[field.name] = pa.array(list(values.astype(object).where(values.notna(), None)), type=field.type)
    pq.write_table(pa.table(cols, schema=schema), out / f"{name}.parquet")


def random_funnel(
    out: Path, n: int = 4000, seed: int = 7, as_of: str = "2026-11-01T00:00:00Z"
) -> dict[str, pd.DataFrame]:
    """Leads and opportunities with random stage times (some beyond windows, some after as-of)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-05-01", tz="UTC")
    created = start + pd.to_timedelta(rng.uniform(0, 549, n), unit="D")
    hours = lambda lo, hi: pd.to_timedelta(rng.uniform(lo, hi, n), unit="h")  # noqa: E731
    mql = created + hours(1, 24 * 40)
    sal = mql + hours(1, 24 * 12)
    sql = sal + hours(1, 24 * 30)
    seg = rng.choice(SEGMENTS, n, p=[0.6, 0.28, 0.12])
    chan = rng.choice(CHANNELS, n)
    has_mql = rng.random(n) < 0.5
    has_sal = has_mql & (rng.random(n) < 0.7)
    has_sql = has_sal & (rng.random(n) < 0.45)
    cut = pd.Timestamp(as_of)
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i:05d}" for i in range(n)],
            "created_at": created,
            "segment": seg,
            "source_channel": chan,
            "mql_at": pd.Series(mql).where(has_mql),
            "sal_at": pd.Series(sal).where(has_sal),
            "sql_at": pd.Series(sql).where(has_sql),
        }
    )
    for c in ("created_at", "mql_at", "sal_at", "sql_at"):
        leads[c] = pd.Series(leads[c]).where(pd.Series(leads[c]) < cut)
    leads = leads[leads["created_at"].notna()].reset_index(drop=True)
    opp_leads = leads[leads["sql_at"].notna()]
    m = len(opp_leads)
    close = opp_leads["sql_at"].to_numpy() + pd.to_timedelta(rng.uniform(5, 300, m), unit="D")
    closed = close < cut
    won = closed & (rng.random(m) < 0.3)
    opps = pd.DataFrame(
        {
            "opportunity_id": [f"O{i:05d}" for i in range(m)],
            "created_at": opp_leads["sql_at"].to_numpy(),
            "segment": opp_leads["segment"].to_numpy(),
            "source_channel": opp_leads["source_channel"].to_numpy(),
            "amount": [Decimal(f"{v:.2f}") for v in rng.lognormal(9, 1, m)],
            "stage": np.where(won, "Closed Won", np.where(closed, "Closed Lost", "Discovery")),
            "is_closed": closed,
            "is_won": won,
            "closed_at": pd.Series(close).where(closed),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    write_table("leads", leads, out)
    write_table("opportunities", opps, out)
    write_json(out / "ingest_manifest.json", {"as_of": as_of, "tables": {}, "files": []})
    return {"leads": leads, "opportunities": opps}
