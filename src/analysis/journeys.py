"""Journeys for attribution, built in the engine (Ibis only) and aggregated there to distinct paths.

Only small aggregates leave the engine: one row per distinct path (not per journey), one row per channel
for time decay, a handful of rows for sourced/influenced and for the won rate. The expressions use Ibis
operations only (no SQL strings), so the same code runs on DuckDB, PySpark or a warehouse.

Which touches belong to which journey (the rules, in one place)
--------------------------------------------------------------------------------------------------
* A touch belongs to an opportunity when its ``opportunity_id`` names it, or, when that is empty, when
  its ``lead_id`` names a lead whose ``opportunity_id`` is the opportunity. Account-only touches (no lead,
  no opportunity) are not attributed to a journey.
* The journey window starts ``lookback_days`` (definitions ``attribution.lookback_days``) before the
  opportunity was created: one governed rule for every basis. The lead's own originating touch is kept
  even when it is logged just before the lead record, as long as it is inside the lookback.
* It ends at the conversion event, inclusive, and never after the as-of instant:
    - ``pipeline``: an opportunity created in the period; touches up to and including its creation;
      value = the opportunity amount. Non-converting journeys: MQLs of the period (``mql_at`` in the
      period) with no opportunity created by the as-of instant; touches from ``lookback_days`` before
      the MQL up to the as-of instant.
    - ``revenue``: a deal won in the period (``closed_at`` in the period); touches up to and including
      ``closed_at``; value = the amount. Non-converting journeys: deals lost in the period, touches up
      to ``closed_at``. The *creation touch* is the last touch at or before the opportunity's creation
      (``creation_index``, -1 when every touch came after creation).
  Touches after the conversion event (or after as-of) are excluded.
* Touches at the same instant are ordered by ``touchpoint_id`` so every path is deterministic.
* A *marketing touch* is a touch on a channel whose governed origin (definitions
  ``channels.origin_by_channel``) is ``marketing``, unless the source flags it ``touch_kind = 'sales'``
  (a sales rep's meeting at an event is sales activity, not a marketing programme).

Distinct paths
--------------------------------------------------------------------------------------------------
``path_table`` returns one row per (segment, path, creation_index) with ``journeys``, ``conversions``,
``nulls`` and ``value_cents`` (exact: the sum of amounts in integer cents). ``path`` is the sequence of
touch keys (channel by default) joined by ``" > "``; ``""`` for journeys without any touch in the window
(kept so totals reconcile; the models leave them unattributed and say so).

Transitions
--------------------------------------------------------------------------------------------------
``transition_table`` returns the order-1 Markov chain's transition counts directly: one row per
(from_state, to_state) with ``journeys`` and ``value_cents``, states being the touch keys plus ``(start)``,
``(conversion)`` and ``(null)``, counted with a window (``LAG``/``LEAD`` over each journey's touches in time
order) and a GROUP BY. At most (K + 1) x (K + 2) rows leave the engine, so the Markov model costs the same
for a thousand journeys or ten million, and no path string is parsed in Python.

Time decay is computed in the engine, per touch (``time_decay_table``): weight ``2 ** (-age / half_life)``
with the age in days from the touch to the conversion event, normalised within the journey, summed per
channel. Grouping by (path, age vector) instead would not collapse (ages are continuous, so there would be
one row per journey), and rounding ages to days would change the model; the per-touch computation is
exact and returns one row per channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import ibis
import pandas as pd

from analysis.engine import to_frame

SEP = " > "
BASES = ("pipeline", "revenue")
_LN2 = 0.6931471805599453
TS = ibis.dtype("timestamp('UTC', 6)")  # the canonical timestamp type (microseconds, UTC)


@dataclass(frozen=True)
class JourneyWindow:
    """The period [start, end) the conversions fall in, the as-of instant and the lookback in days."""

    start: pd.Timestamp
    end: pd.Timestamp
    as_of: pd.Timestamp
    lookback_days: int

    @classmethod
    def for_context(cls, ctx) -> JourneyWindow:
        """The window of a SectionContext: its period, as-of instant and the definitions' lookback."""
        return cls(
            start=ctx.period.start,
            end=ctx.period.end,
            as_of=ctx.as_of,
            lookback_days=int(ctx.definitions["attribution"]["lookback_days"]),
        )


