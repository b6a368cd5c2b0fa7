"""Import mappings: the declarative language that maps a CRM export onto the canonical model.

A mapping is a YAML file in `config/mappings/`. Onboarding a CRM means writing one, not code. Shape:

    name: salesforce                 # required; recorded in the ingest manifest
    description: ...
    salt: "..."                      # required when a table pseudonymizes columns
    as_of: "2026-03-31T23:59:59Z"    # optional snapshot instant (else: end of the UTC day of the latest event)
    csv: {delimiter: ",", encoding: utf-8, quote: '"', decimal: ".", thousands: ""}   # defaults for all files
    timezone: UTC                    # default source time zone of naive timestamps
    tables:
      <canonical table>:
        source: Lead.csv             # file name or glob under the raw folder, or a list (first that exists wins)
        csv: {...}                   # overrides the default CSV options for this table's files
        timezone: America/New_York
        where: {Field: [StageName]}  # keep only records whose source column holds one of these values
        unpivot:                     # wide -> long: one output row per non-blank cell of the listed columns
          columns: {"Date entered Discovery": Discovery}   # source column -> value written to `name_to`
          name_to: stage
          value_to: entered_at
        lookups:                     # join another file on a key to bring in its columns
          account: {source: accounts.csv, key: account, on: account, unmatched: null}
        pseudonymize: {owner_id: rep}   # canonical column -> id prefix (a list uses prefix "pid")
        columns:                     # canonical column <- source
          lead_id: Id                           # shorthand for {from: Id}
          created_at: {from: CreatedDate, format: "%m/%d/%Y %I:%M %p"}
          stage: {from: StageName, map: {Won: Closed Won}, otherwise: null}
          industry: {lookup: account.sector}
          segment: {lookup: account.employees, bands: definitions, default: Unassigned}
          touch_kind: {const: marketing}
          is_won: {derive: stage}
          competitor: ~                         # explicitly not in this export: all null

Column options: exactly one of `from` (source column), `lookup` (`<lookup>.<column>`), `const` or `derive`
(`stage`, for is_closed / is_won; derived automatically when unmapped); then, applied in this order:
`map` (exact source label -> canonical value; YAML keys must be strings), `otherwise` (value for a non-blank label
missing from `map`; default: keep the label, so validation can flag it), `bands` (`definitions` for the governed
employee bands, or `{label: "lo-hi" | "lo+"}`), `default` (value when the source is blank), then parsing by the
canonical type: timestamps with `format` (a strptime pattern, `iso`, `epoch_ms`, `epoch_s`, or a list tried in
order; default `iso`) in `timezone` (naive values are local to it, converted to UTC), money as exact decimals with
the CSV `decimal`/`thousands` separators (currency symbols and codes stripped), booleans with `true_values` /
`false_values`. Values are trimmed; an empty value is null. `origin` is never mapped: it is always derived from
the channel by the governed definitions; is_closed / is_won read from a file are checked against the stage's
governed meaning (rule `consistency`). Pseudonymized values become `<prefix>_<hash>` (sha256 of salt and value),
so no personal name reaches data/processed. A lookup key must be unique in its file; a key with no match gives
blanks (`unmatched: null`) or quarantines the row (`unmatched: quarantine`, rule `orphan`). YAML is read with
1.2 booleans: only true/false are booleans, so labels such as `Yes`, `No` and `on` stay text.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import pyarrow as pa
import yaml

from analysis.config import UniqueKeyLoader
from analysis.errors import MappingError
from analysis.schema import TABLES, TS

DERIVED_ALWAYS = ("origin",)  # never mapped: derived from the channel by the definitions
DERIVABLE = {"is_closed": "stage", "is_won": "stage"}
PSEUDONYM_DIGITS = 8
_TIME_DIRECTIVES = re.compile(r"%[HIMSpfzTXcrRZ]")

_TOP_KEYS = {"name", "description", "salt", "as_of", "csv", "timezone", "tables", "pseudonym_digits", "version"}
_TABLE_KEYS = {"source", "csv", "timezone", "where", "unpivot", "lookups", "pseudonymize", "columns", "description"}
_CSV_KEYS = {"delimiter", "encoding", "quote", "decimal", "thousands"}
_LOOKUP_KEYS = {"source", "key", "on", "csv", "unmatched"}
_COLUMN_KEYS = {
    "from", "lookup", "const", "derive", "map", "otherwise", "bands", "default", "format", "timezone",
    "true_values", "false_values",
}
_UNPIVOT_KEYS = {"columns", "name_to", "value_to"}


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str = ","
    encoding: str = "utf-8"
    quote: str = '"'
    decimal: str = "."
    thousands: str = ""
    encoding_declared: bool = False  # True when the mapping names the encoding explicitly


@dataclass(frozen=True)
class Lookup:
    name: str
    source: tuple[str, ...]
    key: str  # column in the lookup file
    on: str  # column in the main source file
    csv: CsvOptions
    unmatched: str = "null"  # null | quarantine (rule `orphan`)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    source: str | None = None  # `from`
    lookup: tuple[str, str] | None = None  # (lookup name, column)
    const: str | None = None
    derive: str | None = None
    unpivot_value: bool = False  # filled from the unpivoted cell
    value_map: dict[str, str | None] | None = None
    otherwise: str | None = None
    has_otherwise: bool = False
    bands: tuple[tuple[float, float, str], ...] | None = None
    default: str | None = None
    formats: tuple[str, ...] = ("iso",)
    timezone: str = "UTC"
    true_values: tuple[str, ...] = ("true", "t", "1", "yes", "y")
    false_values: tuple[str, ...] = ("false", "f", "0", "no", "n")

    @property
    def described(self) -> str:
        """Where the column comes from, for messages."""
        if self.source is not None:
            return f"'{self.source}'"
        if self.lookup is not None:
            return f"lookup '{self.lookup[0]}.{self.lookup[1]}'"
        if self.unpivot_value:
            return "the unpivoted cells"
        return "a constant" if self.const is not None else "a derivation"

    def date_only_format(self, fmt: str) -> bool:
        return fmt not in ("iso", "epoch_ms", "epoch_s") and not _TIME_DIRECTIVES.search(fmt)


@dataclass(frozen=True)
class Unpivot:
    columns: dict[str, str]  # source column -> label written to name_to
    name_to: str
    value_to: str


@dataclass(frozen=True)
class TableMapping:
    table: str
    sources: tuple[str, ...]
    csv: CsvOptions
    timezone: str
    columns: dict[str, ColumnSpec]
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lookups: dict[str, Lookup] = field(default_factory=dict)
    unpivot: Unpivot | None = None
    pseudonymize: dict[str, str] = field(default_factory=dict)  # canonical column -> prefix

    def source_columns(self) -> list[str]:
        """Main-file columns the mapping reads (the raw record kept with a quarantined row)."""
        cols = [c.source for c in self.columns.values() if c.source is not None]
        cols += list(self.where)
        if self.unpivot is not None:
            cols += list(self.unpivot.columns)
        return sorted(set(cols))

    def pseudonymized_sources(self) -> dict[str, str]:
        """Main-file source column -> prefix, for columns that feed a pseudonymized canonical column."""
        return {
            self.columns[c].source: p  # type: ignore[misc]
            for c, p in self.pseudonymize.items()
            if self.columns[c].source is not None
        }


@dataclass(frozen=True)
class Mapping:
    name: str
    path: str
    sha256: str
    tables: dict[str, TableMapping]
    salt: str = ""
    as_of: pd.Timestamp | None = None
    description: str = ""
    pseudonym_digits: int = PSEUDONYM_DIGITS

    def pseudonym(self, prefix: str, value: str) -> str:
        """The stable salted-hash id of a personal identifier, e.g. `rep_3fa2c1d0`."""
        digest = hashlib.sha256(f"{self.salt}\x1f{value}".encode()).hexdigest()
        return f"{prefix}_{digest[: self.pseudonym_digits]}"


# --------------------------------------------------------------------------------------------- loading


class _Loader(UniqueKeyLoader):
    """YAML 1.2 booleans: only true/false are booleans, so `on:`, `yes:` and `No:` stay text (keys and labels).
    A key repeated in one mapping is an error (`yaml` rule, with its line), not silently the last one."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> None:
        raise MappingError(message, file=self.path, column=key, rule="mapping")

    def keys(self, obj: Any, allowed: set[str], key: str) -> dict:
        if not isinstance(obj, dict):
            self.fail(key, "must be a mapping of keys to values")
        for k in obj:
            if not isinstance(k, str) or k not in allowed:
                self.fail(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return obj

    def text(self, obj: Any, key: str, *, allow_empty: bool = False) -> str:
        if isinstance(obj, bool) or not isinstance(obj, (str, int, float)):
            self.fail(key, "must be a text value (quote it in YAML)")
        out = str(obj)
        if not out and not allow_empty:
            self.fail(key, "must not be empty")
        return out


def _csv_options(ctx: _Ctx, obj: Any, key: str, base: CsvOptions) -> CsvOptions:
    if obj is None:
        return base
    d = ctx.keys(obj, _CSV_KEYS, key)
    vals = {k: ctx.text(d[k], f"{key}.{k}", allow_empty=k == "thousands") for k in d}
    for k in ("delimiter", "quote", "decimal"):
        if k in vals and len(vals[k]) != 1:
            ctx.fail(f"{key}.{k}", "must be a single character")
    if "encoding" in vals:
        try:
            "".encode(vals["encoding"])
        except LookupError:
            ctx.fail(f"{key}.encoding", f"unknown encoding '{vals['encoding']}'")
    return CsvOptions(
        delimiter=vals.get("delimiter", base.delimiter),
        encoding=vals.get("encoding", base.encoding),
        quote=vals.get("quote", base.quote),
        decimal=vals.get("decimal", base.decimal),
        thousands=vals.get("thousands", base.thousands),
        encoding_declared=base.encoding_declared or "encoding" in vals,
    )


def _timezone(ctx: _Ctx, obj: Any, key: str) -> str:
    name = ctx.text(obj, key)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        ctx.fail(key, f"unknown time zone '{name}'")
    return name


def _sources(ctx: _Ctx, obj: Any, key: str) -> tuple[str, ...]:
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        ctx.fail(key, "must name at least one file")
    out = tuple(ctx.text(s, f"{key}[{i}]") for i, s in enumerate(items))
    for i, s in enumerate(out):
        if s.startswith("/") or ".." in Path(s).parts:
            ctx.fail(f"{key}[{i}]", "must be a file name or glob relative to the raw folder")
    return out


def _parse_bands(ctx: _Ctx, obj: Any, key: str, definitions: dict | None) -> tuple[tuple[float, float, str], ...]:
    if obj == "definitions":
        if definitions is None:
            ctx.fail(key, "'definitions' bands need the governed definitions")
        obj = definitions["segments"]["employees_bands"]
        key = "definitions.segments.employees_bands"
    if not isinstance(obj, dict) or not obj:
        ctx.fail(key, "bands are `definitions` or a mapping label -> 'lo-hi' / 'lo+'")
    bands = []
    for label, rng in obj.items():
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?)|(\+))\s*", str(rng))
        if not m:
            ctx.fail(f"{key}.{label}", f"band '{rng}' is not 'lo-hi' or 'lo+'")
        lo = float(m.group(1))
        hi = float("inf") if m.group(3) else float(m.group(2))
        if hi < lo:
            ctx.fail(f"{key}.{label}", "band upper bound is below its lower bound")
        bands.append((lo, hi, str(label)))
    return tuple(sorted(bands))


