"""Every Redis key dmp uses, in one place: ``dmp:<kind>:<id>[:<facet>]``.

Per-person keys carry a hash tag (``dmp:person:{<pid>}:…``) so that one person's keys
share a Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAM = "dmp:stream:ingest"  # the ingest buffer every collector appends to
GROUP = "ingest"  # the worker's consumer group on STREAM
METRICS = "dmp:metrics"  # hash: counter name -> value (shared by every process)
STATS = "dmp:stats"  # hash: events_stored, events_aggregate, persons:<tier>
MERGES = "dmp:log:merges"  # stream: every identity merge with reason, time and source
CONFLICTS = "dmp:log:conflicts"  # stream: identities that were not merged, and why
SITES = "dmp:sites"  # set of site ids
# Bumped by anything but the ingest worker that changes identities or profiles (erasure,
# imports): the worker then drops its identity cache.
WORKER_EPOCH = "dmp:worker:epoch"
API_KEYS = "dmp:apikeys"  # set of every API key's digest (admin, import, partner)


def site(site_id: str) -> str:
    """Return the hash holding one site's settings."""
    return f"dmp:site:{site_id}"


def write_key(key_hash: str) -> str:
    """Return the string key mapping a hashed write key to its site id."""
    return f"dmp:writekey:{key_hash}"


def api_key(key_hash: str) -> str:
    """Return the hash holding one hashed API key's scope and metadata."""
    return f"dmp:apikey:{key_hash}"


def identifier(kind: str, value: str) -> str:
    """Return the string key mapping one identifier to its person id."""
    return f"dmp:id:{kind}:{value}"


PERSON_PREFIX, PERSON_SUFFIX = "dmp:person:{", "}"  # around the id in every person key


def person(pid: str, facet: str = "") -> str:
    """Return a person's key: the profile hash, or one of its facets."""
    base = f"{PERSON_PREFIX}{pid}{PERSON_SUFFIX}"
    return base + facet_suffix(facet) if facet else base


def facet_suffix(facet: str) -> str:
    """Return what a facet adds to its person's key (Lua scripts build keys from ids)."""
    return f":{facet}"


def person_pattern(facet: str = "") -> str:
    """Return the SCAN pattern matching every person's profile hash (or one facet's keys)."""
    return person("*", facet)


def person_id_of(key: str) -> str:
    """Return the person id in a profile hash's key (as person_pattern() found it)."""
    return key[len(PERSON_PREFIX) : -len(PERSON_SUFFIX)]


def every_person_key_pattern() -> str:
    """Return the SCAN pattern matching every key of every person (hash and facets)."""
    return person("*") + "*"


def person_id_in(key: str) -> str:
    """Return the person id in any key of a person (its profile hash or a facet)."""
    return key[len(PERSON_PREFIX) :].partition(PERSON_SUFFIX)[0]


def seen_events(day: str) -> str:
    """Return the set of event-id digests first stored on ``day`` (YYYYMMDD)."""
    return f"dmp:seen:{day}"


def aggregate(site_id: str, day: str) -> str:
    """Return the hash counting one site's unconsented hits of one day by url and topic."""
    return f"dmp:aggregate:{site_id}:{day}"


def eventlog_intent(name: str) -> str:
    """Return the key recording an event-log file about to be written (crash recovery)."""
    return f"dmp:eventlog:intent:{name}"


EVENTLOG_INTENTS = "dmp:eventlog:intents"  # set of intent names not yet committed

SCORING_MODEL = "dmp:config:scoring"  # the scoring model's YAML (unset: the default one)
CONTENT_CATALOG = "dmp:config:catalog"  # the content catalog's YAML (unset: none)


def imported_rows(source: str) -> str:
    """Return the set of row digests a file source (crm, newsletter) has imported."""
    return f"dmp:import:{source}:rows"


MATRIX_TOUCHED = "dmp:matrix:touched"  # set of person ids changed outside the event log


