"""The pack by e-mail: MIME structure, inlined CSS, cid images, determinism, and real SMTP on loopback (aiosmtpd).

Two report folders are used: a synthetic one (rendered by the kit's own renderer from two small notebooks with
charts, so the brief has images) for the fast checks, and a real pack run on a small demo export for the
end-to-end checks (the .eml written by the run, personal data, rendering in headless Chromium).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
import ssl
import subprocess
from pathlib import Path

import nbformat
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from analysis import mailer
from analysis.errors import EmailError
from analysis.privacy import mask_personal_data

SENDER = "revops-kit@corp.example"
USER, PASSWORD = "kit-sender", "pa55-w0rd-not-in-pack"
SECRET_MARKER = "DATA-QUALITY-SECTION-ONLY"

# --------------------------------------------------------------------------------------------------------------
# A synthetic report with charts in the brief (rendered by the kit's nbconvert template)
# --------------------------------------------------------------------------------------------------------------


def _png(color: str, seed: int) -> bytes:
    from analysis.charts import new_figure, png_bytes

    fig, ax = new_figure(6, 2.6)
    ax.bar(["SMB", "Mid-Market", "Enterprise"], [3 + seed, 5, 2 + seed], color=color)
    ax.set_title(f"Conversion by segment {seed}")
    return png_bytes(fig)


def _notebook(path: Path, title: str, outputs: list[dict]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\nIntro text.")]
    for i, out in enumerate(outputs):
        cell = nbformat.v4.new_code_cell("display(x)", outputs=[nbformat.v4.new_output("display_data", data=out)])
        cell.id = f"cell-{i}"
        nb.cells.append(cell)
    nb.cells[0].id = "title"
    nbformat.write(nb, path)
    return path


def make_report(folder: Path) -> Path:
    """A report folder with board_pack.html (brief with 3 charts, 2 distinct) and manifest.json."""
    import base64

    from analysis.render import render_page, render_section

    folder.mkdir(parents=True, exist_ok=True)
    chart_a, chart_b = _png("#0b5cad", 1), _png("#b42318", 2)
    brief_html = (
        '<div class="kit-brief"><h2>What moved</h2><ul><li><span class="kit-moved-down">▼</span> Enterprise '
        "MQL→SQL conversion fell to 12.0% in 2026-09 (−9.1 pts).</li></ul><h2>What caused it</h2><p>Routing.</p>"
        '<table class="dataframe kit-table"><thead><tr><th>measure</th><th>value</th></tr></thead>'
        "<tbody><tr><td>MQL→SQL conversion</td><td>25.6%</td></tr></tbody></table></div>"
    )
    nbs = folder / "src"
    nbs.mkdir()
    brief = _notebook(
        nbs / "01_executive_brief.ipynb",
        "Executive brief",
        [
            {"text/html": brief_html},
            {"image/png": base64.b64encode(chart_a).decode()},
            {"image/png": base64.b64encode(chart_b).decode()},
            {"image/png": base64.b64encode(chart_a).decode()},  # the same chart twice: one MIME part
        ],
    )
    dq = _notebook(
        nbs / "02_data_quality.ipynb",
        "Data quality",
        [{"text/html": f"<p>{SECRET_MARKER}</p>"}, {"image/png": base64.b64encode(_png("#067647", 3)).decode()}],
    )
    page = render_page(
        [render_section(brief), render_section(dq)],
        title="Monthly trend review · 2026-09",
        subtitle="Revenue funnel board pack · data as of 2026-10-01 00:00 UTC",
        provenance=[("Period", "2026-09 (monthly)"), ("Definitions sha256", "ab" * 32)],
    )
    (folder / "board_pack.html").write_text(page, encoding="utf-8")
    manifest = {"parameters": {"cadence": "monthly", "period": "2026-09"}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture()
def report(tmp_path) -> Path:
    return make_report(tmp_path / "reports" / "2026-09")


# --------------------------------------------------------------------------------------------------------------
# A real SMTP server on loopback
# --------------------------------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: keeps every accepted message; refuses recipients at @refused.example."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd API
        if address.endswith("@refused.example"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "data": envelope.original_content or envelope.content,
                "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": session.authenticated,
            }
        )
        return "250 Message accepted"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A test CA and a server certificate for localhost / 127.0.0.1 signed by it (openssl)."""
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=funnel-kit test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def _server_ctx(certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    return ctx


class Server:
    def __init__(self, **kwargs) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> Server:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def env(self, **extra: str) -> dict[str, str]:
        env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_FROM": SENDER, "SMTP_TIMEOUT": "10"}
        env.update(extra)
        return env


@pytest.fixture()
def plain_server():
    with Server() as s:
        yield s


@pytest.fixture()
def starttls_server(certs):
    with Server(
        tls_context=_server_ctx(certs),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=True,
    ) as s:
        yield s


@pytest.fixture()
def implicit_tls_server(certs):
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this connection is TLS from the first byte.
    kw = {"authenticator": _authenticator, "auth_required": True, "auth_require_tls": False}
    with Server(ssl_context=_server_ctx(certs), **kw) as s:
        yield s


# --------------------------------------------------------------------------------------------------------------
# Checks on a parsed message
# --------------------------------------------------------------------------------------------------------------


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def structure(msg) -> list:
    if msg.is_multipart():
        return [msg.get_content_type(), [structure(p) for p in msg.iter_parts()]]
    return msg.get_content_type()


def check_message(msg, *, n_images: int, period: str = "2026-09") -> str:
    """Parts, cid references, no data: URIs, no <style>; returns the HTML body."""
    assert msg["Subject"] == f"Monthly trend review · {period} — revenue funnel board pack"
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert len(parts) == 2
    body, attachment = parts
    if n_images:
        assert body.get_content_type() == "multipart/related"
        alt, *images = list(body.iter_parts())
    else:
        alt, images = body, []
    assert alt.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alt.iter_parts()] == ["text/plain", "text/html"]
    assert len(images) == n_images and all(p.get_content_type() == "image/png" for p in images)
    assert attachment.get_content_disposition() == "attachment" and attachment.get_filename() == "board_pack.html"
    html = alt.get_body(("html",)).get_content()
    cids = {p["Content-ID"].strip("<>"): p for p in images}
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert referenced == set(cids), "every cid: resolves to an image part and every image part is used"
    for cid, part in cids.items():
        import hashlib

        data = part.get_content()
        assert data.startswith(b"\x89PNG") and cid == f"img-{hashlib.sha256(data).hexdigest()[:12]}@funnel-kit"
    assert "data:image" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*data:|url\(\s*["']?data:""", html, re.IGNORECASE)
    assert "<style" not in html.lower() and "var(--" not in html
    assert 'style="' in html  # CSS inlined
    assert "What moved" in html
    return html


# --------------------------------------------------------------------------------------------------------------
# Building the message (synthetic report)
# --------------------------------------------------------------------------------------------------------------


def test_message_structure_cid_images_and_inlined_css(report):
    msg = parse(mailer.write_eml(report).read_bytes())
    html = check_message(msg, n_images=2)
    assert SECRET_MARKER not in html, "the body is the executive brief only"
    assert "Provenance" in html and "ab" * 32 in html, "the provenance footer travels with the brief"
    assert "anchor-link" not in html
    attached = msg.get_body(("html",))  # the body, not the attachment
    assert attached is not None
    pack = [p for p in msg.iter_attachments() if p.get_filename() == "board_pack.html"][0].get_content()
    assert SECRET_MARKER in pack and "data:image/png;base64," in pack, "the full pack is attached as rendered"


def test_plain_text_alternative_reads_like_the_brief(report):
    msg = parse(mailer.write_eml(report).read_bytes())
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "What moved\n----------" in text
    assert "  - ▼ Enterprise MQL→SQL conversion fell to 12.0%" in text
    assert "MQL→SQL conversion | 25.6%" in text
    assert "<" not in text.replace("< 0.", "")
    assert SECRET_MARKER not in text


def test_eml_is_deterministic_crlf_and_has_no_envelope_headers(report, tmp_path):
    first = mailer.write_eml(report).read_bytes()
    second = mailer.write_eml(report).read_bytes()
    assert first == second
    other = make_report(tmp_path / "elsewhere" / "2026-09")  # same content, another folder
    assert mailer.write_eml(other).read_bytes() == first
    assert b"\r\n" in first and b"\n" not in first.replace(b"\r\n", b"")
    headers = first.split(b"\r\n\r\n", 1)[0].decode()
    for name in ("Date:", "From:", "To:"):
        assert f"\r\n{name}" not in "\r\n" + headers
    assert re.search(r"Message-ID: <pack-[0-9a-f]{32}@funnel-kit>", headers)
    assert not list(report.glob(".*.tmp")), "written atomically (no temporary file left)"


def test_dry_run_sends_nothing(report, plain_server):
    summary = mailer.send_pack(report, ["cfo@corp.example", "ceo@corp.example"], dry_run=True, env=plain_server.env())
    assert "dry run" in summary and "nothing sent" in summary and "\n" not in summary
    assert plain_server.inbox.messages == []
    assert (report / "board_pack.eml").is_file()


# --------------------------------------------------------------------------------------------------------------
# Sending over real SMTP
# --------------------------------------------------------------------------------------------------------------


def test_send_plain_to_several_recipients(report, plain_server):
    to = ["cfo@corp.example", "ceo@corp.example"]
    summary = mailer.send_pack(report, to, env=plain_server.env(SMTP_SECURITY="plain"))
    assert "sent" in summary and "2 recipient" in summary
    [got] = plain_server.inbox.messages
    assert got["mail_from"] == SENDER and got["rcpt_tos"] == to
    msg = parse(got["data"])
    check_message(msg, n_images=2)
    assert msg["From"] == SENDER and msg["To"] == ", ".join(to) and msg["Date"]
    on_disk = parse((report / "board_pack.eml").read_bytes())
    assert structure(on_disk) == structure(msg) and on_disk["Message-ID"] == msg["Message-ID"]


def test_send_starttls_with_auth(report, starttls_server, certs):
    env = starttls_server.env(SMTP_USER=USER, SMTP_PASSWORD=PASSWORD, SMTP_CA_FILE=str(certs["ca"]))
    mailer.send_pack(report, ["board@corp.example"], env=env)  # SMTP_SECURITY defaults to starttls
    [got] = starttls_server.inbox.messages
    assert got["tls"] and got["authenticated"]
    check_message(parse(got["data"]), n_images=2)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_send_implicit_tls(report, implicit_tls_server, certs):
    env = implicit_tls_server.env(
        SMTP_SECURITY="ssl", SMTP_USER=USER, SMTP_PASSWORD=PASSWORD, SMTP_CA_FILE=str(certs["ca"])
    )
    mailer.send_pack(report, ["board@corp.example"], env=env)
    [got] = implicit_tls_server.inbox.messages
    assert got["tls"] and got["authenticated"]


def _fails(report, to, env, rule: str, *words: str) -> str:
    eml = report / "board_pack.eml"
    with pytest.raises(EmailError) as info:
        mailer.send_pack(report, to, env=env)
    text = str(info.value)
    assert "\n" not in text and info.value.rule == rule, text
    for w in words:
        assert w in text, text
    assert PASSWORD not in text
    assert eml.is_file(), "the .eml stays on failure"
    return text


def test_connection_refused(report):
    port = free_port()
    env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_FROM": SENDER, "SMTP_TIMEOUT": "5"}
    _fails(report, ["a@corp.example"], env, "smtp_connect", "connection refused", f"127.0.0.1:{port}")


def test_auth_rejected(report, starttls_server, certs):
    env = starttls_server.env(SMTP_USER=USER, SMTP_PASSWORD="wrong", SMTP_CA_FILE=str(certs["ca"]))
    _fails(report, ["a@corp.example"], env, "smtp_auth", "authentication rejected", USER, "535")
    assert starttls_server.inbox.messages == []


def test_tls_failure_untrusted_certificate(report, starttls_server):
    env = starttls_server.env(SMTP_USER=USER, SMTP_PASSWORD=PASSWORD)  # no SMTP_CA_FILE: verification fails
    _fails(report, ["a@corp.example"], env, "smtp_tls", "TLS failure", "certificate")
    assert starttls_server.inbox.messages == []


def test_tls_failure_implicit_tls_against_plain_server(report, plain_server):
    _fails(report, ["a@corp.example"], plain_server.env(SMTP_SECURITY="ssl"), "smtp_tls", "TLS failure")


def test_starttls_required_but_not_offered(report, plain_server):
    _fails(report, ["a@corp.example"], plain_server.env(), "smtp_tls", "does not offer STARTTLS")
    assert plain_server.inbox.messages == []


def test_one_recipient_refused(report, plain_server):
    env = plain_server.env(SMTP_SECURITY="plain")
    text = _fails(report, ["ok@corp.example", "nobody@refused.example"], env, "smtp_recipient", "recipient refused")
    assert "nobody@refused.example" in text and "550" in text


def test_every_recipient_refused(report, plain_server):
    env = plain_server.env(SMTP_SECURITY="plain")
    _fails(report, ["x@refused.example"], env, "smtp_recipient", "every recipient refused", "x@refused.example")
    assert plain_server.inbox.messages == []


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "SMTP_HOST is not set"),
        ({"SMTP_HOST": "127.0.0.1"}, "SMTP_FROM is not set"),
        ({"SMTP_HOST": "127.0.0.1", "SMTP_FROM": SENDER, "SMTP_SECURITY": "tls13"}, "is not one of"),
        ({"SMTP_HOST": "127.0.0.1", "SMTP_FROM": SENDER, "SMTP_USER": "u"}, "SMTP_PASSWORD is not"),
    ],
)
def test_settings_errors(report, env, words):
    _fails(report, ["a@corp.example"], env, "smtp_settings", words)


