"""What notebooks show: escaped tables, notes and charts, the same in JupyterLab and in the pack."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pandas as pd
from IPython.display import HTML, Image, display

from analysis.charts import png_bytes


def escape(text: object) -> str:
    """HTML-escaped text (CRM free text and labels are never trusted)."""
    return html.escape("" if text is None else str(text), quote=True)


# Markdown for people's own text (the analyst's "what marketing is doing"): what the renderer may produce.
_MD_TAGS = {"p", "br", "hr", "ul", "ol", "li", "strong", "em", "b", "i", "del", "code", "pre", "blockquote", "a",
            "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
_MD_DROP = {"script", "style", "iframe", "object", "embed", "svg", "math", "template", "noscript", "title"}
_LINK_SCHEMES = ("http://", "https://", "mailto:")
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")


def _link(href: str | None) -> str | None:
    """A web or mail address (or an in-page anchor) fit for href, escaped; None for anything else."""
    url = _URL_NOISE.sub("", href or "")
    if url.lower().startswith(_LINK_SCHEMES) or (url.startswith("#") and url != "#harmful-link"):
        return html.escape(url, quote=True)
    return None


class _MarkdownHtml(HTMLParser):
    """Re-emits rendered markdown keeping only _MD_TAGS without attributes, but a link's href (web, mail or in-page
    only); an image becomes a link to it, so opening the page fetches nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.dropping = 0
        self.links: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in _MD_DROP:
            self.dropping += 1
        elif self.dropping:
            return
        elif tag == "img":
            href, alt = _link(a.get("src")), html.escape(a.get("alt") or "image", quote=False)
            self.out.append(f'<a href="{href}" rel="noopener noreferrer">{alt}</a>' if href else alt)
        elif tag == "a":
            href = _link(a.get("href"))
            self.links.append(bool(href))
            if href:
                self.out.append(f'<a href="{href}" rel="noopener noreferrer">')
        elif tag in _MD_TAGS:
            self.out.append(f"<{tag}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.handle_starttag(tag, attrs)
        elif tag in ("br", "hr") and not self.dropping:
            self.out.append(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _MD_DROP:
            self.dropping = max(0, self.dropping - 1)
        elif self.dropping:
            return
        elif tag == "a":
            if self.links and self.links.pop():
                self.out.append("</a>")
        elif tag in _MD_TAGS and tag not in ("br", "hr"):
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))


def markdown_html(text: str) -> str:
    """People's markdown as safe HTML: formatting kept, raw HTML shown as text, links only to web or mail
    addresses (followed on a click, never fetched), images shown as links to them (a pack makes no request)."""
    import mistune

    rendered = mistune.create_markdown(escape=True, plugins=["strikethrough", "table"])(text)
    parser = _MarkdownHtml()
    parser.feed(rendered)
    parser.close()
    return "".join(parser.out)


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
