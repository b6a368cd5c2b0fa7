"""Open an HTML file in headless Chromium (Debian's `chromium`) with the network switched off, for tests.

    png = screenshot(Path("reports/2026-09/board_pack.html"), tmp / "pack.png")
    text = dom_text(Path("reports/2026-09/board_pack.html"))   # the visible text after the page has loaded

The network is approximated as off: every request goes to a dead proxy (127.0.0.1:9) and every host name
resolves to nothing, so a page that needs anything external renders without it (and looks broken in the
screenshot). `external_requests` lists what a page tried to fetch, from Chromium's net log.

Chromium is found as $CHROMIUM, else `chromium`, `chromium-browser` or `google-chrome` on PATH. When none is
installed, `BrowserNotFound` is raised: tests that use it then fail (they must not skip: CI installs chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from analysis.errors import AnalysisError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 90


class BrowserError(AnalysisError):
    """Chromium could not render the page."""


class BrowserNotFound(BrowserError):
    """No Chromium executable (install Debian's `chromium` package, or set $CHROMIUM)."""


def find_chromium() -> str:
    """The Chromium executable: $CHROMIUM, else the first of chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        if shutil.which(env):
            return shutil.which(env) or env
        raise BrowserNotFound(f"$CHROMIUM={env} is not an executable", rule="browser")
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserNotFound("headless Chromium not found (apt-get install chromium, or set $CHROMIUM)", rule="browser")


def _args(user_data_dir: Path) -> list[str]:
    return [
        find_chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--hide-scrollbars",
        "--mute-audio",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--force-device-scale-factor=1",
        f"--user-data-dir={user_data_dir}",
    ]


def _run(extra: list[str], html_path: Path) -> subprocess.CompletedProcess[bytes]:
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise BrowserError("no such HTML file", file=str(html_path), rule="browser")
    with tempfile.TemporaryDirectory(prefix="funnel-chromium-") as profile:
        cmd = [*_args(Path(profile)), *extra, html_path.as_uri()]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=_env(profile)
        )
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BrowserError(
                f"chromium did not finish within {TIMEOUT_S} s", file=str(html_path), rule="browser"
            ) from None
        finally:
            try:  # chromium leaves helper processes behind in its own session: end them
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc.returncode != 0:
        last = next((ln for ln in reversed(err.decode("utf-8", "replace").splitlines()) if ln.strip()), "")
        raise BrowserError(f"chromium exited with {proc.returncode}: {last[:200]}", file=str(html_path), rule="browser")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env(profile: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HOME", profile)
    env["XDG_CONFIG_HOME"] = env["XDG_CACHE_HOME"] = profile
    return env


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 900) -> Path:
    """Render `html_path` in headless Chromium at width x height CSS pixels and save a PNG; return its path."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if png_path.exists():
        png_path.unlink()
    _run([f"--screenshot={png_path}", f"--window-size={width},{height}"], Path(html_path))
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise BrowserError("chromium wrote no screenshot", file=str(png_path), rule="browser")
    return png_path


def dump_dom(html_path: str | Path) -> str:
    """The page's DOM as serialised by Chromium after loading (`--dump-dom`)."""
    return _run(["--dump-dom"], Path(html_path)).stdout.decode("utf-8", "replace")


class _Text(HTMLParser):
    SKIP = {"script", "style", "head", "title", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag in ("p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "section", "table", "ul", "ol"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def dom_text(html_path: str | Path) -> str:
    """The visible text of the page as Chromium loaded it (scripts and styles left out), one block per line."""
    parser = _Text()
    parser.feed(dump_dom(html_path))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def external_requests(html_path: str | Path) -> list[str]:
    """Every URL the page tried to load other than itself, file:, data:, blob: and about: (from the net log)."""
    html_path = Path(html_path).resolve()
    with tempfile.TemporaryDirectory(prefix="funnel-netlog-") as tmp:
        log = Path(tmp) / "net.json"
        _run([f"--log-net-log={log}", "--net-log-capture-mode=Default", "--dump-dom"], html_path)
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    if not text:
        raise BrowserError("chromium wrote no net log", file=str(html_path), rule="browser")
    # A killed browser may leave the log without its closing brackets.
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = json.loads(text.rstrip().rstrip(",") + "]}")
    # Requests the page made start a job with an origin as initiator ('null' for a file: page); the browser's
    # own traffic (update checks, spelling dictionaries) has initiator 'not an origin'.
    start_job = data.get("constants", {}).get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    urls = set()
    for event in data.get("events", []):
        params = event.get("params") or {}
        url = params.get("url")
        if event.get("type") != start_job or not isinstance(url, str) or params.get("initiator") == "not an origin":
            continue
        if not url.startswith(("file:", "data:", "blob:", "about:", "chrome:")):
            urls.add(url)
    return sorted(urls)
