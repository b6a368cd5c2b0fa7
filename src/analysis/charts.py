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


MAX_LABEL = 40  # characters of a category on an axis or in a legend (labels come from the data: CRM free text)
MAX_TEXT = 100  # characters of any other text on a chart (titles, annotations)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _shorten_labels(fig: plt.Figure) -> None:
    """Cut data-borne labels to a readable length: a 10 000-character team name made an 87 000-pixel-wide chart."""
    from matplotlib.category import StrCategoryFormatter
    from matplotlib.text import Text
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if isinstance(fmt, (StrCategoryFormatter, FixedFormatter, FuncFormatter)):  # labels, not numbers
                axis.set_major_formatter(FuncFormatter(lambda v, pos, f=fmt: _short(str(f(v, pos)), MAX_LABEL)))
    for legend in [*(ax.get_legend() for ax in fig.axes), *fig.legends]:
        for text in legend.get_texts() if legend is not None else ():
            text.set_text(_short(text.get_text(), MAX_LABEL))
    for text in fig.findobj(Text):
        if len(text.get_text()) > MAX_TEXT:
            text.set_text(_short(text.get_text(), MAX_TEXT))


def png_bytes(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes with no timestamp or software metadata (identical bytes on re-run)."""
    buf = io.BytesIO()
    _shorten_labels(fig)
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