def _column(ctx: _Ctx, name: str, obj: Any, key: str, tm: dict, definitions: dict | None) -> ColumnSpec:
    if obj is None:
        return ColumnSpec(name=name)
    if not isinstance(obj, dict):
        return ColumnSpec(name=name, source=ctx.text(obj, key), timezone=tm["timezone"])
    d = ctx.keys(obj, _COLUMN_KEYS, key)
    origins = [k for k in ("from", "lookup", "const", "derive") if k in d]
    unpivot_value = tm.get("unpivot_value_to") == name
    if len(origins) > 1 or (unpivot_value and origins):
        ctx.fail(key, "give exactly one of from / lookup / const / derive")
    kw: dict[str, Any] = {"name": name, "timezone": tm["timezone"], "unpivot_value": unpivot_value}
    if "from" in d:
        kw["source"] = ctx.text(d["from"], f"{key}.from")
    if "lookup" in d:
        ref = ctx.text(d["lookup"], f"{key}.lookup")
        lk, dot, col = ref.partition(".")
        if not dot or not col:
            ctx.fail(f"{key}.lookup", "a lookup reference is '<lookup name>.<column>'")
        if lk not in tm["lookups"]:
            ctx.fail(f"{key}.lookup", f"unknown lookup '{lk}' (declared: {', '.join(sorted(tm['lookups'])) or 'none'})")
        kw["lookup"] = (lk, col)
    if "const" in d:
        kw["const"] = None if d["const"] is None else ctx.text(d["const"], f"{key}.const", allow_empty=True)
    if "derive" in d:
        if DERIVABLE.get(name) != d["derive"]:
            ctx.fail(f"{key}.derive", f"'{name}' cannot be derived from '{d['derive']}' (derivable: is_closed, is_won)")
        kw["derive"] = d["derive"]
    if "map" in d:
        vm = d["map"]
        if not isinstance(vm, dict):
            ctx.fail(f"{key}.map", "must map source labels to canonical values")
        out: dict[str, str | None] = {}
        for k, v in vm.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                ctx.fail(f"{key}.map.{k}", "map keys must be text: quote them in YAML (e.g. 'true', 'null')")
            out[str(k)] = None if v is None else ctx.text(v, f"{key}.map.{k}", allow_empty=True)
        kw["value_map"] = out
    if "otherwise" in d:
        kw["has_otherwise"] = True
        kw["otherwise"] = None if d["otherwise"] is None else ctx.text(d["otherwise"], f"{key}.otherwise")
    if "bands" in d:
        kw["bands"] = _parse_bands(ctx, d["bands"], f"{key}.bands", definitions)
    if "default" in d:
        kw["default"] = None if d["default"] is None else ctx.text(d["default"], f"{key}.default")
    if "format" in d:
        fmts = d["format"] if isinstance(d["format"], list) else [d["format"]]
        if not fmts:
            ctx.fail(f"{key}.format", "must name at least one format")
        kw["formats"] = tuple(ctx.text(f, f"{key}.format") for f in fmts)
        for f in kw["formats"]:
            if f not in ("iso", "epoch_ms", "epoch_s") and "%" not in f:
                ctx.fail(f"{key}.format", f"'{f}' is not iso, epoch_ms, epoch_s or a strptime pattern")
    if "timezone" in d:
        kw["timezone"] = _timezone(ctx, d["timezone"], f"{key}.timezone")
    for k in ("true_values", "false_values"):
        if k in d:
            vals = d[k] if isinstance(d[k], list) else [d[k]]
            kw[k] = tuple(ctx.text(v, f"{key}.{k}").lower() for v in vals)
    return ColumnSpec(**kw)


