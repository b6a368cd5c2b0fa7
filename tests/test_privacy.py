"""Masking of personal data in CRM free text, and escaping wherever text is shown."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.display import table_html
from analysis.privacy import contains_personal_data, mask_personal_data, mask_series, safe_excerpt


@pytest.mark.parametrize(
    "text",
    [
        "Contact: jane.doe@example.com.",
        "Cc j.smith@example.org for next steps.",
        "mailto:Bob_O'Neil+crm@sub.example.co.uk",
        "write to JANE@EXAMPLE.COM",
        "jane dot doe at example dot com",
        "jane [at] example [dot] com",
        "jane(at)example(dot)com",
    ],
)
def test_email_addresses_are_masked(text):
    masked = mask_personal_data(text)
    assert "[email]" in masked
    assert "example" not in masked.lower()
    assert "@" not in masked


@pytest.mark.parametrize(
    "text",
    [
        "Call back on +1 415 555 0100.",
        "Phone +44 20 7946 0958.",
        "ph (415) 555-0100 ext 12",
        "415.555.0100",
        "call 1-800-555-0199 now",
        "+49 30 1234567",
        "cell 4155550100",
        "0044 20 7946 0958",
    ],
)
def test_phone_numbers_are_masked(text):
    masked = mask_personal_data(text)
    assert "[phone]" in masked
    assert not any(ch.isdigit() for ch in masked.replace("[phone]", "")), masked


@pytest.mark.parametrize(
    "text",
    [
        "Price was 30% above their approved range.",
        "Signed 2026-10-05, renewal 10/05/2027.",
        "Deal of $1,200,000 lost on 2026-10-05",
        "Asked for a 40% discount, quote Q-123456",
        "We met at the office at 10:30.",
        "Went with Northwind at the end of Q3 2026.",
        "Version 2.0.1 of the SSO connector.",
    ],
)
def test_ordinary_numbers_and_words_are_kept(text):
    assert mask_personal_data(text) == text
    assert not contains_personal_data(text)


def test_missing_values_become_empty_strings():
    assert mask_personal_data(None) == ""
    assert mask_personal_data(float("nan")) == ""
    out = mask_series(pd.Series(["a@b.io", None, "plain"]))
    assert out.tolist() == ["[email]", "", "plain"]


def test_excerpt_is_masked_stripped_and_short():
    note = "<b>Debrief</b>: went dark &#64; end. Mail x.y@corp.example &amp; call +1 415 555 0100 " + "x" * 300
    out = safe_excerpt(note, 80)
    assert len(out) <= 80 and out.endswith("…")
    assert "<b>" not in out and "corp.example" not in out and "415" not in out
    assert "[email]" in out and "[phone]" in out


def test_entity_encoded_address_is_masked_in_excerpts():
    assert "corp" not in safe_excerpt("ping jane&#64;corp.example.com please")


def test_payloads_are_escaped_when_shown():
    payload = 'Lost <script>alert("x")</script> <img src=x onerror=alert(1)> jane@corp.example'
    html = table_html(pd.DataFrame({"note": [safe_excerpt(payload)]}), caption="<b>notes</b>")
    assert "<script" not in html and "<img" not in html and "<b>notes" not in html
    assert "&lt;" in html or "script" not in html
    assert "corp.example" not in html
