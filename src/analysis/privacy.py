"""Masking of contact-level personal data (e-mail addresses, phone numbers) in CRM free text.

CRM notes are typed by people: they carry e-mail addresses, phone numbers and HTML. Before any part of a note
reaches a chart, a table or a topic model, it goes through `mask_personal_data`; what is shown is additionally
HTML-escaped by `analysis.display`. Masking is deliberately greedy for e-mail addresses (any `x@y.z`, also the
"x at y dot z" spelling) and careful for phone numbers (dates, amounts, percentages and ids stay readable).
"""

from __future__ import annotations

import html
import re

import pandas as pd

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
NAME_MASK = "[name]"

_EMAIL = re.compile(
    r"(?:mailto:)?[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    re.IGNORECASE,
)
# "jane dot doe at example dot com", "jane(at)example(dot)com", "jane [at] example [dot] com"
_SPELLED_EMAIL = re.compile(
    r"\b[A-Za-z0-9._%+-]+(?:\s*[\[(]?\s*(?:dot)\s*[\])]?\s*[A-Za-z0-9_%+-]+)*"
    r"\s*[\[(]\s*at\s*[\])]\s*|"
    r"\b[A-Za-z0-9._%+-]+(?:\s+dot\s+[A-Za-z0-9_%+-]+)*\s+at\s+(?=[A-Za-z0-9-]+\s*(?:[\[(]\s*dot\s*[\])]|\s+dot\s+))",
    re.IGNORECASE,
)
_SPELLED_DOMAIN = re.compile(
    r"[A-Za-z0-9-]+(?:\s*(?:[\[(]\s*dot\s*[\])]|\s+dot\s+)\s*[A-Za-z0-9-]+)+",
    re.IGNORECASE,
)
# A phone candidate: optional +country code, then digit groups separated by spaces, dots, dashes, slashes or
# parentheses; optional extension. Validated by `_is_phone` (digit count, not a date / amount / id).
_PHONE = re.compile(
    r"(?<![\w$€£%.,/-])"
    r"(?:\+|00)?\(?\d[\d\s().\-/]{5,}\d"
    r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
    r"(?![\w%])",
    re.IGNORECASE,
)
# Capitalised words (Jane, Okonkwo-Lindqvist, O'Brien, McKay, Étienne) that may be people's names.
_UP, _LO = "A-ZÀ-ÖØ-Þ", "a-zß-öø-ÿ"
_NAME_WORD = rf"(?:[{_UP}]['’])?[{_UP}][{_LO}]+(?:[{_UP}][{_LO}]+)*(?:['’-][{_UP}]?[{_LO}]+)*"
_NAME_RUN = re.compile(rf"(?<![\w'’-]){_NAME_WORD}(?:[ \t]+{_NAME_WORD})+(?![\w'’-])")
_NAME_INSIDE = re.compile(rf"(?:(?<=[{_LO}\d,;:)] )|(?<=[(\"“]))(?<![\w'’-]){_NAME_WORD}(?![\w'’-])")
_DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
_TAG = re.compile(r"<[^>]{0,500}>")
_SPACE = re.compile(r"\s+")


def _is_phone(candidate: str) -> bool:
    core = re.split(r"(?i)\s*(?:x|ext\.?|extension)\s*\d", candidate)[0].strip()
    digits = re.sub(r"\D", "", core)
    if not 7 <= len(digits) <= 15:
        return False
    if _DATE_LIKE.match(core):
        return False
    separated = bool(re.search(r"[\s().\-/]", core)) or core.startswith("+")
    # An unseparated run of digits is a phone only when it is phone-length (10+); shorter runs are ids/amounts.
    return separated or len(digits) >= 10


def _mask_phones(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        s = match.group(0)
        trailing = ""
        while s and s[-1] in " .-/(":
            trailing = s[-1] + trailing
            s = s[:-1]
        return (PHONE_MASK + trailing) if _is_phone(s) else match.group(0)

    return _PHONE.sub(repl, text)


def _mask_spelled_emails(text: str) -> str:
    out = []
    pos = 0
    for m in _SPELLED_EMAIL.finditer(text):
        dom = _SPELLED_DOMAIN.match(text, m.end())
        if not dom:
            continue
        out.append(text[pos : m.start()])
        out.append(EMAIL_MASK)
        pos = dom.end()
    out.append(text[pos:])
    return "".join(out)


def mask_personal_data(text: object) -> str:
    """The text with e-mail addresses replaced by '[email]' and phone numbers by '[phone]' ('' for None/NaN)."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    s = str(text)
    s = _EMAIL.sub(EMAIL_MASK, s)
    s = _mask_spelled_emails(s)
    return _mask_phones(s)


def mask_names(text: object) -> str:
    """Free text with words that may be people's names replaced by '[name]': runs of two or more capitalised
    words ('Jane Roe', 'Met Jane Roe') and single capitalised words inside a sentence ('sent to Jane').

    Greedy on purpose (it also masks company and product names, and a sentence's first word before a name): it is
    for excerpts of notes people typed, where a contact's name must not pass. Not for labels or codes."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    return _NAME_INSIDE.sub(NAME_MASK, _NAME_RUN.sub(NAME_MASK, str(text)))


def mask_series(values: pd.Series) -> pd.Series:
    """A string Series with every element masked by `mask_personal_data` (None/NaN become '')."""
    return values.map(mask_personal_data).astype("object")


def safe_excerpt(text: object, max_chars: int = 160) -> str:
    """A masked (e-mail addresses, phone numbers, names), tag-stripped, whitespace-collapsed excerpt of at most
    `max_chars` characters (plain text).

    The result is plain text: it still has to be HTML-escaped where it is shown (the display helpers do).
    """
    s = mask_personal_data(text)
    s = html.unescape(_TAG.sub(" ", s))
    s = mask_personal_data(s)  # entities could have hidden an address (e.g. '&#64;')
    s = mask_names(_SPACE.sub(" ", s).strip())
    if len(s) > max_chars:
        s = s[: max(0, max_chars - 1)].rstrip() + "…"
    return s


def contains_personal_data(text: object) -> bool:
    """True when masking would change the text (an e-mail address or phone number is present)."""
    if text is None or (isinstance(text, float) and text != text):
        return False
    return mask_personal_data(text) != str(text)