def _check_types(ctx: _Ctx, table: str, spec: ColumnSpec, key: str) -> None:
    typ = TABLES[table].column(spec.name).type
    if spec.formats != ("iso",) and typ != TS:
        ctx.fail(f"{key}.format", f"'{spec.name}' is not a timestamp column")
    if spec.bands is not None and typ != pa.string():
        ctx.fail(f"{key}.bands", f"'{spec.name}' is not a text column")
    if (spec.true_values != ColumnSpec.true_values or spec.false_values != ColumnSpec.false_values) and (
        typ != pa.bool_()
    ):
        ctx.fail(key, f"'{spec.name}' is not a boolean column")


def _table(ctx: _Ctx, name: str, obj: Any, top: dict, definitions: dict | None) -> TableMapping:
    key = f"tables.{name}"
    if name not in TABLES:
        ctx.fail(key, f"unknown canonical table (known: {', '.join(TABLES)})")
    d = ctx.keys(obj, _TABLE_KEYS, key)
    if "source" not in d:
        ctx.fail(f"{key}.source", "every table needs a source file")
    sources = _sources(ctx, d["source"], f"{key}.source")
    csv = _csv_options(ctx, d.get("csv"), f"{key}.csv", top["csv"])
    tz = _timezone(ctx, d["timezone"], f"{key}.timezone") if "timezone" in d else top["timezone"]
    schema = TABLES[name]
    canon = {c.name for c in schema.columns}

    where: dict[str, tuple[str, ...]] = {}
    if d.get("where") is not None:
        if not isinstance(d["where"], dict):
            ctx.fail(f"{key}.where", "must map source columns to lists of values to keep")
        for col, vals in d["where"].items():
            vals = vals if isinstance(vals, list) else [vals]
            where[str(col)] = tuple(ctx.text(v, f"{key}.where.{col}", allow_empty=True) for v in vals)

    lookups: dict[str, Lookup] = {}
    for lname, lobj in (d.get("lookups") or {}).items():
        lkey = f"{key}.lookups.{lname}"
        ld = ctx.keys(lobj, _LOOKUP_KEYS, lkey)
        for req in ("source", "key"):
            if req not in ld:
                ctx.fail(f"{lkey}.{req}", "required")
        unmatched = ld.get("unmatched", "null")
        if unmatched not in (None, "null", "quarantine"):
            ctx.fail(f"{lkey}.unmatched", "must be null or quarantine")
        lk_key = ctx.text(ld["key"], f"{lkey}.key")
        lookups[str(lname)] = Lookup(
            name=str(lname),
            source=_sources(ctx, ld["source"], f"{lkey}.source"),
            key=lk_key,
            on=ctx.text(ld.get("on", lk_key), f"{lkey}.on"),
            csv=_csv_options(ctx, ld.get("csv"), f"{lkey}.csv", csv),
            unmatched=unmatched or "null",
        )

    unpivot = None
    if d.get("unpivot") is not None:
        ukey = f"{key}.unpivot"
        ud = ctx.keys(d["unpivot"], _UNPIVOT_KEYS, ukey)
        for req in _UNPIVOT_KEYS:
            if req not in ud:
                ctx.fail(f"{ukey}.{req}", "required")
        if not isinstance(ud["columns"], dict) or not ud["columns"]:
            ctx.fail(f"{ukey}.columns", "must map source columns to labels")
        for k in ("name_to", "value_to"):
            if ud[k] not in canon:
                ctx.fail(f"{ukey}.{k}", f"unknown canonical column '{ud[k]}' of table {name}")
        unpivot = Unpivot(
            columns={str(k): ctx.text(v, f"{ukey}.columns.{k}") for k, v in ud["columns"].items()},
            name_to=ud["name_to"],
            value_to=ud["value_to"],
        )

    if not isinstance(d.get("columns"), dict):
        ctx.fail(f"{key}.columns", "every table maps its canonical columns")
    tm = {"timezone": tz, "lookups": lookups, "unpivot_value_to": unpivot.value_to if unpivot else None}
    columns: dict[str, ColumnSpec] = {}
    for cname, cobj in d["columns"].items():
        ckey = f"{key}.columns.{cname}"
        if cname not in canon:
            ctx.fail(ckey, f"unknown canonical column of table {name} (known: {', '.join(sorted(canon))})")
        if cname in DERIVED_ALWAYS:
            ctx.fail(ckey, "origin is always derived from the channel by definitions.channels; do not map it")
        if unpivot is not None and cname == unpivot.name_to:
            ctx.fail(ckey, "this column is filled by unpivot.name_to")
        spec = _column(ctx, cname, cobj, ckey, tm, definitions)
        _check_types(ctx, name, spec, ckey)
        columns[cname] = spec
    if unpivot is not None:
        columns.setdefault(unpivot.value_to, ColumnSpec(name=unpivot.value_to, unpivot_value=True, timezone=tz))
        columns[unpivot.name_to] = ColumnSpec(name=unpivot.name_to, unpivot_value=False, derive="unpivot")
    for cname in DERIVABLE:
        if cname in canon and cname not in columns:
            columns[cname] = ColumnSpec(name=cname, derive=DERIVABLE[cname])
    for col in schema.columns:
        if col.required and col.name not in columns:
            ctx.fail(f"{key}.columns.{col.name}", f"required canonical column of table {name} is not mapped")
        if not col.nullable and col.name in columns:
            spec = columns[col.name]
            if spec.source is None and spec.lookup is None and spec.const is None and spec.derive is None and (
                not spec.unpivot_value
            ):
                ctx.fail(f"{key}.columns.{col.name}", "a non-null canonical column cannot be mapped to nothing (~)")

    pseudo: dict[str, str] = {}
    p = d.get("pseudonymize")
    if p is not None:
        items = {c: "pid" for c in p} if isinstance(p, list) else p
        if not isinstance(items, dict):
            ctx.fail(f"{key}.pseudonymize", "must list canonical columns, or map them to id prefixes")
        for c, prefix in items.items():
            if c not in columns or (columns[c].source is None and columns[c].lookup is None):
                ctx.fail(f"{key}.pseudonymize.{c}", "only a column mapped from a source column can be pseudonymized")
            if TABLES[name].column(c).type != pa.string():
                ctx.fail(f"{key}.pseudonymize.{c}", "only text columns can be pseudonymized")
            if not re.fullmatch(r"[a-z][a-z0-9]*", str(prefix)):
                ctx.fail(f"{key}.pseudonymize.{c}", "prefix must be lower-case letters and digits")
            pseudo[str(c)] = str(prefix)
        # A personal source value must not also flow, unhashed, into another canonical column.
        origin_of = {c: (s.source, s.lookup) for c, s in columns.items() if s.source or s.lookup}
        for c in pseudo:
            for other, orig in origin_of.items():
                if other not in pseudo and orig == origin_of[c]:
                    ctx.fail(f"{key}.columns.{other}",
                             f"reads the same source as pseudonymized '{c}'; pseudonymize it too")
        if not top.get("salt"):
            ctx.fail("salt", "a mapping that pseudonymizes columns needs a salt")
    return TableMapping(
        table=name, sources=sources, csv=csv, timezone=tz, columns=columns, where=where, lookups=lookups,
        unpivot=unpivot, pseudonymize=pseudo,
    )


