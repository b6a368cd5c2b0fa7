"""Attribution models: exact totals, position rules, peers (ChannelAttribution, marketing-attribution-models),
an independent absorbing-chain computation for Markov, Shapley axioms, and the planted two-truth channel."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysis import attribution as A
from analysis import attribution_report as R
from analysis.config import load_definitions

DEFS = load_definitions()
SETTINGS = A.AttributionSettings.from_definitions(DEFS)
CHANNELS = list("abcdef")


# ------------------------------------------------------------------------------------------- helpers


def frame(rows) -> pd.DataFrame:
    """Distinct paths from (path list, conversions, nulls, value_cents[, creation_index]) tuples."""
    out = []
    for r in rows:
        toks, conv, nulls, cents = r[:4]
        ci = r[4] if len(r) > 4 else len(toks) - 1
        out.append({"path": " > ".join(toks), "creation_index": ci, "conversions": conv, "nulls": nulls,
                    "value_cents": cents})
    return pd.DataFrame(out)


def random_paths(seed: int, n: int = 300, k: int = 6, max_len: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    chans = [f"ch{i}" for i in range(k)]
    seen, rows = set(), []
    while len(rows) < n:
        length = int(rng.integers(1, max_len + 1))
        toks = tuple(rng.choice(chans, length, p=np.arange(1, k + 1) / (k * (k + 1) / 2)))
        if toks in seen:
            continue
        seen.add(toks)
        conv = int(rng.poisson(2.0))
        nulls = int(rng.poisson(6.0))
        if conv + nulls == 0:
            nulls = 1
        cents = int(sum(rng.integers(1_000, 5_000_000) for _ in range(conv)))
        rows.append((list(toks), conv, nulls, cents, int(rng.integers(0, length))))
    return frame(rows)


@st.composite
def path_sets(draw, min_conv: int = 1, max_channels: int = 6):
    k = draw(st.integers(1, max_channels))
    chans = CHANNELS[:k]
    n = draw(st.integers(1, 12))
    rows, seen = [], set()
    for _ in range(n):
        toks = tuple(draw(st.lists(st.sampled_from(chans), min_size=1, max_size=6)))
        if toks in seen:
            continue
        seen.add(toks)
        conv = draw(st.integers(0, 7))
        nulls = draw(st.integers(0, 7))
        cents = draw(st.integers(0, 10**9)) if conv else 0
        ci = draw(st.integers(-1, len(toks) - 1))
        rows.append((list(toks), conv, nulls, cents, ci))
    f = frame(rows)
    assume(int(f["conversions"].sum()) >= min_conv)
    return f


def quiet(fn, *args, **kwargs):
    """Call a peer that prints banners and progress to stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------- parsing


@given(st.lists(st.lists(st.sampled_from(["a", "b c", "ä>", "> x", "web-inar", "z", "", "中文"]), max_size=6),
                max_size=20))
def test_path_parsing_equals_str_split(token_lists):
    paths = pd.Series([" > ".join(t) for t in token_lists], dtype=object)
    lengths, codes, names = A._tokenize(paths, " > ")
    expected = [p.split(" > ") if p else [] for p in paths]
    assert lengths.tolist() == [len(e) for e in expected]
    assert list(names) == sorted(names)
    assert [names[c] for c in codes] == [t for e in expected for t in e]


def test_pathset_accepts_lists_and_drops_empty_or_weightless_paths():
    f = pd.DataFrame({"path": [["b", "a"], [], ["c"]], "conversions": [1, 2, 0], "nulls": [0, 0, 0]})
    ps = A.PathSet.from_frame(f)
    assert list(ps.channels) == ["a", "b"] and ps.codes.tolist() == [1, 0] and ps.n_paths == 1


# ------------------------------------------------------------------------------------------- allocation


@given(st.integers(0, 10**12), st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=12))
def test_allocate_sums_exactly_and_stays_within_one_unit(total, weights):
    assume(sum(weights) > 0)
    got = A.allocate(total, weights)
    assert got.sum() == total
    quota = np.asarray(weights) / sum(weights) * total
    assert np.all(np.abs(got - quota) < 1 + 1e-6 * max(1, total))


