"""Governed definitions: a broken definitions file is refused with the key at fault named, never a crash.

Named cases (unknown stage, overlapping window, missing owner, bad date, weights not summing to 1, unknown origin
and more) through `analysis.config.load_definitions` and `python -m analysis definitions --file X`; then every
key of the real file deleted or given a value of the wrong type: the result is a DefinitionsError or a valid file.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from analysis import cli
from analysis.config import DEFINITIONS_FILE, load_definitions
from analysis.definitions import validate_definitions
from analysis.errors import DefinitionsError

BASE = yaml.safe_load(DEFINITIONS_FILE.read_text(encoding="utf-8"))


def _set(data: dict, path: str, value, delete: bool = False) -> dict:
    out = copy.deepcopy(data)
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif delete:
        del node[last]
    else:
        node[last] = value
    return out


# (name, path, value or DELETE, key the error must name, words the message must hold)
DELETE = object()
CASES = [
    ("unknown_stage_in_window", "conversion_windows.days.mql_to_opp", 30, "conversion_windows.days.mql_to_opp",
     "unknown stage"),
    ("window_backwards", "conversion_windows.days.sql_to_mql", 30, "conversion_windows.days.sql_to_mql", "earlier"),
    ("overlapping_window", "conversion_windows.days.mql_to_sal", 45, "conversion_windows.days.mql_to_sql",
     "overlaps"),
    ("zero_window", "conversion_windows.days.sal_to_sql", 0, "conversion_windows.days.sal_to_sql", "positive"),
    ("fractional_window", "conversion_windows.days.sal_to_sql", 7.5, "conversion_windows.days.sal_to_sql",
     "whole number"),
    ("missing_owner", "stages.owner", DELETE, "stages.owner", "owner"),
    ("blank_owner", "attribution.owner", "   ", "attribution.owner", "owner"),
    ("bad_audit_date", "sla.last_audited", "2026-13-01", "sla.last_audited", "YYYY-MM-DD"),
    ("missing_audit_date", "segments.last_audited", DELETE, "segments.last_audited", "YYYY-MM-DD"),
    ("weights_not_one", "attribution.position_weights.u_shaped", {"first": 0.4, "last": 0.4, "rest": 0.3},
     "attribution.position_weights.u_shaped", "sum to 1.1"),
    ("unknown_origin", "channels.origin_by_channel.paid_search", "advertising",
     "channels.origin_by_channel.paid_search", "advertising"),
    ("missing_section", "scorecard", DELETE, "scorecard", "missing"),
    ("alpha_out_of_range", "statistics.settings.alpha", 1.5, "statistics.settings.alpha", "between 0 and 1"),
    ("missing_stat_setting", "statistics.settings.min_cell_size", DELETE, "statistics.settings.min_cell_size",
     "missing"),
    ("duplicate_funnel_stage", "stages.funnel.2.name", "MQL", "stages.funnel", "uniquely"),
]


@pytest.mark.parametrize("name,path,value,key,words", CASES, ids=[c[0] for c in CASES])
def test_broken_definitions_name_the_key(tmp_path, name, path, value, key, words):
    data = _set(BASE, path, None, delete=True) if value is DELETE else _set(BASE, path, value)
    f = tmp_path / "definitions.yml"
    f.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionsError) as info:
        load_definitions(f)
    err = info.value
    assert err.column == key, str(err)
    assert err.file == str(f) and err.rule == "definitions"
    assert words in str(err) and "\n" not in str(err)


def test_the_real_definitions_are_valid():
    d = load_definitions()
    assert len(d.sha256) == 64


FILE_CASES = {
    "invalid_yaml": ("stages:\n  owner: x\n   bad: [\n", "yaml", 3),
    "duplicate_key": (DEFINITIONS_FILE.read_text(encoding="utf-8").replace(
        "    mql_to_sql: 30\n", "    mql_to_sql: 30\n    mql_to_sql: 10\n", 1), "yaml", None),
    "empty": ("", "definitions", None),
    "a_list": ("- stages\n- sla\n", "definitions", None),
    "not_utf8": ("# Müller\n".encode("latin-1") + DEFINITIONS_FILE.read_bytes(), "encoding", 1),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unreadable_definitions_files(tmp_path, case):
    text, rule, line = FILE_CASES[case]
    f = tmp_path / "definitions.yml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(DefinitionsError) as info:
        load_definitions(f)
    assert info.value.rule == rule and info.value.file == str(f), str(info.value)
    if line is not None:
        assert info.value.row == line, str(info.value)
    if case == "duplicate_key":
        assert "mql_to_sql" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DefinitionsError, match="cannot read definitions"):
        load_definitions(tmp_path / "nope.yml")


def test_cli_definitions_check(tmp_path, capsys):
    data = _set(BASE, "conversion_windows.days.mql_to_sal", 45)
    f = tmp_path / "definitions.yml"
    f.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert cli.main(["definitions", "--file", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "column conversion_windows.days.mql_to_sql" in err and str(f) in err
    assert cli.main(["definitions", "--file", str(DEFINITIONS_FILE)]) == 0
    assert "valid, sha256" in capsys.readouterr().out


def test_the_real_command_exits_2_with_one_line(tmp_path):
    data = _set(BASE, "stages.owner", None, delete=True)
    f = tmp_path / "definitions.yml"
    f.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "analysis", "definitions", "--file", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "column stages.owner" in proc.stderr and "rule definitions" in proc.stderr


# ------------------------------------------------------------------- every key, deleted or mistyped


def _paths(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            yield p
            yield from _paths(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            p = f"{prefix}.{i}"
            yield p
            yield from _paths(v, p)


WRONG = [None, "text", -1, 0, True, 1.5, [], {}, ["x"], {"x": "y"}]
PATHS = list(_paths(BASE))


def test_every_key_deleted_or_mistyped_is_refused_or_valid():
    """No mutation of the real file makes the validator crash: DefinitionsError naming a key, or valid."""
    tried, refused = 0, 0
    for path in PATHS:
        variants = [_set(BASE, path, v) for v in WRONG]
        if not path.split(".")[-1].isdigit():
            variants.append(_set(BASE, path, None, delete=True))
        for data in variants:
            tried += 1
            try:
                validate_definitions(data, file="definitions.yml")
            except DefinitionsError as exc:
                refused += 1
                assert exc.column and exc.rule == "definitions" and "\n" not in str(exc), str(exc)
            except Exception as exc:  # noqa: BLE001 (the point of the test)
                pytest.fail(f"{path} -> {type(exc).__name__}: {exc}")
    assert len(PATHS) > 150 and tried > 1500 and refused > tried // 2
