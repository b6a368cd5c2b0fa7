"""Personal data: no e-mail address, phone number or contact name from the input in anything a run writes.

tests/adversarial.py seeds the export with invented people: names, e-mail addresses and phone numbers in
closed-lost notes (some in HTML links), contact columns in leads.csv that the canonical mapping does not read, an
address and a phone number pasted into the analyst's actions file, and a Maven-style export whose sales agents and
managers are people (pseudonymized by its mapping). A scanner reads everything the run wrote:

* the report folder: board_pack.html, board_pack.eml (every part decoded, the attached pack included),
  metrics.parquet (every value), the executed notebooks (every output but inline images), manifest.json;
* data/processed: every table and the quarantine (every value, the raw records' JSON included), the ingest manifest.

The report folder holds none of the seeded data. data/processed is the analyst-side store: it never holds a
contact column the mapping does not read nor a pseudonymized person's name (not even in a quarantined row's raw
record); CRM free text (closed-lost notes) is kept there as exported, personal data included, and masked wherever
it is shown: the scanner finds the note-borne data there in the notes and nowhere else.
"""

from __future__ import annotations

import email
import html
import json
import re
from email import policy
from pathlib import Path

import adversarial as adv
import pyarrow.parquet as pq
import pytest

from analysis.privacy import NAME_MASK, mask_names, safe_excerpt

pytestmark = pytest.mark.e2e

NOTE_NAMES = adv.NAMES[1:]
NOTE_EMAILS = [e for e in adv.EMAILS if e != adv.EMAILS[3]]
ACTIONS_PERSONAL = [f"quentin.marblewood@{adv.EVIL}", f"q.m@{adv.EVIL}", "+1 (415) 555-0187"]
_DATA_URI = re.compile(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=\s]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def _needles(names: list[str], emails: list[str], phones: list[str]) -> dict[str, str]:
    """What to look for (lower case): each name and each part of it of 6+ letters, each address and its local
    part, each phone number as written and with its separators removed."""
    out = {}
    for name in names:
        out[name.lower()] = name
        for part in re.split(r"[\s-]+", name):
            if len(part) >= 6:
                out[part.lower()] = name
    for address in emails:
        out[address.lower()] = address
        out[address.split("@")[0].lower()] = address
    for phone in phones:
        out[phone.lower()] = phone
        digits = re.sub(r"\D", "", phone.split("ext")[0])
        out[digits] = phone
    return out


SEEDED = _needles(
    [*adv.NAMES, *adv.CONTACT_NAMES, *adv.MAVEN_AGENTS, *adv.MAVEN_MANAGERS],
    [*adv.EMAILS, *adv.CONTACT_EMAILS, *ACTIONS_PERSONAL[:2]],
    [*adv.PHONES, *adv.CONTACT_PHONES],
)


def _found(text: str, needles: dict[str, str]) -> set[str]:
    low = html.unescape(text).lower()
    squeezed = re.sub(r"[\s().-]", "", low)  # phone numbers written with other separators
    return {who for needle, who in needles.items() if needle in low or (needle.isdigit() and needle in squeezed)}


def _parquet_text(path: Path, skip_columns: tuple[str, ...] = ()) -> str:
    table = pq.read_table(path)
    parts = []
    for name in table.column_names:
        if name in skip_columns:
            continue
        values = table.column(name).to_pylist()
        if name == "raw_record":  # JSON of the source values; a quarantined note is CRM free text like any note
            values = [json.dumps({k: v for k, v in json.loads(r).items() if k not in skip_columns}) for r in values]
        parts.extend("" if v is None else str(v) for v in values)
    return "\n".join(parts)


def _report_files(report: Path) -> dict[str, str]:
    """Every file of the report folder as searchable text."""
    out = {}
    for path in sorted(report.rglob("*")):
        rel = path.relative_to(report).as_posix()
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            out[rel] = _parquet_text(path)
        elif path.suffix == ".eml":
            msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            parts = [f"{k}: {v}" for k, v in msg.items()]
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    parts.append(part.get_content())
            out[rel] = _DATA_URI.sub("", "\n".join(parts))
        elif path.suffix == ".ipynb":
            nb = json.loads(path.read_text(encoding="utf-8"))
            for cell in nb["cells"]:
                for output in cell.get("outputs", []):
                    output.get("data", {}).pop("image/png", None)
            out[rel] = json.dumps(nb, ensure_ascii=False)
        else:
            out[rel] = _DATA_URI.sub("", path.read_text(encoding="utf-8"))
    return out


@pytest.fixture(scope="module")
def run():
    return adv.hostile_run()