def eventlog_outcome(name: str) -> str:
    """Return the key saying how recovery ended an interrupted flush (finished/undone)."""
    return f"dmp:eventlog:outcome:{name}"


SEGMENTS = "dmp:segments"  # set of segment ids


def segment(sid: str, facet: str = "") -> str:
    """Return a segment's hash, or one of its facets (versions, members: a set of
    person ids kept by segment runs)."""
    return f"dmp:segment:{sid}:{facet}" if facet else f"dmp:segment:{sid}"


def segment_pattern(facet: str) -> str:
    """Return the SCAN pattern matching one facet's keys of every segment."""
    return segment("*", facet)


SEGMENT_RUNS = "dmp:segments:runs"  # list of run records (JSON), newest first, capped
SEGMENTS_APPLIED = "dmp:segments:applied"  # the run whose membership the Redis sets hold
SEGMENTS_LOCK = "dmp:segments:lock"  # one segment run at a time (token, expires)
SEGMENTS_LIVE = "dmp:segments:live"  # zset: persons the live lane moved, by its as-of time
SEGMENTS_DELETED = "dmp:segments:deleted"  # segment ids deleted whose sets a run empties
SEGMENTS_RUN_REQUESTED = "dmp:segments:requested"  # a run asked for through the API (ms)
SEGMENTS_SETS_LOCK = "dmp:segments:setslock"  # one mover of the lookup sets at a time
EVENTLOG_FLUSH = "dmp:eventlog:flush"  # hash: a failing flush (error, since, failures), expiring
WORKER_LEASE = "dmp:worker:lease"  # the ingest worker holding it (token, expires) may write


def recent_hits(minute: int) -> str:
    """Return the hash counting one minute's refused and set-aside hits by
    ``collector:reason`` (``minute``: minutes since the epoch; dmp.storage.recenthits)."""
    return f"dmp:recenthits:{minute}"


# Erasure (GDPR Art. 17). Redis forgets a person at once; files forget them at the next
# compaction, which drops the rows these members name and then removes the members it
# handled: ``person:<pid>`` (rows with that person_id, in every Parquet file) and
# ``<kind>:<value>`` identifiers (event rows carrying that uid, anonymous_id or user_id).
ERASURE_PENDING = "dmp:erasure:pending"
ERASURE_LOG = "dmp:erasure:log"  # stream: one entry per erasure, identifiers only salted-hashed
ERASURE_SALT = "dmp:erasure:salt"  # the installation's random salt for those hashes


# Compaction (dmp.ingest.compaction): one at a time holds the lock; the last one's report
# (JSON, with ``at`` in ms) also tells the worker's daily schedule when the next is due.
COMPACTION_LOCK = "dmp:compaction:lock"
COMPACTION_LAST = "dmp:compaction:last"


def erased(digest: str) -> str:
    """Return the key marking a salted identifier hash as erased (value: when, in ms)."""
    return f"dmp:erased:{digest}"


def control_queued(request_id: str) -> str:
    """Return the key saying a person request (an erasure, an unmerge) waits for the
    ingest worker (value: the person id)."""
    return f"dmp:control:queued:{request_id}"


def control_plan(request_id: str) -> str:
    """Return the key holding what a person request will change (JSON), written before
    its first change and removed with its report: a request cut short resumes from it."""
    return f"dmp:control:plan:{request_id}"


def control_result(request_id: str) -> str:
    """Return the key holding an applied person request's report (JSON, expiring)."""
    return f"dmp:control:result:{request_id}"


MIGRATED_CONSENTS = "dmp:migrated:consents-per-identifier"  # set once consents moved

DESTINATIONS = "dmp:destinations"  # set of destination names (exporters)


def destination(name: str, facet: str = "") -> str:
    """Return a destination's settings hash, or one of its facets: ``runs`` (list of sync
    reports, newest first), ``lock``, ``sync:<segment>`` (the checkpoint of its sync of a
    segment), ``failed:<segment>`` (rows the platform refused in the current plan)."""
    return f"dmp:destination:{name}:{facet}" if facet else f"dmp:destination:{name}"


