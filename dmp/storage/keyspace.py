"""Every Redis key dmp uses, in one place: ``dmp:<kind>:<id>[:<facet>]``.

Keys used together in one transaction or script share a Redis Cluster slot through a
hash tag (the part in braces decides the slot):

- configuration and bookkeeping (sites, API keys, segment definitions, destinations,
  users, locks, counters, logs) carry ``{dmp}``: ``dmp:{dmp}:<kind>…``, one slot that
  every node's client finds, so their transactions work as on one server;
- one person's keys carry the person id: ``dmp:person:{<pid>}:…``;
- one ingest partition's keys carry ``{p<n>}`` (see :func:`partition`);
- what grows with the data and is never used with other keys in one command (identifier
  links, erased marks, a segment's member set, an import's row digests) is spread.

Keys of earlier versions are renamed once by ``dmp.storage.keymigration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

TAG = "{dmp}"  # the hash tag of configuration and bookkeeping keys
_G = f"dmp:{TAG}:"  # what their names begin with

STREAM = "dmp:stream:ingest"  # the single ingest stream of earlier versions (LEGACY)
GROUP = "ingest"  # the worker's consumer group on each partition's stream
METRICS = _G + "metrics"  # hash: counter name -> value (collectors, exporters, the API)
STATS = _G + "stats"  # hash: persons:<tier> (the events' counts are per partition)
MERGES = _G + "log:merges"  # stream: every identity merge with reason, time and source
CONFLICTS = _G + "log:conflicts"  # stream: identities that were not merged, and why
SITES = _G + "sites"  # set of site ids
# Bumped by anything but the ingest worker that changes identities or profiles (erasure,
# imports): the worker then drops its identity cache.
WORKER_EPOCH = _G + "worker:epoch"
API_KEYS = _G + "apikeys"  # set of every API key's digest (admin, import, partner)


def site(site_id: str) -> str:
    """Return the hash holding one site's settings."""
    return f"{_G}site:{site_id}"


def write_key(key_hash: str) -> str:
    """Return the string key mapping a hashed write key to its site id."""
    return f"{_G}writekey:{key_hash}"


def api_key(key_hash: str) -> str:
    """Return the hash holding one hashed API key's scope and metadata."""
    return f"{_G}apikey:{key_hash}"


def identifier(kind: str, value: str) -> str:
    """Return the string key mapping one identifier to its person id."""
    return f"dmp:id:{kind}:{value}"


PERSON_PREFIX, PERSON_SUFFIX = "dmp:person:{", "}"  # around the id in every person key


def person(pid: str, facet: str = "") -> str:
    """Return a person's key: the profile hash, or one of its facets."""
    base = f"{PERSON_PREFIX}{pid}{PERSON_SUFFIX}"
    return base + facet_suffix(facet) if facet else base


def facet_suffix(facet: str) -> str:
    """Return what a facet adds to its person's key (bulk readers append it to a
    person's key; no script builds keys)."""
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
    """Return the single stream's set of event-id digests first stored on ``day``
    (YYYYMMDD), of earlier versions (LEGACY)."""
    return f"dmp:seen:{day}"


def aggregate(site_id: str, day: str) -> str:
    """Return the single stream's hash counting one site's unconsented hits of one day
    by url and topic, of earlier versions (LEGACY)."""
    return f"dmp:aggregate:{site_id}:{day}"


def eventlog_intent(name: str) -> str:
    """Return the key recording an event-log file about to be written (crash recovery)
    by the single stream of earlier versions (LEGACY)."""
    return f"dmp:eventlog:intent:{name}"


EVENTLOG_INTENTS = "dmp:eventlog:intents"  # the single stream's intents (LEGACY)

SCORING_MODEL = _G + "config:scoring"  # the scoring model's YAML (unset: the default one)
CONTENT_CATALOG = _G + "config:catalog"  # the content catalog's YAML (unset: none)


