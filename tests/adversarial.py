"""A hostile export, shared by test_hostile_text.py and test_personal_data.py (built and run once per session).

The demo export (3 000 leads) with, in every free-text and label field that can reach a pack, markup that would run
script, fetch from outside, break the page's structure or inject template or markdown syntax, and very long
strings; with contact-level personal data (names, e-mail addresses, phone numbers) in notes, in label fields and in
extra columns the canonical mapping does not read; an analyst's actions file with raw HTML, markdown and external
links; and a copy of the governed definitions that *allows* a hostile channel, rejection reason, closed-lost theme
and reason code (values outside the definitions are quarantined, so only this way do they reach the sections).
"""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PERIOD = "2026-10"
EVIL = "evil.example"

# id -> payload. Each would change the page title to PWNED-<id>, add an element with id pwned-<id>, or fetch from
# evil.example if it were ever interpreted instead of shown as text.
PAYLOADS = {
    "script": "<script>document.title='PWNED-script'</script>",
    "img": "<img src=x onerror=\"document.title='PWNED-img'\">",
    "svg": "<svg onload=\"document.title='PWNED-svg'\"><circle r=5></circle></svg>",
    "js_link": "<a id=pwned-js href=\"javascript:document.title='PWNED-js'\">open</a> javascript:alert(1)",
    "breakout": "\"></td></tr></table></div><h1 id=\"pwned-breakout\">INJECTED</h1><table><tr><td>",
    "attr": "' onmouseover='document.title=`PWNED-attr`' x='",
    "iframe": f"<iframe id=pwned-iframe src=\"http://{EVIL}/frame\"></iframe>",
    "style": f"<style>@import url(http://{EVIL}/x.css); body{{background:url(http://{EVIL}/bg.png)}}</style>",
    "link": f"<link rel=stylesheet href=\"http://{EVIL}/l.css\"><base href=\"http://{EVIL}/\">",
    "meta": f"<meta http-equiv=\"refresh\" content=\"0;url=http://{EVIL}/\">",
    "form": "<form id=pwned-form><input autofocus onfocus=\"document.title='PWNED-form'\"></form>",
    "object": f"<object data=\"http://{EVIL}/o.swf\"></object><embed src=\"http://{EVIL}/e.swf\">",
    "markdown": f"**bold** [x](http://{EVIL}/md) ![pixel](http://{EVIL}/pixel.png) [j](javascript:alert(1))",
    "jinja": "{{ 'PWN' ~ 'ED-jinja' }} {% if true %}PWNED-jinja-block{% endif %}",
    "entity": "&lt;script&gt;document.title='PWNED-entity'&lt;/script&gt; &#60;b&#62;",
    "data_uri": "<img src=\"data:image/svg+xml,<svg onload=alert(1)>\" id=pwned-datauri>",
    "long": "L" * 10_000 + "<b id=pwned-long>end</b>",
}
HOSTILE_CHANNEL = "<img src=x onerror=\"document.title='PWNED-channel'\">"
HOSTILE_REASON = "<script>document.title='PWNED-reason'</script>"
HOSTILE_THEME = "<svg onload=\"document.title='PWNED-theme'\">"
HOSTILE_CODE = "<b id=pwned-code>code</b>"
# Labels: competitor, owner team, region, industry, product, account, campaign, content, source detail.
LABELS = {
    "competitor": "<script>document.title='PWNED-competitor'</script>Rival",
    "owner_team": "<img src=x onerror=\"document.title='PWNED-team'\">Team" + "T" * 10_000,  # also very long
    "region": "<iframe id=pwned-region src=\"http://" + EVIL + "/r\"></iframe>",
    "industry": "</table><h1 id=pwned-industry>X</h1>",
    "product": "{{ 'PWN' ~ 'ED-product' }}",
    "account_id": "ACC-<svg onload=\"document.title='PWNED-account'\">",
    "campaign": "<a href=\"javascript:document.title='PWNED-campaign'\">camp</a>",
    "content": f"![c](http://{EVIL}/content.png)",
    "source_detail": "**detail** <img src=\"http://" + EVIL + "/detail.png\">",
}
ACTIONS = f"""# What marketing is doing: October 2026

- **Bold** and _italic_ are allowed; a [plain link](https://{EVIL}/plan) stays a link nobody fetches.
- Raw HTML is shown as text: <script>document.title='PWNED-actions'</script>
  <img src="http://{EVIL}/actions.png" onerror="document.title='PWNED-actions-img'">
- An image in markdown is not fetched: ![tracker](http://{EVIL}/tracker.png)
- A script link is not a link: [click](javascript:document.title='PWNED-actions-js')
- <iframe src="http://{EVIL}/frame"></iframe> {{{{ 7 * 7 }}}} </div></section><h1 id="pwned-actions">X</h1>
- A contact pasted in: quentin.marblewood@{EVIL}, +1 (415) 555-0187, mailto:q.m@{EVIL}.
"""