def _ts(value: pd.Timestamp) -> ibis.Value:
    value = pd.Timestamp(value)
    value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    return ibis.literal(value, type=TS)


def _cents(amount: ibis.Value) -> ibis.Value:
    """Exact integer cents of a money column (decimal(18,2) in the canonical model); null -> 0."""
    return (amount.cast("decimal(20, 2)") * 100).round(0).cast("int64").fill_null(0)


def _in_period(col: ibis.Value, w: JourneyWindow) -> ibis.Value:
    return (col >= _ts(w.start)) & (col < _ts(w.end)) & (col <= _ts(w.as_of))


def _is_true(col: ibis.Value) -> ibis.Value:
    return col.fill_null(False)


def _journey_columns(t, *, jid, opp_id, lead_id, segment, win_start, win_end, creation_at, converted, cents):
    return t.select(
        jid=jid,
        opp_id=opp_id,
        lead_id=lead_id,
        segment=segment.cast("string"),
        win_start=win_start.cast(TS),
        win_end=win_end.cast(TS),
        creation_at=creation_at.cast(TS),
        converted=converted.cast("boolean"),
        cents=cents.cast("int64"),
    )


def journeys(tables: Mapping[str, ibis.Table], kind: str, w: JourneyWindow) -> ibis.Table:
    """One row per journey (in the engine): jid, opp_id, lead_id, segment, win_start, win_end, creation_at,
    converted, cents.

    kind: ``pipeline`` (opportunities created in the period + MQLs of the period without an opportunity),
    ``revenue`` (deals won + deals lost in the period), ``lifecycle`` (opportunities created in the period,
    window to close or as-of: sourced/influenced), ``closed`` (deals closed in the period: won rate).
    """
    o = tables["opportunities"]
    lookback = ibis.interval(days=int(w.lookback_days))
    as_of = _ts(w.as_of)
    null_str = ibis.null().cast("string")
    closed = _is_true(o.is_closed) | o.closed_at.notnull()

    def opp_journeys(sel, win_end, converted):
        t = o.filter(sel)
        return _journey_columns(
            t,
            jid=ibis.literal("o|") + t.opportunity_id,
            opp_id=t.opportunity_id,
            lead_id=null_str,
            segment=t.segment,
            win_start=t.created_at - lookback,
            win_end=win_end(t),
            creation_at=t.created_at,
            converted=converted(t),
            cents=_cents(t.amount),
        )

    if kind == "pipeline":
        conv = opp_journeys(_in_period(o.created_at, w), lambda t: t.created_at, lambda t: ibis.literal(True))
        if "leads" not in tables:
            return conv
        leads = tables["leads"]
        existing = o.filter(o.created_at <= as_of).select(oid=o.opportunity_id)
        mqls = leads.filter(_in_period(leads.mql_at, w))
        mqls = mqls.anti_join(existing, mqls.opportunity_id == existing.oid)
        nulls = _journey_columns(
            mqls,
            jid=ibis.literal("l|") + mqls.lead_id,
            opp_id=null_str,
            lead_id=mqls.lead_id,
            segment=mqls.segment,
            win_start=mqls.mql_at - lookback,
            win_end=as_of,
            creation_at=ibis.null().cast(TS),
            converted=ibis.literal(False),
            cents=ibis.literal(0).cast("int64"),
        )
        return conv.union(nulls)
    if kind in ("revenue", "closed"):  # the same journeys: won = converted, lost = not
        sel = _in_period(o.closed_at, w) & closed
        return opp_journeys(sel, lambda t: t.closed_at, lambda t: _is_true(t.is_won))
    if kind == "lifecycle":
        return opp_journeys(
            _in_period(o.created_at, w),
            lambda t: ibis.least(t.closed_at.fill_null(as_of), as_of),
            lambda t: ibis.literal(True),
        )
    raise ValueError(f"unknown journey kind '{kind}'")


