"""Attribution comparison: eight position models, time decay, Markov and Shapley over distinct paths.

Input: distinct paths (``analysis.journeys.path_table``: segment, path, creation_index, conversions, nulls,
value_cents), so every model scales with the number of distinct paths, not journeys. Output: one tidy frame
per model (channel, model, basis, credit_value, credit_count, credit_cents, credit_share) whose credits add up
*exactly* to the total they divide: value in cents and counts in hundredths are allocated with the
largest-remainder rule (``allocate``), so rounding never loses or invents a cent. ``credit_share`` is the share
of the credited value; the two-truth table uses shares of the credited conversions.

What each model divides: the conversions (and their value) of journeys with at least one touch. Journeys
without a touch in the window cannot be credited to a channel; ``coverage`` reports them.

Position models (one function, ``position_credits``; weights from definitions ``attribution.position_weights``)
--------------------------------------------------------------------------------------------------------
Anchors: ``first`` (first touch), ``last`` (last touch), ``creation`` (the creation touch: the last touch at or
before the opportunity was created; on pipeline journeys this is the last touch), ``won`` (the last touch at or
before the close: revenue journeys only). Weights: ``first_touch`` = {first: 1}, ``last_touch`` = {last: 1},
``linear`` = {rest: 1}, the others from the definitions (U 40/20/40, W 30/30/30 + 10, full path 22.5 x 4 + 10,
J 20/60 + 20, inverse J 60/20 + 20). Rules, applied per journey:
  1. anchors that name the same touch add their weights (on a pipeline journey W gives 30% to the first and
     60% to the last touch, which is also the creation touch; a 1-touch journey gets 100%);
  2. ``rest`` is shared equally by the touches that are no anchor;
  3. when there are no such touches (journeys shorter than the anchors), or an anchor does not exist on the
     journey (``won`` on pipeline journeys, ``creation`` when every touch came after the creation), the
     weights present are renormalised to 1: a 2-touch U-shaped journey is 50/50, a 2-touch W-shaped pipeline
     journey 1/3 first, 2/3 last.
So every journey's weights sum to 1 and a model never "eats" conversions.

Time decay: computed per touch in the engine (``analysis.journeys.time_decay_table``), allocated here.

Markov (``markov_removal_effects``): an absorbing chain of order k (definitions ``attribution.markov_order``)
built from transition counts (start -> c1 -> ... -> cn -> conversion or null, each transition weighted by the
journeys), counted over the engine's distinct paths (``transition_counts``), so the cost follows distinct paths,
not touch rows. The engine can also count them itself (``journeys.transition_table``, at most (K + 1) x (K + 2)
rows, ``markov_removal_effects_from_transitions``) when only Markov is wanted; the pack does not, because it
already has the distinct paths the other models need and a second pass over the touch rows costs more than
counting ~10^5 paths in numpy. Both routes build the same chain and call one solver (``_solve_chain``). The conversion
probability and each channel's removal effect are solved exactly with ``numpy.linalg.solve`` on the transient
states (no simulation): removing a channel redirects every transition into a state containing it to null.
RE_c = 1 - P(-c) / P.
Value uses the same chain with the value of the conversions leaving each state as the reward, so the value
removal effect is 1 - E(-c) / E, E the expected converted value per journey. Self-loops (a channel followed by
itself) do not change absorption probabilities, so keeping them is harmless. Credits are proportional to the
removal effects and normalised to the total (as ChannelAttribution does).

Shapley (``shapley_values``; Zhao et al. 2018, "Shapley value methods for attribution modeling in online
advertising"): players are the channels present in converting journeys; the value of a coalition S is the
conversions (or value) of journeys whose channel *set* is a subset of S. For up to
``attribution.shapley_exact_max_channels`` channels the Shapley value is computed exactly by enumerating the
2^K coalitions (subset sums by a zeta transform). This value function is a sum of unanimity games, so the
Shapley value also has Zhao et al.'s closed ("simplified") form: each journey's conversions shared equally by
its distinct channels. Beyond the enumeration limit the kit uses that closed form, which is exact, rather
than an approximation; ordered-permutation sampling (seed from definitions ``statistics.settings.seed``) is
available as ``method="sample"`` and is tested against the exact values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analysis import journeys as jr
from analysis import metrics as mt

SEP = jr.SEP
BASES = jr.BASES
HEURISTIC_WEIGHTS: dict[str, dict[str, float]] = {
    "first_touch": {"first": 1.0},
    "last_touch": {"last": 1.0},
    "linear": {"rest": 1.0},
}
POSITION_ORDER = ("first_touch", "last_touch", "linear", "u_shaped", "w_shaped", "full_path", "j_shaped", "inverse_j")
MODEL_ORDER = (*POSITION_ORDER, "time_decay", "markov", "shapley")
ANCHORS = ("first", "creation", "won", "last")
COUNT_SCALE = 100  # credit counts are allocated in hundredths of a conversion
CREDIT_COLUMNS = ["channel", "model", "basis", "credit_value", "credit_count", "credit_cents", "credit_share"]


# ----------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AttributionSettings:
    """The governed attribution settings (definitions ``attribution`` + channel origins + seed)."""

    lookback_days: int = 180
    position_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    half_life_days: float = 7.0
    markov_order: int = 1
    shapley_exact_max_channels: int = 15
    chosen_model: str = "w_shaped"
    origin_by_channel: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    min_cell_size: int = 30
    exact_test_below: float = 5
    confidence: float = 0.95
    trailing_months: int = 12

    @classmethod
    def from_definitions(cls, definitions) -> AttributionSettings:
        a = definitions["attribution"]
        stats = definitions["statistics"]["settings"]
        return cls(
            lookback_days=int(a["lookback_days"]),
            position_weights={k: dict(v) for k, v in (a.get("position_weights") or {}).items()},
            half_life_days=float(a["time_decay_half_life_days"]),
            markov_order=int(a.get("markov_order", 1)),
            shapley_exact_max_channels=int(a.get("shapley_exact_max_channels", 15)),
            chosen_model=str(a.get("chosen_model", "w_shaped")),
            origin_by_channel=dict(definitions["channels"]["origin_by_channel"]),
            seed=int(stats["seed"]),
            min_cell_size=int(stats.get("min_cell_size", 30)),
            exact_test_below=float(stats.get("exact_test_below", 5)),
            confidence=float(stats.get("confidence", 0.95)),
            trailing_months=int(stats.get("trend_months", 12)),
        )

    def weights(self, model: str) -> dict[str, float]:
        """Position weights of a position model (first/last/linear built in, the rest from the definitions)."""
        if model in HEURISTIC_WEIGHTS:
            return dict(HEURISTIC_WEIGHTS[model])
        if model in self.position_weights:
            return {k: float(v) for k, v in self.position_weights[model].items()}
        raise KeyError(f"no position weights for model '{model}' in definitions attribution.position_weights")

    @property
    def position_models(self) -> list[str]:
        extra = [m for m in self.position_weights if m not in POSITION_ORDER]
        return [m for m in POSITION_ORDER if m in HEURISTIC_WEIGHTS or m in self.position_weights] + sorted(extra)


# ----------------------------------------------------------------------------------------- path sets


@dataclass(frozen=True)
class PathSet:
    """Distinct paths parsed once: channel codes as one flat array with per-path offsets (CSR layout).

    Only paths with at least one touch and at least one journey are kept. ``channels`` is sorted; token
    codes index into it.
    """

    channels: np.ndarray  # (K,) str
    codes: np.ndarray  # (T,) int64, flat tokens
    offsets: np.ndarray  # (P+1,) int64
    creation_index: np.ndarray  # (P,) int64, -1 = none
    conversions: np.ndarray  # (P,) int64
    nulls: np.ndarray  # (P,) int64
    value_cents: np.ndarray  # (P,) int64

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_paths(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def path_of_token(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_paths), self.lengths)

    @cached_property
    def position(self) -> np.ndarray:
        return np.arange(len(self.codes)) - np.repeat(self.offsets[:-1], self.lengths)

    @property
    def total_conversions(self) -> int:
        return int(self.conversions.sum())

    @property
    def total_cents(self) -> int:
        return int(self.value_cents.sum())

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, path_col: str = "path", sep: str = SEP) -> PathSet:
        """Parse a distinct-path frame. ``path`` is a " > "-joined string or a list of channels.

        Optional columns: creation_index (default: the last touch), nulls (0), value_cents (or value in major
        units, rounded to cents; default 0).
        """
        f = frame
        conv = _int_col(f, "conversions")
        nulls = _int_col(f, "nulls")
        if "value_cents" in f:
            cents = _int_col(f, "value_cents")
        elif "value" in f:
            cents = np.rint(f["value"].to_numpy(dtype=float) * 100).astype(np.int64)
        else:
            cents = np.zeros(len(f), np.int64)
        lengths, flat_codes, channels = _tokenize(f[path_col], sep)
        ci = _int_col(f, "creation_index", default=None)
        if ci is None:
            ci = lengths - 1
        keep = (lengths > 0) & ((conv + nulls) > 0)
        tok_keep = np.repeat(keep, lengths)
        codes = flat_codes[tok_keep]
        used = np.flatnonzero(np.bincount(codes, minlength=len(channels)))
        if len(used) < len(channels):  # channels seen only in dropped paths
            remap = np.full(len(channels), -1, np.int64)
            remap[used] = np.arange(len(used))
            codes, channels = remap[codes], channels[used]
        lengths = lengths[keep]
        return cls(
            channels=channels,
            codes=codes.astype(np.int64),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            creation_index=ci[keep].astype(np.int64),
            conversions=conv[keep],
            nulls=nulls[keep],
            value_cents=cents[keep],
        )


def _tokenize(paths: pd.Series, sep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens per path, flat channel codes, sorted channel names) of " > "-joined strings or lists.

    Arrow compute splits the strings and dictionary-encodes the tokens (C++, no Python object per token), so
    parsing scales with the bytes of the distinct paths. An empty string is a path with no touch.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(paths) and not isinstance(paths.iloc[0], str):
        values = [sep.join(map(str, p)) for p in paths]
    else:
        values = paths.fillna("").tolist()
    arr = pa.array(values, type=pa.large_string())  # from a list: much faster than from a pandas Series
    empty = pc.equal(arr, "").to_numpy(zero_copy_only=False)
    lists = pc.split_pattern(arr, pattern=sep)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(lists)  # an empty path splits into one "" token, dropped below (cheaper than filtering)
    if isinstance(flat, pa.ChunkedArray):
        flat = flat.combine_chunks()
    enc = pc.dictionary_encode(flat)
    idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    if empty.any():
        idx = idx[np.repeat(~empty, lengths)]
        lengths[empty] = 0
        used = np.bincount(idx, minlength=len(names)) > 0
        if not used.all():  # "" only came from the empty paths
            remap = np.cumsum(used) - 1
            idx, names = remap[idx], names[used]
    return (lengths, *_sorted_codes(idx, names))


def _sorted_codes(idx: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-code so that codes index the channel names in sorted order."""
    order = np.argsort(names, kind="mergesort")
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    return (rank[idx] if len(idx) else idx), names[order]


