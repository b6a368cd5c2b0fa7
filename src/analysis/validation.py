"""Row-level validation of the canonical tables: typed parsing, pandera schemas and cross-row rules.

Every check is vectorised over whole columns. A check returns `Problem`s: the positions of the failing rows
(in the table frame), the canonical column, the rule and a message per row. Rules:

    not_null, type:timestamp, type:decimal, type:boolean, type:number, non_negative, unique, allowed_values,
    stage_order, orphan, consistency

The pandera schema of each table is built from `analysis.schema` (nullability, uniqueness, key) and the
governed definitions (allowed stages, segments, channels, rejection reasons).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from analysis.schema import MONEY, TABLES, TS, Table

UNASSIGNED_SEGMENT = "Unassigned"
TOUCH_KINDS = ("marketing", "sales")


@dataclass
class Problem:
    rows: np.ndarray  # positions in the table frame
    column: str
    rule: str
    message: Any  # one string for all rows, or an array of strings aligned with rows


# ------------------------------------------------------------------------------------------ parsing
# Parsers take trimmed Arrow string arrays ("" = blank) and work column-wise in Arrow compute.

NAT = np.iinfo(np.int64).min
TS_MIN = int(pd.Timestamp("1900-01-01", tz="UTC").value // 1000)  # plausible range, in us
TS_MAX = int(pd.Timestamp("2200-01-01", tz="UTC").value // 1000)
_ISO = r"^\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)?$"
_ISO_AWARE = r"[T ]\d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)$"
_TIME_DIRECTIVE = re.compile(r"%[HIMSpfzTXcrRZ]")


def _np(arr: pyarrow.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def _us(arr: pyarrow.Array, tz: str) -> pyarrow.Array:
    """Timestamps (naive = local to tz; ambiguous -> later instant, nonexistent -> after the gap) as UTC us."""
    if arr.type.tz is None:
        arr = pc.assume_timezone(arr.cast(pyarrow.timestamp("us")), timezone=tz, ambiguous="latest",
                                 nonexistent="latest")
    return arr.cast(pyarrow.timestamp("us", tz="UTC"))


def _pandas_fallback(sub: pyarrow.Array, fmt: str, tz: str, aware: bool) -> pyarrow.Array:
    ser = pd.to_datetime(pd.Series(_np(sub), dtype=object), format=fmt, errors="coerce", utc=aware)
    if not aware:
        if ser.dt.tz is None:
            ser = ser.dt.tz_localize(tz, ambiguous=np.zeros(len(ser), dtype=bool), nonexistent="shift_forward")
        ser = ser.dt.tz_convert("UTC")
    return pyarrow.array(ser.astype("datetime64[us, UTC]"), type=pyarrow.timestamp("us", tz="UTC"))


def _cast_or_fallback(sub: pyarrow.Array, tz: str, aware: bool) -> pyarrow.Array:
    try:
        target = pyarrow.timestamp("us", tz="UTC") if aware else pyarrow.timestamp("us")
        return _us(sub.cast(target), tz)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        return _pandas_fallback(sub, "ISO8601", tz, aware)


def _parse_one(sub: pyarrow.Array, fmt: str, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(sub)
    out = np.full(n, NAT, dtype=np.int64)
    d_only = np.zeros(n, dtype=bool)
    if fmt == "iso":
        shape = _np(pc.match_substring_regex(sub, _ISO))
        aware = _np(pc.match_substring_regex(sub, _ISO_AWARE)) & shape
        for mask, is_aware in ((aware, True), (shape & ~aware, False)):
            pos = np.flatnonzero(mask)
            if len(pos):
                got = _cast_or_fallback(sub.take(pa_idx(pos)), tz, is_aware)
                out[pos] = _np(got.cast(pyarrow.int64()).fill_null(NAT))
        d_only = shape & ~aware & (_np(pc.utf8_length(sub)) <= 10)
    elif fmt in ("epoch_ms", "epoch_s"):
        ok = _np(pc.match_substring_regex(sub, r"^-?\d{1,16}$"))
        pos = np.flatnonzero(ok)
        if len(pos):
            vals = _np(sub.take(pa_idx(pos)).cast(pyarrow.int64()))
            out[pos] = vals * (1000 if fmt == "epoch_ms" else 1_000_000)
    else:
        got = pc.strptime(sub, format=fmt, unit="us", error_is_null=True)
        miss = _np(got.is_null())
        if miss.any():  # Arrow's strptime is stricter than Python's on a few directives: retry those rows
            pos = np.flatnonzero(miss)
            retry = _pandas_fallback(sub.take(pa_idx(pos)), fmt, tz, "%z" in fmt)
            vals = _np(_us(got, tz).cast(pyarrow.int64()).fill_null(NAT)).copy()
            vals[pos] = _np(retry.cast(pyarrow.int64()).fill_null(NAT))
            out[:] = vals
        else:
            out[:] = _np(_us(got, tz).cast(pyarrow.int64()))
        d_only[:] = not _TIME_DIRECTIVE.search(fmt)
    return out, d_only, out != NAT


def pa_idx(pos: np.ndarray) -> pyarrow.Array:
    return pyarrow.array(pos, type=pyarrow.int64())


def parse_timestamps(
    values: pyarrow.Array, formats: tuple[str, ...], tz: str
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Strings -> UTC timestamps (us). Returns (timestamps, bad mask, date-only mask).

    Each format is tried in order on the values still unparsed. Naive values are local times in `tz`. A value
    matching no format, or outside 1900-2199, is bad; blanks are null.
    """
    n = len(values)
    out = np.full(n, NAT, dtype=np.int64)
    todo = _np(pc.not_equal(values, ""))
    date_only = np.zeros(n, dtype=bool)
    for fmt in formats:
        pos = np.flatnonzero(todo)
        if not len(pos):
            break
        vals, d_only, ok = _parse_one(values.take(pa_idx(pos)), fmt, tz)
        ok &= (vals >= TS_MIN) & (vals < TS_MAX)
        out[pos[ok]] = vals[ok]
        date_only[pos[ok]] = d_only[ok]
        todo[pos[ok]] = False
    ts = pd.Series(out.view("datetime64[us]")).dt.tz_localize("UTC")
    return ts, todo, date_only