def parse_mapping(data: Any, *, path: str, sha256: str = "", definitions: dict | None = None) -> Mapping:
    """Validate a parsed mapping document; MappingError names the key at fault."""
    ctx = _Ctx(path)
    d = ctx.keys(data, _TOP_KEYS, "")
    if "name" not in d:
        ctx.fail("name", "required")
    if not isinstance(d.get("tables"), dict) or not d["tables"]:
        ctx.fail("tables", "a mapping maps at least one canonical table")
    top: dict[str, Any] = {
        "csv": _csv_options(ctx, d.get("csv"), "csv", CsvOptions()),
        "timezone": _timezone(ctx, d["timezone"], "timezone") if "timezone" in d else "UTC",
        "salt": "" if d.get("salt") is None else ctx.text(d["salt"], "salt"),
    }
    as_of = None
    if d.get("as_of") is not None:
        try:
            as_of = pd.Timestamp(str(d["as_of"]))
        except ValueError:
            ctx.fail("as_of", "must be an ISO-8601 instant such as 2026-03-31T23:59:59Z")
        if as_of.tzinfo is None:
            ctx.fail("as_of", "must carry a UTC offset or Z")
        as_of = as_of.tz_convert("UTC")
    digits = d.get("pseudonym_digits", PSEUDONYM_DIGITS)
    if not isinstance(digits, int) or not 6 <= digits <= 64:
        ctx.fail("pseudonym_digits", "must be a whole number from 6 to 64")
    tables = {str(t): _table(ctx, str(t), obj, top, definitions) for t, obj in d["tables"].items()}
    return Mapping(
        name=ctx.text(d["name"], "name"), path=path, sha256=sha256, tables=tables, salt=top["salt"],
        as_of=as_of, description=str(d.get("description") or ""), pseudonym_digits=digits,
    )