def destination_pattern(name: str) -> str:
    """Return the SCAN pattern matching every facet key of one destination."""
    return f"dmp:destination:{name}:*"


# The audience pull API (dmp.web.audiences): the installation's random secret that signs
# partners' cursors (made on first use; losing it only makes old cursors invalid).
AUDIENCE_CURSOR_SECRET = "dmp:audiences:secret"

# Users of the marketer UI (dmp.access.users): a set of emails and a hash per user.
USERS = "dmp:users"


def user(email: str) -> str:
    """Return the hash holding one UI user's role, password hash and failed logins."""
    return f"dmp:user:{email}"


# The marketer UI (dmp.ui): the installation's random secret that signs session cookies
# and CSRF tokens (made on first use, shared by every serve process; deleting it logs
# everyone out).
UI_SECRET = "dmp:ui:secret"


# Ingest in partitions (docs/partitions.md). Everything one partition's flush commit
# touches in its MULTI carries the partition's hash tag ``{p<n>}``: the MULTI stays on
# one Redis Cluster slot. The names above without a tag (STREAM, STATS, METRICS,
# seen_events, aggregate, recent_hits, EVENTLOG_INTENTS) are the single stream's of
# earlier versions: a worker drains what is left there (``LEGACY``), readers add them in.
INGEST_PARTITIONS = "dmp:ingest:partitions"  # the most partitions ever used (readers sum)
WORKERS = "dmp:ingest:workers"  # zset: live worker processes by their last heartbeat (ms)
IDENTITY_LOCK = "dmp:identity:lock"  # the worker resolving and writing identities now
IDENTITY_WANTED = "dmp:identity:wanted"  # set (expiring) while another worker waits for it
IDENTITY_CHANGES = "dmp:identity:changes"  # stream: what the lock's holders changed


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one ingest partition (``index`` -1: the single stream of old)."""

    index: int
    stream: str
    lease: str
    stats: str  # hash: events_stored, events_aggregate committed by this partition
    metrics: str  # hash: the worker's counters committed by this partition
    intents: str  # set of this partition's flush intents not yet committed
    _prefix: str  # what the per-day and per-name keys begin with

    def seen(self, day: str) -> str:
        """Return the set of event-id digests this partition first stored on ``day``."""
        return seen_events(day) if self.index < 0 else f"{self._prefix}seen:{day}"

    def aggregate(self, site_id: str, day: str) -> str:
        """Return this partition's hash counting a site's unconsented hits of one day."""
        if self.index < 0:
            return aggregate(site_id, day)
        return f"{self._prefix}aggregate:{site_id}:{day}"

    def recent(self, minute: int) -> str:
        """Return this partition's hash of one minute's set-aside hits (dmp.storage.recenthits)."""
        return recent_hits(minute) if self.index < 0 else f"{self._prefix}recenthits:{minute}"

    def intent(self, name: str) -> str:
        """Return the key recording one of this partition's flushes (crash recovery)."""
        return eventlog_intent(name) if self.index < 0 else f"{self._prefix}intent:{name}"


def partition(index: int) -> PartitionKeys:
    """Return the keys of ingest partition ``index`` (0-based), all on one cluster slot."""
    tag = f"{{p{index}}}"
    return PartitionKeys(
        index,
        stream=f"dmp:stream:{tag}",
        lease=f"dmp:worker:lease:{tag}",
        stats=f"dmp:stats:{tag}",
        metrics=f"dmp:metrics:{tag}",
        intents=f"dmp:eventlog:intents:{tag}",
        _prefix=f"dmp:ingest:{tag}:",
    )


# The single stream of earlier versions, drained by whoever holds partition 0 (under its
# lease); an installation that never ran them finds it empty.
LEGACY = PartitionKeys(
    -1,
    stream=STREAM,
    lease=partition(0).lease,
    stats=STATS,
    metrics=METRICS,
    intents=EVENTLOG_INTENTS,
    _prefix="",
)