def test_allocate_breaks_ties_by_label_and_refuses_to_lose_a_total():
    assert A.allocate(1, [1, 1, 1], ["b", "a", "c"]).tolist() == [0, 1, 0]
    assert A.allocate(100, [1, 1, 1]).tolist() == [34, 33, 33]
    assert A.allocate(0, [0, 0]).tolist() == [0, 0]
    with pytest.raises(ValueError):
        A.allocate(5, [0, 0])


# ------------------------------------------------------------------------------------------- position rules


def _weights(paths, model, basis):
    ps = A.PathSet.from_frame(frame(paths))
    w = A.position_token_weights(ps, SETTINGS.weights(model), basis)
    return dict(zip(ps.channels[ps.codes], np.round(w, 12), strict=True)), w


def test_position_rules_for_short_and_long_journeys():
    # one touch: 100% whatever the model
    for model in SETTINGS.position_models:
        assert _weights([(["a"], 1, 0, 100)], model, "revenue")[1].tolist() == [1.0]
    # two touches, U-shaped: anchors renormalised, 50/50
    assert _weights([(["a", "b"], 1, 0, 100)], "u_shaped", "pipeline")[1].tolist() == [0.5, 0.5]
    # two touches, W-shaped on pipeline: creation = last, so 30 : 60 renormalised
    np.testing.assert_allclose(_weights([(["a", "b"], 1, 0, 100)], "w_shaped", "pipeline")[1], [1 / 3, 2 / 3])
    # W on a revenue journey with the creation touch in the middle: 30/30/30 + 10 for the rest
    w = _weights([(["a", "b", "c", "d"], 1, 0, 100, 1)], "w_shaped", "revenue")[1]
    np.testing.assert_allclose(w, [0.3, 0.3, 0.1, 0.3])
    # full path on revenue: first, creation, won (= last) and last 22.5 each, rest 10 shared
    w = _weights([(["a", "b", "c", "d", "e"], 1, 0, 100, 1)], "full_path", "revenue")[1]
    np.testing.assert_allclose(w, [0.225, 0.225, 0.05, 0.05, 0.45])
    # full path on pipeline: no won anchor, the others renormalised (0.225 / 0.775 ...)
    w = _weights([(["a", "b", "c"], 1, 0, 100)], "full_path", "pipeline")[1]
    np.testing.assert_allclose(w, np.array([0.225, 0.1, 0.45]) / 0.775)
    # creation touch absent (every touch after creation): W renormalises first and last
    w = _weights([(["a", "b", "c"], 1, 0, 100, -1)], "w_shaped", "revenue")[1]
    np.testing.assert_allclose(w, np.array([0.3, 0.1, 0.3]) / 0.7)
    # J and inverse J
    np.testing.assert_allclose(_weights([(["a", "b", "c"], 1, 0, 1)], "j_shaped", "pipeline")[1], [0.2, 0.2, 0.6])
    np.testing.assert_allclose(_weights([(["a", "b", "c"], 1, 0, 1)], "inverse_j", "pipeline")[1], [0.6, 0.2, 0.2])
    # linear counts repeated channels per touch
    np.testing.assert_allclose(_weights([(["a", "a", "b"], 1, 0, 1)], "linear", "pipeline")[1], [1 / 3] * 3)


def test_position_weights_come_from_the_definitions():
    assert SETTINGS.weights("u_shaped") == {"first": 0.4, "last": 0.4, "rest": 0.2}
    assert SETTINGS.weights("full_path") == {"first": 0.225, "creation": 0.225, "won": 0.225, "last": 0.225,
                                             "rest": 0.1}
    assert set(SETTINGS.position_models) >= {"first_touch", "last_touch", "linear", "u_shaped", "w_shaped",
                                             "full_path", "j_shaped", "inverse_j"}
    custom = A.AttributionSettings(position_weights={"middle_heavy": {"first": 0.1, "last": 0.1, "rest": 0.8}})
    f = frame([(["a", "b", "c"], 2, 0, 300)])
    out = A.position_model(f, "middle_heavy", "pipeline", custom)
    assert out.set_index("channel")["credit_cents"].to_dict() == {"a": 30, "b": 240, "c": 30}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path_sets(), st.sampled_from(A.BASES))