# Contact-level personal data placed in the export. The names are invented and unusual, so any occurrence in an
# output is a leak, not a coincidence.
NAMES = ["Quentin Marblewood", "Ysolde Brackenridge", "Thaddeus Okonkwo-Lindqvist", "Perpetua Vanderhoeven",
         "Evander Szczepanski", "Marisol Etxeberria", "Cosimo Abernathy-Kwan", "Henrietta Pilkington-Oyelaran"]
EMAILS = ["ysolde.brackenridge@northwind-mail.example", "t.okonkwo@contoso-mail.example",
          "perpetua.v+crm@fabrikam-mail.example", "quentin.marblewood@" + EVIL, "evander.sz@tailspin-mail.example",
          "m.etxeberria@wingtip-mail.example"]
PHONES = ["+1 (415) 555-0187", "+44 20 7946 0958", "020 7946 0321", "415.555.0142", "+49 30 901820",
          "+33 1 70 36 39 50", "(212) 555-0143 ext. 12"]
# Contact columns in leads.csv that the canonical mapping does not read (they must not even reach data/processed).
CONTACT_NAMES = ["Aurelio Fitzwilliam-Nakamura", "Gwendolyn Trevithick", "Oluwaseun Castellanos"]
CONTACT_EMAILS = ["aurelio.fn@litware-mail.example", "gwen.trevithick@adatum-mail.example"]
CONTACT_PHONES = ["+1 (646) 555-0199", "+61 2 5550 1234", "0161 496 0752"]
# Notes with no reason code and no theme keyword: they reach the pack as topic suggestions (terms, an excerpt).
NOTES_WITH_PERSONAL_DATA = [
    f"Met {NAMES[1]} at the offsite; reach {EMAILS[0]} or {PHONES[1]} for the follow-up meeting.",
    f"Follow-up meeting with {NAMES[2]} ({EMAILS[1]}), tel {PHONES[2]}, offsite notes pending.",
    f"Call {NAMES[3]} on {PHONES[3]} about the offsite. Mail: {EMAILS[2]}.",
    f"<a href=\"mailto:{EMAILS[4]}\">{NAMES[4]}</a> asked for a follow-up meeting; mobile {PHONES[4]}.",
    f"Offsite follow-up: {NAMES[5]} ({EMAILS[5]}, {PHONES[5]}) wants the meeting notes.",
    f"Meeting notes sent to {NAMES[6]}; desk phone {PHONES[6]}; offsite follow-up next.",
    f"{NAMES[7]} (mobile {PHONES[0]}) joined the offsite meeting; follow-up by mail.",
]
NEUTRAL = " offsite follow-up meeting notes pending"
# Maven-style export: sales agents and managers are people; the mapping pseudonymizes them.
MAVEN_AGENTS = ["Ottoline Featherstonehaugh", "Barnaby Quixley-Oduya", "Seraphina Dunmore"]
MAVEN_MANAGERS = ["Cornelius Ashgrove", "Imelda Strathcarron"]


