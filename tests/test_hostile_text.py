"""Hostile text is inert in the board pack and in the e-mail.

The monthly pack of tests/adversarial.py's export (markup that would run script, fetch from outside, break the page
or inject template and markdown syntax, and 10 000-character strings, in every free-text and label field, in
governed labels a definitions file allows, and in the analyst's actions file) is checked as written and as headless
Chromium loads it: no script can run (no script element, event handler, script link or frame exists; the title is
unchanged), no request leaves the page, and the payloads that reach the pack are shown as text.
"""

from __future__ import annotations

import base64
import email
import html
import io
import re
from email import policy
from html.parser import HTMLParser

import adversarial as adv
import pytest
from PIL import Image

from analysis.browser import dump_dom, external_requests
from analysis.display import markdown_html
from analysis.mailer import preview_html

pytestmark = pytest.mark.e2e

# Fields whose hostile value reaches the pack (shown in a table): it must be visible there, as text.
VISIBLE = {
    "competitor": adv.LABELS["competitor"],
    "owner team": adv.LABELS["owner_team"],
    "region": adv.LABELS["region"],
    "channel (allowed by the definitions)": adv.HOSTILE_CHANNEL,
    "rejection reason (allowed)": adv.HOSTILE_REASON,
    "closed-lost theme (allowed)": adv.HOSTILE_THEME,
    "reason code (allowed)": adv.HOSTILE_CODE,
}
ACTIONS_SHOWN_AS_TEXT = ["<script>document.title='PWNED-actions'</script>", "</section><h1 id=\"pwned-actions\">X</h1>"]
FORBIDDEN_TAGS = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "form", "input",
                  "button", "textarea", "select", "svg", "math", "audio", "video", "source", "track", "portal",
                  "noscript", "template"}


class _Audit(HTMLParser):
    """Everything in a page that could run script or fetch from outside."""

    def __init__(self, image_src: re.Pattern) -> None:
        super().__init__(convert_charrefs=True)
        self.image_src = image_src
        self.problems: list[str] = []
        self.links: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        where = f"<{tag} {' '.join(f'{k}={v[:40]!r}' for k, v in a.items())}>"
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"element {where}")
        if tag == "link" or (tag == "meta" and a.get("http-equiv", "").lower() not in ("", "content-security-policy")):
            self.problems.append(f"element {where}")
        for k, v in a.items():
            low = re.sub(r"[\x00-\x20]+", "", v).lower()
            if k.startswith("on") or k in ("srcdoc", "formaction", "xlink:href", "background", "ping", "srcset"):
                self.problems.append(f"attribute {k} on {where}")
            if k in ("id", "name") and v.lower().startswith("pwned"):
                self.problems.append(f"injected element {where}")
            if k == "style" and re.search(r"url\(|expression\(|@import", low):
                self.problems.append(f"style {where}")
            if k == "href":
                if low.startswith(("javascript:", "vbscript:", "data:")):
                    self.problems.append(f"script or data link {where}")
                elif not low.startswith("#"):
                    self.links.append(v)
            if k in ("src", "data", "poster") and not self.image_src.match(v):
                self.problems.append(f"fetched source {where}")
        self.in_title, self.in_style = tag == "title", tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.in_title = self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.in_style and re.search(r"@import|url\(\s*['\"]?\s*(?!data:)[a-z]+:|expression\(", data, re.I):
            self.problems.append(f"style block fetches: {data[:80]!r}")


def _audit(page: str, image_src: str) -> _Audit:
    a = _Audit(re.compile(image_src))
    a.feed(page)
    a.close()
    return a


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("style", "title", "script")

    def handle_endtag(self, tag):
        self.skip -= tag in ("style", "title", "script") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def _text(page: str) -> str:
    t = _Text()
    t.feed(page)
    return " ".join("".join(t.parts).split())


def _allowed_links(run) -> set[str]:
    """The only links a pack may hold to elsewhere: those the analyst wrote (followed on a click, never fetched)."""
    return {f"https://{adv.EVIL}/plan", f"http://{adv.EVIL}/tracker.png"}


@pytest.fixture(scope="module")
def run():
    return adv.hostile_run()