def attributable_touches(
    tables: Mapping[str, ibis.Table],
    as_of: pd.Timestamp,
    origin_by_channel: Mapping[str, str],
    touch_key: str = "channel",
    journeys_t: ibis.Table | None = None,
) -> ibis.Table:
    """Touches up to as-of with their opportunity link, key (channel or campaign) and marketing flag.

    Columns: t_id, t_lead, t_opp, t_at, t_key, t_channel, t_mkt.
    touch_key: ``channel`` or ``campaign`` (campaign, falling back to the channel where it is empty).
    journeys_t: when given, only touches that can belong to one of these journeys are kept (linked directly to a
    journey's opportunity, or made by a lead of a journey or a lead whose opportunity is a journey's), before the
    lead link is resolved. Same rows for those journeys; the engine no longer joins every touch of the export with
    every lead (one period's journeys are a few thousand, the touchpoints tens of millions).
    """
    tp = tables["touchpoints"]
    tp = tp.filter((tp.occurred_at <= _ts(as_of)) & tp.channel.notnull())
    j_opps = None if journeys_t is None else journeys_t.filter(journeys_t.opp_id.notnull()).opp_id
    if "leads" in tables:
        leads = tables["leads"]
        lo = leads.select(lo_lead=leads.lead_id, lo_opp=leads.opportunity_id)
        if journeys_t is not None:
            j_leads = journeys_t.filter(journeys_t.lead_id.notnull()).lead_id
            lo = lo.filter(lo.lo_opp.isin(j_opps) | lo.lo_lead.isin(j_leads))
            tp = tp.filter(tp.opportunity_id.isin(j_opps) | tp.lead_id.isin(lo.lo_lead))
        tp = tp.left_join(lo, tp.lead_id == lo.lo_lead)
        opp_link = tp.opportunity_id.fill_null(tp.lo_opp)
    else:
        if journeys_t is not None:
            tp = tp.filter(tp.opportunity_id.isin(j_opps))
        opp_link = tp.opportunity_id
    if touch_key == "channel":
        key = tp.channel
    elif touch_key == "campaign":
        key = tp.campaign.fill_null(tp.channel)
    else:
        raise ValueError("touch_key must be 'channel' or 'campaign'")
    origin = tp.channel.substitute(dict(origin_by_channel), else_="unknown")
    is_mkt = (origin == "marketing") & (tp.touch_kind.fill_null("").lower() != "sales")
    return tp.select(
        t_id=tp.touchpoint_id,
        t_lead=tp.lead_id,
        t_opp=opp_link,
        t_at=tp.occurred_at,
        t_key=key.cast("string").replace(SEP, " - "),
        t_channel=tp.channel,
        t_mkt=is_mkt,
    )


def journey_touches(journeys_t: ibis.Table, touches: ibis.Table) -> ibis.Table:
    """Journey x touch rows inside each journey's window (inclusive at both ends)."""
    parts = []
    by_opp = journeys_t.filter(journeys_t.opp_id.notnull())
    parts.append(by_opp.join(touches, by_opp.opp_id == touches.t_opp))
    by_lead = journeys_t.filter(journeys_t.lead_id.notnull())
    parts.append(by_lead.join(touches, by_lead.lead_id == touches.t_lead))
    cols = [*journeys_t.columns, *touches.columns]
    rows = parts[0].select(*cols).union(parts[1].select(*cols))
    return rows.filter((rows.t_at >= rows.win_start) & (rows.t_at <= rows.win_end))