def imported_rows(source: str) -> str:
    """Return the set of row digests a file source (crm, newsletter) has imported (a
    slot of its own: it grows with every row ever imported)."""
    return f"dmp:import:{{imp:{source}}}:rows"


MATRIX_TOUCHED = _G + "matrix:touched"  # set of person ids changed outside the event log


def eventlog_outcome(name: str) -> str:
    """Return the key saying how recovery ended an interrupted flush (finished/undone)."""
    return f"dmp:eventlog:outcome:{name}"


SEGMENTS = _G + "segments"  # set of segment ids
MEMBER_FACETS = frozenset({"members", "members-rewrite"})  # a segment's sets of person ids


_MEMBERS = "dmp:segment:{m:"  # what a member set's key begins with, before the id


def segment(sid: str, facet: str = "") -> str:
    """Return a segment's hash, or one of its facets: ``versions``, and ``members``
    (the set of person ids segment runs keep; with ``members-rewrite``, its rebuild,
    in a slot of the segment's own: it can hold millions)."""
    if facet in MEMBER_FACETS:
        return f"{_MEMBERS}{sid}}}:{facet}"
    return f"{_G}segment:{sid}:{facet}" if facet else f"{_G}segment:{sid}"


def segment_pattern(facet: str) -> str:
    """Return the SCAN pattern matching one facet's keys of every segment."""
    return segment("*", facet)


def segment_id_of(member_key: str) -> str:
    """Return the segment id in a member set's key (as segment_pattern() found it)."""
    return member_key[len(_MEMBERS) :].partition("}")[0]


SEGMENT_RUNS = _G + "segments:runs"  # list of run records (JSON), newest first, capped
SEGMENTS_APPLIED = _G + "segments:applied"  # the run whose membership the Redis sets hold
SEGMENTS_LOCK = _G + "segments:lock"  # one segment run at a time (token, expires)
SEGMENTS_LIVE = _G + "segments:live"  # zset: persons the live lane moved, by its as-of time
SEGMENTS_DELETED = _G + "segments:deleted"  # segment ids deleted whose sets a run empties
SEGMENTS_RUN_REQUESTED = _G + "segments:requested"  # a run asked for through the API (ms)
SEGMENTS_SETS_LOCK = _G + "segments:setslock"  # one mover of the lookup sets at a time
EVENTLOG_FLUSH = _G + "eventlog:flush"  # hash: a failing flush (error, since, failures)
WORKER_LEASE = "dmp:worker:lease"  # the single ingest worker's lease of earlier versions


def recent_hits(minute: int) -> str:
    """Return the hash counting one minute's refused and set-aside hits by
    ``collector:reason`` (``minute``: minutes since the epoch; dmp.storage.recenthits)."""
    return f"{_G}recenthits:{minute}"


# Erasure (GDPR Art. 17). Redis forgets a person at once; files forget them at the next
# compaction, which drops the rows these members name and then removes the members it
# handled: ``person:<pid>`` (rows with that person_id, in every Parquet file) and
# ``<kind>:<value>`` identifiers (event rows carrying that uid, anonymous_id or user_id).
ERASURE_PENDING = _G + "erasure:pending"
ERASURE_LOG = _G + "erasure:log"  # stream: one entry per erasure, identifiers only hashed
ERASURE_SALT = _G + "erasure:salt"  # the installation's random salt for those hashes


# Compaction (dmp.ingest.compaction): one at a time holds the lock; the last one's report
# (JSON, with ``at`` in ms) also tells the worker's daily schedule when the next is due.
COMPACTION_LOCK = _G + "compaction:lock"
COMPACTION_LAST = _G + "compaction:last"


def erased(digest: str) -> str:
    """Return the key marking a salted identifier hash as erased (value: when, in ms)."""
    return f"dmp:erased:{digest}"