@pytest.fixture(scope="module")
def pack_html(run) -> str:
    return (run["report"] / "board_pack.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def live_dom(run) -> str:
    return dump_dom(run["report"] / "board_pack.html")


PNG_INLINE = r"data:image/png;base64,"


def test_the_pack_as_written_holds_nothing_that_runs_or_fetches(run, pack_html):
    a = _audit(pack_html, PNG_INLINE)
    assert not a.problems, a.problems[:10]
    assert set(a.links) <= _allowed_links(run), sorted(set(a.links) - _allowed_links(run))
    assert "PWNED" not in "".join(a.title)


def test_the_pack_in_chromium_runs_no_script_and_fetches_nothing(run, pack_html, live_dom):
    before, after = _audit(pack_html, PNG_INLINE), _audit(live_dom, PNG_INLINE)
    assert not after.problems, after.problems[:10]  # nothing was injected while the page loaded
    assert "".join(after.title).strip() == "".join(before.title).strip() and "PWNED" not in "".join(after.title)
    assert external_requests(run["report"] / "board_pack.html") == []


def test_hostile_values_are_shown_as_text(live_dom):
    text = _text(live_dom)
    missing = [field for field, value in VISIBLE.items() if " ".join(value.split())[:400] not in text]
    assert not missing, f"hostile values not shown literally: {missing}"
    for shown in ACTIONS_SHOWN_AS_TEXT:
        assert shown in text, shown
    assert "**" not in text.split("What marketing is doing")[1][:200], "markdown formatting was not applied"


def test_the_email_body_runs_no_script_and_fetches_nothing(run, tmp_path):
    msg = email.message_from_bytes((run["report"] / "board_pack.eml").read_bytes(), policy=policy.default)
    body = preview_html(msg, tmp_path / "mail")
    page = body.read_text(encoding="utf-8")
    a = _audit(page, r"img-[0-9a-f]{12}\.png$")  # preview_html writes the cid: images beside the body
    assert not a.problems, a.problems[:10]
    assert set(a.links) <= _allowed_links(run)
    live = _audit(dump_dom(body), r"img-[0-9a-f]{12}\.png$")
    assert not live.problems and "PWNED" not in "".join(live.title)
    assert external_requests(body) == []
    text = _text(page)
    for shown in ACTIONS_SHOWN_AS_TEXT:
        assert shown in text, shown
    attachment = next(p for p in msg.walk() if p.get_filename() == "board_pack.html")
    assert attachment.get_payload(decode=True) == (run["report"] / "board_pack.html").read_bytes()


def test_very_long_values_give_ordinary_charts_and_tables(pack_html):
    sizes = [Image.open(io.BytesIO(base64.b64decode(m))).size
             for m in re.findall(r'src="data:image/png;base64,([^"]+)"', pack_html)]
    assert sizes and max(w for w, _ in sizes) < 2000 and max(h for _, h in sizes) < 2000, sorted(sizes)[-3:]
    assert len(pack_html.encode()) < 5_000_000


@pytest.mark.parametrize("payload", sorted(adv.PAYLOADS))
def test_markdown_for_people_keeps_formatting_and_drops_markup(payload):
    """The analyst's markdown renderer on its own, with every payload (no pack needed)."""
    out = markdown_html(f"**note** {adv.PAYLOADS[payload]}")
    a = _audit(out, r"$^")
    assert not a.problems, a.problems
    assert all(link.lower().startswith(("http://", "https://", "mailto:")) for link in a.links), a.links
    assert "<strong>note</strong>" in out
    assert html.unescape(re.sub(r"<[^>]+>", "", out)).count("PWNED") == adv.PAYLOADS[payload].count("PWNED")


def test_figures(run, pack_html):
    """The note's figures: payloads tried, fields they went into, and which reached the pack as text."""
    fields = ["lost_reason_notes", *adv.LABELS, "channel", "rejection_reason", "theme", "lost_reason_code",
              "actions"]
    reached = [f for f, v in VISIBLE.items() if html.escape(v[:200], quote=False) in pack_html]
    print(f"\nhostile text: {len(adv.PAYLOADS)} note payloads + {len(adv.LABELS)} label payloads + 4 governed "
          f"labels + the actions file, in {len(fields)} fields; shown as text in the pack: {', '.join(reached)}")
    assert len(reached) == len(VISIBLE)


def test_rendering_leaves_shown_text_and_links_to_other_sections_alone(tmp_path):
    """Section ids are prefixed in tags only: text that says id="x" is shown as written, and the brief's links to
    other sections keep their target."""
    import nbformat

    from analysis.render import render_section

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Executive brief\n\n## Local\n\n[up](#Local)")]
    cell = nbformat.v4.new_code_cell("")
    shown = '&lt;h1 id="pwned-x"&gt; href="#y"'
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": f'<p>{shown} <a class="kit-see" href="#04-velocity">see Velocity</a></p>'})]
    nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "01_executive_brief.ipynb")
    body = render_section(tmp_path / "01_executive_brief.ipynb").body
    assert shown in body and 'href="#04-velocity"' in body
    assert 'id="01-executive-brief--Local"' in body and 'href="#01-executive-brief--Local"' in body
