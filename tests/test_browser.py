"""The headless-Chromium helper: screenshots, DOM text, external requests; the network is off.

These tests fail (never skip) when Chromium is missing: CI installs Debian's `chromium`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from analysis import browser

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>
<style>body { background: #ffffff; } h1 { color: #0b5cad; } .box { width: 300px; height: 120px; background: #b42318; }
</style></head><body><h1>What moved</h1><p>Enterprise fell.</p><div class="box"></div>
<script>document.body.insertAdjacentHTML('beforeend', '<p id="js">added by script</p>');</script></body></html>"""

EXTERNAL = """<!DOCTYPE html><html><head><link rel="stylesheet" href="https://cdn.example.com/x.css"></head>
<body><p>offline</p><img src="http://example.org/a.png"><script>fetch('https://api.example.net/beacon')</script>
</body></html>"""


@pytest.fixture()
def page(tmp_path) -> Path:
    p = tmp_path / "page.html"
    p.write_text(PAGE, encoding="utf-8")
    return p


def test_chromium_is_installed():
    assert Path(browser.find_chromium()).exists()


def test_screenshot_has_the_page_size_and_content(page, tmp_path):
    png = browser.screenshot(page, tmp_path / "shot.png", width=800, height=600)
    img = Image.open(png).convert("RGB")
    assert img.size == (800, 600)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (255, 255, 255) in colours and (0xB4, 0x23, 0x18) in colours, "background and the red box"
    assert len(colours) > 10, "text was drawn"


def test_dom_text_is_the_visible_text_after_scripts(page):
    text = browser.dom_text(page)
    assert text.splitlines()[:2] == ["What moved", "Enterprise fell."]
    assert "added by script" in text
    assert "background" not in text and "insertAdjacentHTML" not in text


def test_external_requests_are_listed_and_fail(tmp_path):
    p = tmp_path / "external.html"
    p.write_text(EXTERNAL, encoding="utf-8")
    assert browser.external_requests(p) == [
        "http://example.org/a.png",
        "https://api.example.net/beacon",
        "https://cdn.example.com/x.css",
    ]
    assert "offline" in browser.dom_text(p)  # the page still loads; the requests go nowhere


def test_a_self_contained_page_makes_no_request(page):
    assert browser.external_requests(page) == []


def test_missing_chromium_is_a_clear_error(monkeypatch, page, tmp_path):
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(browser.BrowserNotFound, match="CHROMIUM"):
        browser.screenshot(page, tmp_path / "x.png")
    monkeypatch.delenv("CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(browser.BrowserNotFound, match="apt-get install chromium"):
        browser.dom_text(page)


def test_missing_page_is_a_clear_error(tmp_path):
    with pytest.raises(browser.BrowserError, match="no such HTML file"):
        browser.dom_text(tmp_path / "absent.html")
