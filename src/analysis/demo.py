"""Demo data with planted truth: a canonical export for a fictitious B2B software company.

`generate_demo_data(out_dir)` writes leads, opportunities, stage_history, touchpoints, targets and
forecasts in the canonical layout (`analysis.schema`), an analyst's note `actions/2026-10.md`, and
`truth.json`: the effects planted in the data. Everything not planted comes from a process that is
stable over time (volume grows gently; no rate, mix or delay moves).

Determinism: one seed gives the same bytes. Leads are generated in chunks; chunk k draws from its own
stream `SeedSequence(seed, spawn_key=(k + 1,))`, global draws (daily volume noise, plan noise) from
`spawn_key=(0,)`. Lead and opportunity decisions are uniforms whose number does not depend on `plant`,
so unplanted leads and opportunities differ from planted ones only where an effect was planted and in
what follows from it (touchpoint draws differ, because planted journeys of content syndication leads are
never single-touch). Lead ids follow creation time; opportunity ids follow creation time within a chunk
of `chunk_size` leads; CSV is written chunk by chunk, so memory does not grow with `n_leads`.

truth.json, per effect: `baseline` / `planted` are process values of the primary metric (rates measured
within a conversion window come out slightly lower, because of the late tail); `by_metric` gives them
for every listed metric; `primary` names the cell in which the effect must be detected; the dimension
lists (`segments`, `regions`, `reasons`, ...) name every cell in which the effect is present ("All" when
the total moves); `compensating` names categories whose share falls mechanically when a share rises.
Closed-won revenue ramps up over the first months (`warm_up_months`): the export starts with no pipeline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtri

from analysis.config import load_definitions
from analysis.schema import MONEY, TABLES, TS

AS_OF = "2026-11-01T00:00:00Z"
FIRST_MONTH, LAST_MONTH, LAST_TARGET_MONTH = "2025-05", "2026-10", "2027-01"
CHUNK_SIZE = 100_000
JOURNEY_P_GEO = 0.155  # the demo's journey-length parameter (see _Context)
# Relative lead arrivals by hour of day (UTC): the Americas afternoon peaks, EMEA mornings, quiet nights.
# fmt: off
HOUR_PROFILE_UTC = (0.25, 0.2, 0.15, 0.15, 0.15, 0.2, 0.35, 0.6, 0.9, 1.0, 1.0, 1.0,
                    1.1, 1.4, 1.6, 1.7, 1.7, 1.6, 1.4, 1.2, 0.9, 0.7, 0.5, 0.35)
# fmt: on
DAY, HOUR = 86_400, 3_600


def _epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


START_S, AS_OF_S = _epoch("2025-05-01T00:00:00Z"), _epoch(AS_OF)
NA = np.iinfo(np.int64).max // 4  # "no event": at or after the snapshot, written as null
M0 = np.datetime64(FIRST_MONTH, "M").astype(np.int64)

SEGMENTS = ("SMB", "Mid-Market", "Enterprise")
SEG_ABBR = ("SMB", "MM", "ENT")
SEG_P = (0.60, 0.28, 0.12)
LEADS_PER_ACCOUNT = (2.0, 4.0, 8.0)
REGIONS = ("NA", "EMEA", "APAC", "LATAM")
REG_P = (0.50, 0.30, 0.15, 0.05)
INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Education",
    "Public Sector",
    "Media",
)
INDUSTRY_P = (0.24, 0.16, 0.13, 0.15, 0.11, 0.07, 0.06, 0.08)
PRODUCTS = ("Insight Core", "Insight Pro", "Insight Enterprise")
PRODUCT_P = ((0.70, 0.28, 0.02), (0.30, 0.55, 0.15), (0.05, 0.35, 0.60))  # by segment
SDR_TEAMS = ("SDR-NA-1", "SDR-NA-2", "SDR-EMEA-1", "SDR-APAC-1", "SDR-LATAM-1")
SDR_REPS = {0: (range(1, 9), range(9, 17)), 1: (range(17, 27),), 2: (range(27, 33),), 3: (range(33, 36),)}

CHANNELS = (
    "paid_search",
    "paid_social",
    "organic_search",
    "content_syndication",
    "webinar",
    "events",
    "email",
    "website_direct",
    "outbound_sdr",
    "partner_referral",
)
CS, OUTBOUND, PARTNER, EVENTS = 3, 8, 9, 5
SRC_P = (0.16, 0.08, 0.12, 0.18, 0.08, 0.06, 0.07, 0.10, 0.10, 0.05)  # first touch of a lead
MQL_RATE = (0.42, 0.30, 0.40, 0.32, 0.45, 0.45, 0.35, 0.50, 0.60, 0.70)  # by source channel
MIDDLE_P = (0.14, 0.10, 0.12, 0.10, 0.12, 0.06, 0.20, 0.12, 0.03, 0.01)  # touches between first and last
LAST_P = (0.22, 0.06, 0.12, 0.01, 0.10, 0.08, 0.10, 0.16, 0.10, 0.05)  # last touch before the opportunity
CAMPAIGNS = (
    ("ps", ("brand", "generic", "competitor")),
    ("soc", ("linkedin_abm", "retargeting", "video")),
    ("seo", ("blog", "docs", "comparison")),
    ("cs", ("ebook_network", "analyst_digest", "it_briefing")),
    ("web", ("product_demo", "customer_panel", "expert_series")),
    ("ev", ("trade_show", "roundtable", "user_conference")),
    ("em", ("nurture", "newsletter", "launch")),
    ("wd", ("demo_request", "pricing_page", "contact_us")),
    ("sdr", ("cold_sequence", "abm_play", "reengage")),
    ("ptn", ("reseller", "si_alliance", "marketplace")),
)
CONTENT = (
    ("landing_demo_request", "landing_free_trial", "landing_pricing"),
    ("video_product_tour", "carousel_customer_story", "ad_roi_calculator"),
    ("blog_funnel_metrics", "docs_getting_started", "comparison_page"),
    ("ebook_roi_guide", "whitepaper_data_strategy", "report_benchmark_2026"),
    ("webinar_live", "webinar_on_demand", "webinar_recording"),
    ("booth_scan", "roundtable_attendee", "keynote_session"),
    ("newsletter_monthly", "nurture_step", "product_update"),
    ("homepage", "pricing_page", "demo_request_form"),
    ("cold_email", "cold_call", "linkedin_message"),
    ("partner_intro", "co_marketing_brief", "marketplace_listing"),
)
SALES_CONTENT = ("discovery_call", "product_demo", "exec_briefing", "proposal_review")

SAL_P, REJECT_P = 0.75, 0.22  # else: neither accepted nor rejected
SQL_P = (0.45, 0.42, 0.47)  # SAL -> SQL by segment
ENT_SQL_PLANTED, ENT_DROP_START = 0.20, "2026-09-01T00:00:00Z"
WIN_P = (0.30, 0.25, 0.20)
AMOUNT_MEDIAN, AMOUNT_SIGMA = (8_000.0, 40_000.0, 150_000.0), (0.55, 0.60, 0.65)
CYCLE_MEDIAN, CYCLE_SIGMA = (30.0, 60.0, 120.0), (0.50, 0.40, 0.22)
LOST_FURTHEST_P = (0.35, 0.30, 0.20, 0.15)  # Discovery, Solution, Proposal, Negotiation
OPEN_STAGES, WON_STAGE, LOST_STAGE = ("Discovery", "Solution", "Proposal", "Negotiation"), "Closed Won", "Closed Lost"
SS_SEG_P = (0.45, 0.33, 0.22)  # sales-sourced opportunities (no lead)
SLA_WITHIN, SLA_WITHIN_PLANTED, SLA_UNTOUCHED, SLA_SURGE_MONTH = 0.80, 0.45, 0.03, "2026-10"

REJECTION_P = (
    ("budget_not_confirmed", 0.10),
    ("no_authority", 0.12),
    ("no_need", 0.20),
    ("bad_timing", 0.15),
    ("duplicate", 0.10),
    ("bad_contact_data", 0.15),
    ("competitor_customer", 0.08),
    ("student_or_job_seeker", 0.10),
)
BUDGET_SHARE_PLANTED, BUDGET_SPIKE_MONTH = 0.35, "2026-10"
COMPETITORS = ("Northwind Analytics", "Contoso Insights", "Fabrikam BI", "Initech Data")
SHORT_NAMES = ("Northwind", "Contoso", "Fabrikam", "Initech")
# (code, competitor index or -1, probability); "" = no code entered
LOSS_P = (
    ("price_too_high", -1, 0.14),
    ("discount_rejected", -1, 0.04),
    ("no_budget", -1, 0.10),
    ("budget_cut", -1, 0.04),
    ("bad_timing", -1, 0.08),
    ("project_delayed", -1, 0.05),
    ("lost_to_competitor", 0, 0.05),
    ("lost_to_competitor", 1, 0.05),
    ("lost_to_competitor", 2, 0.035),
    ("lost_to_competitor", 3, 0.025),
    ("missing_feature", -1, 0.07),
    ("integration_gap", -1, 0.04),
    ("no_decision", -1, 0.06),
    ("went_dark", -1, 0.04),
    ("champion_left", -1, 0.03),
    ("", -1, 0.15),
)
NORTHWIND_SHARE_PLANTED, NORTHWIND_START = 0.25, "2026-08-01T00:00:00Z"
THEMES = ("pricing", "budget", "timing", "competitor_displacement", "product_gap", "no_decision", "champion_left")
THEME_OF_CODE = {
    "price_too_high": 0,
    "discount_rejected": 0,
    "no_budget": 1,
    "budget_cut": 1,
    "bad_timing": 2,
    "project_delayed": 2,
    "lost_to_competitor": 3,
    "missing_feature": 4,
    "integration_gap": 4,
    "no_decision": 5,
    "went_dark": 5,
    "champion_left": 6,
}
NOTE_BODIES = (
    (
        "Customer said we were too expensive compared to their current tool.",
        "Price was 30% above their approved range.",
        "Lost on price; procurement wanted a lower per-seat rate.",
        "Asked for a 40% discount we could not approve.",
        "Pricing model (per seat) did not fit their usage.",
        'CFO pushed back on list price at the final review, "too expensive for year one".',
        "Platform fee too expensive for a team of five.",
    ),
    (
        "Budget freeze announced company-wide this quarter.",
        "No budget allocated for new analytics tools this year.",
        "Funding round slipped; all new spend paused.",
        "Budget was moved to a hiring plan.",
        "Spend freeze across the org after a weak quarter.",
        "Their budget owner cut discretionary software spend.",
    ),
    (
        "Not a priority until next year.",
        "Project postponed until their ERP migration finishes.",
        "Timing is wrong: they are in the middle of a warehouse rollout.",
        "Signature delayed past their fiscal year end.",
        "Asked us to reconnect next year once the new CIO starts.",
    ),
    (
        "Went with {c} after a two-week bake-off.",
        "Chose {c}; their rep bundled onboarding for free.",
        "Switched to {c} because the parent company already uses it.",
        "Lost to competitor {c} on the final shortlist.",
        "They went with {c}, citing a better dashboard experience.",
        "Customer chose {c} after a reference call.",
    ),
    (
        "Missing SSO with their identity provider was a blocker.",
        "Needed a native CRM integration we do not have.",
        "Row-level security feature not available on our plan.",
        "Integration with their data warehouse required custom work.",
        "Roadmap item for audit logs was too far out.",
        "No SAML SSO on the mid tier.",
    ),
    (
        "Went dark after the demo; no reply to five follow-ups.",
        "No decision reached; the committee never met.",
        "Prospect ghosted after the security questionnaire.",
        "Stayed with the status quo (spreadsheets).",
    ),
    (
        "Champion left the company in the middle of the evaluation.",
        "Our sponsor left and the new VP restarted the search.",
        "Reorg moved the team under a new director who paused all vendor work.",
    ),
)
UNTHEMED_NOTES = (
    "Onboarding effort looked too heavy for their small ops team.",
    "Data residency requirements: they need hosting in the EU region only.",
    "Data residency in Canada is mandatory for their board.",
    "Procurement process requires a vendor on their approved list; we are not on it.",
    "Legal redlines on the liability cap could not be agreed.",
    "Security review flagged our data retention terms.",
    "They want an on-premise deployment only.",
    "A three-year contract term was a non-starter for them.",
    "Requires a local reseller for invoicing in their country.",
    "Their IT team could not support another cloud tool.",
    "Needed the interface in Japanese for the regional team.",
    "Accessibility audit (WCAG) raised concerns about the report viewer.",
)
NOTE_CONTEXT = (
    "",
    "",
    "",
    "",
    "",
    " About 40 seats were in scope.",
    " The evaluation ran for six weeks.",
    " Three stakeholders joined the last call.",
    " The account may come back in a later cycle.",
    " Second loss at this account.",
    " Trial usage was low.",
    " They liked the demo.",
    " Their ops lead wants to stay in touch.",
    " Only one user logged in during the trial.",
    " Legal had already approved our paper.",
)
NOTE_PREFIX = (("", 0.70), ("Debrief: ", 0.08), ("AE note - ", 0.08), ("Per call: ", 0.07), ("Update: ", 0.07))
NOTE_SUFFIX = (
    ("", 0.72),
    (" <b>urgent</b>", 0.04),
    (" <script>alert(1)</script>", 0.02),
    (" Contact: jane.doe@example.com.", 0.05),
    (" Call back on +1 415 555 0100.", 0.05),
    (" Cc j.smith@example.org for next steps.", 0.03),
    (" <i>Escalated to RevOps.</i>", 0.03),
    (" Phone +44 20 7946 0958.", 0.03),
    (" Follow-up &amp; recap sent.", 0.03),
)


def _stream(seed: int, key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key,))))


def _cat(u: np.ndarray, p: Iterable[float]) -> np.ndarray:
    """Category index of each uniform under probabilities p (inverse CDF)."""
    cdf = np.cumsum(np.asarray(tuple(p), dtype=float))
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(cdf) - 1)


def _month_idx(sec: np.ndarray) -> np.ndarray:
    """Months since 2025-05 of each timestamp (NA -> a large number)."""
    ok = sec < AS_OF_S
    m = np.where(ok, sec, 0).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) - M0
    return np.where(ok, m, 10_000)


def _month_no(month: str) -> int:
    """Months since 2025-05 of 'YYYY-MM'."""
    return int(np.datetime64(month, "M").astype(np.int64) - M0)


def _months(first: str, last: str) -> list[str]:
    a, b = np.datetime64(first, "M"), np.datetime64(last, "M")
    return [str(m) for m in np.arange(a, b + 1)]


def _hash_unit(x: np.ndarray, seed: int) -> np.ndarray:
    """A fixed uniform in [0, 1) per integer (splitmix64), so account attributes need no table."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _Calendar:
    """Business-hours clock of the SLA calendar (time zone, workdays, hours, holidays)."""

    def __init__(self, cal: dict) -> None:
        tz = ZoneInfo(cal["time_zone"])
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        workdays = {names.index(d) for d in cal["workdays"]}
        sh, sm = (int(x) for x in str(cal["start"]).split(":"))
        eh, em = (int(x) for x in str(cal["end"]).split(":"))
        holidays = {dt.date.fromisoformat(str(h)) for h in cal.get("holidays") or ()}
        starts, spans, day = [], [], dt.date(2025, 4, 1)
        while day <= dt.date(2027, 12, 31):
            if day.weekday() in workdays and day not in holidays:
                a = dt.datetime(day.year, day.month, day.day, sh, sm, tzinfo=tz).timestamp()
                b = dt.datetime(day.year, day.month, day.day, eh, em, tzinfo=tz).timestamp()
                starts.append(int(a))
                spans.append(int(b - a))
            day += dt.timedelta(days=1)
        self.starts, self.spans = np.array(starts, np.int64), np.array(spans, np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.spans)])

    def add(self, t: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """The instant `seconds` business seconds after t."""
        j = np.searchsorted(self.starts, t, side="right") - 1
        jj = np.maximum(j, 0)
        before = np.where(j < 0, 0, self.cum[jj] + np.clip(t - self.starts[jj], 0, self.spans[jj]))
        b = before + seconds.astype(np.int64)
        k = np.clip(np.searchsorted(self.cum, b, side="right") - 1, 0, len(self.starts) - 1)
        return self.starts[k] + (b - self.cum[k])


class _Context:
    """Everything shared by the chunks: sizes, arrival curve, calendar, lookup tables."""

    def __init__(self, seed: int, n_leads: int, plant: bool, chunk_size: int,
                 touches_per_lead: float | None = None) -> None:
        self.seed, self.n, self.plant, self.chunk_size = seed, n_leads, plant, chunk_size
        # Journey length is geometric with mean 1 / p_geo (capped at 36 touches): the demo's 0.155 gives ~6.4
        # touchpoints per lead; scale tests ask for ~10 (a large B2B company's density).
        self.p_geo = JOURNEY_P_GEO if touches_per_lead is None else 1.0 / touches_per_lead
        defs = load_definitions()
        origin_of = defs["channels"]["origin_by_channel"]
        unknown = [c for c in CHANNELS if c not in origin_of]
        if unknown:
            raise ValueError(f"definitions.yml channels.origin_by_channel lacks {unknown}")
        self.origins = tuple(sorted(set(origin_of[c] for c in CHANNELS)))
        self.origin_idx = np.array([self.origins.index(origin_of[c]) for c in CHANNELS])
        self.calendar = _Calendar(defs["sla"]["calendar"])
        share = np.array(SRC_P) * np.array(MQL_RATE)
        # Unplanted: the last touch is drawn like the first touch of converting leads (no gap anywhere).
        self.neutral_last_p = tuple(share / share.sum())
        seg_sql = sum(s * p for s, p in zip(SEG_P, SQL_P, strict=True))
        self.ss_rate = float(share.sum() * SAL_P * seg_sql) * 0.05 / 0.95  # ~5% of opportunities
        self.rep_tab, self.team_tab = np.zeros((4, 20), np.int64), np.zeros((4, 20), np.int64)
        self.reps_in_region = np.zeros(4, np.int64)
        team_off = 0
        for g in range(4):
            i = 0
            for t, reps in enumerate(SDR_REPS[g]):
                for r in reps:
                    self.rep_tab[g, i], self.team_tab[g, i] = r, team_off + t
                    i += 1
            self.reps_in_region[g] = i
            team_off += len(SDR_REPS[g])
        g = _stream(seed, 0)
        # Arrival curve: hourly weights = growth x weekday x daily noise x hour-of-day profile.
        n_days = (AS_OF_S - START_S) // DAY
        d = np.arange(n_days)
        weekday = (np.arange(n_days) + 3) % 7  # 2025-05-01 is a Thursday
        wd = np.array([1.05, 1.10, 1.10, 1.05, 0.90, 0.35, 0.30])[weekday]
        day_w = (1.0 + 0.35 * d / (n_days - 1)) * wd * g.gamma(30.0, 1 / 30.0, n_days)
        prof = np.array(HOUR_PROFILE_UTC)
        self.hour_w = (day_w[:, None] * prof[None, :]).ravel()
        self.hour_cum = np.concatenate([[0.0], np.cumsum(self.hour_w)])
        self.plan_noise = g.random((len(_months(FIRST_MONTH, LAST_TARGET_MONTH)), 3, 4))
        # Accounts: per segment a pool, interleaved into one id space by a fixed permutation.
        self.n_acc = np.maximum(1, np.ceil(n_leads * np.array(SEG_P) / LEADS_PER_ACCOUNT)).astype(np.int64)
        self.acc_off = np.concatenate([[0], np.cumsum(self.n_acc)[:-1]])
        self.n_acc_total = int(self.n_acc.sum())
        step = int(self.n_acc_total * 0.618) | 1
        while np.gcd(step, self.n_acc_total) != 1:
            step += 2
        self.acc_step = step
        self.w_lead = max(7, len(str(n_leads)))
        self.w_opp = max(6, len(str(2 * n_leads)))
        self.w_acc = max(5, len(str(self.n_acc_total)))
        self.w_tp = max(9, len(str(45 * n_leads)))
        # Strings: campaigns [channel, theme, quarter], content, notes.
        self.campaign_names = pa.array(
            [f"{p}_{t}_q{q}" for p, ts in CAMPAIGNS for t in ts for q in range(1, 5)]
            + [f"{p}_q{q}" for p in ("sdr_deal_support", "ev_exec_dinner") for q in range(1, 5)]
        )
        self.content_names = pa.array([c for cs in CONTENT for c in cs] + list(SALES_CONTENT))
        bodies: list[str] = []
        self.theme_start, self.theme_len = [], []
        for t, texts in enumerate(NOTE_BODIES):
            if t == 3:  # competitor bodies, one block per competitor
                self.comp_start = []
                for name in SHORT_NAMES:
                    self.comp_start.append(len(bodies))
                    bodies += [s.format(c=name) for s in texts]
                self.comp_len = len(texts)
                self.theme_start.append(self.comp_start[0])
            else:
                self.theme_start.append(len(bodies))
                bodies += list(texts)
            self.theme_len.append(len(texts))
        self.unthemed_start = len(bodies)
        bodies += list(UNTHEMED_NOTES)
        self.bodies = np.array(bodies, dtype=object)
        self.prefix = np.array([p for p, _ in NOTE_PREFIX], dtype=object)
        self.suffix = np.array([s for s, _ in NOTE_SUFFIX], dtype=object)
        self.context = np.array(NOTE_CONTEXT, dtype=object)
        self.loss_code = np.array([c for c, _, _ in LOSS_P], dtype=object)
        self.loss_comp = np.array([k for _, k, _ in LOSS_P])
        self.theme_p = np.bincount(
            [THEME_OF_CODE[c] for c, _, _ in LOSS_P if c], weights=[p for c, _, p in LOSS_P if c], minlength=len(THEMES)
        )

    def arrival(self, q: np.ndarray) -> np.ndarray:
        """Creation instants (epoch seconds) at quantiles q of the arrival curve; monotone in q."""
        x = q * self.hour_cum[-1]
        h = np.clip(np.searchsorted(self.hour_cum, x, side="right") - 1, 0, len(self.hour_w) - 1)
        frac = np.clip((x - self.hour_cum[h]) / self.hour_w[h], 0.0, 0.9999)
        return START_S + h * HOUR + (frac * HOUR).astype(np.int64)

    def account(self, seg: np.ndarray, u: np.ndarray) -> np.ndarray:
        local = np.minimum((u * self.n_acc[seg]).astype(np.int64), self.n_acc[seg] - 1)
        return (self.acc_off[seg] + local) * self.acc_step % self.n_acc_total + 1


# ----------------------------------------------------------------------------------------- arrow helpers
def _ids(prefix: str, nums: np.ndarray, width: int, mask: np.ndarray | None = None) -> pa.Array:
    s = pc.utf8_lpad(pa.array(np.asarray(nums, np.int64), mask=mask).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, s, "")


def _take(values: Iterable[str] | pa.Array, idx: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    vals = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    return pc.take(vals, pa.array(np.asarray(idx, np.int64), mask=mask))


def _ts(sec: np.ndarray) -> pa.Array:
    sec = np.asarray(sec, np.int64)
    mask = sec >= AS_OF_S
    return pa.array(np.where(mask, 0, sec) * 1_000_000, pa.int64(), mask=mask).cast(TS)


def _money(cents: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    lo = np.asarray(cents, np.int64)
    words = np.empty((len(lo), 2), np.int64)
    words[:, 0], words[:, 1] = lo, np.where(lo < 0, -1, 0)
    validity = None if mask is None else pa.array(~mask).buffers()[1]
    nulls = 0 if mask is None else int(mask.sum())
    return pa.Array.from_buffers(MONEY, len(lo), [validity, pa.py_buffer(words.tobytes())], nulls)


def _table(name: str, cols: dict[str, pa.Array]) -> pa.Table:
    """The canonical table; optional schema columns the generator does not produce are null."""
    schema = TABLES[name].arrow_schema
    n = len(next(iter(cols.values())))
    return pa.Table.from_arrays(
        [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema], schema=schema
    )


def _csv_bytes(table: pa.Table) -> pa.Buffer | bytes:
    """RFC 4180 CSV rows: ISO-8601 UTC seconds, money with 2 decimals, true/false, null as empty, LF."""
    if table.num_rows == 0:
        return b""
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        col = col.combine_chunks()
        if pa.types.is_timestamp(field.type):
            s = col.cast(pa.timestamp("s"), safe=False).cast(pa.string())  # "2026-03-04 13:22:05", fast
            s = pc.binary_join_element_wise(pc.replace_substring(s, " ", "T", max_replacements=1), "Z", "")
        elif pa.types.is_string(field.type):
            needs = pc.match_substring(col, ",")
            for ch in ('"', "\n", "\r"):
                needs = pc.or_(needs, pc.match_substring(col, ch))
            s = col
            if pc.any(needs).as_py():
                quoted = pc.binary_join_element_wise('"', pc.replace_substring(col, '"', '""'), '"', "")
                s = pc.if_else(needs, quoted, col)
        else:
            s = col.cast(pa.string())
        cols.append(s)
    line = pc.binary_join_element_wise(*cols, ",", null_handling="replace", null_replacement="")
    line = pc.binary_join_element_wise(line, "", "\n")
    offsets = np.frombuffer(line.buffers()[1], np.int32, len(line) + 1, line.offset * 4)
    return line.buffers()[2][offsets[0] : offsets[-1]]


class _Writer:
    """One output table written chunk by chunk to a temporary file, renamed into place by commit()."""

    def __init__(self, out_dir: Path, name: str, fmt: str) -> None:
        self.path = out_dir / f"{name}.{fmt}"
        self.tmp = out_dir / f".{name}.{fmt}.partial"
        self.fmt, self.rows, self.schema = fmt, 0, TABLES[name].arrow_schema
        if fmt == "csv":
            self.fh = open(self.tmp, "wb")  # closed by commit() or abort()
            self.fh.write((",".join(self.schema.names) + "\n").encode())
        else:
            self.fh = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.fmt == "csv":
            self.fh.write(_csv_bytes(table))
        elif table.num_rows:
            self.fh.write_table(table)

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- opportunities
N_OPP_U = 21  # uniforms per opportunity


def _opportunities(ctx: _Context, created: np.ndarray, seg: np.ndarray, u: np.ndarray) -> dict:
    """Outcome, amount, stage path and loss coding of opportunities created at `created` (epoch s)."""
    n = len(created)
    sig, med = np.array(AMOUNT_SIGMA)[seg], np.array(AMOUNT_MEDIAN)[seg]
    cents = np.round(med * np.exp(sig * ndtri(np.clip(u[:, 0], 1e-9, 1 - 1e-9))) * 100).astype(np.int64)
    won = u[:, 1] < np.array(WIN_P)[seg]
    cyc = np.array(CYCLE_MEDIAN)[seg] * np.exp(np.array(CYCLE_SIGMA)[seg] * ndtri(np.clip(u[:, 2], 1e-9, 1 - 1e-9)))
    cyc_s = (np.maximum(cyc, 2.0) * DAY).astype(np.int64)
    close_t = created + cyc_s
    closed = close_t < AS_OF_S
    # Stage path: the furthest open stage reached, sometimes skipping one in between.
    furthest = np.where(won, 3, _cat(u[:, 3], LOST_FURTHEST_P))
    reached = np.arange(1, 4)[None, :] <= furthest[:, None]
    n_cand = np.where(won, 3, furthest - 1)
    skip = (u[:, 4] < 0.10) & (n_cand > 0)
    which = 1 + np.minimum((u[:, 5] * np.maximum(n_cand, 1)).astype(np.int64), np.maximum(n_cand, 1) - 1)
    reached[skip, which[skip] - 1] = False
    frac = 0.05 + 0.9 * np.sort(u[:, 6:9], axis=1)
    enter = created[:, None] + (frac * cyc_s[:, None]).astype(np.int64) + np.arange(1, 4)[None, :]
    entered = reached & (enter < AS_OF_S)
    current = np.where(entered.any(axis=1), 3 - np.argmax(entered[:, ::-1], axis=1), 0)
    stage = np.where(closed, np.where(won, 4, 5), current)
    # Loss coding (closed lost only).
    lost = closed & ~won
    code = _cat(u[:, 9], [p for _, _, p in LOSS_P])
    if ctx.plant:
        q = (NORTHWIND_SHARE_PLANTED - LOSS_P[6][2]) / (1.0 - LOSS_P[6][2])
        code = np.where((close_t >= _epoch(NORTHWIND_START)) & (u[:, 10] < q), 6, code)
    comp = ctx.loss_comp[code]
    code_s = ctx.loss_code[code]
    has_code = code_s != ""
    theme = np.array([THEME_OF_CODE.get(c, -1) for c in ctx.loss_code])[code]
    themed = np.where(has_code, u[:, 12] < 0.85, u[:, 12] < 0.50)
    theme = np.where(has_code, theme, _cat(u[:, 13], ctx.theme_p))
    comp = np.where(comp >= 0, comp, _cat(u[:, 14], [0.3, 0.3, 0.2, 0.2]))
    start = np.where(theme == 3, np.array(ctx.comp_start)[comp], np.array(ctx.theme_start)[theme])
    length = np.array(ctx.theme_len)[theme]
    body = np.where(
        themed,
        start + (u[:, 15] * length).astype(np.int64),
        ctx.unthemed_start + (u[:, 15] * len(UNTHEMED_NOTES)).astype(np.int64),
    )
    has_note = lost & (u[:, 11] < 0.60)
    notes = np.full(n, None, dtype=object)
    sel = np.flatnonzero(has_note)
    context = np.minimum((u[sel, 20] * len(NOTE_CONTEXT)).astype(np.int64), len(NOTE_CONTEXT) - 1)
    notes[sel] = (
        ctx.prefix[_cat(u[sel, 16], [p for _, p in NOTE_PREFIX])]
        + ctx.bodies[body[sel]]
        + ctx.context[context]
        + ctx.suffix[_cat(u[sel, 17], [p for _, p in NOTE_SUFFIX])]
    )
    return {
        "cents": cents,
        "won": won,
        "closed": closed,
        "close_t": np.where(closed, close_t, NA),
        "stage": stage,
        "enter": enter,
        "entered": entered,
        "lost": lost,
        "code": np.where(lost & has_code, code_s, None),
        "notes": notes,
        "competitor": np.where(lost & (ctx.loss_comp[code] >= 0), ctx.loss_comp[code], -1),
        "ae": 101 + np.minimum((u[:, 18] * 5).astype(np.int64), 4),
        "product": np.select([seg == i for i in range(3)], [_cat(u[:, 19], p) for p in PRODUCT_P]),
    }


# ----------------------------------------------------------------------------------------- one chunk
N_LEAD_U = 24


def _chunk(ctx: _Context, k: int, lo: int, hi: int, counters: dict) -> dict:
    rng = _stream(ctx.seed, k + 1)
    m = hi - lo
    U = rng.random((m, N_LEAD_U + N_OPP_U))
    created = ctx.arrival((np.arange(lo, hi) + U[:, 0]) / ctx.n)
    seg = _cat(U[:, 1], SEG_P)
    acct = ctx.account(seg, U[:, 2])
    region = _cat(_hash_unit(acct, ctx.seed), REG_P)
    chan = _cat(U[:, 3], SRC_P)
    theme0 = np.minimum((U[:, 4] * 3).astype(np.int64), 2)
    # Lead -> MQL.
    fast = (chan == OUTBOUND) | (chan == PARTNER)
    kind = U[:, 6]
    delay_d = np.where(
        kind < 0.30,
        -np.log1p(-U[:, 7]) * 0.08,
        np.where(kind < 0.975, 0.5 + 19.5 * U[:, 7] ** 1.3, 31.0 + 29.0 * U[:, 7]),
    )
    delay_d = np.where(fast, -np.log1p(-U[:, 7]) * 0.7, delay_d)
    mql = np.where(U[:, 5] < np.array(MQL_RATE)[chan], created + (delay_d * DAY).astype(np.int64), NA)
    mql = np.where(mql < AS_OF_S, mql, NA)
    is_mql = mql < AS_OF_S
    # Owner (SDR) by region.
    n_reps = ctx.reps_in_region[region]
    pick = np.minimum((U[:, 8] * n_reps).astype(np.int64), n_reps - 1)
    owner, team = ctx.rep_tab[region, pick], ctx.team_tab[region, pick]
    # MQL -> SAL / rejected (hours), reason.
    dec_h = np.minimum(5.0 * np.exp(1.0 * ndtri(np.clip(U[:, 10], 1e-9, 1 - 1e-9))), 13 * 24.0)
    dec_t = mql + (dec_h * HOUR).astype(np.int64)
    sal = np.where(is_mql & (U[:, 9] < SAL_P) & (dec_t < AS_OF_S), dec_t, NA)
    rejected = np.where(is_mql & (U[:, 9] >= SAL_P) & (U[:, 9] < SAL_P + REJECT_P) & (dec_t < AS_OF_S), dec_t, NA)
    reason = _cat(U[:, 11], [p for _, p in REJECTION_P])
    if ctx.plant:
        spike = _month_idx(rejected) == _month_no(BUDGET_SPIKE_MONTH)
        p = [BUDGET_SHARE_PLANTED] + [
            q * (1 - BUDGET_SHARE_PLANTED) / (1 - REJECTION_P[0][1]) for _, q in REJECTION_P[1:]
        ]
        reason = np.where(spike, _cat(U[:, 11], p), reason)
    # SAL -> SQL.
    p_sql = np.array(SQL_P)[seg]
    if ctx.plant:
        p_sql = np.where((seg == 2) & (mql >= _epoch(ENT_DROP_START)) & is_mql, ENT_SQL_PLANTED, p_sql)
    sql_d = np.where(U[:, 13] < 0.98, 1.0 + 14.0 * U[:, 14] ** 1.2, 22.0 + 23.0 * U[:, 14])
    sql = np.where((sal < AS_OF_S) & (U[:, 12] < p_sql), sal + (sql_d * DAY).astype(np.int64), NA)
    sql = np.where(sql < AS_OF_S, sql, NA)
    is_sql = sql < AS_OF_S
    # Speed to lead: first sales touch in business hours after the MQL.
    p_in = np.full(m, SLA_WITHIN)
    if ctx.plant:
        p_in = np.where((region == 1) & (_month_idx(mql) == _month_no(SLA_SURGE_MONTH)), SLA_WITHIN_PLANTED, p_in)
    within = U[:, 15] < p_in
    untouched = U[:, 15] >= 1.0 - SLA_UNTOUCHED
    bh = np.where(within, 7.9 * U[:, 16] ** 1.8, 8.1 - np.log1p(-U[:, 16]) * 14.0)
    fst = ctx.calendar.add(np.where(is_mql, mql, 0), (bh * HOUR).astype(np.int64))
    fst = np.where(is_mql & ~untouched & (fst < AS_OF_S), fst, NA)

    # Opportunities: lead-sourced (one per SQL) and sales-sourced (no lead), ids by creation time.
    li = np.flatnonzero(is_sql)
    n_ss = int(rng.binomial(m, ctx.ss_rate))
    Uss = rng.random((n_ss, 4 + N_OPP_U))
    ss_created = ctx.arrival((lo + Uss[:, 0] * m) / ctx.n)
    ss_seg = _cat(Uss[:, 1], SS_SEG_P)
    ss_acct = ctx.account(ss_seg, Uss[:, 2])
    ss_chan = np.where(Uss[:, 3] < 0.7, OUTBOUND, PARTNER)
    o_created = np.concatenate([sql[li], ss_created])
    o_seg = np.concatenate([seg[li], ss_seg])
    o_acct = np.concatenate([acct[li], ss_acct])
    o_region = np.concatenate([region[li], _cat(_hash_unit(ss_acct, ctx.seed), REG_P)])
    o_chan = np.concatenate([chan[li], ss_chan])
    o_u = np.concatenate([U[li, N_LEAD_U:], Uss[:, 4:]])
    order = np.lexsort((np.arange(len(o_created)), o_created))
    o_created, o_seg, o_acct, o_region, o_chan, o_u = (
        x[order] for x in (o_created, o_seg, o_acct, o_region, o_chan, o_u)
    )
    n_opp = len(order)
    opp_num = counters["opp"] + 1 + np.arange(n_opp)
    lead_opp = np.full(m, -1, np.int64)
    rank = np.empty(n_opp, np.int64)
    rank[order] = np.arange(n_opp)
    lead_opp[li] = opp_num[rank[: len(li)]]
    counters["opp"] += n_opp
    o = _opportunities(ctx, o_created, o_seg, o_u)

    # Touchpoints: journey before the opportunity (or 60 days after MQL / creation), then sales touches.
    n_pre = 1 + np.minimum(35, np.floor(np.log1p(-U[:, 17]) / np.log1p(-ctx.p_geo))).astype(np.int64)
    if ctx.plant:
        n_pre = np.where(chan == CS, np.maximum(n_pre, 2), n_pre)
    end = np.where(is_sql, sql, np.where(is_mql, mql + 60 * DAY, created + 60 * DAY))
    lead_rank = np.repeat(np.arange(m), n_pre)
    T = len(lead_rank)
    tu = rng.random((T, 4))
    pos = np.arange(T) - np.repeat(np.cumsum(n_pre) - n_pre, n_pre)
    srt = np.sort(lead_rank + tu[:, 0] * 0.999999)  # sorted within each lead
    span = (end - created)[lead_rank] - n_pre[lead_rank]
    t_pre = created[lead_rank] + np.where(pos == 0, 0, (srt - lead_rank) * span + pos).astype(np.int64)
    last_p = LAST_P if ctx.plant else ctx.neutral_last_p
    is_last = is_sql[lead_rank] & (pos == n_pre[lead_rank] - 1) & (pos > 0)
    ch = np.where(pos == 0, chan[lead_rank], _cat(tu[:, 1], MIDDLE_P))
    ch = np.where(is_last, _cat(U[lead_rank, 18], last_p), ch)
    th = np.where(pos == 0, theme0[lead_rank], np.minimum((tu[:, 2] * 3).astype(np.int64), 2))
    ct = ch * 3 + np.minimum((tu[:, 3] * 3).astype(np.int64), 2)
    # Sales touches after the opportunity is created, before close (or the snapshot).
    n_sales = np.where(is_sql, np.minimum((U[:, 19] * 5).astype(np.int64), 4), 0)
    su = np.sort(U[:, 20:24], axis=1)
    opp_close = np.full(m, NA)
    opp_close[li] = o["close_t"][rank[: len(li)]]
    s_end = np.minimum(opp_close, AS_OF_S)
    slot = np.arange(4)[None, :]
    s_t = sql[:, None] + 1 + slot + (su * np.maximum(s_end - sql - 10, 0)[:, None]).astype(np.int64)
    s_ok = slot < n_sales[:, None]
    s_lead = np.broadcast_to(np.arange(m)[:, None], s_ok.shape)[s_ok]
    s_t = s_t[s_ok]
    s_ch = np.where(_hash_unit(s_t, ctx.seed) < 0.75, OUTBOUND, EVENTS)
    all_lead = np.concatenate([lead_rank, s_lead])
    all_t = np.concatenate([t_pre, s_t])
    keep = all_t < AS_OF_S
    order_t = np.lexsort((all_t, all_lead))
    order_t = order_t[keep[order_t]]
    q_t = ((all_t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)) % 12) // 3
    n_camp = len(CAMPAIGNS) * 12
    camp = np.concatenate([(ch * 3 + th) * 4, n_camp + np.where(s_ch == OUTBOUND, 0, 4)]) + q_t
    content = np.concatenate([ct, 30 + np.minimum((_hash_unit(s_t + 7, ctx.seed) * 4).astype(np.int64), 3)])
    tch = np.concatenate([ch, s_ch])
    kind_t = np.concatenate([(ch == OUTBOUND).astype(np.int64), np.ones(len(s_t), np.int64)])
    tl = all_lead[order_t]
    n_tp = len(order_t)
    tp_num = counters["tp"] + 1 + np.arange(n_tp)
    counters["tp"] += n_tp

    # ------------------------------------------------------------------ tables
    lead_num = np.arange(lo, hi) + 1
    q0 = ((created.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)) % 12) // 3
    seg_names, reg_names = pa.array(SEGMENTS), pa.array(REGIONS)
    chan_names = pa.array(CHANNELS)
    leads = _table(
        "leads",
        {
            "lead_id": _ids("LEAD-", lead_num, ctx.w_lead),
            "account_id": _ids("ACC-", acct, ctx.w_acc),
            "created_at": _ts(created),
            "segment": _take(seg_names, seg),
            "region": _take(reg_names, region),
            "source_channel": _take(chan_names, chan),
            "source_detail": _take(ctx.campaign_names, (chan * 3 + theme0) * 4 + q0),
            "origin": _take(ctx.origins, ctx.origin_idx[chan]),
            "mql_at": _ts(mql),
            "sal_at": _ts(sal),
            "rejected_at": _ts(rejected),
            "rejection_reason": _take([r for r, _ in REJECTION_P], reason, mask=rejected >= AS_OF_S),
            "sql_at": _ts(sql),
            "first_sales_touch_at": _ts(fst),
            "owner_id": _ids("rep_", owner, 3, mask=~is_mql),
            "owner_team": _take(SDR_TEAMS, team, mask=~is_mql),
            "opportunity_id": _ids("OPP-", lead_opp, ctx.w_opp, mask=lead_opp < 0),
        },
    )
    opp_ids = _ids("OPP-", opp_num, ctx.w_opp)
    stage_names = list(OPEN_STAGES) + [WON_STAGE, LOST_STAGE]
    ae = o["ae"] + o_region * 15 + o_seg * 5
    opps = _table(
        "opportunities",
        {
            "opportunity_id": opp_ids,
            "account_id": _ids("ACC-", o_acct, ctx.w_acc),
            "created_at": _ts(o_created),
            "segment": _take(seg_names, o_seg),
            "region": _take(reg_names, o_region),
            "source_channel": _take(chan_names, o_chan),
            "origin": _take(ctx.origins, ctx.origin_idx[o_chan]),
            "owner_id": _ids("rep_", ae, 3),
            "owner_team": _take([f"AE-{r}-{s}" for r in REGIONS for s in SEG_ABBR], o_region * 3 + o_seg),
            "amount": _money(o["cents"]),
            "stage": _take(stage_names, o["stage"]),
            "is_closed": pa.array(o["closed"]),
            "is_won": pa.array(o["closed"] & o["won"]),
            "closed_at": _ts(o["close_t"]),
            "lost_reason_code": pa.array(o["code"], pa.string()),
            "lost_reason_notes": pa.array(o["notes"], pa.string()),
            "competitor": _take(COMPETITORS, np.maximum(o["competitor"], 0), mask=o["competitor"] < 0),
            "industry": _take(INDUSTRIES, _cat(_hash_unit(o_acct + 1_000_003, ctx.seed), INDUSTRY_P)),
            "product": _take(PRODUCTS, o["product"]),
        },
    )
    # stage history: Discovery, reached open stages, closing stage; in stage order = time order.
    times = np.concatenate([o_created[:, None], o["enter"], o["close_t"][:, None]], axis=1)
    ok = np.concatenate([np.ones((n_opp, 1), bool), o["entered"], o["closed"][:, None]], axis=1)
    sidx = np.broadcast_to(np.arange(5)[None, :], ok.shape).copy()
    sidx[:, 4] = np.where(o["won"], 4, 5)
    rows_opp = np.broadcast_to(np.arange(n_opp)[:, None], ok.shape)[ok]
    history = _table(
        "stage_history",
        {
            "opportunity_id": pc.take(opp_ids, pa.array(rows_opp)) if n_opp else pa.array([], pa.string()),
            "stage": _take(stage_names, sidx[ok]),
            "entered_at": _ts(times[ok]),
        },
    )
    touches = _table(
        "touchpoints",
        {
            "touchpoint_id": _ids("TP-", tp_num, ctx.w_tp),
            "lead_id": _ids("LEAD-", lead_num[tl], ctx.w_lead),
            "account_id": _ids("ACC-", acct[tl], ctx.w_acc),
            "opportunity_id": _ids("OPP-", lead_opp[tl], ctx.w_opp, mask=lead_opp[tl] < 0),
            "occurred_at": _ts(all_t[order_t]),
            "channel": _take(chan_names, tch[order_t]),
            "campaign": _take(ctx.campaign_names, camp[order_t]),
            "content": _take(ctx.content_names, content[order_t]),
            "touch_kind": _take(["marketing", "sales"], kind_t[order_t]),
        },
    )
    # Aggregates for targets and forecasts (integer cents by month x segment).
    n_m = len(_months(FIRST_MONTH, LAST_MONTH))
    won_m = _month_idx(o["close_t"])
    sel = o["closed"] & o["won"] & (won_m < n_m)
    won = np.zeros((n_m, 3), np.int64)
    np.add.at(won, (won_m[sel], o_seg[sel]), o["cents"][sel])
    pipe = np.zeros((n_m, 3), np.int64)
    cm = _month_idx(o_created)
    np.add.at(pipe, (cm, o_seg), o["cents"])
    return {
        "leads": leads,
        "opportunities": opps,
        "stage_history": history,
        "touchpoints": touches,
        "won": won,
        "pipe": pipe,
    }


# ----------------------------------------------------------------------------------------- plan, truth
def _plan_tables(ctx: _Context, won: np.ndarray, pipe: np.ndarray) -> tuple[pa.Table, pa.Table]:
    months = _months(FIRST_MONTH, LAST_TARGET_MONTH)
    n_act = won.shape[0]
    z = ctx.plan_noise
    rev, pip = np.zeros((len(months), 3)), np.zeros((len(months), 3))
    rev[:n_act], pip[:n_act] = won / 100.0, pipe / 100.0
    ref = slice(n_act - 5, n_act - 2)  # 2026-06 .. 2026-08: the plan does not know what happens later
    for i in range(n_act, len(months)):
        g = 1.02 ** (i - (n_act - 3))
        rev[i], pip[i] = rev[ref].mean(axis=0) * g, pip[ref].mean(axis=0) * g
    # Months without a win (warm-up, or tiny data sets) get the segment's mean month instead of zero.
    for s in range(3):
        pos = rev[:n_act, s] > 0
        rev[:n_act, s] = np.where(pos, rev[:n_act, s], rev[:n_act, s][pos].mean() if pos.any() else 1000.0)
    rev_t = np.round(rev * (1 + (z[:, :, 0] - 0.5) * 0.30), -3)
    pip_t = np.round(pip * (1 + (z[:, :, 1] - 0.5) * 0.30), -3)
    per, segs = [m for m in months for _ in SEGMENTS], list(SEGMENTS) * len(months)
    targets = _table(
        "targets",
        {
            "period": pa.array(per),
            "segment": pa.array(segs),
            "revenue_target": _money((rev_t * 100).ravel().astype(np.int64)),
            "pipeline_target": _money((pip_t * 100).ravel().astype(np.int64)),
        },
    )
    # Forecasts committed at the start of each month: mostly within +-10% of actual, a few outside.
    zf = z[:n_act]
    outside = zf[:, :, 2] < 0.12
    err = np.where(
        outside, np.sign(zf[:, :, 3] - 0.5) * (0.12 + 0.15 * np.abs(zf[:, :, 3] - 0.5) * 2), (zf[:, :, 3] - 0.5) * 0.17
    )
    fc = np.round(won / 100.0 * (1 + err), -2)
    first = [_epoch(m + "-01T00:00:00Z") for m in months[:n_act]]
    forecasts = _table(
        "forecasts",
        {
            "period": pa.array([m for m in months[:n_act] for _ in SEGMENTS]),
            "segment": pa.array(list(SEGMENTS) * n_act),
            "forecast_amount": _money((fc * 100).ravel().astype(np.int64)),
            "committed_at": _ts(np.repeat(np.array(first, np.int64), 3)),
        },
    )
    return targets, forecasts


def _gap_expected(last_p: Iterable[float], force_cs: bool, p_geo: float = JOURNEY_P_GEO) -> np.ndarray:
    """Expected first-touch minus last-touch share of lead-sourced opportunities, per channel."""
    share = np.array(SRC_P) * np.array(MQL_RATE)
    share /= share.sum()
    multi = np.full(len(CHANNELS), 1.0 - p_geo)  # P(journey has 2+ touches)
    if force_cs:
        multi[CS] = 1.0
    lp = np.array(tuple(last_p))
    last = share * (1 - multi) + (share * multi).sum() * lp / lp.sum()
    return share - last


def _truth(ctx: _Context, seed: int, n_leads: int, plant: bool) -> dict:
    all_segs = ["All", *SEGMENTS]
    all_regs = ["All", *REGIONS]
    reasons = [r for r, _ in REJECTION_P]
    gap = float(round(_gap_expected(LAST_P, True, ctx.p_geo)[CS], 3))
    themes_share = LOSS_P[6][2] + LOSS_P[7][2] + LOSS_P[8][2] + LOSS_P[9][2]
    q = (NORTHWIND_SHARE_PLANTED - LOSS_P[6][2]) / (1.0 - LOSS_P[6][2])
    effects = [
        {
            "id": "enterprise_mql_to_sql_drop",
            "section": "funnel",
            "kind": "move",
            "start_month": "2026-09",
            "direction": "down",
            "baseline": round(SAL_P * SQL_P[2], 2),
            "planted": round(SAL_P * ENT_SQL_PLANTED, 2),
            "metrics": ["mql_to_sql_rate", "sal_to_sql_rate"],
            "by_metric": {
                "mql_to_sql_rate": {
                    "baseline": round(SAL_P * SQL_P[2], 4),
                    "planted": round(SAL_P * ENT_SQL_PLANTED, 4),
                },
                "sal_to_sql_rate": {"baseline": SQL_P[2], "planted": ENT_SQL_PLANTED},
            },
            "primary": {"metric": "mql_to_sql_rate", "segment": "Enterprise", "region": "All"},
            "segments": ["Enterprise", "All"],
            "regions": all_regs,
            "cause": "Lead-routing change on 2026-09-01 sent Enterprise MQLs to an unstaffed queue.",
        },
        {
            "id": "budget_not_confirmed_spike",
            "section": "handoff",
            "kind": "move",
            "start_month": BUDGET_SPIKE_MONTH,
            "end_month": BUDGET_SPIKE_MONTH,
            "direction": "up",
            "baseline": REJECTION_P[0][1],
            "planted": BUDGET_SHARE_PLANTED,
            "metrics": ["rejection_reason_share"],
            "by_metric": {"rejection_reason_share": {"baseline": REJECTION_P[0][1], "planted": BUDGET_SHARE_PLANTED}},
            "primary": {"metric": "rejection_reason_share", "reason": "budget_not_confirmed", "segment": "All"},
            "reasons": ["budget_not_confirmed"],
            "segments": all_segs,
            "regions": all_regs,
            "compensating": {"reasons": reasons[1:]},
            "cause": "A new deal-desk rule in October 2026 made SDRs reject MQLs without a confirmed budget.",
        },
        {
            "id": "competitor_displacement_rising",
            "section": "closed_lost",
            "kind": "move",
            "start_month": "2026-08",
            "direction": "up",
            "baseline": LOSS_P[6][2],
            "planted": NORTHWIND_SHARE_PLANTED,
            "metrics": ["competitor_loss_share", "theme_share"],
            "by_metric": {
                "competitor_loss_share": {"baseline": LOSS_P[6][2], "planted": NORTHWIND_SHARE_PLANTED},
                "theme_share": {"baseline": round(themes_share, 4), "planted": round(themes_share * (1 - q) + q, 4)},
            },
            "primary": {"metric": "competitor_loss_share", "competitor": "Northwind Analytics", "segment": "All"},
            "themes": ["competitor_displacement"],
            "competitors": ["Northwind Analytics"],
            "segments": all_segs,
            "regions": all_regs,
            "compensating": {
                "themes": [t for t in THEMES if t != "competitor_displacement"],
                "competitors": list(COMPETITORS[1:]),
            },
            "cause": "Northwind Analytics launched a displacement offer in August 2026 and began winning bake-offs.",
        },
        {
            "id": "emea_sla_breach_surge",
            "section": "handoff",
            "kind": "move",
            "start_month": "2026-10",
            "end_month": "2026-10",
            "direction": "down",
            "baseline": SLA_WITHIN,
            "planted": SLA_WITHIN_PLANTED,
            "metrics": ["sla_adherence"],
            "by_metric": {"sla_adherence": {"baseline": SLA_WITHIN, "planted": SLA_WITHIN_PLANTED}},
            "primary": {"metric": "sla_adherence", "region": "EMEA", "segment": "All"},
            "regions": ["EMEA", "All"],
            "segments": all_segs,
            "cause": "Two EMEA SDRs left in October 2026 and their MQL queue was not re-routed.",
        },
        {
            "id": "content_syndication_first_last_divergence",
            "section": "attribution",
            "kind": "structural",
            "start_month": FIRST_MONTH,
            "direction": "up",
            "baseline": 0.0,
            "planted": gap,
            "metrics": ["first_vs_last_touch_gap"],
            "by_metric": {"first_vs_last_touch_gap": {"baseline": 0.0, "planted": gap}},
            "primary": {"metric": "first_vs_last_touch_gap", "channel": "content_syndication"},
            "channels": ["content_syndication"],
            "cause": "Syndicated content opens journeys that later convert through search or direct visits, "
            "so first-touch credit far exceeds last-touch credit for this channel.",
        },
    ]
    return {
        "seed": seed,
        "n_leads": n_leads,
        "as_of": AS_OF,
        "first_month": FIRST_MONTH,
        "last_month": LAST_MONTH,
        "planted": plant,
        "effects": effects if plant else [],
        "warm_up_months": _months(FIRST_MONTH, "2025-10"),
        "generator": "analysis.demo",
    }


ACTIONS_PLANTED = """# What marketing is doing: October 2026

- Reviewing with RevOps the lead-routing rules changed on 1 September, after Enterprise MQLs waited in a queue.
- Building a Northwind Analytics battlecard and a displacement-defence offer with product marketing.
- Pausing the EMEA webinar push until the SDR team is back to full capacity, so new MQLs are not left waiting.
- Shifting 10% of content syndication spend to paid search for bottom-of-funnel intent.
- Adding a budget-qualification question to the demo request form to cut "budget not confirmed" rejections.
"""
ACTIONS_NEUTRAL = """# What marketing is doing: October 2026

- Launching the Q4 customer-story campaign on paid social and email.
- Refreshing the ROI guide used in content syndication and on the website.
- Running two roundtables with partners in North America and EMEA.
- Testing a shorter demo request form on the pricing page.
"""


def generate_demo_data(
    out_dir: Path,
    *,
    seed: int = 20251101,
    n_leads: int = 50_000,
    plant: bool = True,
    fmt: str = "csv",
    chunk_size: int = CHUNK_SIZE,
    touches_per_lead: float | None = None,
) -> dict:
    """Write the demo export (canonical layout) into out_dir; return the truth dict (also written as truth.json).

    Files: leads, opportunities, stage_history, touchpoints, targets, forecasts (`.csv` or `.parquet`),
    truth.json and actions/2026-10.md. Same arguments, same bytes. Memory is bounded by `chunk_size` leads.
    `touches_per_lead` sets the mean marketing-journey length (default ~6.4 touchpoints per lead; 10.3 gives
    ~10, i.e. 100M touchpoints for 10M leads).

    >>> truth = generate_demo_data(Path("data/raw"), n_leads=50_000)  # doctest: +SKIP
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    if n_leads < 1 or chunk_size < 1:
        raise ValueError("n_leads and chunk_size must be positive")
    if touches_per_lead is not None and not 1.0 < touches_per_lead <= 30.0:
        raise ValueError("touches_per_lead must be above 1 and at most 30")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(seed, n_leads, plant, chunk_size, touches_per_lead)
    names = ("leads", "opportunities", "stage_history", "touchpoints")
    writers = {}
    try:
        for name in (*names, "targets", "forecasts"):
            writers[name] = _Writer(out_dir, name, fmt)
        counters = {"opp": 0, "tp": 0}
        won = pipe = None
        for k, lo in enumerate(range(0, n_leads, chunk_size)):
            part = _chunk(ctx, k, lo, min(n_leads, lo + chunk_size), counters)
            for name in names:
                writers[name].write(part[name])
            won = part["won"] if won is None else won + part["won"]
            pipe = part["pipe"] if pipe is None else pipe + part["pipe"]
        targets, forecasts = _plan_tables(ctx, won, pipe)
        writers["targets"].write(targets)
        writers["forecasts"].write(forecasts)
        for w in writers.values():
            w.commit()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    truth = _truth(ctx, seed, n_leads, plant)
    truth["rows"] = {name: w.rows for name, w in writers.items()}
    (out_dir / "actions").mkdir(exist_ok=True)
    _write_text(out_dir / "actions" / f"{LAST_MONTH}.md", ACTIONS_PLANTED if plant else ACTIONS_NEUTRAL)
    _write_text(out_dir / "truth.json", json.dumps(truth, sort_keys=True, indent=2) + "\n")
    return truth


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)