def load_mapping(path: str | Path, definitions: Any = None) -> Mapping:
    """The parsed, validated mapping at `path` (MappingError naming the key on any problem).

    `path` may also be a bare mapping name (`salesforce`) for config/mappings/<name>.yml. `definitions` (a
    config.Definitions or its data dict) resolves `bands: definitions`; by default config/definitions.yml is read.
    """
    p = Path(path)
    if not p.exists() and not p.suffix and len(p.parts) == 1:
        from analysis.config import MAPPINGS_DIR

        p = MAPPINGS_DIR / f"{p.name}.yml"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read mapping: {exc.strerror}", file=str(p), rule="mapping") from exc
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_Loader)  # noqa: S506 (a safe loader)
    except UnicodeDecodeError as exc:
        raise MappingError("mapping is not UTF-8 text", file=str(p), rule="yaml") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            file=str(p),
            row=(mark.line + 1) if mark else None,
            rule="yaml",
        ) from exc
    if definitions is None:
        from analysis.config import load_definitions

        definitions = load_definitions()
    defs = definitions.data if hasattr(definitions, "data") else definitions
    return parse_mapping(data, path=str(p), sha256=hashlib.sha256(raw).hexdigest(), definitions=defs)


def resolve_sources(raw_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Files under raw_dir matched by the first pattern that matches anything (sorted by name)."""
    for pat in patterns:
        hits = sorted(raw_dir / p for p in _glob.glob(pat, root_dir=raw_dir) if (raw_dir / p).is_file())
        if hits:
            return hits
    return []