def _definitions(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "config" / "definitions.yml").read_text(encoding="utf-8"))
    data["channels"]["origin_by_channel"][HOSTILE_CHANNEL] = "marketing"
    data["sla"]["rejection_reasons"].append(HOSTILE_REASON)
    data["closed_lost_themes"]["themes"][HOSTILE_THEME] = {"codes": [HOSTILE_CODE], "keywords": ["zanzibar"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000), encoding="utf-8")
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _seed(raw: Path, rng: random.Random) -> None:
    payloads = list(PAYLOADS.values())
    opp = _read(raw / "opportunities.csv")
    lost = opp.index[opp["stage"] == "Closed Lost"].tolist()
    for i, row in enumerate(lost):
        if i % 3 == 0:  # unthemed: shown in the topic suggestions
            opp.loc[row, ["lost_reason_code", "lost_reason_notes"]] = ["", payloads[(i // 3) % len(payloads)] + NEUTRAL]
        elif i % 3 == 1:
            note = NOTES_WITH_PERSONAL_DATA[(i // 3) % len(NOTES_WITH_PERSONAL_DATA)]
            opp.loc[row, ["lost_reason_code", "lost_reason_notes"]] = ["", note]
        elif i % 6 == 2:  # themed by the hostile theme's keyword
            opp.loc[row, ["lost_reason_code", "lost_reason_notes"]] = ["", "zanzibar" + NEUTRAL]
        if i % 4 == 0:
            opp.loc[row, "competitor"] = LABELS["competitor"]
        if i % 5 == 0:
            opp.loc[row, "lost_reason_code"] = HOSTILE_CODE
    # A quarantined deal (negative amount) whose note holds personal data: its raw record is kept in quarantine.
    opp.loc[lost[1], "amount"] = "-5.00"
    for col in ("owner_team", "region", "industry", "product", "account_id"):
        rows = rng.sample(list(opp.index), k=len(opp) // 4)
        opp.loc[rows, col] = LABELS[col]
    opp.to_csv(raw / "opportunities.csv", index=False)

    leads = _read(raw / "leads.csv")
    for col in ("owner_team", "region", "source_detail", "account_id"):
        rows = rng.sample(list(leads.index), k=len(leads) // 4)
        leads.loc[rows, col] = LABELS[col]
    rejected = leads.index[leads["rejection_reason"] != ""].tolist()
    leads.loc[rejected[::4], "rejection_reason"] = HOSTILE_REASON
    leads.loc[rng.sample(list(leads.index), k=len(leads) // 10), "source_channel"] = HOSTILE_CHANNEL
    n = len(leads)  # contact columns the canonical mapping does not read (listed as ignored columns)
    leads["contact_name"] = [CONTACT_NAMES[i % len(CONTACT_NAMES)] for i in range(n)]
    leads["email"] = [CONTACT_EMAILS[i % len(CONTACT_EMAILS)] for i in range(n)]
    leads["phone"] = [CONTACT_PHONES[i % len(CONTACT_PHONES)] for i in range(n)]
    leads.to_csv(raw / "leads.csv", index=False)

    tp = _read(raw / "touchpoints.csv")
    for col in ("campaign", "content"):
        rows = rng.sample(list(tp.index), k=len(tp) // 5)
        tp.loc[rows, col] = LABELS[col]
    tp.loc[rng.sample(list(tp.index), k=len(tp) // 10), "channel"] = HOSTILE_CHANNEL
    tp.to_csv(raw / "touchpoints.csv", index=False)

    (raw / "actions" / f"{PERIOD}.md").write_text(ACTIONS, encoding="utf-8")


def _maven(raw: Path) -> Path:
    """A small export in the Maven CRM layout whose agent and manager columns hold people's names."""
    raw.mkdir(parents=True)
    pd.DataFrame({
        "sales_agent": MAVEN_AGENTS,
        "manager": [MAVEN_MANAGERS[0], MAVEN_MANAGERS[0], MAVEN_MANAGERS[1]],
        "regional_office": ["Central", "East", "West"],
    }).to_csv(raw / "sales_teams.csv", index=False)
    pd.DataFrame({"account": ["Acme", "Globex"], "sector": ["software", "retail"], "year_established": ["1990", "2001"],
                  "revenue": ["100.5", "20.1"], "employees": ["1200", "80"], "office_location": ["US", "US"],
                  "subsidiary_of": ["", ""]}).to_csv(raw / "accounts.csv", index=False)
    rows = []
    for i in range(12):
        stage = ["Won", "Lost", "Engaging", "Prospecting"][i % 4]
        rows.append({
            "opportunity_id": f"M{i:05d}", "sales_agent": MAVEN_AGENTS[i % 3], "product": "GTXPro",
            "account": ["Acme", "Globex", ""][i % 3] if stage != "Won" else "Acme",
            "deal_stage": stage, "engage_date": "" if stage == "Prospecting" else "2017-03-01",
            "close_date": "2017-04-01" if stage in ("Won", "Lost") else "",
            "close_value": "1000" if stage == "Won" else ("0" if stage == "Lost" else ""),
        })
    # One deal quarantined (unknown stage): its raw record is kept with the pseudonymized agent, not the name.
    rows.append({**rows[0], "opportunity_id": "M99999", "deal_stage": "Pending"})
    pd.DataFrame(rows).to_csv(raw / "sales_pipeline.csv", index=False)
    return raw


@functools.lru_cache(maxsize=1)
def hostile_run() -> dict[str, Path]:
    """Build, ingest and run the monthly pack of the hostile export once; the paths of everything it wrote."""
    from analysis.config import load_definitions
    from analysis.demo import generate_demo_data
    from analysis.ingest import ingest
    from analysis.pack import run_cadence

    root = Path(tempfile.mkdtemp(prefix="funnel-hostile-"))
    atexit.register(shutil.rmtree, root, True)
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    generate_demo_data(raw, n_leads=3000)
    _seed(raw, random.Random(9))
    definitions = _definitions(root / "definitions.yml")
    defs = load_definitions(definitions)
    ingest(raw, ROOT / "config" / "mappings" / "canonical.yml", processed, defs)
    report = run_cadence("monthly", PERIOD, data_dir=processed, out_dir=root / "reports" / PERIOD,
                         definitions_path=definitions, actions_dir=raw / "actions")
    maven_raw = _maven(root / "maven" / "raw")
    ingest(maven_raw, ROOT / "config" / "mappings" / "maven_crm.yml", root / "maven" / "processed", load_definitions())
    return {"root": root, "raw": raw, "processed": processed, "report": report, "definitions": definitions,
            "maven_raw": maven_raw, "maven_processed": root / "maven" / "processed"}
