"""Validation of the governed definitions file; every error names the key at fault."""

from __future__ import annotations

import datetime as dt
from typing import Any

from analysis.errors import DefinitionsError

GOVERNED_SECTIONS = (
    "stages",
    "conversion_windows",
    "sla",
    "segments",
    "channels",
    "attribution",
    "closed_lost_themes",
    "statistics",
    "scorecard",
)

# The measures of the alignment scorecard (analysis.brief.scorecard reads a threshold for each).
SCORECARD_MEASURES = ("pipeline_coverage", "mql_to_sql_rate", "sla_adherence", "forecast_accuracy", "loop_closure_rate")


def _fail(message: str, key: str, file: str | None) -> None:
    raise DefinitionsError(message, file=file, column=key, rule="definitions")


def funnel_stage_names(data: dict[str, Any]) -> list[str]:
    """Funnel stage names in order (Lead, MQL, ...), as the definitions list them."""
    return [s["name"] for s in data["stages"]["funnel"]]


def pair_name(a: str, b: str) -> str:
    """The definitions key of a stage pair: ('MQL', 'SQL') -> 'mql_to_sql'."""
    return f"{a.lower()}_to_{b.lower()}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _texts(value: Any, *, unique: bool = True, empty: bool = False) -> bool:
    """A list of non-blank strings (unique, non-empty unless allowed)."""
    return (
        isinstance(value, list)
        and (empty or len(value) > 0)
        and all(isinstance(v, str) and v.strip() for v in value)
        and (not unique or len(set(value)) == len(value))
    )


def _mapping(value: Any, key: str, file: str | None, what: str = "a mapping of keys to values") -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(f"must be {what}", key, file)
    return value


