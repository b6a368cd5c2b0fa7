"""E-mail the board pack: one MIME message with the executive brief as the body and the full pack attached.

Structure (stdlib `email`, policy SMTP, CRLF line ends)::

    multipart/mixed
      multipart/related                  (only when the brief has images)
        multipart/alternative
          text/plain                     the brief as text (headings, bullets, tables as rows)
          text/html                      the brief, CSS inlined by css-inline, no <style>, no data: URIs
        image/png  Content-ID <img-<sha12>@funnel-kit>   one part per distinct chart
      text/html  attachment board_pack.html               the full pack, as rendered

Mail clients strip `<style>` blocks and block `data:` images, hence the inlined CSS (variables resolved) and the
`cid:` parts. The file `board_pack.eml` written beside the pack is deterministic: boundaries and Message-ID are
derived from a hash of the content and it carries **no Date, From or To header**: those envelope headers are
added only to the copy handed to the SMTP server (Date = the moment of sending). So the same pack gives the same
.eml bytes whoever receives it, and the .eml is an audited output of the run like the HTML.

SMTP settings come from the environment only (never from the pack, the manifest or notebook parameters):

- ``SMTP_HOST`` (required to send), ``SMTP_PORT`` (default 587 for starttls, 465 for ssl, 25 for plain)
- ``SMTP_USER`` / ``SMTP_PASSWORD`` (AUTH only when SMTP_USER is set)
- ``SMTP_FROM`` (sender address; defaults to SMTP_USER when that is an address)
- ``SMTP_SECURITY``: ``starttls`` (default; fails if the server does not offer it), ``ssl`` (implicit TLS) or
  ``plain`` (no encryption, only when asked for)
- ``SMTP_TIMEOUT`` seconds (default 30)
- ``SMTP_CA_FILE``: a PEM bundle of CAs to trust instead of the system store (private relays, tests).
  Certificate and host name verification are never switched off.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage, MIMEPart
from email.utils import formatdate, parseaddr
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import css_inline

from analysis.errors import EmailError

EML_NAME = "board_pack.eml"
PACK_NAME = "board_pack.html"
BRIEF_ANCHOR = "01-executive-brief"  # render.render_section's anchor for notebooks/01_executive_brief.ipynb
CID_DOMAIN = "funnel-kit"
POLICY = email_policy.SMTP
CSS_PATH = Path(str(resources.files("analysis") / "templates" / "pack" / "pack.css"))

_DATA_IMG = re.compile(
    r"""(<img\b[^>]*?\bsrc\s*=\s*)(["'])data:image/([a-z0-9.+-]+);base64,([^"']*)\2""", re.IGNORECASE | re.DOTALL
)
_DATA_URI = re.compile(r"""(?:\b(?:src|href|srcset|background)\s*=\s*["']?|url\(\s*["']?)\s*data:""", re.IGNORECASE)
_LEFTOVER_IMG = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']?\s*data:[^>]*>""", re.IGNORECASE)
_ANCHOR_LINK = re.compile(r'<a\b[^>]*class="anchor-link"[^>]*>.*?</a>', re.DOTALL)
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send, read from SMTP_* environment variables (see the module docstring)."""

    host: str
    port: int
    security: str
    user: str | None
    password: str | None
    sender: str
    timeout: float
    ca_file: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings:
        env = dict(os.environ if env is None else env)
        host = env.get("SMTP_HOST", "").strip()
        if not host:
            raise EmailError("SMTP_HOST is not set (SMTP settings come from the environment)", rule="smtp_settings")
        security = env.get("SMTP_SECURITY", "starttls").strip().lower() or "starttls"
        if security not in ("starttls", "ssl", "plain"):
            raise EmailError(f"SMTP_SECURITY '{security}' is not one of starttls, ssl, plain", rule="smtp_settings")
        default_port = {"starttls": 587, "ssl": 465, "plain": 25}[security]
        try:
            port = int(env.get("SMTP_PORT", "").strip() or default_port)
            timeout = float(env.get("SMTP_TIMEOUT", "").strip() or 30)
        except ValueError:
            raise EmailError("SMTP_PORT and SMTP_TIMEOUT must be numbers", rule="smtp_settings") from None
        user = env.get("SMTP_USER") or None
        password = env.get("SMTP_PASSWORD")
        if user and password is None:
            raise EmailError("SMTP_USER is set but SMTP_PASSWORD is not", rule="smtp_settings")
        sender = (env.get("SMTP_FROM") or "").strip() or (user if user and "@" in user else "")
        if not sender:
            raise EmailError("SMTP_FROM is not set (the sender address)", rule="smtp_settings")
        _check_address(sender, "SMTP_FROM")
        ca_file = env.get("SMTP_CA_FILE") or None
        if ca_file and not Path(ca_file).is_file():
            raise EmailError("SMTP_CA_FILE does not exist", file=ca_file, rule="smtp_settings")
        return cls(host, port, security, user, password, sender, timeout, ca_file)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


# --------------------------------------------------------------------------------------------------------------
# Building the message
# --------------------------------------------------------------------------------------------------------------


def _check_address(addr: str, what: str) -> str:
    if "\r" in addr or "\n" in addr:
        raise EmailError(f"{what}: address contains a line break", rule="address")
    _, bare = parseaddr(addr)
    if not _ADDRESS.match(bare or ""):
        raise EmailError(f"{what}: '{addr}' is not an e-mail address", rule="address")
    return bare


def _section(html_text: str, tag: str, ident: str) -> str | None:
    """The outer HTML of the first <tag id="ident"> element, nested same-name tags counted."""
    start = re.search(rf'<{tag}\b[^>]*\bid="{re.escape(ident)}"[^>]*>', html_text)
    if not start:
        return None
    depth, pos = 0, start.start()
    for m in re.finditer(rf"<(/?){tag}\b[^>]*>", html_text[pos:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            return html_text[pos : pos + m.end()]
    return None


def _meta(report_dir: Path, cadence: str | None, period: str | None) -> tuple[str, str]:
    if cadence and period:
        return cadence, period
    path = report_dir / "manifest.json"
    try:
        params = json.loads(path.read_text(encoding="utf-8"))["parameters"]
        return cadence or params["cadence"], period or params["period"]
    except FileNotFoundError:
        raise EmailError("no manifest.json: not a complete report folder", file=str(path), rule="report") from None
    except (KeyError, TypeError, json.JSONDecodeError):
        raise EmailError("manifest.json has no parameters.cadence/period", file=str(path), rule="report") from None


def subject_for(cadence: str, period: str) -> str:
    """'Monthly trend review · 2026-10 — revenue funnel board pack'."""
    from analysis.pack import CADENCE_TITLES  # local: pack imports this module lazily too

    return f"{CADENCE_TITLES.get(cadence, cadence.title())} · {period} — revenue funnel board pack"


def _email_css() -> str:
    css = CSS_PATH.read_text(encoding="utf-8")
    css = re.sub(r"(?m)^\*\s*\{[^}]*\}\s*$", "", css)  # box-sizing on every element: noise in a mail body
    return css


def _cid_images(fragment: str) -> tuple[str, list[tuple[str, str, bytes]]]:
    """The fragment with every data: image replaced by cid:, and the distinct images (cid, subtype, bytes)."""
    images: dict[str, tuple[str, str, bytes]] = {}

    def repl(m: re.Match[str]) -> str:
        subtype = m.group(3).lower()
        try:
            data = base64.b64decode(re.sub(r"\s+", "", m.group(4)), validate=True)
        except binascii.Error:
            raise EmailError("board_pack.html holds an undecodable inline image", rule="image") from None
        cid = f"img-{hashlib.sha256(data).hexdigest()[:12]}@{CID_DOMAIN}"
        images.setdefault(cid, (cid, subtype, data))
        return f"{m.group(1)}{m.group(2)}cid:{cid}{m.group(2)}"

    return _DATA_IMG.sub(repl, fragment), list(images.values())


def brief_html(pack_html: str, subject: str) -> tuple[str, list[tuple[str, str, bytes]]]:
    """(the e-mail HTML body: header, executive brief, provenance footer, CSS inlined; its cid images)."""
    brief = _section(pack_html, "section", BRIEF_ANCHOR)
    if brief is None:
        raise EmailError(f"board_pack.html has no executive brief (section id {BRIEF_ANCHOR})", rule="report")
    header_m = re.search(r'<header class="kit-header">.*?</header>', pack_html, flags=re.DOTALL)
    header = header_m.group(0) if header_m else ""
    footer = _section(pack_html, "footer", "provenance") or ""
    note = (
        '<div class="kit-note">The full board pack (every section, charts and the governed definitions) is '
        f"attached as {PACK_NAME}: open it in a browser.</div>"
    )
    body = _ANCHOR_LINK.sub("", f"{header}\n{brief}\n{note}\n{footer}")
    body, images = _cid_images(body)
    # Anything inline that is not a base64 image (rare) is left to the attached pack rather than sent as data:.
    body = _LEFTOVER_IMG.sub('<span class="kit-note">[image: see the attached pack]</span>', body)
    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_escape(subject)}</title>\n<style>\n{_email_css()}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    inlined = css_inline.inline(
        doc, keep_style_tags=False, keep_link_tags=False, load_remote_stylesheets=False, resolve_css_variables=True
    )
    inlined = re.sub(r"<style\b.*?</style>", "", inlined, flags=re.DOTALL | re.IGNORECASE)
    if _DATA_URI.search(inlined):
        raise EmailError("a data: URI is left in the e-mail body (unsupported inline content)", rule="image")
    return inlined, images


def _escape(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


class _TextRenderer(HTMLParser):
    """HTML -> readable plain text: headings underlined, bullets, table rows with ' | ', links and images dropped."""

    BLOCKS = {"p", "div", "section", "header", "footer", "ul", "ol", "table", "thead", "tbody", "pre", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.heading: str | None = None
        self.skip = 0
        self.pre = 0

    def _flush(self, prefix: str = "") -> None:
        text = " ".join("".join(self.current).split())
        self.current = []
        if text:
            self.lines.append(prefix + text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self.skip += 1
        elif tag in ("h1", "h2", "h3", "h4"):
            self._flush()
            self.heading = tag
        elif tag == "li":
            self._flush()
        elif tag == "tr":
            self._flush()
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            alt = dict(attrs).get("alt") or ""
            self.current.append(f" [chart{': ' + alt if alt and 'No description' not in alt else ''}] ")
        elif tag == "pre":
            self._flush()
            self.pre += 1
        elif tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("h1", "h2", "h3", "h4") and self.heading:
            text = " ".join("".join(self.current).split())
            self.current = []
            if text:
                self.lines += ["", text, ("=" if tag in ("h1",) else "-") * len(text)]
            self.heading = None
        elif tag == "li":
            self._flush("  - ")
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if any(self.row):
                self.lines.append("  " + " | ".join(self.row))
            self.row = None
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            text = "".join(self.current)
            self.current = []
            self.lines += [line.rstrip() for line in text.splitlines()]
        elif tag in self.BLOCKS:
            self._flush()
            if tag in ("p", "table", "ul", "ol", "div") and self.lines and self.lines[-1] != "":
                self.lines.append("")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.cell is not None:
            self.cell.append(data)
        else:
            self.current.append(data)

    def text(self) -> str:
        self._flush()
        out: list[str] = []
        for line in self.lines:
            if line == "" and (not out or out[-1] == ""):
                continue
            out.append(line)
        return "\n".join(out).strip() + "\n"


def html_to_text(fragment: str) -> str:
    """A plain-text rendering of an HTML fragment (for the text/plain alternative)."""
    r = _TextRenderer()
    r.feed(fragment)
    r.close()
    return r.text()


def build_message(report_dir: str | Path, *, cadence: str | None = None, period: str | None = None) -> EmailMessage:
    """The pack's e-mail (without From/To/Date): deterministic for the same board_pack.html and period."""
    report_dir = Path(report_dir)
    pack_path = report_dir / PACK_NAME
    try:
        pack_bytes = pack_path.read_bytes()
    except FileNotFoundError:
        raise EmailError("no board pack to send", file=str(pack_path), rule="report") from None
    cadence, period = _meta(report_dir, cadence, period)
    subject = subject_for(cadence, period)
    pack_html = pack_bytes.decode("utf-8")
    html_body, images = brief_html(pack_html, subject)
    text_body = html_to_text(_ANCHOR_LINK.sub("", re.sub(r"<img\b[^>]*>", "", html_body)))

    digest = hashlib.sha256()
    for chunk in (subject.encode(), text_body.encode(), html_body.encode(), pack_bytes, *(i[2] for i in images)):
        digest.update(hashlib.sha256(chunk).digest())
    h = digest.hexdigest()

    alternative = MIMEPart(policy=POLICY)
    alternative.set_content(text_body, subtype="plain", charset="utf-8", cte="quoted-printable")
    alternative.add_alternative(html_body, subtype="html", charset="utf-8", cte="quoted-printable")
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = subject
    msg["Message-ID"] = f"<pack-{h[:32]}@{CID_DOMAIN}>"
    msg["X-Funnel-Kit-Period"] = f"{cadence} {period}"
    if images:  # related [ alternative [plain, html], images ] (the stdlib would nest related in alternative)
        msg.make_related()
        msg.attach(alternative)
        for cid, subtype, data in images:
            msg.add_related(
                data,
                maintype="image",
                subtype=subtype,
                cid=f"<{cid}>",
                disposition="inline",
                filename=f"{cid.split('@')[0]}.{subtype}",
            )
    else:
        msg.make_alternative()
        for part in alternative.iter_parts():
            msg.attach(part)
    msg.add_attachment(pack_bytes, maintype="text", subtype="html", filename=PACK_NAME)
    for part in msg.walk():
        if part.is_multipart():
            part.set_boundary(f"=_fk-{part.get_content_subtype()}-{h[:24]}")
    return msg


def write_eml(report_dir: str | Path, *, cadence: str | None = None, period: str | None = None) -> Path:
    """Write REPORT_DIR/board_pack.eml atomically (the dry run); return its path. Same pack, same bytes."""
    report_dir = Path(report_dir)
    data = build_message(report_dir, cadence=cadence, period=period).as_bytes(policy=POLICY)
    path = report_dir / EML_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def preview_html(message: EmailMessage, out_dir: str | Path) -> Path:
    """Write a message's HTML body with its cid: images as local files (to look at it in a browser)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = message.get_body(preferencelist=("html",))
    if body is None:
        raise EmailError("the message has no HTML body", rule="message")
    html_text = body.get_content()
    for part in message.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_maintype() == "image":
            name = f"{cid.strip('<>').split('@')[0]}.{part.get_content_subtype()}"
            (out_dir / name).write_bytes(part.get_payload(decode=True))
            html_text = html_text.replace(f"cid:{cid.strip('<>')}", name)
    path = out_dir / "body.html"
    path.write_text(html_text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------------------------


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise EmailError(f"cannot load SMTP_CA_FILE: {exc}", file=settings.ca_file, rule="smtp_tls") from None


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {' '.join(text.split())}"


def _send(message: EmailMessage, settings: SmtpSettings, recipients: list[str]) -> None:
    where, kept = settings.where, f"(message kept in {EML_NAME})"
    ctx = _tls_context(settings) if settings.security != "plain" else None
    smtp: smtplib.SMTP | None = None
    try:
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        smtp.ehlo()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise EmailError(
                    f"SMTP server {where} does not offer STARTTLS (set SMTP_SECURITY=ssl or plain) {kept}",
                    rule="smtp_tls",
                )
            smtp.starttls(context=ctx)
            smtp.ehlo()
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        refused = smtp.send_message(message, from_addr=settings.sender, to_addrs=recipients)
        if refused:
            names = "; ".join(f"{addr} ({code} {_text(msg)})" for addr, (code, msg) in sorted(refused.items()))
            raise EmailError(
                f"recipient refused by {where}: {names}; sent to the other {len(recipients) - len(refused)} {kept}",
                rule="smtp_recipient",
            )
    except EmailError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise EmailError(
            f"TLS failure with {where}: certificate not trusted ({exc.verify_message}; "
            f"set SMTP_CA_FILE for a private CA) {kept}",
            rule="smtp_tls",
        ) from None
    except ssl.SSLError as exc:
        raise EmailError(f"TLS failure with {where}: {exc.reason or exc} {kept}", rule="smtp_tls") from None
    except ConnectionRefusedError:
        raise EmailError(
            f"cannot connect to SMTP server {where}: connection refused {kept}", rule="smtp_connect"
        ) from None
    except socket.gaierror as exc:
        raise EmailError(
            f"cannot resolve SMTP host {settings.host}: {exc.strerror} {kept}", rule="smtp_connect"
        ) from None
    except TimeoutError:
        raise EmailError(
            f"SMTP server {where} did not answer within {settings.timeout:g} s {kept}", rule="smtp_connect"
        ) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise EmailError(
            f"authentication rejected by {where} for user {settings.user}: {_reply(exc)} {kept}", rule="smtp_auth"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise EmailError(
            f"SMTP server {where} does not offer AUTH, but SMTP_USER is set ({exc}) {kept}", rule="smtp_auth"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        names = "; ".join(f"{addr} ({code} {_text(msg)})" for addr, (code, msg) in sorted(exc.recipients.items()))
        raise EmailError(f"every recipient refused by {where}: {names} {kept}", rule="smtp_recipient") from None
    except smtplib.SMTPSenderRefused as exc:
        raise EmailError(
            f"sender {settings.sender} refused by {where}: {_reply(exc)} {kept}", rule="smtp_sender"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise EmailError(f"SMTP server {where} answered {_reply(exc)} {kept}", rule="smtp") from None
    except smtplib.SMTPServerDisconnected as exc:
        raise EmailError(
            f"SMTP server {where} closed the connection: {exc or 'no reason'} {kept}", rule="smtp"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise EmailError(f"cannot send through {where}: {exc} {kept}", rule="smtp") from None
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


def _text(value: bytes | str) -> str:
    s = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(s.split())


def send_pack(
    report_dir: Path,
    to: list[str],
    dry_run: bool = False,
    *,
    env: dict[str, str] | None = None,
) -> str:
    """Write REPORT_DIR/board_pack.eml and, unless dry_run, send it to every address in `to`; a summary line.

    The .eml is written first and stays whatever happens next. SMTP settings are read from `env` (default
    os.environ); see the module docstring. Raises EmailError with a one-line cause on any failure.
    """
    report_dir = Path(report_dir)
    if not to:
        raise EmailError("no recipient (--to ADDR)", rule="address")
    recipients = [_check_address(a, "--to") for a in to]
    message = build_message(report_dir)
    eml = write_eml(report_dir)
    n_img = sum(1 for p in message.walk() if p.get_content_maintype() == "image")
    size = eml.stat().st_size
    if dry_run:
        return (
            f"dry run: {eml} written ({size:,} bytes, {n_img} inline image(s)) for {', '.join(recipients)}; "
            "nothing sent"
        )
    settings = SmtpSettings.from_env(env)
    outgoing = copy.deepcopy(message)
    outgoing["From"] = settings.sender
    outgoing["To"] = ", ".join(to)
    outgoing["Date"] = formatdate(localtime=False, usegmt=True)
    _send(outgoing, settings, recipients)
    return (
        f"sent '{message['Subject']}' to {len(recipients)} recipient(s) via {settings.where} "
        f"({settings.security}); {size:,} bytes, copy in {eml}"
    )