@pytest.mark.parametrize("bad", ["not-an-address", "a@corp.example\r\nBcc: x@evil.example"])
def test_bad_recipient_is_refused_before_anything(report, bad):
    with pytest.raises(EmailError, match="address"):
        mailer.send_pack(report, [bad], dry_run=True)


def test_cli_email_reads_smtp_settings_from_the_environment(report, plain_server, monkeypatch, capsys):
    from analysis.cli import main

    for k, v in plain_server.env(SMTP_SECURITY="plain").items():
        monkeypatch.setenv(k, v)
    assert main(["email", str(report), "--to", "a@corp.example", "--to", "b@corp.example"]) == 0
    assert "sent" in capsys.readouterr().out
    assert plain_server.inbox.messages[0]["rcpt_tos"] == ["a@corp.example", "b@corp.example"]
    monkeypatch.setenv("SMTP_PORT", str(free_port()))
    assert main(["email", str(report), "--to", "a@corp.example"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "connection refused" in err


# --------------------------------------------------------------------------------------------------------------
# Rendering in headless Chromium
# --------------------------------------------------------------------------------------------------------------

LOADED_PROBE = (
    "<script>window.addEventListener('load', () => { document.body.setAttribute('data-images-loaded', "
    "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length); });</script>"
)


def _render_body(msg, out_dir: Path) -> tuple[str, int, Path]:
    """Screenshot the HTML body (cid images as local files); (visible text, images loaded, screenshot)."""
    from PIL import Image

    from analysis.browser import dom_text, dump_dom, screenshot

    page = mailer.preview_html(msg, out_dir)
    png = screenshot(page, out_dir / "body.png", width=1100, height=1400)
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is not blank"
    probe = out_dir / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", LOADED_PROBE + "</body>"), encoding="utf-8")
    loaded = re.search(r'data-images-loaded="(\d+)"', dump_dom(probe))
    return dom_text(page), int(loaded.group(1)) if loaded else -1, png


def test_html_body_renders_with_its_charts_in_chromium(report, tmp_path):
    msg = parse(mailer.write_eml(report).read_bytes())
    text, loaded, _ = _render_body(msg, tmp_path / "preview")
    assert "What moved" in text and "Enterprise MQL→SQL conversion fell" in text
    assert loaded == 3, "all three chart references (two distinct images) load from their parts"


# --------------------------------------------------------------------------------------------------------------
# End to end on a real pack (small demo export)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_pack(tmp_path_factory) -> dict[str, Path]:
    from analysis.config import MAPPINGS_DIR, load_definitions
    from analysis.demo import generate_demo_data
    from analysis.ingest import ingest
    from analysis.pack import run_cadence

    root = tmp_path_factory.mktemp("mailpack")
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    generate_demo_data(raw, n_leads=3000)
    ingest(raw, MAPPINGS_DIR / "canonical.yml", processed, load_definitions())
    out = run_cadence(
        "monthly", "2026-10", data_dir=processed, out_dir=root / "reports" / "2026-10", actions_dir=raw / "actions"
    )
    return {"raw": raw, "report": out}


def _personal_data(raw: Path) -> tuple[set[str], set[str]]:
    """E-mail addresses and phone numbers present in the raw export's free text."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in raw.glob("*.csv"))
    emails = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text))
    phones = {c for c in re.findall(r"\+\d[\d ().-]{6,}\d", text) if mask_personal_data(c) == "[phone]"}
    return emails, phones


@pytest.mark.e2e
def test_run_writes_the_eml_and_it_is_reproducible(real_pack):
    report = real_pack["report"]
    eml = report / "board_pack.eml"
    written = eml.read_bytes()
    manifest = json.loads((report / "manifest.json").read_text())
    assert "board_pack.eml" in manifest["outputs"]
    assert mailer.write_eml(report).read_bytes() == written, "the dry run rebuilds the same bytes"
    msg = parse(written)
    assert msg["Subject"] == "Monthly trend review · 2026-10 — revenue funnel board pack"
    assert len(written) < 5_000_000, "small enough to e-mail"


@pytest.mark.e2e
def test_real_pack_sent_and_parsed_back_has_no_personal_data(real_pack, plain_server, tmp_path):
    report = real_pack["report"]
    to = ["cfo@corp.example", "cmo@corp.example"]
    mailer.send_pack(report, to, env=plain_server.env(SMTP_SECURITY="plain"))
    [got] = plain_server.inbox.messages
    msg = parse(got["data"])
    n_images = sum(1 for p in msg.walk() if p.get_content_maintype() == "image")
    html = check_message(msg, n_images=n_images, period="2026-10")
    assert "Monthly trend review · 2026-10" in html
    emails, phones = _personal_data(real_pack["raw"])
    assert emails and phones, "the demo export carries personal data in its notes (the test needs it)"
    decoded = "\n".join(
        p.get_content() if p.get_content_maintype() == "text" else "" for p in msg.walk() if not p.is_multipart()
    )
    decoded += "\n".join(str(v) for _, v in msg.items())
    found = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", decoded)) - set(to) - {SENDER}
    found = {a for a in found if not a.endswith("@funnel-kit")}  # Message-ID and Content-IDs
    assert not found, f"e-mail addresses in the message: {sorted(found)}"
    assert not [p for p in phones if p in decoded], "phone numbers from the export in the message"
    assert PASSWORD not in decoded
    text, _, _ = _render_body(msg, tmp_path / "preview")
    assert "What moved" in text and "Alignment scorecard" in text
