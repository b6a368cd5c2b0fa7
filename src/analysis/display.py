"""What notebooks show: escaped tables, notes and charts, the same in JupyterLab and in the pack."""

from __future__ import annotations

import html

import pandas as pd
from IPython.display import HTML, Image, display

from analysis.charts import png_bytes


def escape(text: object) -> str:
    """HTML-escaped text (CRM free text and labels are never trusted)."""
    return html.escape("" if text is None else str(text), quote=True)


def table_html(frame: pd.DataFrame, caption: str | None = None, float_format: str = "{:,.3f}") -> str:
    """An HTML table with every cell and header escaped, no index, and a caption."""
    formatters = {
        c: (lambda v, f=float_format: "" if pd.isna(v) else f.format(v))
        for c in frame.columns
        if pd.api.types.is_float_dtype(frame[c])
    }
    body = frame.to_html(index=False, escape=True, border=0, classes="kit-table", formatters=formatters, na_rep="")
    cap = f'<p class="kit-caption">{escape(caption)}</p>' if caption else ""
    return f"{cap}{body}"


def show_table(frame: pd.DataFrame, caption: str | None = None, float_format: str = "{:,.3f}") -> None:
    """Display a table (escaped) with an optional caption."""
    display(HTML(table_html(frame, caption, float_format)))


def show_note(text: str, kind: str = "note") -> None:
    """Display a visible note (e.g. a section switched off for missing data); kind: note, warning."""
    display(HTML(f'<div class="kit-{escape(kind)}">{escape(text)}</div>'))


def show_text(text: str) -> None:
    """Display a paragraph of generated text (escaped)."""
    display(HTML(f'<p class="kit-text">{escape(text)}</p>'))


def chart_title(fig) -> str:
    """A figure's title for its alternative text: the suptitle, else the axes titles joined."""
    if fig._suptitle is not None and fig._suptitle.get_text():
        return fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    return "; ".join(titles) or "chart"


def show_chart(fig, alt: str | None = None) -> None:
    """Display a matplotlib figure as a compact, deterministic PNG with alternative text (its title by default)."""
    text = alt or chart_title(fig)
    display(Image(data=png_bytes(fig), format="png", alt=text))
