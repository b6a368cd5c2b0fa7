"""Charts (seaborn on matplotlib's Agg backend) rendered to deterministic, compact PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = "colorblind"
DPI = 96

sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
plt.rcParams.update(
    {
        "figure.figsize": (8, 3.6),
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "axes.titlesize": 12,
        "axes.titleweight": "bold",
        "svg.hashsalt": "funnel-kit",  # stable ids should SVG ever be used
        "font.family": "DejaVu Sans",
    }
)


def new_figure(width: float = 8, height: float = 3.6) -> tuple[plt.Figure, plt.Axes]:
    """A fresh figure and axes in the pack's style."""
    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def png_bytes(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes with no timestamp or software metadata (identical bytes on re-run)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