def _int_col(f: pd.DataFrame, name: str, default: int | None = 0) -> np.ndarray | None:
    if name not in f:
        return None if default is None else np.full(len(f), default, np.int64)
    return pd.to_numeric(f[name]).fillna(0).to_numpy(dtype=np.int64)


def coverage(paths: pd.DataFrame) -> dict[str, float]:
    """Conversions and value with and without touches (the models credit only the touched journeys)."""
    touched = paths["path"].astype(str) != ""
    conv = paths["conversions"].astype("int64")
    cents = paths["value_cents"].astype("int64")
    return {
        "conversions": int(conv.sum()),
        "conversions_attributed": int(conv[touched].sum()),
        "value_cents": int(cents.sum()),
        "value_cents_attributed": int(cents[touched].sum()),
        "nulls": int(paths["nulls"].sum()),
    }


# ----------------------------------------------------------------------------------------- allocation


def allocate(total: int, weights: Sequence[float], labels: Sequence[str] | None = None) -> np.ndarray:
    """Split an integer total (cents, hundredths) in proportion to non-negative weights, exactly.

    Largest-remainder (Hamilton) rule: every share gets the floor of its quota, the units left go one each to
    the largest remainders; ties go to the earlier label in sorted order. The result sums to ``total``.
    All-zero weights allocate nothing (only valid when total is 0).
    """
    w = np.asarray(weights, dtype=float)
    total = int(total)
    if w.size == 0:
        if total:
            raise ValueError("cannot allocate a non-zero total over no channels")
        return np.zeros(0, np.int64)
    w = np.where(np.abs(w) <= 1e-12 * np.abs(w).max(), 0.0, w)  # float noise (e.g. -1e-17) is zero
    if np.any(w < 0):
        raise ValueError("allocation weights must be non-negative")
    s = w.sum()
    if s <= 0:
        if total:
            raise ValueError("cannot allocate a non-zero total with all-zero weights")
        return np.zeros(w.size, np.int64)
    quota = w / s * total
    base = np.floor(quota).astype(np.int64)
    left = total - int(base.sum())
    if left:
        rem = quota - base
        names = np.asarray(labels if labels is not None else np.arange(w.size)).astype(str)
        name_rank = np.argsort(np.argsort(names, kind="mergesort"), kind="mergesort")
        order = np.lexsort((name_rank, -rem))
        base[order[:left]] += 1
    return base


def credit_frame(
    channels: Sequence[str],
    raw_count: Sequence[float],
    raw_cents: Sequence[float],
    *,
    model: str,
    basis: str,
    total_conversions: int,
    total_cents: int,
) -> pd.DataFrame:
    """The tidy credit frame of one model: raw (float) credits allocated exactly to the totals."""
    channels = list(channels)
    cents = allocate(total_cents, raw_cents, channels)
    hundredths = allocate(total_conversions * COUNT_SCALE, raw_count, channels)
    out = pd.DataFrame(
        {
            "channel": channels,
            "model": model,
            "basis": basis,
            "credit_value": cents / 100.0,
            "credit_count": hundredths / COUNT_SCALE,
            "credit_cents": cents.astype(np.int64),
            "credit_share": cents / total_cents if total_cents else np.zeros(len(channels)),
        }
    )
    if not out["channel"].is_monotonic_increasing:
        out = out.sort_values("channel", kind="mergesort").reset_index(drop=True)
    return out


# ----------------------------------------------------------------------------------------- position models


@dataclass(frozen=True)
class _Positions:
    """A position model resolved on a path set: per anchor the token index, path ids and weight; per path the
    weight of each non-anchor touch and the normaliser (present anchors + rest)."""

    anchors: list[tuple[np.ndarray, np.ndarray, float]]  # (token indices, path ids, weight)
    rest_each: np.ndarray  # (P,)
    total: np.ndarray  # (P,)


