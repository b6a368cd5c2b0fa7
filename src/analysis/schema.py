"""The canonical data model: table names, columns, types and which columns are required.

This is the contract between ingest (which writes data/processed/<table>.parquet) and every section.
Timestamps are UTC (`timestamp[us, UTC]`); money is exact: `decimal(18,2)` in major units.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = False  # must be present in the export (a file-level error otherwise)
    nullable: bool = True
    unique: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required: bool = False  # the kit cannot run without this table

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])


def _c(name: str, typ: pa.DataType, **kw) -> Column:
    return Column(name, typ, **kw)


S = pa.string()

LEADS = Table(
    "leads",
    (
        _c("lead_id", S, required=True, nullable=False, unique=True),
        _c("account_id", S),
        _c("created_at", TS, required=True, nullable=False),
        _c("segment", S, required=True, nullable=False),
        _c("region", S),
        _c("source_channel", S, required=True, nullable=False),
        _c("source_detail", S),
        _c("origin", S),  # derived from source_channel by the definitions at ingest
        _c("mql_at", TS),
        _c("sal_at", TS),
        _c("rejected_at", TS),
        _c("rejection_reason", S),
        _c("sql_at", TS),
        _c("first_sales_touch_at", TS),
        _c("owner_id", S),
        _c("owner_team", S),
        _c("opportunity_id", S),
    ),
    key=("lead_id",),
    required=True,
)

OPPORTUNITIES = Table(
    "opportunities",
    (
        _c("opportunity_id", S, required=True, nullable=False, unique=True),
        _c("account_id", S),
        # Nullable: some CRMs only date an opportunity once it is engaged (Maven's Prospecting deals have no
        # engage_date); every closed deal in the samples has one. Survival/velocity code must skip nulls.
        _c("created_at", TS, required=True),
        _c("segment", S, required=True, nullable=False),
        _c("region", S),
        _c("source_channel", S),
        _c("origin", S),
        _c("owner_id", S),
        _c("owner_team", S),
        _c("amount", MONEY),
        _c("stage", S, required=True, nullable=False),
        _c("is_closed", pa.bool_()),
        _c("is_won", pa.bool_()),
        _c("closed_at", TS),
        _c("lost_reason_code", S),
        _c("lost_reason_notes", S),
        _c("competitor", S),
        _c("industry", S),  # the account's sector / industry, as the CRM spells it
        _c("product", S),
    ),
    key=("opportunity_id",),
)

STAGE_HISTORY = Table(
    "stage_history",
    (
        _c("opportunity_id", S, required=True, nullable=False),
        _c("stage", S, required=True, nullable=False),
        _c("entered_at", TS, required=True, nullable=False),
    ),
    key=("opportunity_id", "stage"),
)

TOUCHPOINTS = Table(
    "touchpoints",
    (
        _c("touchpoint_id", S, required=True, nullable=False, unique=True),
        _c("lead_id", S),
        _c("account_id", S),
        _c("opportunity_id", S),
        _c("occurred_at", TS, required=True, nullable=False),
        _c("channel", S, required=True, nullable=False),
        _c("campaign", S),
        _c("content", S),
        _c("touch_kind", S),  # marketing / sales
    ),
    key=("touchpoint_id",),
)

TARGETS = Table(
    "targets",
    (
        _c("period", S, required=True, nullable=False),  # YYYY-MM
        _c("segment", S, required=True, nullable=False),
        _c("revenue_target", MONEY, required=True),
        _c("pipeline_target", MONEY),
    ),
    key=("period", "segment"),
)

FORECASTS = Table(
    "forecasts",
    (
        _c("period", S, required=True, nullable=False),  # YYYY-MM
        _c("segment", S, required=True, nullable=False),
        _c("forecast_amount", MONEY, required=True),
        _c("committed_at", TS),
    ),
    key=("period", "segment"),
)

TABLES: dict[str, Table] = {t.name: t for t in (LEADS, OPPORTUNITIES, STAGE_HISTORY, TOUCHPOINTS, TARGETS, FORECASTS)}