def _ordered(rows: ibis.Table, value: ibis.Value, where: ibis.Value | None = None) -> ibis.ArrayValue:
    """`value` of the journey's touches in time order (ties by touchpoint_id).

    Portable form: collect (time, id, value) structs and sort the array; PySpark cannot compile
    `collect(order_by=...)`, while ARRAY_SORT over structs orders by the fields in turn on every backend.
    """
    s = ibis.struct({"at": rows.t_at, "id": rows.t_id, "v": value})
    return s.collect(where=where).sort().map(lambda e: e.v)


def _first(arr: ibis.ArrayValue) -> ibis.Value:
    """First element or null (guarded: Spark's ANSI mode raises on an out-of-range index)."""
    return ibis.ifelse(arr.length() > 0, arr[0], ibis.null().cast(arr.type().value_type))


def journey_paths(journeys_t: ibis.Table, touches: ibis.Table) -> ibis.Table:
    """One row per journey with its path (" > "-joined keys, "" when untouched), touch count, creation index."""
    rows = journey_touches(journeys_t, touches)
    agg = rows.group_by(rows.jid).agg(
        keys=_ordered(rows, rows.t_key),
        n_touches=rows.t_id.count(),
        n_pre=(rows.t_at <= rows.creation_at).fill_null(False).cast("int64").sum(),
    )
    agg = agg.select(a_jid=agg.jid, keys=agg.keys, n_touches=agg.n_touches, n_pre=agg.n_pre)
    j = journeys_t.left_join(agg, journeys_t.jid == agg.a_jid)
    return j.select(
        *journeys_t.columns,
        path=j.keys.join(SEP).fill_null(""),
        n_touches=j.n_touches.fill_null(0),
        creation_index=(j.n_pre.fill_null(0) - 1).cast("int64"),
    )


START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"
SPECIAL_STATES = (START, CONVERSION, NULL)


def journey_transitions(journeys_t: ibis.Table, touches: ibis.Table) -> ibis.Table:
    """Order-1 transition counts of the journeys' paths, aggregated in the engine.

    Each touch row gives the transition from the previous touch of its journey (``LAG`` over the journey's
    touches in time order, ties by touchpoint_id then key: the order of ``_ordered``), or from ``(start)`` for
    the first touch; each journey's last touch (``LEAD`` is null) gives one more transition, to
    ``(conversion)`` or ``(null)``, carrying the journey's value in cents when it converted. Journeys without a
    touch have no transition (the models leave them unattributed, as with the paths).
    Columns: from_state, to_state, journeys, value_cents. One row per distinct transition: at most
    (K + 1) x (K + 2) rows for K channels, whatever the number of journeys.
    """
    rows = journey_touches(journeys_t, touches)
    win = ibis.window(group_by=rows.jid, order_by=[rows.t_at, rows.t_id, rows.t_key])
    rows = rows.select(
        t_key=rows.t_key,
        prev=rows.t_key.lag().over(win),
        nxt_at=rows.t_at.lead().over(win),  # null only on the journey's last touch (t_at is never null)
        converted=rows.converted,
        cents=rows.cents,
    )
    steps = rows.select(
        from_state=rows.prev.fill_null(START),
        to_state=rows.t_key,
        value_cents=ibis.literal(0).cast("int64"),
    )
    last = rows.filter(rows.nxt_at.isnull())
    ends = last.select(
        from_state=last.t_key,
        to_state=ibis.ifelse(last.converted, ibis.literal(CONVERSION), ibis.literal(NULL)),
        value_cents=ibis.ifelse(last.converted, last.cents, 0).cast("int64"),
    )
    t = steps.union(ends)
    return t.group_by(["from_state", "to_state"]).agg(journeys=t.count(), value_cents=t.value_cents.sum())