def control_queued(request_id: str) -> str:
    """Return the key saying a person request (an erasure, an unmerge) waits for the
    ingest worker (value: the person id)."""
    return f"{_G}control:queued:{request_id}"


def control_plan(request_id: str) -> str:
    """Return the key holding what a person request will change (JSON), written before
    its first change and removed with its report: a request cut short resumes from it."""
    return f"{_G}control:plan:{request_id}"


def control_result(request_id: str) -> str:
    """Return the key holding an applied person request's report (JSON, expiring)."""
    return f"{_G}control:result:{request_id}"


# Journals of work split over slots (a crash leaves the intent; the next start finishes
# it): a batch's merges (dmp.people.merges), and the persons retention is removing.
MERGE_INTENTS = _G + "merge:intents"  # set of intent names not finished yet
RETENTION_INTENTS = _G + "retention:intents"  # hash: person id -> what goes (JSON)


def merge_intent(name: str) -> str:
    """Return the key holding one batch's planned merges (JSON) until all are applied."""
    return f"{_G}merge:intent:{name}"


MIGRATED_CONSENTS = _G + "migrated:consents-per-identifier"  # set once consents moved
KEYSPACE_VERSION = _G + "keyspace"  # 2 once the names of earlier versions were renamed
KEYSPACE_LOCK = _G + "keyspace:lock"  # one process at a time renames them

DESTINATIONS = _G + "destinations"  # set of destination names (exporters)


def destination(name: str, facet: str = "") -> str:
    """Return a destination's settings hash, or one of its facets: ``runs`` (list of sync
    reports, newest first), ``lock``, ``sync:<segment>`` (the checkpoint of its sync of a
    segment), ``failed:<segment>`` (rows the platform refused in the current plan)."""
    return f"{_G}destination:{name}:{facet}" if facet else f"{_G}destination:{name}"


def destination_pattern(name: str) -> str:
    """Return the SCAN pattern matching every facet key of one destination."""
    return f"{_G}destination:{name}:*"


# The audience pull API (dmp.web.audiences): the installation's random secret that signs
# partners' cursors (made on first use; losing it only makes old cursors invalid).
AUDIENCE_CURSOR_SECRET = _G + "audiences:secret"

# Users of the marketer UI (dmp.access.users): a set of emails and a hash per user.
USERS = _G + "users"


def user(email: str) -> str:
    """Return the hash holding one UI user's role, password hash and failed logins."""
    return f"{_G}user:{email}"


# The marketer UI (dmp.ui): the installation's random secret that signs session cookies
# and CSRF tokens (made on first use, shared by every serve process; deleting it logs
# everyone out).
UI_SECRET = _G + "ui:secret"


# Ingest in partitions (docs/partitions.md). Everything one partition's flush commit
# touches in its MULTI carries the partition's hash tag ``{p<n>}``: the MULTI stays on
# one Redis Cluster slot. The names of the single stream of earlier versions (STREAM,
# LEGACY_STATS, LEGACY_METRICS, seen_events, aggregate, EVENTLOG_INTENTS) stay as they
# were: a worker drains what is left there (``LEGACY``), readers add them in.
LEGACY_STATS = "dmp:stats"  # the single stream's (and persons') counts of earlier versions
LEGACY_METRICS = "dmp:metrics"  # every counter of earlier versions
INGEST_PARTITIONS = _G + "ingest:partitions"  # the most partitions ever used (readers sum)
WORKERS = _G + "ingest:workers"  # zset: live worker processes by their last heartbeat (ms)
IDENTITY_LOCK = _G + "identity:lock"  # the worker resolving and writing identities now
IDENTITY_CHANGES = _G + "identity:changes"  # stream: what the lock's holders changed


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


@lru_cache(maxsize=4096)  # on every hit's path (collectors route each one): built once
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
    stats=LEGACY_STATS,
    metrics=LEGACY_METRICS,
    intents=EVENTLOG_INTENTS,
    _prefix="",
)
