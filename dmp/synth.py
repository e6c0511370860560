"""Synthetic demo data: a B2B software company's site, CRM and newsletter, by seed.

``generate`` makes the hits a site would send (pixel page views and tag events, with and
without consent, and bots), the rows a CRM export and a newsletter tool would hold, and
a content catalog. ``dmp synth`` sends all of it through the real paths (the ingest
stream, ``dmp import``), so what lands is exactly what real traffic would leave.

The people follow a simple story: each has one or two topics of interest and an
appetite for content; some give no consent (aggregate only), most a cookie; a share
fill a form (email: medium), the most engaged also reach the CRM (high), where sales
moves some of them on to sal, sql, won or lost. Subscribers get a weekly newsletter.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from dmp.records import Hit

DAY_MS = 86_400_000
SITE = "acme-software"
HOST = "https://www.acme-software.example"
TOPICS = ("crm", "marketing-automation", "analytics", "e-commerce", "datenschutz", "ki")
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
TITLES = (
    "Marketing Manager",
    "Head of Marketing",
    "CMO",
    "Vertriebsleiter",
    "Geschäftsführer",
    "IT-Leiter",
    "Werkstudent",
    "Office Manager",
    "Head of Sales",
    "Data Analyst",
)
INDUSTRIES = ("Maschinenbau", "Software", "Handel", "Logistik", "Finanzen", "Gesundheit")
COUNTRIES = ("DE", "DE", "DE", "DE", "AT", "CH", "NL")
FIRST = ("Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Jonas", "Lena", "Paul")
LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker")


def catalog_yaml() -> str:
    """Return the synthetic company's content catalog."""
    lines = ["# Acme Software's content, best first within each stage and topic"]
    for topic in TOPICS:
        lines += [
            f"- {{id: guide-{topic}, title: 'Guide: {topic}', "
            f"url: '{HOST}/blog/{topic}/guide', topics: [{topic}], stage: [lead, recycled]}}",
            f"- {{id: whitepaper-{topic}, title: 'Whitepaper: {topic}', "
            f"url: '{HOST}/whitepaper/{topic}', topics: [{topic}], stage: [lead, mql]}}",
            f"- {{id: webinar-{topic}, title: 'Webinar: {topic} in practice', "
            f"url: '{HOST}/webinar/{topic}', topics: [{topic}], stage: [mql]}}",
            f"- {{id: case-{topic}, title: 'Case study: {topic}', "
            f"url: '{HOST}/cases/{topic}', topics: [{topic}], stage: [mql, sal, sql]}}",
        ]
    lines += [
        f"- {{id: intro, title: 'What Acme does', url: '{HOST}/about', stage: [lead, recycled]}}",
        f"- {{id: pricing, title: 'Prices and plans', url: '{HOST}/pricing', stage: [mql, sal]}}",
        f"- {{id: onboarding, title: 'Getting started', url: '{HOST}/onboarding', stage: won}}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class Dataset:
    """Everything ``generate`` makes."""

    hits: list[Hit] = field(default_factory=list)
    crm_rows: list[dict[str, Any]] = field(default_factory=list)
    newsletter_rows: list[dict[str, Any]] = field(default_factory=list)
    catalog: str = ""


def generate(persons: int, days: int, seed: int, until_ms: int) -> Dataset:
    """Return a deterministic dataset of ``persons`` people over ``days`` up to ``until_ms``."""
    rnd = random.Random(seed)
    start = until_ms - days * DAY_MS
    data = Dataset(catalog=catalog_yaml())
    subscribers: list[tuple[str, tuple[str, ...], int]] = []
    for n in range(persons):
        person = _Person(n, rnd, start, until_ms)
        data.hits += list(person.site_hits())
        if person.email and person.in_crm:
            data.crm_rows.append(person.crm_row())
        if person.email and person.subscribed_at:
            subscribers.append((person.email, person.topics, person.subscribed_at))
    data.hits += list(_bots(rnd, max(1, persons // 20), start, until_ms))
    data.newsletter_rows = list(_newsletters(rnd, subscribers, start, until_ms))
    data.hits.sort(key=lambda h: h.timestamp)
    return data


class _Person:
    """One synthetic visitor and what they do."""

    def __init__(self, n: int, rnd: random.Random, start: int, until: int) -> None:
        self.n, self.rnd = n, rnd
        self.topics = tuple(rnd.sample(TOPICS, rnd.choice((1, 1, 2))))
        self.appetite = rnd.lognormvariate(0, 0.9)  # sessions per fortnight, roughly
        self.first = start + int(rnd.random() ** 1.5 * (until - start) * 0.9)
        self.until = until
        roll = rnd.random()
        self.consent = (
            {"analytics": False}
            if roll < 0.2
            else {"analytics": True, "ads": rnd.random() < 0.6, "email": rnd.random() < 0.5}
        )
        self.uid = uuid.UUID(int=rnd.getrandbits(128)).hex if self.consent["analytics"] else ""
        self.agent = rnd.choice(AGENTS)
        engaged = self.appetite > 1.3
        self.email = ""
        if self.uid and rnd.random() < (0.6 if engaged else 0.2):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            self.name = (first, last)
            self.email = f"{first.lower()}.{_ascii(last)}.{n}@firma{n % 977}.example"
        self.in_crm = bool(self.email) and rnd.random() < (0.6 if engaged else 0.25)
        self.subscribed_at = 0
        self.identified_at = 0

    def site_hits(self) -> Iterator[Hit]:
        rnd, t = self.rnd, self.first
        sessions = 0
        while t < self.until:
            sessions += 1
            yield from self._session(t, sessions)
            t += int(rnd.expovariate(self.appetite / 14) * DAY_MS) + 3_600_000

    def _session(self, t: int, nth: int) -> Iterator[Hit]:
        rnd = self.rnd
        for i in range(rnd.randint(1, 5)):
            topic = rnd.choice(self.topics) if rnd.random() < 0.8 else rnd.choice(TOPICS)
            page = rnd.choice(("blog", "blog", "produkte", "whitepaper", "webinar", "cases"))
            url = f"{HOST}/{page}/{topic}" + (f"/{rnd.randint(1, 30)}" if page == "blog" else "")
            if nth > 3 and rnd.random() < 0.15:
                url, topic = f"{HOST}/pricing", ""
            yield self._hit(
                t + i * 45_000, "page", "page", url=url, topics=[topic] if topic else []
            )
        end = t + 300_000
        if not self.uid:
            return
        roll = rnd.random()
        if roll < 0.12:
            yield self._hit(end, "track", "whitepaper_download", topics=[self.topics[0]])
            yield from self._identify(end + 1000)
        elif roll < 0.17:
            yield self._hit(end, "track", "webinar_signup", topics=[self.topics[-1]])
            yield from self._identify(end + 1000)
        elif roll < 0.19 and nth > 4:
            yield self._hit(end, "track", "demo_request")
            yield from self._identify(end + 1000)

    def _identify(self, t: int) -> Iterator[Hit]:
        if not self.email or self.identified_at:
            return
        self.identified_at = t
        if self.consent.get("email"):
            self.subscribed_at = t
        first, last = self.name
        traits = {"email": self.email, "first_name": first, "last_name": last}
        if self.rnd.random() < 0.5:
            traits["job_title"] = self.rnd.choice(TITLES)
        yield self._hit(t, "identify", "identify", traits=traits)

    def _hit(self, t: int, type_: str, event: str, **fields: Any) -> Hit:
        return Hit(
            event_id=uuid.UUID(int=self.rnd.getrandbits(128)).hex,
            site_id=SITE,
            source="pixel" if type_ == "page" else "tag",
            type=type_,
            event=event,
            received_at=t,
            timestamp=t,
            consent=self.consent,
            uid=self.uid,
            ip="198.51.100.0",
            user_agent=self.agent,
            **fields,
        )

    def crm_row(self) -> dict[str, Any]:
        rnd = self.rnd
        at = max(self.identified_at, self.first) + rnd.randint(1, 20) * DAY_MS
        stage = rnd.choices(("lead", "sal", "sql", "won", "lost"), (5, 3, 2, 1, 1))[0]
        row = {
            "email": self.email,
            "crm_id": f"CRM-{self.n:07d}",
            "company": f"Firma {self.n % 977} GmbH",
            "job_title": rnd.choice(TITLES),
            "employees": str(rnd.choice((8, 25, 60, 150, 400, 1200, 5000))),
            "industry": rnd.choice(INDUSTRIES),
            "country": rnd.choice(COUNTRIES),
            "phone": f"+49 30 {rnd.randint(1000000, 9999999)}" if rnd.random() < 0.5 else "",
            "stage": stage,
            "deal_value": str(rnd.choice((0, 5000, 12000, 48000))) if stage != "lead" else "",
            "updated_at": _iso(min(at, self.until)),
        }
        return row


def _bots(rnd: random.Random, n: int, start: int, until: int) -> Iterator[Hit]:
    for _ in range(n):
        t = rnd.randint(start, until)
        yield Hit(
            event_id=uuid.UUID(int=rnd.getrandbits(128)).hex,
            site_id=SITE,
            source="pixel",
            type="page",
            event="page",
            received_at=t,
            timestamp=t,
            consent={"analytics": True},
            uid=uuid.UUID(int=rnd.getrandbits(128)).hex,
            url=f"{HOST}/blog/{rnd.choice(TOPICS)}/{rnd.randint(1, 30)}",
            user_agent=BOT,
        )


def _newsletters(
    rnd: random.Random, subscribers: list[tuple[str, tuple[str, ...], int]], start: int, until: int
) -> Iterator[dict[str, Any]]:
    week, gone = 7 * DAY_MS, set()  # gone: unsubscribed or bounced, mailed no more
    for issue, sent in enumerate(range(start + week, until, week)):
        topic = TOPICS[issue % len(TOPICS)]
        campaign = f"Newsletter KW{issue + 1}: {topic}"

        row = partial(_mail_event, campaign=campaign, topic=topic)
        for email, topics, since in subscribers:
            if since > sent or email in gone:
                continue
            yield row(email, "sent", sent)
            roll = rnd.random()
            if roll < 0.005:
                gone.add(email)
                yield row(email, "bounce", sent + 60_000)
            elif roll < (0.45 if topic in topics else 0.25):
                opened = sent + rnd.randint(600_000, 2 * DAY_MS)
                yield row(email, "open", opened)
                if rnd.random() < (0.35 if topic in topics else 0.1):
                    yield row(email, "click", opened + 30_000, f"{HOST}/blog/{topic}/guide")
                elif rnd.random() < 0.01:
                    gone.add(email)
                    yield row(email, "unsubscribe", opened + 60_000)


def _mail_event(
    email: str, event: str, at: int, url: str = "", *, campaign: str, topic: str
) -> dict[str, Any]:
    """Return one newsletter export row (the columns `dmp import newsletter` reads)."""
    keys = ("email", "event", "time", "campaign", "topic", "url")
    return dict(zip(keys, (email, event, _iso(at), campaign, topic, url), strict=True))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _ascii(text: str) -> str:
    return text.lower().translate(str.maketrans({"ü": "ue", "ö": "oe", "ä": "ae", "ß": "ss"}))


_SHAPE_NAMES = (
    "Score and tier",
    "Interest, reachable by email",
    "Whitepaper, not pricing",
    "Stage or score",
    "DACH software or fit",
    "Pricing, then a demo",
    "Recently active",
    "Newsletter openers",
    "Top interest and activity",
    "Clickers or webinar, open deals",
)


def example_segments(n: int, topics: tuple[str, ...] = TOPICS) -> list[dict]:
    """Return ``n`` segment definitions of mixed shapes (as written in YAML) for synth and
    benchmark data: comparisons, interests, channels, traits, ``did`` counts with and
    without windows, sequences and nesting, their thresholds varied by number."""
    shapes = [
        lambda i, t: {"all": [{"score": {"gte": 5 + i}}, {"tier": {"gte": "medium"}}]},
        lambda i, t: {
            "all": [{"interest": {"topic": t, "gte": 0.1 + i % 5 / 10}}, {"channel": "email"}]
        },
        lambda i, t: {
            "all": [
                {"did": {"event": "whitepaper_download", "within_days": 10 + i, "count_gte": 1}},
                {"not": {"did": {"event": "page", "url_contains": "/pricing"}}},
            ]
        },
        lambda i, t: {"any": [{"stage": {"in": ["mql", "sal"]}}, {"score": {"gte": 40 + i}}]},
        lambda i, t: {
            "all": [
                {"trait": {"name": "country", "in": ["DE", "AT", "CH"]}},
                {
                    "any": [
                        {"trait": {"name": "industry", "eq": "Software"}},
                        {"fit_score": {"gte": i % 20}},
                    ]
                },
            ]
        },
        lambda i, t: {
            "did": {
                "event": "page",
                "url_contains": "/pricing",
                "within_days": 30,
                "then": {"event": "demo_request", "within_days": 3 + i % 10},
            }
        },
        lambda i, t: {
            "all": [
                {"touchpoints_30d": {"gte": 1 + i % 10}},
                {"days_since_last_touch": {"lt": 3 + i % 20}},
            ]
        },
        lambda i, t: {
            "all": [
                {"did": {"event": "open", "within_days": 20 + i, "count_gte": 2}},
                {"not": {"did": {"event": "unsubscribe"}}},
            ]
        },
        lambda i, t: {"all": [{"top_interest": {"eq": t}}, {"activity_score": {"gte": i % 15}}]},
        lambda i, t: {
            "all": [
                {
                    "any": [
                        {"did": {"event": "click", "within_days": 60}},
                        {"did": {"event": "webinar_signup", "topic": t}},
                    ]
                },
                {"not": {"stage": {"in": ["won", "lost"]}}},
            ]
        },
    ]
    return [
        {
            "id": f"mix-{i:02d}",
            "name": f"{_SHAPE_NAMES[i % len(shapes)]} {i}",
            "where": shapes[i % len(shapes)](i, topics[i % len(topics)]),
        }
        for i in range(n)
    ]