def basis_journeys(
    tables: Mapping[str, ibis.Table],
    basis: str,
    w: JourneyWindow,
    origin_by_channel: Mapping[str, str],
    touch_key: str = "channel",
) -> tuple[ibis.Table, ibis.Table]:
    """(journeys, their attributable touches) of a basis (``pipeline`` or ``revenue``): what the models read."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}")
    jt = journeys(tables, basis, w)
    return jt, attributable_touches(tables, w.as_of, origin_by_channel, touch_key, jt)


def transition_table(
    tables: Mapping[str, ibis.Table],
    basis: str,
    w: JourneyWindow,
    origin_by_channel: Mapping[str, str],
    touch_key: str = "channel",
) -> ibis.Table:
    """Order-1 transition counts of a basis (``pipeline`` or ``revenue``), aggregated in the engine.

    The same journeys and touches as ``path_table``; see ``journey_transitions`` for the columns.
    """
    jt, touches = basis_journeys(tables, basis, w, origin_by_channel, touch_key)
    return journey_transitions(jt, touches)


def path_table(
    tables: Mapping[str, ibis.Table],
    basis: str,
    w: JourneyWindow,
    origin_by_channel: Mapping[str, str],
    touch_key: str = "channel",
) -> ibis.Table:
    """Distinct paths of a basis (``pipeline`` or ``revenue``), aggregated in the engine.

    Columns: segment, path, creation_index, journeys, conversions, nulls, value_cents.
    """
    jt, touches = basis_journeys(tables, basis, w, origin_by_channel, touch_key)
    return distinct_paths(jt, touches)


def distinct_paths(journeys_t: ibis.Table, touches: ibis.Table) -> ibis.Table:
    """Journeys and their touches aggregated to distinct paths (``path_table``'s columns)."""
    jp = journey_paths(journeys_t, touches)
    conv = jp.converted.cast("int64")
    return jp.group_by(["segment", "path", "creation_index"]).agg(
        journeys=jp.jid.count(),
        conversions=conv.sum(),
        nulls=(1 - conv).sum(),
        value_cents=(jp.cents * conv).sum(),
    )


def time_decay_table(
    tables: Mapping[str, ibis.Table],
    basis: str,
    w: JourneyWindow,
    origin_by_channel: Mapping[str, str],
    half_life_days: float,
    touch_key: str = "channel",
) -> ibis.Table:
    """Time-decay credit per (segment, key) computed per touch in the engine (converting journeys only).

    weight = 2 ** (-age_days / half_life_days), age from the touch to the conversion event (opportunity
    creation for pipeline, close for revenue), normalised to 1 within each journey. Columns: segment, key,
    weight_count (sum of normalised weights = conversions credited) and weight_cents (weights x amount).
    """
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}")
    jt = journeys(tables, basis, w)
    jt = jt.filter(jt.converted)
    touches = attributable_touches(tables, w.as_of, origin_by_channel, touch_key, jt)
    rows = journey_touches(jt, touches)
    age = (rows.win_end.epoch_seconds() - rows.t_at.epoch_seconds()).cast("float64") / 86400.0
    rows = rows.mutate(t_w=(-age * (_LN2 / float(half_life_days))).exp())
    rows = rows.mutate(t_share=rows.t_w / rows.t_w.sum().over(ibis.window(group_by=rows.jid)))
    return rows.group_by(segment=rows.segment, key=rows.t_key).agg(
        weight_count=rows.t_share.sum(),
        weight_cents=(rows.t_share * rows.cents.cast("float64")).sum(),
    )