def validate_definitions(data: Any, file: str | None = None) -> None:
    """Raise DefinitionsError naming the key when the definitions break a rule; return None when valid.

    Besides the governance rules (owners, audit dates, windows, weights, origins) every structure the kit reads
    is checked for its shape, so a mistyped value is refused here with its key, not met later as a crash."""
    if not isinstance(data, dict):
        _fail("definitions must be a YAML mapping", "<root>", file)
    for section in GOVERNED_SECTIONS:
        if section not in data:
            _fail("required section is missing", section, file)
        body = data[section]
        if not isinstance(body, dict):
            _fail("section must be a mapping", section, file)
        owner = body.get("owner")
        if not isinstance(owner, str) or not owner.strip():
            _fail("every governed section needs an owner", f"{section}.owner", file)
        audited = body.get("last_audited")
        try:
            dt.date.fromisoformat(str(audited))
        except ValueError:
            _fail("last_audited must be a date YYYY-MM-DD", f"{section}.last_audited", file)

    funnel = data["stages"].get("funnel") or []
    if not isinstance(funnel, list):
        _fail("funnel stages must be a list of at least two uniquely named stages", "stages.funnel", file)
    names = [s.get("name") for s in funnel if isinstance(s, dict)]
    if (
        len(names) != len(funnel)
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len({n.lower() for n in names}) != len(names)
        or len(names) < 2
    ):
        _fail("funnel stages must be a list of at least two uniquely named stages", "stages.funnel", file)
    for i, stage in enumerate(funnel):
        if not isinstance(stage.get("column"), str) or not stage["column"].strip():
            _fail("a funnel stage names the leads column that timestamps it", f"stages.funnel.{i}.column", file)
    order = {n.lower(): i for i, n in enumerate(names)}

    opp = _mapping(data["stages"].get("opportunity"), "stages.opportunity", file,
                   "a mapping with open (a list of stages), won and lost")
    if not _texts(opp.get("open")):
        _fail("open opportunity stages must be a non-empty list of unique names", "stages.opportunity.open", file)
    for key in ("won", "lost"):
        if not isinstance(opp.get(key), str) or not opp[key].strip() or opp[key] in opp["open"]:
            _fail("must name one stage, not an open one", f"stages.opportunity.{key}", file)
    if opp["won"] == opp["lost"]:
        _fail("won and lost must be different stages", "stages.opportunity.lost", file)

    windows = _mapping(data["conversion_windows"].get("days") or {}, "conversion_windows.days", file,
                       "a mapping of stage pairs to days")
    for key, days in windows.items():
        a, sep, b = str(key).partition("_to_")
        if not sep or a not in order or b not in order:
            _fail(
                f"unknown stage in window '{key}' (stages: {', '.join(names)})", f"conversion_windows.days.{key}", file
            )
        if order[a] >= order[b]:
            _fail("a window must run from an earlier stage to a later one", f"conversion_windows.days.{key}", file)
        if not _whole(days) or days <= 0:
            _fail("a window is a positive whole number of days", f"conversion_windows.days.{key}", file)
    # Overlap rule: a direct pair's window must cover the windows of the pairs it spans.
    for key, days in windows.items():
        a, _, b = key.partition("_to_")
        for mid in names:
            m = mid.lower()
            if order[a] < order[m] < order[b] and f"{a}_to_{m}" in windows and windows[f"{a}_to_{m}"] > days:
                _fail(
                    f"window {a}_to_{m} ({windows[f'{a}_to_{m}']} d) overlaps past {key} ({days} d)",
                    f"conversion_windows.days.{key}",
                    file,
                )

    sla = data["sla"]
    for key in ("acceptance_hours", "first_touch_business_hours", "aging_alert_hours"):
        if key in sla and (not _number(sla[key]) or sla[key] <= 0):
            _fail("must be a positive number of hours", f"sla.{key}", file)
    if not _texts(sla.get("rejection_reasons")):
        _fail("the rejection reasons must be a non-empty list of unique codes", "sla.rejection_reasons", file)
    if "calendar" in sla:
        cal = _mapping(sla["calendar"], "sla.calendar", file)
        for key in ("time_zone", "start", "end"):
            if key in cal and not isinstance(cal[key], str):
                _fail("must be text (quote times: \"09:00\")", f"sla.calendar.{key}", file)
        for key in ("workdays", "holidays"):
            if key in cal and not _texts([str(v) for v in cal[key]] if isinstance(cal[key], list) else None,
                                         empty=True):
                _fail("must be a list", f"sla.calendar.{key}", file)

    segments = data["segments"]
    if not _texts(segments.get("order")):
        _fail("segments must be a non-empty list of unique names", "segments.order", file)
    bands = _mapping(segments.get("employees_bands"), "segments.employees_bands", file,
                     "a mapping of segment to an employee band ('1-199', '2000+')")
    for label, band in bands.items():
        if not isinstance(band, str):
            _fail("an employee band is text such as '1-199' or '2000+'", f"segments.employees_bands.{label}", file)

    origins_list = data["channels"].get("origins")
    if not _texts(origins_list):
        _fail("origins must be a non-empty list of unique names", "channels.origins", file)
    origins = set(origins_list)
    by_channel = _mapping(data["channels"].get("origin_by_channel"), "channels.origin_by_channel", file,
                          "a mapping of channel to origin")
    if not by_channel:
        _fail("at least one channel is needed", "channels.origin_by_channel", file)
    for channel, origin in by_channel.items():
        if not isinstance(origin, str) or origin not in origins:
            _fail(f"origin '{origin}' is not one of {sorted(origins)}", f"channels.origin_by_channel.{channel}", file)

    attribution = data["attribution"]
    for key in ("lookback_days", "time_decay_half_life_days"):
        if key in attribution and (not _number(attribution[key]) or attribution[key] <= 0):
            _fail("must be a positive number of days", f"attribution.{key}", file)
    models = _mapping(attribution.get("position_weights") or {}, "attribution.position_weights", file)
    for model, weights in models.items():
        key = f"attribution.position_weights.{model}"
        _mapping(weights, key, file, "a mapping of positions to weights")
        for position, w in weights.items():
            if not _number(w) or w < 0:
                _fail("a weight is a number from 0 to 1", f"{key}.{position}", file)
        total = round(sum(float(v) for v in weights.values()), 9)
        if total != 1.0:
            _fail(f"position weights sum to {total}, not 1", key, file)

    themes = _mapping(data["closed_lost_themes"].get("themes") or {}, "closed_lost_themes.themes", file)
    for theme, rule in themes.items():
        key = f"closed_lost_themes.themes.{theme}"
        _mapping(rule, key, file, "a mapping with codes and keywords")
        for part in ("codes", "keywords"):
            if part in rule and rule[part] is not None and not _texts(rule[part], unique=False, empty=True):
                _fail("must be a list of text", f"{key}.{part}", file)

    settings = _mapping(data["statistics"].get("settings") or {}, "statistics.settings", file)
    for key in ("alpha", "fdr_method", "min_practical_effect", "min_cell_size", "baseline_months", "seed"):
        if key not in settings:
            _fail("required statistics setting is missing", f"statistics.settings.{key}", file)
    if not _number(settings["alpha"]) or not 0 < settings["alpha"] < 1:
        _fail("alpha must lie between 0 and 1", "statistics.settings.alpha", file)
    if not isinstance(settings["fdr_method"], str):
        _fail("must name a statsmodels multipletests method", "statistics.settings.fdr_method", file)
    for key in ("min_practical_effect", "min_relative_effect", "confidence"):
        if key in settings and (not _number(settings[key]) or not 0 <= settings[key] < 1):
            _fail("must be a number from 0 to 1", f"statistics.settings.{key}", file)
    for key in ("min_cell_size", "baseline_months", "trend_months", "exact_test_below"):
        if key in settings and (not _whole(settings[key]) or settings[key] < (0 if key == "exact_test_below" else 1)):
            _fail("must be a positive whole number", f"statistics.settings.{key}", file)
    if not _whole(settings["seed"]):
        _fail("must be a whole number", "statistics.settings.seed", file)

    thresholds = _mapping(data["scorecard"].get("thresholds"), "scorecard.thresholds", file,
                          "a mapping of measure to its threshold")
    for measure in SCORECARD_MEASURES:
        rule = thresholds.get(measure)
        key = f"scorecard.thresholds.{measure}"
        if not isinstance(rule, dict) or not any(_number(rule.get(k)) for k in ("min", "band")):
            _fail("every scorecard measure needs a threshold {min: x} or {band: x}", key, file)
        for k in ("min", "band"):
            if k in rule and not _number(rule[k]):
                _fail("must be a number", f"{key}.{k}", file)