def _resolve_positions(ps: PathSet, weights: Mapping[str, float], basis: str) -> _Positions:
    unknown = set(weights) - {*ANCHORS, "rest"}
    if unknown:
        raise ValueError(f"unknown position anchors {sorted(unknown)} (known: {', '.join(ANCHORS)}, rest)")
    n = ps.lengths
    anchor_pos = {
        "first": np.zeros_like(n),
        "last": n - 1,
        "creation": np.where(ps.creation_index < n, ps.creation_index, n - 1),
        "won": (n - 1) if basis == "revenue" else np.full_like(n, -1),
    }
    used = [a for a in ANCHORS if float(weights.get(a, 0.0)) > 0]
    present_w = np.zeros(ps.n_paths, dtype=float)
    slots = np.full((ps.n_paths, max(1, len(used))), -1, np.int64)
    anchors = []
    for j, a in enumerate(used):
        ap = anchor_pos[a]
        exists = ap >= 0
        present_w += np.where(exists, float(weights[a]), 0.0)
        slots[:, j] = np.where(exists, ap, -1)
        paths = np.flatnonzero(exists)
        anchors.append((ps.offsets[:-1][paths] + ap[paths], paths, float(weights[a])))
    if len(used) > 1:  # anchors on the same touch count once when counting the touches left for `rest`
        srt = np.sort(slots, axis=1)
        distinct = (srt >= 0) & np.concatenate([np.ones((ps.n_paths, 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
        n_anchor = distinct.sum(axis=1)
    else:
        n_anchor = (slots[:, 0] >= 0).astype(np.int64)
    n_rest = n - n_anchor
    rest = float(weights.get("rest", 0.0))
    has_rest = n_rest > 0
    rest_each = np.where(has_rest, rest / np.maximum(n_rest, 1), 0.0)
    total = present_w + np.where(has_rest, rest, 0.0)
    if np.any(total <= 0):
        raise ValueError("position weights leave some journeys with no weight")
    return _Positions(anchors, rest_each, total)


def _anchor_mask(ps: PathSet, pos: _Positions) -> np.ndarray:
    mask = np.zeros(len(ps.codes), dtype=bool)
    for idx, _, _ in pos.anchors:
        mask[idx] = True
    return mask


def position_token_weights(ps: PathSet, weights: Mapping[str, float], basis: str) -> np.ndarray:
    """Per-token weight of a position model; each path's weights sum to 1 (rules in the module docstring)."""
    pos = _resolve_positions(ps, weights, basis)
    pid = ps.path_of_token
    raw = np.where(_anchor_mask(ps, pos), 0.0, pos.rest_each[pid])
    for idx, _, w in pos.anchors:
        raw[idx] += w  # one position per path and anchor: no repeated index within one anchor
    return raw / pos.total[pid]


def position_credits(ps: PathSet, weights: Mapping[str, float], basis: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-channel credits (conversions, cents) of a position model, before allocation.

    Anchor credit is gathered per path (O(paths)); only the shared `rest` needs one pass over the tokens.
    """
    pos = _resolve_positions(ps, weights, basis)
    k = len(ps.channels)
    f_cnt = ps.conversions / pos.total
    f_val = ps.value_cents / pos.total
    cnt = np.zeros(k)
    val = np.zeros(k)
    for idx, paths, w in pos.anchors:
        c = ps.codes[idx]
        cnt += np.bincount(c, weights=w * f_cnt[paths], minlength=k)
        val += np.bincount(c, weights=w * f_val[paths], minlength=k)
    if np.any(pos.rest_each > 0):
        keep = ~_anchor_mask(ps, pos)
        pid = ps.path_of_token[keep]
        codes = ps.codes[keep]
        cnt += np.bincount(codes, weights=(pos.rest_each * f_cnt)[pid], minlength=k)
        val += np.bincount(codes, weights=(pos.rest_each * f_val)[pid], minlength=k)
    return cnt, val


def position_model(
    paths: pd.DataFrame | PathSet, model: str, basis: str, settings: AttributionSettings | None = None,
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Tidy credits of a position model (first_touch, last_touch, linear, u_shaped, w_shaped, ...)."""
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    if weights is None:
        weights = (settings or AttributionSettings()).weights(model)
    cnt, val = position_credits(ps, weights, basis)
    return credit_frame(ps.channels, cnt, val, model=model, basis=basis,
                        total_conversions=ps.total_conversions, total_cents=ps.total_cents)


def first_touch(paths, basis: str = "pipeline") -> pd.DataFrame:
    """All credit to the first touch."""
    return position_model(paths, "first_touch", basis)


def last_touch(paths, basis: str = "pipeline") -> pd.DataFrame:
    """All credit to the last touch (before the conversion event)."""
    return position_model(paths, "last_touch", basis)


def linear(paths, basis: str = "pipeline") -> pd.DataFrame:
    """Credit shared equally by every touch of the journey."""
    return position_model(paths, "linear", basis)


def u_shaped(paths, basis: str, settings: AttributionSettings) -> pd.DataFrame:
    return position_model(paths, "u_shaped", basis, settings)


def w_shaped(paths, basis: str, settings: AttributionSettings) -> pd.DataFrame:
    return position_model(paths, "w_shaped", basis, settings)


def full_path(paths, basis: str, settings: AttributionSettings) -> pd.DataFrame:
    return position_model(paths, "full_path", basis, settings)


def j_shaped(paths, basis: str, settings: AttributionSettings) -> pd.DataFrame:
    return position_model(paths, "j_shaped", basis, settings)


def inverse_j(paths, basis: str, settings: AttributionSettings) -> pd.DataFrame:
    return position_model(paths, "inverse_j", basis, settings)


# ----------------------------------------------------------------------------------------- time decay


def time_decay(weights: pd.DataFrame, basis: str, total_conversions: int, total_cents: int,
               channels: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy time-decay credits from the engine's per-channel weights (``journeys.time_decay_table``).

    ``weights``: key (or channel), weight_count, weight_cents (any segment rows are summed). The totals are
    those of the touched converting journeys, which the weights already sum to (up to float rounding).
    """
    key = "key" if "key" in weights else "channel"
    g = weights.groupby(key, sort=True)[["weight_count", "weight_cents"]].sum()
    if channels is not None:
        g = g.reindex(sorted(set(g.index) | set(channels)), fill_value=0.0)
    return credit_frame(g.index.astype(str), g["weight_count"].to_numpy(), g["weight_cents"].to_numpy(),
                        model="time_decay", basis=basis, total_conversions=total_conversions,
                        total_cents=total_cents)


# ----------------------------------------------------------------------------------------- Markov


@dataclass(frozen=True)
class MarkovResult:
    channels: np.ndarray
    removal_effect: np.ndarray  # conversion removal effects, per channel
    removal_effect_value: np.ndarray  # value removal effects
    conversion_probability: float
    expected_value_cents: float
    n_states: int

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"channel": self.channels, "removal_effect": self.removal_effect,
                             "removal_effect_value": self.removal_effect_value})


def _markov_states(ps: PathSet, order: int) -> tuple[np.ndarray, int]:
    """Per-token state code of an order-k chain: the last k channels (1-based codes, 0 = before the start)."""
    base = len(ps.channels) + 1
    if order < 1:
        raise ValueError("markov order must be >= 1")
    if order * math.log2(base) > 62:
        raise ValueError(f"markov order {order} too high for {base - 1} channels")
    pos = ps.position
    state = np.zeros(len(ps.codes), np.int64)
    for j in range(order):
        src = np.arange(len(ps.codes)) - j
        ok = pos >= j
        tok = np.where(ok, ps.codes[np.where(ok, src, 0)] + 1, 0)
        state += tok * base**j
    return state, base


@dataclass(frozen=True)
class _Chain:
    """An absorbing chain as counts: S transient states (the start among them), conversion and null absorbing.

    ``counts[i, j]`` journeys moving from transient state i to j; ``conv``/``null`` journeys leaving each state
    to conversion / null, ``value`` the cents of the conversions leaving it; ``contains[c, s]`` whether state s
    holds channel c (removing c redirects every transition into s to null).
    """

    counts: np.ndarray  # (S, S) float
    conv: np.ndarray  # (S,) float
    null: np.ndarray  # (S,) float
    value: np.ndarray  # (S,) float, cents
    start: int
    contains: np.ndarray  # (K, S) bool


def _solve_chain(channels: np.ndarray, ch: _Chain) -> MarkovResult:
    """Conversion probability, expected value and every channel's removal effects, solved exactly.

    The one solver of the kit's Markov model: both the path route (any order) and the engine's transition
    table (order 1) build a ``_Chain`` and call this. h = r + Q h on the transient states, so h = (I - Q)^-1 r
    with ``numpy.linalg.solve``; removing channel c zeroes Q's columns of the states that hold c.
    """
    k, s = len(channels), len(ch.conv)
    out = ch.counts.sum(axis=1) + ch.conv + ch.null
    out = np.where(out > 0, out, 1.0)
    q = ch.counts / out[:, None]
    rhs = np.stack([ch.conv / out, ch.value / out], axis=1)
    ident = np.eye(s)
    base_sol = np.linalg.solve(ident - q, rhs)[ch.start]
    p, e = float(base_sol[0]), float(base_sol[1])
    re = np.zeros(k)
    rev = np.zeros(k)
    for c in range(k):
        q_c = np.where(ch.contains[c][None, :], 0.0, q)
        sol = np.linalg.solve(ident - q_c, rhs)[ch.start]
        re[c] = 1.0 - sol[0] / p if p > 0 else 0.0
        rev[c] = 1.0 - sol[1] / e if e > 0 else 0.0
    re = np.clip(re, 0.0, 1.0)
    rev = np.clip(rev, 0.0, 1.0)
    return MarkovResult(channels, re, rev, p, e, s)


def _chain_from_paths(ps: PathSet, order: int) -> _Chain:
    """Count an order-k chain's transitions over the distinct paths, each weighted by the path's journeys."""
    k = len(ps.channels)
    if order == 1:  # states are the channels themselves: no encoding or compaction needed
        base, uniq, tok_idx = k + 1, np.arange(1, k + 1), ps.codes
    else:
        tok_state, base = _markov_states(ps, order)
        uniq, tok_idx = np.unique(tok_state, return_inverse=True)
    start = len(uniq)  # index of the start state
    s = start + 1
    jn = (ps.conversions + ps.nulls).astype(float)
    first = ps.offsets[:-1]
    last = ps.offsets[1:] - 1
    # start -> first state, then state -> next state within each path
    counts = np.bincount(start * s + tok_idx[first], weights=jn, minlength=s * s)
    if len(tok_idx) > ps.n_paths:
        pair = tok_idx[:-1] * s + tok_idx[1:]  # consecutive tokens; pairs that cross two paths get weight 0
        w_next = np.repeat(jn, ps.lengths)[:-1]
        w_next[last[:-1]] = 0.0
        counts += np.bincount(pair, weights=w_next, minlength=s * s)
    conv = np.bincount(tok_idx[last], weights=ps.conversions.astype(float), minlength=s)
    null = np.bincount(tok_idx[last], weights=ps.nulls.astype(float), minlength=s)
    value = np.bincount(tok_idx[last], weights=ps.value_cents.astype(float), minlength=s)
    # channels in each state: decode the base-(K+1) digits (0 = before the start)
    digits = np.stack([(uniq // base**j) % base for j in range(order)], axis=1)  # (S-1, order)
    contains = np.zeros((k, s), bool)
    for c in range(k):
        contains[c, :start] = (digits == c + 1).any(axis=1)
    return _Chain(counts.reshape(s, s), conv, null, value, start, contains)


def markov_removal_effects(paths: pd.DataFrame | PathSet, order: int = 1) -> MarkovResult:
    """Exact removal effects of an order-k absorbing Markov chain over distinct paths (no simulation)."""
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    k = len(ps.channels)
    if order < 1:
        raise ValueError("markov order must be >= 1")
    if ps.n_paths == 0 or k == 0:
        return MarkovResult(ps.channels, np.zeros(k), np.zeros(k), 0.0, 0.0, 0)
    return _solve_chain(ps.channels, _chain_from_paths(ps, order))


TRANSITION_COLUMNS = ["from_state", "to_state", "journeys", "value_cents"]


def _chain_from_transitions(transitions: pd.DataFrame) -> tuple[np.ndarray, _Chain]:
    """(sorted channels, order-1 chain) of a transition table (``journeys.transition_table`` columns)."""
    t = transitions
    src = t["from_state"].astype(str).to_numpy()
    dst = t["to_state"].astype(str).to_numpy()
    n = pd.to_numeric(t["journeys"]).to_numpy(dtype=float)
    cents = pd.to_numeric(t["value_cents"]).to_numpy(dtype=float) if "value_cents" in t else np.zeros(len(t))
    keep = n > 0
    src, dst, n, cents = src[keep], dst[keep], n[keep], cents[keep]
    if np.isin(src, [jr.CONVERSION, jr.NULL]).any() or (dst == jr.START).any():
        raise ValueError("a channel is named like a special state ((start), (conversion), (null)); rename it")
    to_conv, to_null = dst == jr.CONVERSION, dst == jr.NULL
    from_start = src == jr.START
    channels = np.unique(np.concatenate([src[~from_start], dst[~(to_conv | to_null)]])).astype(object)
    k = len(channels)
    s = k + 1  # states 0..K-1 the channels (sorted, as PathSet codes), K the start
    si = np.where(from_start, k, np.searchsorted(channels, src))
    di = np.searchsorted(channels, dst)
    step = ~(to_conv | to_null)
    counts = np.bincount(si[step] * s + di[step], weights=n[step], minlength=s * s).reshape(s, s)
    conv = np.bincount(si[to_conv], weights=n[to_conv], minlength=s)
    null = np.bincount(si[to_null], weights=n[to_null], minlength=s)
    value = np.bincount(si[to_conv], weights=cents[to_conv], minlength=s)
    contains = np.zeros((k, s), bool)
    contains[np.arange(k), np.arange(k)] = True
    return channels, _Chain(counts, conv, null, value, k, contains)


def markov_removal_effects_from_transitions(transitions: pd.DataFrame) -> MarkovResult:
    """Exact order-1 removal effects from transition counts (the engine's ``journeys.transition_table``).

    The same solver as ``markov_removal_effects``; equal to it on the distinct paths the counts come from.
    """
    channels, ch = _chain_from_transitions(transitions)
    if len(channels) == 0 or ch.counts[ch.start].sum() == 0:
        k = len(channels)
        return MarkovResult(channels, np.zeros(k), np.zeros(k), 0.0, 0.0, 0)
    return _solve_chain(channels, ch)


def transition_counts(paths: pd.DataFrame | PathSet) -> pd.DataFrame:
    """The order-1 transition table of distinct paths, counted with numpy (``journeys.transition_table``'s
    columns and order): from_state, to_state, journeys, value_cents."""
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    k = len(ps.channels)
    if ps.n_paths == 0 or k == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if "state" in c else "int64") for c in TRANSITION_COLUMNS})
    ch = _chain_from_paths(ps, 1)
    names = np.concatenate([ps.channels.astype(object), [jr.START]])
    i, j = np.nonzero(ch.counts)
    parts = [(names[i], names[j], ch.counts[i, j], np.zeros(len(i)))]
    for absorbing, w in ((jr.CONVERSION, ch.conv), (jr.NULL, ch.null)):
        i = np.flatnonzero(w)
        parts.append((names[i], np.full(len(i), absorbing, object), w[i],
                      ch.value[i] if absorbing == jr.CONVERSION else np.zeros(len(i))))
    out = pd.DataFrame({
        "from_state": np.concatenate([p[0] for p in parts]).astype(str),
        "to_state": np.concatenate([p[1] for p in parts]).astype(str),
        "journeys": np.rint(np.concatenate([p[2] for p in parts])).astype(np.int64),
        "value_cents": np.rint(np.concatenate([p[3] for p in parts])).astype(np.int64),
    })
    return out.sort_values(["from_state", "to_state"], kind="mergesort").reset_index(drop=True)


def markov(paths: pd.DataFrame | PathSet, basis: str, order: int = 1) -> pd.DataFrame:
    """Tidy Markov credits: the converting total split in proportion to the exact removal effects."""
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    res = markov_removal_effects(ps, order)
    return credit_frame(ps.channels, res.removal_effect, res.removal_effect_value, model="markov", basis=basis,
                        total_conversions=ps.total_conversions, total_cents=ps.total_cents)


def markov_from_transitions(transitions: pd.DataFrame, basis: str) -> pd.DataFrame:
    """Tidy order-1 Markov credits from the engine's transition counts (the pack's route at order 1).

    The total divided is the conversions (and cents) on the transitions into ``(conversion)``: those of the
    touched journeys, as on the path route.
    """
    res = markov_removal_effects_from_transitions(transitions)
    into = transitions["to_state"].astype(str) == jr.CONVERSION
    total_conv = int(pd.to_numeric(transitions.loc[into, "journeys"]).sum())
    total_cents = int(pd.to_numeric(transitions.loc[into, "value_cents"]).sum())
    return credit_frame(res.channels, res.removal_effect, res.removal_effect_value, model="markov", basis=basis,
                        total_conversions=total_conv, total_cents=total_cents)


# ----------------------------------------------------------------------------------------- Shapley


def _converting_sets(ps: PathSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (path, channel) pairs of converting paths: (path ids, channel codes, set sizes, conv, cents)."""
    pid = ps.path_of_token
    k = max(1, len(ps.channels))
    pair = np.sort(pid * k + ps.codes)  # sort + diff: much faster than numpy 2's hash-based np.unique here
    pair = pair[np.r_[True, pair[1:] != pair[:-1]]] if len(pair) else pair
    p_of, c_of = pair // k, pair % k
    sizes = np.bincount(p_of, minlength=ps.n_paths)
    return p_of, c_of, sizes, ps.conversions.astype(float), ps.value_cents.astype(float)


def coalition_values(ps: PathSet, players: np.ndarray) -> np.ndarray:
    """v(S) for every coalition S (bitmask over ``players``): (2^n, 2) conversions and cents of journeys whose
    channel set is a subset of S (Zhao et al. 2018), by a subset-sum (zeta) transform."""
    n = len(players)
    p_of, c_of, _, conv, cents = _converting_sets(ps)
    bit = np.full(len(ps.channels), -1, np.int64)
    bit[players] = np.arange(n)
    member_bit = bit[c_of]
    if np.any(member_bit < 0):
        # a converting path holds a channel outside the players: it only joins coalitions with that channel
        bad = np.unique(p_of[member_bit < 0])
        keep = ~np.isin(p_of, bad)
        p_of, member_bit = p_of[keep], member_bit[keep]
    mask = np.zeros(ps.n_paths, np.int64)
    np.bitwise_or.at(mask, p_of, np.left_shift(1, member_bit))
    valid = np.zeros(ps.n_paths, bool)
    valid[p_of] = True
    v = np.zeros((1 << n, 2))
    np.add.at(v, mask[valid], np.stack([conv[valid], cents[valid]], axis=1))
    for i in range(n):
        view = v.reshape(-1, 2, 1 << i, 2)
        view[:, 1] += view[:, 0]
    return v


def shapley_from_game(v: np.ndarray) -> np.ndarray:
    """Exact Shapley values of a game given as v[mask] (rows: 2^n coalitions, any number of value columns)."""
    size = v.shape[0]
    n = size.bit_length() - 1
    if 1 << n != size:
        raise ValueError("the game must list all 2^n coalitions")
    pc = np.array([bin(m).count("1") for m in range(size)]) if n <= 16 else _popcount(np.arange(size))
    fact = [math.factorial(i) for i in range(n + 1)]
    w_of = np.array([fact[s] * fact[n - s - 1] / fact[n] if s < n else 0.0 for s in range(n + 1)])
    vv = v.reshape(size, -1)
    phi = np.zeros((n, vv.shape[1]))
    for i in range(n):
        view = vv.reshape(-1, 2, 1 << i, vv.shape[1])
        sizes = pc.reshape(-1, 2, 1 << i)[:, 0]
        marg = view[:, 1] - view[:, 0]
        phi[i] = (marg * w_of[sizes][..., None]).sum(axis=(0, 1))
    return phi.reshape((n, *v.shape[1:]))


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64)
    c = np.zeros_like(x)
    while np.any(x):
        c += x & 1
        x >>= 1
    return c


def shapley_closed_form(ps: PathSet) -> np.ndarray:
    """Zhao et al.'s simplified Shapley: each converting journey's conversions/value shared by its distinct
    channels. Exact for the subset value function. Returns (K, 2): conversions, cents."""
    p_of, c_of, sizes, conv, cents = _converting_sets(ps)
    k = len(ps.channels)
    share = 1.0 / sizes[p_of]
    return np.stack([np.bincount(c_of, weights=conv[p_of] * share, minlength=k),
                     np.bincount(c_of, weights=cents[p_of] * share, minlength=k)], axis=1)


def shapley_sampled(ps: PathSet, n_permutations: int = 2000, seed: int = 0) -> np.ndarray:
    """Ordered-permutation sampling estimate of the same Shapley values (unbiased; seeded). (K, 2)."""
    p_of, c_of, _, conv, cents = _converting_sets(ps)
    k = len(ps.channels)
    rng = np.random.default_rng(seed)
    order = np.argsort(p_of, kind="mergesort")
    p_sorted, c_sorted = p_of[order], c_of[order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    set_paths = p_sorted[starts]
    acc = np.zeros((k, 2))
    for _ in range(int(n_permutations)):
        perm = rng.permutation(k)
        rank = np.empty(k, np.int64)
        rank[perm] = np.arange(k)
        closer = perm[np.maximum.reduceat(rank[c_sorted], starts)]  # the member completing the set
        acc[:, 0] += np.bincount(closer, weights=conv[set_paths], minlength=k)
        acc[:, 1] += np.bincount(closer, weights=cents[set_paths], minlength=k)
    return acc / max(1, int(n_permutations))


def shapley_values(ps: PathSet, max_exact: int = 15, method: str = "auto", seed: int = 0,
                   n_permutations: int = 2000) -> tuple[np.ndarray, str]:
    """Shapley values per channel (K, 2: conversions, cents) and the method used.

    method: ``auto`` (enumeration when the converting channels are at most ``max_exact``, else the exact
    closed form), ``exact`` (enumeration), ``closed_form`` or ``sample``.
    """
    k = len(ps.channels)
    conv_tokens = ps.codes[np.repeat(ps.conversions + ps.value_cents > 0, ps.lengths)]
    players = np.unique(conv_tokens)
    if method == "auto":
        method = "exact" if len(players) <= max_exact else "closed_form"
    if method == "exact":
        if len(players) > 24:
            raise ValueError(f"exact enumeration over {len(players)} channels is too large")
        phi = np.zeros((k, 2))
        if len(players):
            phi[players] = shapley_from_game(coalition_values(ps, players))
        return phi, "exact enumeration of coalitions"
    if method == "closed_form":
        return shapley_closed_form(ps), "exact closed form (Zhao et al. 2018)"
    if method == "sample":
        return shapley_sampled(ps, n_permutations, seed), f"permutation sampling ({n_permutations}, seed {seed})"
    raise ValueError(f"unknown Shapley method '{method}'")


def shapley(paths: pd.DataFrame | PathSet, basis: str, max_exact: int = 15, method: str = "auto",
            seed: int = 0) -> pd.DataFrame:
    """Tidy Shapley credits (coalition value = conversions/value of journeys whose channel set is in S)."""
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    phi, _ = shapley_values(ps, max_exact, method, seed)
    phi = np.clip(phi, 0.0, None)  # exact values are >= 0; clips float noise only
    return credit_frame(ps.channels, phi[:, 0], phi[:, 1], model="shapley", basis=basis,
                        total_conversions=ps.total_conversions, total_cents=ps.total_cents)


# ----------------------------------------------------------------------------------------- all models


def all_models(
    paths: pd.DataFrame | PathSet,
    basis: str,
    settings: AttributionSettings,
    time_decay_weights: pd.DataFrame | None = None,
    transitions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every model's tidy credits for one basis, stacked (model order as MODEL_ORDER, channels sorted).

    transitions: the engine's order-1 transition counts (``journeys.transition_table``) of the same journeys;
    when given and the Markov order is 1, the Markov model is solved from them instead of counting the
    transitions over the paths (the same numbers).
    """
    ps = paths if isinstance(paths, PathSet) else PathSet.from_frame(paths)
    frames = [position_model(ps, m, basis, settings) for m in settings.position_models]
    if time_decay_weights is not None and len(time_decay_weights):
        frames.append(time_decay(time_decay_weights, basis, ps.total_conversions, ps.total_cents, ps.channels))
    if transitions is not None and settings.markov_order == 1:
        frames.append(markov_from_transitions(transitions, basis))
    else:
        frames.append(markov(ps, basis, settings.markov_order))
    frames.append(shapley(ps, basis, settings.shapley_exact_max_channels, seed=settings.seed))
    out = pd.concat(frames, ignore_index=True)
    return _complete(out, list(ps.channels))


def _complete(credits: pd.DataFrame, channels: list[str]) -> pd.DataFrame:
    """Every (model, basis) x channel present, zero-filled, in a stable order."""
    chans = sorted(set(channels) | set(credits["channel"]))
    keys = credits[["model", "basis"]].drop_duplicates()
    grid = keys.merge(pd.DataFrame({"channel": chans}), how="cross")
    out = grid.merge(credits, on=["model", "basis", "channel"], how="left")
    for col in ("credit_value", "credit_count", "credit_cents", "credit_share"):
        out[col] = out[col].fillna(0)
    out["credit_cents"] = out["credit_cents"].astype("int64")
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    out["_o"] = out["model"].map(lambda m: order.get(m, len(order)))
    out = out.sort_values(["basis", "_o", "model", "channel"], kind="mergesort").drop(columns="_o")
    return out[CREDIT_COLUMNS].reset_index(drop=True)


# ----------------------------------------------------------------------------------------- two truths


TWO_TRUTH_COLUMNS = ["channel", "first_touch_count", "last_touch_count", "first_touch_share", "last_touch_share",
                     "first_touch_value", "last_touch_value", "share_gap", "value_gap"]


def two_truth_table(credits: pd.DataFrame, basis: str = "pipeline") -> pd.DataFrame:
    """Per channel: platform first-touch vs CRM last-touch credit and the gap, sorted by |share gap| desc.

    Shares are of credited conversions (opportunities for pipeline, deals for revenue); value columns in money.
    """
    if credits.empty:
        return pd.DataFrame(columns=TWO_TRUTH_COLUMNS)
    c = credits[credits["basis"] == basis]
    ft = c[c["model"] == "first_touch"].set_index("channel")
    lt = c[c["model"] == "last_touch"].set_index("channel")
    chans = sorted(set(ft.index) | set(lt.index))
    ft, lt = ft.reindex(chans).fillna(0), lt.reindex(chans).fillna(0)
    n_ft, n_lt = ft["credit_count"].sum(), lt["credit_count"].sum()
    out = pd.DataFrame(
        {
            "channel": chans,
            "first_touch_count": ft["credit_count"].to_numpy(),
            "last_touch_count": lt["credit_count"].to_numpy(),
            "first_touch_share": ft["credit_count"].to_numpy() / n_ft if n_ft else 0.0,
            "last_touch_share": lt["credit_count"].to_numpy() / n_lt if n_lt else 0.0,
            "first_touch_value": ft["credit_value"].to_numpy(),
            "last_touch_value": lt["credit_value"].to_numpy(),
        }
    )
    out["share_gap"] = out["first_touch_share"] - out["last_touch_share"]
    out["value_gap"] = (ft["credit_cents"].to_numpy() - lt["credit_cents"].to_numpy()) / 100.0
    out["_abs"] = out["share_gap"].abs().round(12)
    out = out.sort_values(["_abs", "channel"], ascending=[False, True], kind="mergesort").drop(columns="_abs")
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------- sourced / influenced

ROLE_ORDER = ("marketing_sourced", "marketing_assisted", "marketing_accelerated", "no_marketing_touch", "no_touch")
ROLE_LABELS = {
    "marketing_sourced": "Marketing-sourced (first touch before creation is marketing)",
    "marketing_assisted": "Influenced before creation, not sourced (a later pre-creation touch is marketing)",
    "marketing_accelerated": "Influenced after creation only (marketing touch while the deal was open)",
    "no_marketing_touch": "Touched, but no marketing touch",
    "no_touch": "No touch in the lookback window",
}


def marketing_roles(lifecycle: pd.DataFrame) -> pd.DataFrame:
    """Pipeline created in the period by marketing role; the rows reconcile to the total pipeline.

    sourced = marketing_sourced; influenced = sourced + assisted + accelerated; influenced - sourced is
    explained by the assisted and accelerated rows. Columns: role, label, opportunities, value, share.
    """
    f = lifecycle.copy()
    role = np.select(
        [f["first_marketing"].astype(bool), f["marketing_before"].astype(bool), f["marketing_after"].astype(bool),
         f["first_channel"].notna()],
        ["marketing_sourced", "marketing_assisted", "marketing_accelerated", "no_marketing_touch"],
        default="no_touch",
    )
    f["role"] = role
    g = f.groupby("role")[["opportunities", "value_cents"]].sum().reindex(list(ROLE_ORDER)).fillna(0)
    total = int(g["value_cents"].sum())
    out = pd.DataFrame(
        {
            "role": list(ROLE_ORDER),
            "label": [ROLE_LABELS[r] for r in ROLE_ORDER],
            "opportunities": g["opportunities"].astype("int64").to_numpy(),
            "value_cents": g["value_cents"].astype("int64").to_numpy(),
        }
    )
    out["value"] = out["value_cents"] / 100.0
    out["share"] = out["value_cents"] / total if total else 0.0
    return out


def sourced_influenced(roles: pd.DataFrame) -> dict[str, float]:
    """Total, sourced and influenced pipeline (money and opportunities) and the reconciling difference."""
    by = roles.set_index("role")
    infl = ["marketing_sourced", "marketing_assisted", "marketing_accelerated"]
    return {
        "total_value": by["value_cents"].sum() / 100.0,
        "total_opportunities": int(by["opportunities"].sum()),
        "sourced_value": by.loc["marketing_sourced", "value_cents"] / 100.0,
        "sourced_opportunities": int(by.loc["marketing_sourced", "opportunities"]),
        "influenced_value": by.loc[infl, "value_cents"].sum() / 100.0,
        "influenced_opportunities": int(by.loc[infl, "opportunities"].sum()),
        "assisted_value": by.loc["marketing_assisted", "value_cents"] / 100.0,
        "accelerated_value": by.loc["marketing_accelerated", "value_cents"] / 100.0,
    }


def reconciliation_text(summary: Mapping[str, float]) -> str:
    s = summary
    return (
        f"Pipeline created in the period: {s['total_value']:,.0f} ({s['total_opportunities']} opportunities). "
        f"Marketing-sourced: {s['sourced_value']:,.0f}; marketing-influenced: {s['influenced_value']:,.0f}. "
        f"Influenced exceeds sourced by {s['influenced_value'] - s['sourced_value']:,.0f}: "
        f"{s['assisted_value']:,.0f} where a marketing touch came before creation but the first touch was not "
        f"marketing, and {s['accelerated_value']:,.0f} where marketing touched the deal only after it was created. "
        "The rest of the pipeline had no marketing touch; the rows of the table add up to the total."
    )


# ----------------------------------------------------------------------------------------- won rate


def won_rates(closed: pd.DataFrame, settings: AttributionSettings) -> pd.DataFrame:
    """Won rate of closed deals with vs without a marketing touch, per segment and overall.

    Wilson intervals per rate; difference with Newcombe's interval and a two-proportion test (Fisher's exact on
    small expected counts) from ``analysis.stats``. Cells below the minimum size are shown, not tested.
    """
    from analysis.stats import two_proportion_test, wilson_interval

    f = closed.copy()
    f["won"] = f["won"].astype(bool)
    f["marketing"] = f["marketing"].astype(bool)
    segs = sorted(f["segment"].astype(str).unique())
    rows = []
    for seg in [*segs, "All"]:
        g = f if seg == "All" else f[f["segment"].astype(str) == seg]
        n1 = int(g.loc[g["marketing"], "deals"].sum())
        s1 = int(g.loc[g["marketing"] & g["won"], "deals"].sum())
        n0 = int(g.loc[~g["marketing"], "deals"].sum())
        s0 = int(g.loc[~g["marketing"] & g["won"], "deals"].sum())
        lo1, hi1 = (float(x[0]) for x in wilson_interval([s1], [n1], settings.confidence))
        lo0, hi0 = (float(x[0]) for x in wilson_interval([s0], [n0], settings.confidence))
        tested = min(n1, n0) >= settings.min_cell_size
        res = two_proportion_test(s1, n1, s0, n0, exact_below=settings.exact_test_below,
                                  confidence=settings.confidence)
        rows.append(
            {
                "segment": seg,
                "deals_with": n1, "won_with": s1, "rate_with": s1 / n1 if n1 else np.nan, "with_low": lo1,
                "with_high": hi1,
                "deals_without": n0, "won_without": s0, "rate_without": s0 / n0 if n0 else np.nan,
                "without_low": lo0, "without_high": hi0,
                "difference": res.estimate, "diff_low": res.ci_low, "diff_high": res.ci_high,
                "p_value": res.p_value if tested else np.nan,
                "test": res.method if tested else f"not tested (fewer than {settings.min_cell_size} deals)",
            }
        )
    return pd.DataFrame(rows)


def segment_adjusted_difference(rates: pd.DataFrame) -> float:
    """Difference with vs without marketing, standardised to the segments' share of closed deals."""
    seg = rates[rates["segment"] != "All"].copy()
    seg = seg[(seg["deals_with"] > 0) & (seg["deals_without"] > 0)]
    if seg.empty:
        return float("nan")
    w = seg["deals_with"] + seg["deals_without"]
    return float(((seg["rate_with"] - seg["rate_without"]) * w).sum() / w.sum())


def mix_caveat(rates: pd.DataFrame) -> str:
    adj = segment_adjusted_difference(rates)
    allr = rates[rates["segment"] == "All"].iloc[0]
    if allr["difference"] != allr["difference"]:
        return "No closed deals on one side of the comparison: the won rates cannot be compared."
    return (
        "Mix caveat: deals with and without marketing touches differ in segment, size and sales cycle, so the "
        "difference is an association, not the effect of marketing. "
        f"Overall difference {allr['difference']:+.1%}; standardised to the segment mix of closed deals "
        f"{adj:+.1%}. Read the segment rows before the total."
    )


# ----------------------------------------------------------------------------------------- the section


@dataclass
class AttributionReport:
    """Everything the attribution section shows, computed from aggregates."""

    period: str
    settings: AttributionSettings
    paths: dict[str, pd.DataFrame]
    coverage: dict[str, dict[str, float]]
    credits: pd.DataFrame
    removal_effects: pd.DataFrame
    two_truth: pd.DataFrame
    roles: pd.DataFrame
    sourced: dict[str, float]
    won_rates: pd.DataFrame
    notes: list[str]

    @property
    def metrics(self) -> pd.DataFrame:
        return metrics_rows(self)


def run_attribution(ctx, touch_key: str = "channel") -> AttributionReport:
    """Build the section for a SectionContext: paths and weights in the engine, models on the aggregates."""
    settings = AttributionSettings.from_definitions(ctx.definitions)
    w = jr.JourneyWindow.for_context(ctx)
    ob = settings.origin_by_channel
    paths, cov, frames, removal = {}, {}, [], []
    for basis in BASES:
        p = jr.fetch_paths(jr.path_table(ctx.tables, basis, w, ob, touch_key), ctx.con)
        td = jr.fetch_sorted(jr.time_decay_table(ctx.tables, basis, w, ob, settings.half_life_days, touch_key),
                             ctx.con, ["segment", "key"])
        paths[basis] = p
        cov[basis] = coverage(p)
        if cov[basis]["conversions_attributed"] == 0:
            continue
        ps = PathSet.from_frame(p)
        if settings.markov_order == 1:  # counted over the distinct paths already fetched: no second engine pass
            tr = transition_counts(ps)
            res = markov_removal_effects_from_transitions(tr)
        else:
            tr, res = None, markov_removal_effects(ps, settings.markov_order)
        frames.append(all_models(ps, basis, settings, td, tr))
        re = res.frame()
        re.insert(0, "basis", basis)
        removal.append(re)
    credits = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CREDIT_COLUMNS)
    lifecycle = jr.fetch_sorted(jr.lifecycle_table(ctx.tables, w, ob), ctx.con,
                                ["segment", "first_channel", "first_marketing", "marketing_before", "marketing_after"])
    roles = marketing_roles(lifecycle)
    trailing = jr.JourneyWindow(
        start=w.end - pd.DateOffset(months=settings.trailing_months), end=w.end, as_of=w.as_of,
        lookback_days=w.lookback_days,
    )
    closed = jr.fetch_sorted(jr.closed_table(ctx.tables, trailing, ob), ctx.con, ["segment", "marketing", "won"])
    notes = _notes(cov, settings)
    return AttributionReport(
        period=ctx.period.label,
        settings=settings,
        paths=paths,
        coverage=cov,
        credits=credits,
        removal_effects=pd.concat(removal, ignore_index=True) if removal else pd.DataFrame(),
        two_truth=two_truth_table(credits, "pipeline"),
        roles=roles,
        sourced=sourced_influenced(roles),
        won_rates=won_rates(closed, settings),
        notes=notes,
    )


def _notes(cov: Mapping[str, Mapping[str, float]], settings: AttributionSettings) -> list[str]:
    out = []
    for basis, c in cov.items():
        miss = c["conversions"] - c["conversions_attributed"]
        if c["conversions"] == 0:
            out.append(f"No {basis} conversions in the period: {basis} attribution omitted.")
        elif miss:
            out.append(
                f"{miss} of {c['conversions']} {basis} conversions "
                f"({(c['value_cents'] - c['value_cents_attributed']) / 100:,.0f} of {c['value_cents'] / 100:,.0f}) "
                f"had no touch in the {settings.lookback_days}-day lookback and are not credited to any channel."
            )
    return out


# ----------------------------------------------------------------------------------------- metrics


def marketing_contribution(report: AttributionReport) -> dict[str, float]:
    """Credit (money) to marketing-origin channels under the chosen model, per basis."""
    m = report.settings.chosen_model
    c = report.credits[report.credits["model"] == m]
    mk = c["channel"].map(lambda ch: report.settings.origin_by_channel.get(ch) == "marketing")
    return {b: float(c.loc[mk & (c["basis"] == b), "credit_cents"].sum()) / 100.0 for b in BASES}



def metrics_rows(report: AttributionReport) -> pd.DataFrame:
    """The section's long-format metrics (section "attribution")."""
    period = report.period
    frames = []

    def add(frame, metric, dims, unit, method):
        if frame is None or len(frame) == 0:
            return
        f = frame.copy()
        f["period"] = period
        frames.append(mt.metric_rows(f, section="attribution", metric=metric, dimension_columns=dims, unit=unit,
                                     method=method))

    cr = report.credits
    if len(cr):
        n_conv = cr["basis"].map({b: c["conversions_attributed"] for b, c in report.coverage.items()})
        base = cr.assign(n=n_conv.astype("int64"))
        meth = {m: _model_method(m, report.settings) for m in cr["model"].unique()}
        for model, g in base.groupby("model", sort=False):
            add(g.assign(value=g["credit_share"]), "credit_share", ["model", "channel", "basis"], "share", meth[model])
            add(g.assign(value=g["credit_value"]), "credit_value", ["model", "channel", "basis"], "currency",
                meth[model])
            add(g.assign(value=g["credit_count"]), "credit_count", ["model", "channel", "basis"], "count",
                meth[model])
    if len(report.removal_effects):
        re = report.removal_effects
        add(re.assign(value=re["removal_effect"]), "markov_removal_effect", ["channel", "basis"], "share",
            f"exact absorbing chain, order {report.settings.markov_order}")
    tt = report.two_truth
    if len(tt):
        n = int(report.coverage["pipeline"]["conversions_attributed"])
        add(tt.assign(value=tt["share_gap"], baseline=0.0, impact=tt["value_gap"].abs(), n=n),
            "first_vs_last_touch_gap", ["channel"], "share", "first-touch minus last-touch share, pipeline")
        add(tt.assign(value=tt["value_gap"], n=n), "first_vs_last_touch_gap_value", ["channel"], "currency",
            "first-touch minus last-touch credit, pipeline")
    s = report.sourced
    tot = pd.DataFrame(
        {
            "metric": ["total_pipeline", "sourced_pipeline", "influenced_pipeline"],
            "value": [s["total_value"], s["sourced_value"], s["influenced_value"]],
            "n": [s["total_opportunities"], s["sourced_opportunities"], s["influenced_opportunities"]],
            "impact": [np.nan, s["sourced_value"], s["influenced_value"]],
        }
    )
    tot["period"] = period
    frames.append(mt.metric_rows(tot, section="attribution", unit="currency", method="definitions sourced/influenced"))
    roles = report.roles.assign(value=report.roles["value"], n=report.roles["opportunities"])
    add(roles, "pipeline_by_marketing_role", ["role"], "currency", "reconciles to total_pipeline")
    add(roles.assign(value=roles["share"]), "pipeline_share_by_marketing_role", ["role"], "share",
        "reconciles to 1")
    wr = report.won_rates
    if len(wr):
        add(wr.assign(value=wr["rate_with"], ci_low=wr["with_low"], ci_high=wr["with_high"], n=wr["deals_with"]),
            "won_rate_with_marketing", ["segment"], "share", "Wilson")
        add(wr.assign(value=wr["rate_without"], ci_low=wr["without_low"], ci_high=wr["without_high"],
                      n=wr["deals_without"]), "won_rate_without_marketing", ["segment"], "share", "Wilson")
        add(wr.assign(value=wr["difference"], ci_low=wr["diff_low"], ci_high=wr["diff_high"],
                      n=wr["deals_with"] + wr["deals_without"]),
            "won_rate_marketing_difference", ["segment"], "share", "two-proportion test, Newcombe interval")
    contrib = marketing_contribution(report) if len(cr) else {}
    if contrib:
        f = pd.DataFrame({"basis": list(contrib), "value": list(contrib.values()),
                          "model": report.settings.chosen_model})
        add(f, "marketing_contribution", ["basis", "model"], "currency", "definitions chosen model")
    for basis, c in report.coverage.items():
        share = c["value_cents_attributed"] / c["value_cents"] if c["value_cents"] else np.nan
        add(pd.DataFrame({"basis": [basis], "value": [share], "n": [c["conversions"]]}),
            "attributed_value_share", ["basis"], "share", "touched journeys / all conversions")
    return mt.normalise(pd.concat(frames, ignore_index=True)) if frames else mt.empty()


def _model_method(model: str, settings: AttributionSettings) -> str:
    if model in HEURISTIC_WEIGHTS or model in settings.position_weights:
        w = settings.weights(model)
        return "position " + ",".join(f"{k}={v:g}" for k, v in w.items())
    if model == "time_decay":
        return f"time decay, half-life {settings.half_life_days:g} d"
    if model == "markov":
        return f"Markov removal effect, exact, order {settings.markov_order}"
    if model == "shapley":
        return "Shapley (Zhao et al. 2018), exact"
    return model
