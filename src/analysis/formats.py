"""Numbers for people: the one place money and percentages are written the way the pack shows them."""

from __future__ import annotations


def money(x: float, *, millions_digits: int = 1, missing: str = "n/a") -> str:
    """Money in words-sized units: $1.2M, $350k, $900 (a minus sign for negatives; `missing` for NaN)."""
    if x != x:  # NaN
        return missing
    sign = "−" if x < 0 else ""
    a = abs(x)
    if a >= 1e6:
        return f"{sign}${a / 1e6:,.{millions_digits}f}M"
    if a >= 1e3:
        return f"{sign}${a / 1e3:,.0f}k"
    return f"{sign}${a:,.0f}"


def pct(x: float, *, missing: str = "") -> str:
    """A share as a percentage with one decimal: 0.1234 -> '12.3%' (`missing` for NaN)."""
    return missing if x != x else f"{x * 100:.1f}%"
