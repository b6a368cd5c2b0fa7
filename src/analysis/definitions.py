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


def _fail(message: str, key: str, file: str | None) -> None:
    raise DefinitionsError(message, file=file, column=key, rule="definitions")


def funnel_stage_names(data: dict[str, Any]) -> list[str]:
    """Funnel stage names in order (Lead, MQL, ...), as the definitions list them."""
    return [s["name"] for s in data["stages"]["funnel"]]


def pair_name(a: str, b: str) -> str:
    """The definitions key of a stage pair: ('MQL', 'SQL') -> 'mql_to_sql'."""
    return f"{a.lower()}_to_{b.lower()}"


def validate_definitions(data: Any, file: str | None = None) -> None:
    """Raise DefinitionsError naming the key when the definitions break a rule; return None when valid."""
    if not isinstance(data, dict):
        _fail("definitions must be a YAML mapping", "<root>", file)
    for section in GOVERNED_SECTIONS:
        if section not in data:
            _fail("required section is missing", section, file)
        body = data[section]
        if not isinstance(body, dict):
            _fail("section must be a mapping", section, file)
        if not str(body.get("owner") or "").strip():
            _fail("every governed section needs an owner", f"{section}.owner", file)
        audited = body.get("last_audited")
        try:
            dt.date.fromisoformat(str(audited))
        except ValueError:
            _fail("last_audited must be a date YYYY-MM-DD", f"{section}.last_audited", file)

    funnel = data["stages"].get("funnel") or []
    names = [s.get("name") for s in funnel if isinstance(s, dict)]
    if len(names) != len(funnel) or len(set(names)) != len(names) or len(names) < 2:
        _fail("funnel stages must be a list of at least two uniquely named stages", "stages.funnel", file)
    order = {n.lower(): i for i, n in enumerate(names)}

    windows = data["conversion_windows"].get("days") or {}
    for key, days in windows.items():
        a, sep, b = str(key).partition("_to_")
        if not sep or a not in order or b not in order:
            _fail(
                f"unknown stage in window '{key}' (stages: {', '.join(names)})", f"conversion_windows.days.{key}", file
            )
        if order[a] >= order[b]:
            _fail("a window must run from an earlier stage to a later one", f"conversion_windows.days.{key}", file)
        if not isinstance(days, int) or days <= 0:
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

    origins = set(data["channels"].get("origins") or [])
    for channel, origin in (data["channels"].get("origin_by_channel") or {}).items():
        if origin not in origins:
            _fail(f"origin '{origin}' is not one of {sorted(origins)}", f"channels.origin_by_channel.{channel}", file)

    for model, weights in (data["attribution"].get("position_weights") or {}).items():
        total = round(sum(float(v) for v in weights.values()), 9)
        if total != 1.0:
            _fail(f"position weights sum to {total}, not 1", f"attribution.position_weights.{model}", file)

    settings = data["statistics"].get("settings") or {}
    for key in ("alpha", "fdr_method", "min_practical_effect", "min_cell_size", "baseline_months", "seed"):
        if key not in settings:
            _fail("required statistics setting is missing", f"statistics.settings.{key}", file)
    if not 0 < float(settings["alpha"]) < 1:
        _fail("alpha must lie between 0 and 1", "statistics.settings.alpha", file)