def lifecycle_table(
    tables: Mapping[str, ibis.Table], w: JourneyWindow, origin_by_channel: Mapping[str, str]
) -> ibis.Table:
    """Opportunities created in the period by marketing role, for sourced vs influenced pipeline.

    Per opportunity: the first touch before creation (channel, marketing or not), whether any marketing
    touch came before creation, and whether one came after creation during the open lifecycle (to close or
    as-of). Columns: segment, first_channel, first_marketing, marketing_before, marketing_after,
    opportunities, value_cents. Opportunities without touches have first_channel null and False flags.
    """
    jt = journeys(tables, "lifecycle", w)
    touches = attributable_touches(tables, w.as_of, origin_by_channel, "channel", jt)
    rows = journey_touches(jt, touches)
    pre = rows.t_at <= rows.creation_at
    agg = rows.group_by(rows.jid).agg(
        firsts=_ordered(rows, rows.t_channel, where=pre),
        first_mkts=_ordered(rows, rows.t_mkt, where=pre),
        mkt_pre=(rows.t_mkt & pre).any(),
        mkt_post=(rows.t_mkt & ~pre).any(),
    )
    agg = agg.select(
        a_jid=agg.jid,
        first_channel=_first(agg.firsts),
        first_marketing=_first(agg.first_mkts),
        mkt_pre=agg.mkt_pre,
        mkt_post=agg.mkt_post,
    )
    j = jt.left_join(agg, jt.jid == agg.a_jid)
    j = j.select(
        segment=j.segment,
        first_channel=j.first_channel,
        first_marketing=j.first_marketing.fill_null(False),
        marketing_before=j.mkt_pre.fill_null(False),
        marketing_after=j.mkt_post.fill_null(False),
        cents=j.cents,
        jid=j.jid,
    )
    return j.group_by(["segment", "first_channel", "first_marketing", "marketing_before", "marketing_after"]).agg(
        opportunities=j.jid.count(), value_cents=j.cents.sum()
    )


def closed_table(
    tables: Mapping[str, ibis.Table], w: JourneyWindow, origin_by_channel: Mapping[str, str]
) -> ibis.Table:
    """Deals closed in the period by segment, marketing touch (any, from lookback start to close) and outcome.

    Columns: segment, marketing, won, deals, value_cents.
    """
    jt = journeys(tables, "closed", w)
    touches = attributable_touches(tables, w.as_of, origin_by_channel, "channel", jt)
    rows = journey_touches(jt, touches)
    agg = rows.group_by(rows.jid).agg(mkt=rows.t_mkt.any())
    agg = agg.select(a_jid=agg.jid, mkt=agg.mkt)
    j = jt.left_join(agg, jt.jid == agg.a_jid)
    j = j.select(segment=j.segment, marketing=j.mkt.fill_null(False), won=j.converted, cents=j.cents, jid=j.jid)
    return j.group_by(["segment", "marketing", "won"]).agg(deals=j.jid.count(), value_cents=j.cents.sum())


# ------------------------------------------------------------------------------------------- fetching


def fetch_paths(expr: ibis.Table, con: ibis.BaseBackend | None = None) -> pd.DataFrame:
    """Execute a path_table expression: sorted rows, integer counts, exact cents and value (float) last."""
    df = to_frame(expr, con)
    for col in ("creation_index", "journeys", "conversions", "nulls", "value_cents"):
        df[col] = pd.to_numeric(df[col]).fillna(0).astype("int64")
    df["segment"] = df["segment"].fillna("").astype(str)
    df["path"] = df["path"].fillna("").astype(str)
    df["value"] = df["value_cents"] / 100.0
    return df.sort_values(["segment", "path", "creation_index"], kind="mergesort").reset_index(drop=True)


def fetch_transitions(expr: ibis.Table, con: ibis.BaseBackend | None = None) -> pd.DataFrame:
    """Execute a transition_table expression: rows sorted by (from_state, to_state), integer counts and cents."""
    df = to_frame(expr, con)
    for col in ("journeys", "value_cents"):
        df[col] = pd.to_numeric(df[col]).fillna(0).astype("int64")
    for col in ("from_state", "to_state"):
        df[col] = df[col].astype(str)
    return df.sort_values(["from_state", "to_state"], kind="mergesort").reset_index(drop=True)


def fetch_sorted(expr: ibis.Table, con: ibis.BaseBackend | None, keys: list[str]) -> pd.DataFrame:
    """Execute a small aggregate and sort it by `keys` (nulls last) so the result is deterministic."""
    df = to_frame(expr, con)
    return df.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)