def test_every_model_sums_to_the_total_to_the_cent(paths, basis):
    ps = A.PathSet.from_frame(paths)
    rng = np.random.default_rng(len(paths))
    td = pd.DataFrame({"key": ps.channels, "weight_count": rng.random(len(ps.channels)),
                       "weight_cents": rng.random(len(ps.channels)) * 1e6})
    credits = A.all_models(paths, basis, SETTINGS, td)
    assert set(credits["model"]) == set(A.MODEL_ORDER)
    for _, g in credits.groupby("model"):
        assert int(g["credit_cents"].sum()) == int(paths["value_cents"].sum())
        assert int(np.rint(g["credit_count"] * 100).sum()) == 100 * int(paths["conversions"].sum())
        assert (g["credit_cents"] >= 0).all()
        assert math.isclose(g["credit_value"].sum(), paths["value_cents"].sum() / 100, abs_tol=1e-6)


def test_untouched_journeys_are_left_out_and_reported():
    f = frame([(["a"], 2, 1, 500)])
    f = pd.concat([f, pd.DataFrame([{"path": "", "creation_index": -1, "conversions": 3, "nulls": 0,
                                     "value_cents": 700}])], ignore_index=True)
    cov = A.coverage(f)
    assert cov == {"conversions": 5, "conversions_attributed": 2, "value_cents": 1200, "value_cents_attributed": 500,
                   "nulls": 1}
    assert A.first_touch(f)["credit_cents"].tolist() == [500]


# ------------------------------------------------------------------------------------------- heuristic peers


def _heuristics(paths):
    ps = A.PathSet.from_frame(paths)
    out = {}
    for model in ("first_touch", "last_touch", "linear"):
        cnt, cents = A.position_credits(ps, SETTINGS.weights(model), "pipeline")
        out[model] = pd.DataFrame({"count": cnt, "value": cents / 100.0}, index=ps.channels)
    return out


