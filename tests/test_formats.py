"""formats: the money and percentage strings the pack shows."""

from __future__ import annotations

import math

import pytest

from analysis.formats import money, pct


@pytest.mark.parametrize(
    ("x", "kw", "text"),
    [
        (1_234_567.0, {}, "$1.2M"),
        (1_234_567.0, {"millions_digits": 2}, "$1.23M"),
        (2_345_678_901.0, {}, "$2,345.7M"),
        (-350_400.0, {}, "−$350k"),
        (999.4, {}, "$999"),
        (0.0, {}, "$0"),
        (math.nan, {}, "n/a"),
        (math.nan, {"missing": ""}, ""),
    ],
)
def test_money(x, kw, text):
    assert money(x, **kw) == text


def test_pct():
    assert pct(0.1234) == "12.3%" and pct(1.0) == "100.0%" and pct(-0.005) == "-0.5%"
    assert pct(math.nan) == "" and pct(math.nan, missing="n/a") == "n/a"