_MONEY_JUNK = r"^[A-Z]{3}\s*|\s*[A-Z]{3}$|[\s$€£¥\x{00a0}]"
_MONEY_RE = r"^(?P<sign>[+-]?)(?P<whole>\d{1,16})(?:\.(?P<frac>\d*))?$"


def parse_money(
    values: pyarrow.Array, decimal: str = ".", thousands: str = ""
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Strings -> exact amounts in integer minor units (cents, Int64). Never goes through float.

    Currency symbols and ISO codes are stripped; `(1,234.50)` is negative. Returns (cents, bad mask, reason).
    """
    t = pc.replace_substring_regex(values, _MONEY_JUNK, "")
    paren = pc.match_substring_regex(t, r"^\(.*\)$")
    t = pc.if_else(paren, pc.binary_join_element_wise("-", pc.utf8_slice_codeunits(t, 1, -1), ""), t)
    if thousands:
        t = pc.replace_substring(t, thousands, "")
    if decimal != ".":
        t = pc.replace_substring(t, decimal, ".")
    parts = pc.extract_regex(t, _MONEY_RE)
    matched = _np(parts.is_valid())
    frac = pc.fill_null(parts.field("frac"), "")
    extra = _np(pc.not_equal(pc.utf8_trim(pc.utf8_slice_codeunits(frac, 2), characters="0"), ""))
    ok = matched & ~extra
    whole = _np(pc.cast(pc.if_else(parts.is_valid(), parts.field("whole"), "0"), pyarrow.int64()))
    f2 = _np(pc.cast(pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 0, 2), width=2, padding="0"), pyarrow.int64()))
    cents = whole * 100 + f2
    cents = np.where(_np(pc.equal(pc.fill_null(parts.field("sign"), ""), "-")), -cents, cents)
    blank = _np(pc.equal(values, ""))
    bad = ~blank & ~ok
    reason = np.where(matched & extra, "more than 2 decimal places", "not an amount")
    return pd.Series(pd.arrays.IntegerArray(cents, ~ok)), bad, reason


def parse_bool(
    values: pyarrow.Array, true_values: tuple[str, ...], false_values: tuple[str, ...]
) -> tuple[pd.Series, np.ndarray]:
    low = pc.utf8_lower(values)
    is_t = _np(pc.is_in(low, value_set=pyarrow.array(list(true_values), pyarrow.string())))
    is_f = _np(pc.is_in(low, value_set=pyarrow.array(list(false_values), pyarrow.string())))
    blank = _np(pc.equal(values, ""))
    return pd.Series(pd.arrays.BooleanArray(is_t, ~(is_t | is_f))), ~blank & ~is_t & ~is_f


def apply_bands(
    values: pyarrow.Array, bands: tuple[tuple[float, float, str], ...], thousands: str = ""
) -> tuple[pyarrow.Array, np.ndarray, np.ndarray]:
    """Numeric strings -> band labels. Returns (labels, not-a-number mask, outside-every-band mask)."""
    t = pc.replace_substring(values, thousands, "") if thousands else values
    isnum = _np(pc.match_substring_regex(t, r"^[+-]?\d+(?:\.\d+)?$"))
    num = np.full(len(t), np.nan)
    pos = np.flatnonzero(isnum)
    if len(pos):
        num[pos] = _np(t.take(pa_idx(pos)).cast(pyarrow.float64()))
    blank = _np(pc.equal(values, ""))
    conds = [(num >= lo) & (num <= hi) for lo, hi, _ in bands]
    labels = np.select(conds, [label for _, _, label in bands], default="").astype(object)
    outside = isnum & (labels == "")
    return pyarrow.array(labels, type=pyarrow.string()), ~blank & ~isnum, outside


# -------------------------------------------------------------------------------------- pandera schema


def allowed_values(table: str, column: str, definitions: dict) -> list[str] | None:
    """The governed picklist of a canonical column, or None when the column is free text."""
    stages = definitions["stages"]["opportunity"]
    opp_stages = [*stages["open"], stages["won"], stages["lost"]]
    channels = sorted(definitions["channels"]["origin_by_channel"])
    lists = {
        "segment": [*definitions["segments"]["order"], UNASSIGNED_SEGMENT],
        "source_channel": channels,
        "channel": channels,
        "rejection_reason": list(definitions["sla"]["rejection_reasons"]),
        "touch_kind": list(TOUCH_KINDS),
    }  # origin is derived from the channel: an unknown channel is reported once, on the channel
    if column == "stage" and table in ("opportunities", "stage_history"):
        return opp_stages
    return lists.get(column)


def _dtype(typ: pyarrow.DataType) -> Any:
    if typ == TS:
        return "datetime64[us, UTC]"
    if typ == MONEY:
        return "Int64"
    if typ == pyarrow.bool_():
        return "boolean"
    return None  # text: Arrow-backed strings; values are checked, not the storage type


def pandera_schema(table: Table, definitions: dict, unique: bool = True) -> pa.DataFrameSchema:
    """The pandera schema of a canonical table (money held as Int64 cents while validating).

    unique=False leaves out the uniqueness checks: chunked ingest runs them over the whole table in DuckDB."""
    columns = {}
    for c in table.columns:
        checks = []
        if c.type == MONEY:
            checks.append(pa.Check.ge(0))
        allowed = allowed_values(table.name, c.name, definitions)
        if allowed:
            checks.append(pa.Check.isin(allowed))
        columns[c.name] = pa.Column(
            _dtype(c.type), checks=checks, nullable=c.nullable, unique=c.unique and unique,
            report_duplicates="exclude_first"
        )
    multi_key = list(table.key) if len(table.key) > 1 and unique else None
    return pa.DataFrameSchema(
        columns, unique=multi_key, report_duplicates="exclude_first", strict=False, coerce=False, name=table.name
    )


def _rule_of(check: str) -> str | None:
    if check == "not_nullable":
        return "not_null"
    if check in ("field_uniqueness", "multiple_fields_uniqueness"):
        return "unique"
    if check.startswith("isin"):
        return "allowed_values"
    if check.startswith("greater_than_or_equal_to"):
        return "non_negative"
    return None


def check_schema(df: pd.DataFrame, table: Table, definitions: dict, type_bad: dict[str, np.ndarray],
                 unique: bool = True) -> list[Problem]:
    """Run the pandera schema lazily; failure cases -> Problems (nulls caused by a bad type are not re-reported)."""
    schema = pandera_schema(table, definitions, unique)
    try:
        schema.validate(df[[c.name for c in table.columns]], lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
    problems: list[Problem] = []
    fc = fc[fc["index"].notna()]
    for (column, check), grp in fc.groupby(["column", "check"], sort=True, dropna=False):
        rule = _rule_of(str(check))
        if rule is None:
            raise RuntimeError(f"unexpected pandera check {check} on {table.name}.{column}")
        rows = np.unique(grp["index"].astype(np.int64).to_numpy())
        if rule == "unique":
            cols = list(table.key) if column is None or pd.isna(column) or len(table.key) > 1 else [str(column)]
            keyvals = df[cols].iloc[rows]
            rows = rows[keyvals.notna().all(axis=1).to_numpy()]
            if not len(rows):
                continue
            vals = df[cols].iloc[rows].astype(str).agg(" / ".join, axis=1).to_numpy()
            head = f"duplicate {'/'.join(cols)} '"
            msg = np.char.add(np.char.add(head, vals.astype(str)), "' (first occurrence kept)")
            problems.append(Problem(rows, ",".join(cols), rule, msg))
            continue
        column = str(column)
        if rule == "not_null":
            if column in type_bad:
                rows = rows[~type_bad[column][rows]]
            if len(rows):
                problems.append(Problem(rows, column, rule, "value is required"))
        elif rule == "allowed_values":
            allowed = allowed_values(table.name, column, definitions) or []
            vals = df[column].iloc[rows].astype(str).to_numpy().astype(str)
            msg = np.char.add(np.char.add("'", vals), f"' is not an allowed {column} (allowed: {', '.join(allowed)})")
            problems.append(Problem(rows, column, rule, msg))
        else:  # non_negative
            vals = (df[column].iloc[rows].astype("float64") / 100).map("{:.2f}".format).to_numpy().astype(str)
            problems.append(Problem(rows, column, rule, np.char.add("negative amount ", vals)))
    return problems


# ---------------------------------------------------------------------------------------- cross-row rules

ORDER_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    # (later, earlier): `later` must not precede `earlier`
    "leads": (("mql_at", "created_at"), ("sal_at", "mql_at"), ("sql_at", "sal_at"), ("sql_at", "mql_at")),
    "opportunities": (("closed_at", "created_at"),),
}


def _iso(ts: pd.Series) -> np.ndarray:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy().astype(str)


DAY_US = 86_400_000_000


def _micros(ts: pd.Series) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (NaT as the smallest int64)."""
    arr = ts.array
    return (arr if arr.unit == "us" else arr.as_unit("us")).asi8


def check_date_order(df: pd.DataFrame, table: str, date_only: dict[str, np.ndarray], skip: np.ndarray) -> list[Problem]:
    """Stage dates out of order within a row (rule stage_order). A date-only `later` value may fall on the same day."""
    problems = []
    for later, earlier in ORDER_RULES.get(table, ()):
        if later not in df or earlier not in df:
            continue
        a, b = df[later], df[earlier]
        # In integer microseconds: timedelta arithmetic on tz-aware pandas columns costs seconds per million rows.
        ai, bi = _micros(a), _micros(b)
        tol = np.where(date_only.get(later, np.zeros(len(df), bool)), DAY_US, 0)
        bad = a.notna().to_numpy() & b.notna().to_numpy() & (ai + tol <= bi) & (ai < bi) & ~skip
        if table == "leads" and later == "sql_at" and earlier == "mql_at":
            bad &= df["sal_at"].isna().to_numpy()  # sql_at is checked against sal_at when that exists
        rows = np.flatnonzero(bad)
        if len(rows):
            msg = np.char.add(
                np.char.add(np.char.add(f"{later} ", _iso(a.iloc[rows])), f" is before {earlier} "), _iso(b.iloc[rows])
            )
            problems.append(Problem(rows, later, "stage_order", msg))
    return problems


def check_stage_history_order(df: pd.DataFrame, definitions: dict, skip: np.ndarray) -> list[Problem]:
    """Per opportunity, entries must follow the governed stage order in time (closed stages last)."""
    st = definitions["stages"]["opportunity"]
    rank = {s: i for i, s in enumerate(st["open"])}
    rank[st["won"]] = rank[st["lost"]] = len(st["open"])
    r = df["stage"].map(rank)
    ok = ~skip & r.notna().to_numpy() & df["entered_at"].notna().to_numpy() & df["opportunity_id"].notna().to_numpy()
    sub = pd.DataFrame({"opp": df["opportunity_id"], "at": df["entered_at"], "rank": r})[ok]
    sub = sub.assign(pos=np.flatnonzero(ok)).sort_values(["opp", "at", "rank", "pos"], kind="mergesort")
    prev = sub.groupby("opp", sort=False)["rank"].cummax().groupby(sub["opp"], sort=False).shift(1)
    bad = (sub["rank"] < prev).to_numpy()
    rows = sub["pos"].to_numpy()[bad]
    if not len(rows):
        return []
    order = " > ".join([*st["open"], f"{st['won']}/{st['lost']}"])
    msg = np.char.add(
        np.char.add("stage '", df["stage"].iloc[rows].to_numpy().astype(str)),
        f"' entered after a later stage (order: {order})",
    )
    return [Problem(np.sort(rows), "stage", "stage_order", msg)]


def check_orphans(df: pd.DataFrame, kept_ids: pd.Index, all_ids: pd.Index, skip: np.ndarray) -> list[Problem]:
    """opportunity_id must name a kept opportunity (rule orphan)."""
    ids = df["opportunity_id"]
    bad = ids.notna().to_numpy() & ~ids.isin(kept_ids).to_numpy() & ~skip
    rows = np.flatnonzero(bad)
    if not len(rows):
        return []
    vals = ids.iloc[rows]
    quarantined = vals.isin(all_ids).to_numpy()
    msg = np.where(
        quarantined,
        np.char.add(np.char.add("opportunity '", vals.to_numpy().astype(str)), "' was quarantined"),
        np.char.add(np.char.add("opportunity '", vals.to_numpy().astype(str)), "' is not in opportunities"),
    )
    return [Problem(rows, "opportunity_id", "orphan", msg)]


def check_consistency(df: pd.DataFrame, given: dict[str, pd.Series], definitions: dict) -> list[Problem]:
    """is_closed / is_won given by the export must agree with the governed meaning of the stage."""
    st = definitions["stages"]["opportunity"]
    derived = {
        "is_closed": df["stage"].isin([st["won"], st["lost"]]),
        "is_won": df["stage"].eq(st["won"]),
    }
    problems = []
    for col, vals in given.items():
        bad = (vals.notna() & df["stage"].notna() & (vals.fillna(False).astype(bool) != derived[col])).to_numpy()
        rows = np.flatnonzero(bad)
        if len(rows):
            problems.append(Problem(rows, col, "consistency", f"{col} disagrees with the stage's governed meaning"))
    return problems


def table_schema(name: str) -> Table:
    return TABLES[name]
