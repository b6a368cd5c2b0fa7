"""Render executed notebooks into one self-contained HTML board pack with the kit's nbconvert template."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from traitlets.config import Config

TEMPLATE_DIR = Path(str(resources.files("analysis") / "templates"))
HIDDEN_TAGS = ("parameters", "injected-parameters", "remove-cell")


@dataclass(frozen=True)
class RenderedSection:
    """One notebook rendered as an HTML fragment with its title and anchor."""

    anchor: str
    title: str
    body: str


def _exporter() -> HTMLExporter:
    c = Config()
    c.TagRemovePreprocessor.remove_cell_tags = set(HIDDEN_TAGS)
    c.TagRemovePreprocessor.enabled = True
    c.HTMLExporter.exclude_input = True
    c.HTMLExporter.exclude_input_prompt = True
    c.HTMLExporter.exclude_output_prompt = True
    c.HTMLExporter.embed_images = True
    exporter = HTMLExporter(config=c, extra_template_basedirs=[str(TEMPLATE_DIR)], template_name="pack")
    exporter.register_preprocessor(TagRemovePreprocessor(config=c), enabled=True)
    return exporter


def section_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown '# heading' of a notebook, or the fallback."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return fallback


def render_section(path: str | Path) -> RenderedSection:
    """One executed notebook as an HTML fragment (outputs and markdown only)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    body, _ = _exporter().from_notebook_node(nb)
    anchor = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
    # nbconvert's markdown renderer gives headings ids from their text; keep them unique per section. Only ids in
    # tags (text shown in the section, a CRM note say, may read id="x" too) and only links to this section's own
    # ids (the brief's links to the other sections stay as they are).
    tag_id = re.compile(r'(<[a-zA-Z][^<>]*?\s)id="([^"]+)"')
    own = set(m.group(2) for m in tag_id.finditer(body))
    body = tag_id.sub(lambda m: f'{m.group(1)}id="{anchor}--{m.group(2)}"', body)
    body = re.sub(
        r'(<a\s[^<>]*?)href="#([^"]+)"',
        lambda m: f'{m.group(1)}href="#{anchor}--{m.group(2)}"' if m.group(2) in own else m.group(0),
        body,
    )
    return RenderedSection(anchor=anchor, title=section_title(nb, path.stem), body=body)


def render_page(
    sections: list[RenderedSection],
    *,
    title: str,
    subtitle: str,
    provenance: list[tuple[str, str]],
) -> str:
    """The whole board pack: styles, table of contents, sections in order, provenance footer."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR / "pack")),
        autoescape=False,  # fragments are already HTML; text fields are escaped with |e in the template
        keep_trailing_newline=True,
    )
    css = (TEMPLATE_DIR / "pack" / "pack.css").read_text(encoding="utf-8")
    page = env.get_template("page.html.j2").render(
        title=title, subtitle=subtitle, sections=sections, provenance=provenance, css=css
    )
    return "\n".join(line.rstrip() for line in page.splitlines()) + "\n"