def test_the_seeded_data_is_in_the_input(run):
    """The scanner would see the data: the raw export holds every seeded item (no test of an empty haystack)."""
    raw = "\n".join(p.read_text(encoding="utf-8") for p in sorted(run["raw"].rglob("*.csv")))
    raw += (run["raw"] / "actions" / f"{adv.PERIOD}.md").read_text(encoding="utf-8")
    raw += "\n".join(p.read_text(encoding="utf-8") for p in sorted(run["maven_raw"].glob("*.csv")))
    assert _found(raw, SEEDED) == set(SEEDED.values())


def test_nothing_the_run_wrote_holds_seeded_personal_data(run):
    files = _report_files(run["report"])
    assert {"board_pack.html", "board_pack.eml", "metrics.parquet", "manifest.json"} <= set(files)
    assert sum(f.startswith("notebooks/") for f in files) >= 8
    leaks = {rel: sorted(_found(text, SEEDED)) for rel, text in files.items()}
    leaks = {rel: who for rel, who in leaks.items() if who}
    assert not leaks, f"personal data in the run's outputs: {leaks}"
    print(f"\npersonal data: {len(set(SEEDED.values()))} seeded items, {len(SEEDED)} search strings, "
          f"{len(files)} report files scanned, none found")


def test_no_email_address_at_all_in_what_people_read(run):
    """Beyond the seeded ones: no e-mail address of any kind (the demo notes' own included) in the pack or the
    e-mail (the message's own ids, @funnel-kit, are not addresses)."""
    files = _report_files(run["report"])
    for rel in ("board_pack.html", "board_pack.eml"):
        found = {a for a in _EMAIL.findall(files[rel]) if not a.endswith("@funnel-kit")}
        assert not found, (rel, sorted(found)[:5])


def test_the_topic_suggestions_show_masked_excerpts(run):
    text = (run["report"] / "board_pack.html").read_text(encoding="utf-8")
    section = text[text.index("Suggested topics"):]
    section = section[: section.index("</table>")]
    assert NAME_MASK in section and "[email]" in section and "[phone]" in section


def test_processed_data_holds_no_unread_contact_columns_or_pseudonymized_names(run):
    contacts = _needles([*adv.CONTACT_NAMES, *adv.MAVEN_AGENTS, *adv.MAVEN_MANAGERS], adv.CONTACT_EMAILS,
                        adv.CONTACT_PHONES)
    note_borne = _needles(NOTE_NAMES, NOTE_EMAILS, adv.PHONES)
    scanned, in_notes = 0, set()
    for folder in (run["processed"], run["maven_processed"]):
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            scanned += 1
            text = _parquet_text(path) if path.suffix == ".parquet" else path.read_text(encoding="utf-8")
            assert not _found(text, contacts), (path, sorted(_found(text, contacts)))
            if path.suffix == ".parquet":  # note-borne data: in the notes (kept as exported), nowhere else
                others = _parquet_text(path, skip_columns=("lost_reason_notes",))
                assert not _found(others, note_borne), (path, sorted(_found(others, note_borne)))
                in_notes |= _found(text, note_borne)
    assert in_notes, "the notes were expected to keep the CRM's text in data/processed"
    manifest = json.loads((run["processed"] / "ingest_manifest.json").read_text(encoding="utf-8"))
    assert {"contact_name", "email", "phone"} <= set(manifest["tables"]["leads"]["ignored_columns"])
    q = pq.read_table(run["maven_processed"] / "quarantine" / "opportunities.parquet").to_pylist()
    assert q and all(json.loads(r["raw_record"])["sales_agent"].startswith("rep_") for r in q)
    opp = pq.read_table(run["maven_processed"] / "opportunities.parquet")
    assert all(v.startswith("rep_") for v in opp.column("owner_id").to_pylist())
    assert all(v.startswith("team_") for v in opp.column("owner_team").to_pylist())
    print(f"\npersonal data: {scanned} files of data/processed scanned")


NAME_CASES = [
    ("Met Ysolde Brackenridge at the offsite", "[name] at the offsite"),
    ("Meeting notes sent to Cosimo; follow-up next", "Meeting notes sent to [name]; follow-up next"),
    ("Champion left (reorg); new CFO Étienne Dubois-Lefèvre", "Champion left (reorg); new CFO [name]"),
    ("Spoke to O'Brien and McKay: no budget", "Spoke to [name] and [name]: no budget"),
    ("asked (Jane) and \"Bob\"", "asked ([name]) and \"[name]\""),
    ("Pricing too high for SMB; EMEA Q3 budget", "Pricing too high for SMB; EMEA Q3 budget"),
    ("rep said: Jane will call", "rep said: [name] will call"),
]


@pytest.mark.parametrize("text,masked", NAME_CASES)
def test_mask_names(text, masked):
    assert mask_names(text) == masked


def test_excerpts_mask_addresses_phones_and_names():
    for note in adv.NOTES_WITH_PERSONAL_DATA:
        excerpt = safe_excerpt(note, 200)
        assert not _found(excerpt, SEEDED), (note, excerpt)
        assert "<" not in excerpt