def test_heuristics_equal_channelattribution():
    import ChannelAttribution as ca
    paths = random_paths(1)
    paths["value"] = paths["value_cents"] / 100.0
    got = _heuristics(paths)
    h = quiet(ca.heuristic_models, paths, "path", "conversions", var_value="value", flg_pro=False)
    h = h.set_index("channel_name").sort_index()
    names = {"first_touch": "first_touch", "last_touch": "last_touch", "linear": "linear_touch"}
    for model, peer in names.items():
        ours = got[model].reindex(h.index)
        np.testing.assert_allclose(ours["count"], h[f"{peer}_conversions"], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(ours["value"], h[f"{peer}_value"], rtol=1e-12, atol=1e-6)
    # the tidy (allocated) credits differ from the raw ones by less than one cent / one hundredth
    tidy = A.linear(paths).set_index("channel").reindex(h.index)
    assert (np.abs(tidy["credit_value"] - h["linear_touch_value"]) <= 0.01 + 1e-9).all()


def _mam(paths, value: bool):
    import mam
    rows = []
    for r in paths.itertuples():
        if r.conversions:
            rows.append({"path": r.path, "has_conv": True, "occ": r.conversions, "value": r.value_cents / 100.0})
        if r.nulls:
            rows.append({"path": r.path, "has_conv": False, "occ": r.nulls, "value": 0.0})
    g = pd.DataFrame(rows)
    kw = {"conversion_value_colname": "value"} if value else {}
    return quiet(mam.MAM, g, format_type="grouped_journey", channels_colname="path",
                 journey_with_conv_colname="has_conv", occurrences_colname="occ", **kw)


def test_heuristics_equal_marketing_attribution_models():
    paths = random_paths(2)
    got = _heuristics(paths)
    by_count, by_value = _mam(paths, False), _mam(paths, True)
    runs = {"first_touch": "run_first_click", "last_touch": "run_last_click", "linear": "run_linear"}
    for model, run in runs.items():
        for m, col in ((by_count, "count"), (by_value, "value")):
            peer = getattr(m, run)().to_pandas().set_index("channels")["attribution"]
            peer.index = peer.index.astype(str)
            peer = peer.groupby(level=0).sum()
            ours = got[model][col]
            peer = peer.reindex(ours.index).fillna(0.0)
            np.testing.assert_allclose(ours.to_numpy(), peer.to_numpy(), rtol=1e-9, atol=1e-6)


def test_u_shaped_equals_marketing_attribution_models_position_based():
    paths = random_paths(3)
    ps = A.PathSet.from_frame(paths)
    cnt, _ = A.position_credits(ps, SETTINGS.weights("u_shaped"), "pipeline")
    peer = _mam(paths, False).run_position_based().to_pandas().set_index("channels")["attribution"]
    peer.index = peer.index.astype(str)
    np.testing.assert_allclose(cnt, peer.reindex(ps.channels).to_numpy(), rtol=1e-9)


# ------------------------------------------------------------------------------------------- Markov


def independent_removal_effects(paths: pd.DataFrame, order: int = 1) -> tuple[dict, float]:
    """Expand every distinct path into transitions in pandas, then iterate h = r + Q h to convergence."""
    rows = []
    for r in paths.itertuples():
        if not r.path:
            continue
        toks = r.path.split(" > ")
        states = [("(start)",)] + [tuple(toks[max(0, i - order + 1): i + 1]) for i in range(len(toks))]
        n = r.conversions + r.nulls
        rows += [(a, b, n) for a, b in itertools.pairwise(states)]
        rows += [(states[-1], ("(conversion)",), r.conversions), (states[-1], ("(null)",), r.nulls)]
    t = pd.DataFrame(rows, columns=["src", "dst", "n"]).groupby(["src", "dst"], sort=False)["n"].sum().reset_index()
    t = t[t["n"] > 0]
    t["p"] = t["n"] / t.groupby("src")["n"].transform("sum")
    transient = sorted(set(t["src"]), key=str)
    idx = {s: i for i, s in enumerate(transient)}

    def conversion_probability(removed: str | None) -> float:
        q = np.zeros((len(transient), len(transient)))
        r = np.zeros(len(transient))
        for src, dst, p in zip(t["src"], t["dst"], t["p"], strict=True):
            if dst == ("(conversion)",):
                r[idx[src]] += p
            elif dst in idx and (removed is None or removed not in dst):
                q[idx[src], idx[dst]] += p
        h = np.zeros(len(transient))
        for _ in range(200_000):
            nh = r + q @ h
            if np.max(np.abs(nh - h)) < 1e-16:
                break
            h = nh
        return float(nh[idx[("(start)",)]])

    p = conversion_probability(None)
    chans = sorted({c for s in transient for c in s if c != "(start)"})
    return {c: 1.0 - conversion_probability(c) / p for c in chans}, p


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("seed", [4, 5])
def test_markov_removal_effects_equal_an_independent_absorbing_chain(seed, order):
    paths = random_paths(seed, n=120, k=5, max_len=5)
    got = A.markov_removal_effects(paths, order=order)
    ref, p = independent_removal_effects(paths, order)
    assert got.conversion_probability == pytest.approx(p, abs=1e-12)
    for c, re in zip(got.channels, got.removal_effect, strict=True):
        assert re == pytest.approx(ref[c], abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(path_sets())
def test_markov_removal_effects_hold_on_random_path_sets(paths):
    got = A.markov_removal_effects(paths)
    ref, _ = independent_removal_effects(paths)
    for c, re in zip(got.channels, got.removal_effect, strict=True):
        assert re == pytest.approx(ref[c], abs=1e-9)


def test_markov_equals_marketing_attribution_models_analytic_markov():
    for seed in (6, 7):
        paths = random_paths(seed, n=200)
        ours = A.markov_removal_effects(paths).frame().set_index("channel")["removal_effect"]
        mk = _mam(paths, False).run_markov()
        peer = mk.metadata["removal_effect"]["removal_effect"]
        peer.index = peer.index.astype(str)
        np.testing.assert_allclose(ours.to_numpy(), peer.reindex(ours.index).to_numpy(), atol=1e-9, rtol=0)


def test_markov_value_removal_effect_equals_count_effect_when_values_are_equal():
    paths = random_paths(8, n=80)
    paths["value_cents"] = paths["conversions"] * 12_345
    res = A.markov_removal_effects(paths)
    np.testing.assert_allclose(res.removal_effect_value, res.removal_effect, atol=1e-12)


def test_markov_agrees_with_channelattribution_simulation_roughly():
    import ChannelAttribution as ca
    paths = random_paths(9, n=200, k=5)
    ours = A.markov_removal_effects(paths).frame().set_index("channel")["removal_effect"]
    res = quiet(ca.markov_model, paths, "path", "conversions", var_null="nulls", flg_pro=False, verbose=False)
    peer = res.set_index("channel_name")["total_conversions"]
    # ChannelAttribution simulates; its credits are removal effects normalised to the conversions
    share = (ours / ours.sum()).reindex(peer.index)
    np.testing.assert_allclose(share.to_numpy(), (peer / peer.sum()).to_numpy(), atol=0.03)


def test_markov_credit_is_proportional_to_removal_effects():
    paths = random_paths(10, n=100)
    res = A.markov_removal_effects(paths)
    cr = A.markov(paths, "pipeline").set_index("channel").reindex(res.channels)
    total = int(paths["conversions"].sum())
    np.testing.assert_allclose(cr["credit_count"], res.removal_effect / res.removal_effect.sum() * total, atol=0.01)


def test_transition_counts_by_hand():
    paths = frame([(["a", "b", "a"], 2, 1, 500), (["b"], 0, 3, 0), (["a", "b"], 1, 0, 70)])
    t = A.transition_counts(paths)
    got = {(r.from_state, r.to_state): (r.journeys, r.value_cents) for r in t.itertuples()}
    assert got == {
        ("(start)", "a"): (4, 0), ("(start)", "b"): (3, 0), ("a", "b"): (4, 0), ("b", "a"): (3, 0),
        ("a", "(conversion)"): (2, 500), ("a", "(null)"): (1, 0), ("b", "(conversion)"): (1, 70),
        ("b", "(null)"): (3, 0),
    }
    assert list(t.columns) == A.TRANSITION_COLUMNS
    assert t[["from_state", "to_state"]].apply(tuple, axis=1).is_monotonic_increasing


@pytest.mark.parametrize("seed", [6, 7])
def test_markov_from_transitions_equals_exact_solution_and_marketing_attribution_models(seed):
    paths = random_paths(seed, n=200)
    path_route = A.markov_removal_effects(paths)
    got = A.markov_removal_effects_from_transitions(A.transition_counts(paths))
    assert list(got.channels) == list(path_route.channels)
    np.testing.assert_allclose(got.removal_effect, path_route.removal_effect, atol=1e-12, rtol=0)
    np.testing.assert_allclose(got.removal_effect_value, path_route.removal_effect_value, atol=1e-12, rtol=0)
    assert got.conversion_probability == pytest.approx(path_route.conversion_probability, abs=1e-15)
    ref, p = independent_removal_effects(paths)
    assert got.conversion_probability == pytest.approx(p, abs=1e-12)
    np.testing.assert_allclose(got.removal_effect, [ref[c] for c in got.channels], atol=1e-9, rtol=0)
    peer = _mam(paths, False).run_markov().metadata["removal_effect"]["removal_effect"]
    peer.index = peer.index.astype(str)
    np.testing.assert_allclose(got.removal_effect, peer.reindex(got.channels).to_numpy(), atol=1e-9, rtol=0)
    ours = A.markov_from_transitions(A.transition_counts(paths), "pipeline")
    pd.testing.assert_frame_equal(ours, A.markov(paths, "pipeline"))


@settings(max_examples=25, deadline=None)
@given(path_sets())
def test_markov_from_transitions_equals_path_route_on_random_path_sets(paths):
    a = A.markov_removal_effects(paths)
    b = A.markov_removal_effects_from_transitions(A.transition_counts(paths))
    assert list(a.channels) == list(b.channels)
    np.testing.assert_allclose(b.removal_effect, a.removal_effect, atol=1e-12, rtol=0)
    np.testing.assert_allclose(b.removal_effect_value, a.removal_effect_value, atol=1e-12, rtol=0)
    pd.testing.assert_frame_equal(A.markov_from_transitions(A.transition_counts(paths), "revenue"),
                                  A.markov(paths, "revenue"))


def test_markov_from_transitions_refuses_a_channel_named_like_a_special_state_and_handles_empty():
    t = pd.DataFrame({"from_state": ["(start)", "(null)"], "to_state": ["(null)", "(conversion)"],
                      "journeys": [1, 1], "value_cents": [0, 5]})
    with pytest.raises(ValueError, match="special state"):
        A.markov_removal_effects_from_transitions(t)
    empty = A.markov_removal_effects_from_transitions(A.transition_counts(frame([(["a"], 0, 0, 0)])))
    assert len(empty.channels) == 0 and empty.conversion_probability == 0.0


# ------------------------------------------------------------------------------------------- Shapley


def _phi(paths, method="exact"):
    ps = A.PathSet.from_frame(paths)
    phi, _ = A.shapley_values(ps, max_exact=15, method=method, seed=SETTINGS.seed)
    return pd.DataFrame(phi, index=ps.channels, columns=["count", "cents"])


@settings(max_examples=60, deadline=None)
@given(path_sets())
def test_shapley_efficiency_and_closed_form(paths):
    phi = _phi(paths)
    conv = paths["conversions"].sum()
    assert phi["count"].sum() == pytest.approx(conv, rel=1e-12, abs=1e-9)
    assert phi["cents"].sum() == pytest.approx(paths["value_cents"].sum(), rel=1e-12, abs=1e-6)
    closed = _phi(paths, "closed_form")
    np.testing.assert_allclose(phi.to_numpy(), closed.to_numpy(), rtol=1e-9, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(path_sets(max_channels=5))
def test_shapley_symmetry(paths):
    # add the mirror image of every journey (a <-> b swapped): a and b become interchangeable players
    swap = {"a": "b", "b": "a"}
    mirror = paths.copy()
    mirror["path"] = [" > ".join(swap.get(t, t) for t in p.split(" > ")) for p in paths["path"]]
    both = pd.concat([paths, mirror], ignore_index=True)
    phi = _phi(both)
    if "a" in phi.index or "b" in phi.index:
        phi = phi.reindex(sorted(set(phi.index) | {"a", "b"})).fillna(0.0)
        assert phi.loc["a", "count"] == pytest.approx(phi.loc["b", "count"], rel=1e-9, abs=1e-9)
        assert phi.loc["a", "cents"] == pytest.approx(phi.loc["b", "cents"], rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(path_sets(), st.integers(1, 5))
def test_shapley_null_player(paths, nulls):
    # a channel seen only in journeys that never convert adds nothing to any coalition: zero credit
    extra = pd.DataFrame([{"path": "z", "creation_index": 0, "conversions": 0, "nulls": nulls, "value_cents": 0},
                          {"path": "z > a", "creation_index": 1, "conversions": 0, "nulls": nulls,
                           "value_cents": 0}])
    phi = _phi(pd.concat([paths, extra], ignore_index=True))
    assert phi.loc["z"].abs().max() == 0.0
    assert A.shapley(pd.concat([paths, extra]), "pipeline").set_index("channel").loc["z", "credit_cents"] == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_shapley_axioms_on_arbitrary_games(n, seed):
    rng = np.random.default_rng(seed)
    size = 1 << n
    v = rng.normal(size=size)
    v[0] = 0.0
    # player 0 is a null player: v(S + 0) = v(S); players 1 and 2 (if any) are symmetric
    masks = np.arange(size)
    v[masks & 1 == 1] = v[masks[masks & 1 == 1] ^ 1]
    if n >= 3:
        swapped = masks ^ ((((masks >> 1) & 1) ^ ((masks >> 2) & 1)) * 0b110)
        v = (v + v[swapped]) / 2
    phi = A.shapley_from_game(v)
    assert phi.sum() == pytest.approx(v[-1], abs=1e-9)
    assert phi[0] == pytest.approx(0.0, abs=1e-12)
    if n >= 3:
        assert phi[1] == pytest.approx(phi[2], abs=1e-12)


def test_shapley_beyond_the_exact_limit_uses_the_exact_closed_form_and_sampling_converges():
    paths = random_paths(11, n=200, k=8)
    ps = A.PathSet.from_frame(paths)
    exact, _ = A.shapley_values(ps, max_exact=15)
    auto, how = A.shapley_values(ps, max_exact=3)
    assert "closed form" in how
    np.testing.assert_allclose(auto, exact, rtol=1e-9)
    sampled, how = A.shapley_values(ps, method="sample", seed=SETTINGS.seed, n_permutations=3000)
    assert "seed" in how
    np.testing.assert_allclose(sampled[:, 0] / exact[:, 0].sum(), exact[:, 0] / exact[:, 0].sum(), atol=0.01)
    again, _ = A.shapley_values(ps, method="sample", seed=SETTINGS.seed, n_permutations=3000)
    assert np.array_equal(sampled, again)


# ------------------------------------------------------------------------------------------- tables


def test_two_truth_table_sorts_by_absolute_gap():
    paths = frame([(["a", "b"], 3, 0, 300), (["b", "c"], 1, 0, 100), (["c"], 2, 0, 200)])
    credits = A.all_models(paths, "pipeline", SETTINGS)
    tt = A.two_truth_table(credits)
    # first: a 3, b 1, c 2 ; last: b 3, c 3 -> gaps a +3/6, b -2/6, c -1/6
    assert tt["channel"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(tt["share_gap"], [0.5, -2 / 6, -1 / 6])
    assert tt["value_gap"].tolist() == [3.0, -2.0, -1.0]


def test_marketing_roles_reconcile_to_the_total():
    lc = pd.DataFrame({
        "segment": ["SMB"] * 5,
        "first_channel": ["paid_search", "outbound_sdr", "outbound_sdr", "outbound_sdr", None],
        "first_marketing": [True, False, False, False, False],
        "marketing_before": [True, True, False, False, False],
        "marketing_after": [False, True, True, False, False],
        "opportunities": [3, 2, 1, 4, 5],
        "value_cents": [300, 200, 100, 400, 500],
    })
    roles = A.marketing_roles(lc)
    assert roles["value_cents"].tolist() == [300, 200, 100, 400, 500]
    s = A.sourced_influenced(roles)
    assert (s["total_value"], s["sourced_value"], s["influenced_value"]) == (15.0, 3.0, 6.0)
    assert s["influenced_value"] - s["sourced_value"] == s["assisted_value"] + s["accelerated_value"]
    assert "Influenced exceeds sourced by 3" in A.reconciliation_text(s)


def test_won_rates_with_intervals_tests_and_mix_caveat():
    from statsmodels.stats.proportion import proportion_confint

    closed = pd.DataFrame({
        "segment": ["SMB", "SMB", "SMB", "SMB", "Enterprise", "Enterprise", "Enterprise", "Enterprise"],
        "marketing": [True, True, False, False, True, True, False, False],
        "won": [True, False, True, False, True, False, True, False],
        "deals": [60, 140, 20, 80, 5, 20, 2, 10],
    })
    wr = A.won_rates(closed, SETTINGS).set_index("segment")
    smb = wr.loc["SMB"]
    assert smb["rate_with"] == pytest.approx(0.3) and smb["rate_without"] == pytest.approx(0.2)
    lo, hi = proportion_confint(60, 200, method="wilson")
    assert (smb["with_low"], smb["with_high"]) == pytest.approx((lo, hi))
    assert smb["difference"] == pytest.approx(0.1) and smb["p_value"] < 0.1
    assert np.isnan(wr.loc["Enterprise", "p_value"]) and "not tested" in wr.loc["Enterprise", "test"]
    assert wr.loc["All", "deals_with"] == 225
    assert "association" in A.mix_caveat(wr.reset_index())


# ------------------------------------------------------------------------------------------- demo data


@pytest.fixture(scope="module")
def demo_report(demo_data):
    from analysis.context import open_context

    ctx = open_context(demo_data["processed"], "2026-10")
    return A.run_attribution(ctx), json.loads((demo_data["raw"] / "truth.json").read_text())


def test_planted_divergent_channel_tops_the_two_truth_table(demo_report):
    report, truth = demo_report
    planted = next(e for e in truth["effects"] if e["id"] == "content_syndication_first_last_divergence")
    top = report.two_truth.iloc[0]
    assert top["channel"] == planted["primary"]["channel"] == "content_syndication"
    assert top["share_gap"] > 0  # first touch credits it far more than last touch
    m = report.metrics
    row = m[(m["metric"] == "first_vs_last_touch_gap") & (m["dimensions"] == '{"channel":"content_syndication"}')]
    assert len(row) == 1 and row["value"].iloc[0] == pytest.approx(top["share_gap"])


def test_demo_section_reconciles(demo_report):
    report, _ = demo_report
    for basis, cov in report.coverage.items():
        for _, g in report.credits[report.credits["basis"] == basis].groupby("model"):
            assert int(g["credit_cents"].sum()) == cov["value_cents_attributed"]
    s = report.sourced
    assert report.roles["value_cents"].sum() / 100 == pytest.approx(s["total_value"])
    assert s["sourced_value"] <= s["influenced_value"] <= s["total_value"]
    m = report.metrics
    assert set(m["section"]) == {"attribution"} and (m["period"] == "2026-10").all()
    assert {"credit_share", "first_vs_last_touch_gap", "sourced_pipeline", "influenced_pipeline",
            "won_rate_with_marketing", "won_rate_without_marketing"} <= set(m["metric"])
    figs = [R.heatmap_chart(report.credits, "pipeline"), R.gap_chart(report.two_truth)]
    from analysis.charts import png_bytes

    assert all(png_bytes(f)[:4] == b"\x89PNG" for f in figs)


def test_demo_markov_from_engine_transitions_equals_the_path_route(demo_report, demo_data):
    """The engine's transition counts equal those counted over the distinct paths (the pack's route), and the pack's
    removal effects and credits (to the cent) equal the path route's."""
    from analysis import journeys as J
    from analysis.context import open_context

    report, _ = demo_report
    ctx = open_context(demo_data["processed"], "2026-10")
    w = J.JourneyWindow.for_context(ctx)
    for basis in A.BASES:
        engine = J.fetch_transitions(J.transition_table(ctx.tables, basis, w, SETTINGS.origin_by_channel), ctx.con)
        ps = A.PathSet.from_frame(report.paths[basis])
        assert engine["journeys"].sum() > 100
        pd.testing.assert_frame_equal(engine, A.transition_counts(ps), check_dtype=False)
        path_route = A.markov_removal_effects(ps)
        re = report.removal_effects[report.removal_effects["basis"] == basis].set_index("channel")
        np.testing.assert_allclose(re["removal_effect"].reindex(ps.channels), path_route.removal_effect,
                                   atol=1e-12, rtol=0)
        np.testing.assert_allclose(re["removal_effect_value"].reindex(ps.channels), path_route.removal_effect_value,
                                   atol=1e-12, rtol=0)
        cr = report.credits[(report.credits["basis"] == basis) & (report.credits["model"] == "markov")]
        ref = A.markov(ps, basis).set_index("channel")
        cr = cr.set_index("channel").reindex(ref.index)
        assert cr["credit_cents"].tolist() == ref["credit_cents"].tolist()
        assert cr["credit_count"].tolist() == ref["credit_count"].tolist()


def test_a_period_without_conversions_is_reported_not_crashed(demo_data):
    from analysis.charts import png_bytes
    from analysis.context import open_context

    ctx = open_context(demo_data["processed"], "2024-01", as_of="2024-02-01")
    report = A.run_attribution(ctx)
    assert report.credits.empty and report.two_truth.empty
    assert any("omitted" in n for n in report.notes)
    assert "nothing to attribute" in R.headline(report)
    for fig in (R.heatmap_chart(report.credits, "pipeline"), R.gap_chart(report.two_truth)):
        assert png_bytes(fig)[:4] == b"\x89PNG"
    assert R.display_two_truth(report.two_truth).empty
    m = report.metrics
    assert "credit_share" not in set(m["metric"]) and "total_pipeline" in set(m["metric"])

