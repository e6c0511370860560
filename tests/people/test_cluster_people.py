"""People on a Redis Cluster of three masters: merges, unmerges, erasure and retention
give what they give on one server (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as redis_lib

from dmp.config import Config, load_config
from dmp.ingest import retention
from dmp.ingest.eventlog import DAY_MS
from dmp.ingest.worker import Worker
from dmp.people import erasure, lifecycle, merges
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person, load_states
from dmp.people.search import search_persons
from dmp.privacy import requests
from dmp.records import Stage
from dmp.storage import keyspace
from tests.factories import NOW, consent_of, make_hit, make_identify, person_of, send_hits


@pytest.fixture
def cluster_config(cluster, redis_cluster, tmp_path: Path) -> Config:
    """Return a Config naming the session's Redis Cluster and a fresh data dir."""
    return load_config({"redis_url": redis_cluster.url, "data_dir": tmp_path / "data"}, env={})


def _drain(r: redis_lib.Redis, config: Config) -> int:
    return Worker(r, config).run(once=True)


def _two_persons(r: redis_lib.Redis, config: Config) -> tuple[str, str]:
    """Store a lead (email, trait) and a browser (cookie c9, two page views, ads consent,
    a stage); return (browser id, lead id)."""
    send_hits(r, make_identify("lea@acme.de", firstName="Lea"))
    send_hits(r, make_hit(uid="c9", url="https://acme.de/preise", timestamp=NOW - 9000))
    send_hits(r, make_hit(uid="c9", url="https://acme.de/demo", timestamp=NOW - 5000))
    _drain(r, config)
    browser = person_of(r, IdKind.UID, "c9")["person_id"]
    lead = person_of(r, IdKind.EMAIL, "lea@acme.de")["person_id"]
    r.rpush(keyspace.person(browser, "stages"), '{"stage": "lead", "at": 1, "source": "t"}')
    return browser, lead


def _merged(r: redis_lib.Redis, config: Config) -> tuple[str, str]:
    """Merge the browser into the lead by a sign-up claim on its cookie."""
    browser, lead = _two_persons(r, config)
    send_hits(r, make_identify("lea@acme.de", uid="c9", trusted=False, nickname="L"))
    _drain(r, config)
    return browser, lead


def _view(r: redis_lib.Redis) -> dict:
    """Return what a merged lead looks like, without its random ids."""
    person = person_of(r, IdKind.UID, "c9")
    stats = r.hgetall(keyspace.STATS)
    return {
        "same": person["person_id"] == person_of(r, IdKind.EMAIL, "lea@acme.de")["person_id"],
        "tier": person["tier"],
        "identifiers": person["identifiers"],
        "traits": person["traits"],
        "pages": sorted(t["url"] for t in person["touchpoints"] if t.get("type") == "page"),
        "touchpoints": person["touchpoints_total"],
        "ads": consent_of(person, "ads", "uid:c9")["granted"],
        "proofs": r.llen(keyspace.person(person["person_id"], "consentlog")),
        "stages": r.llen(keyspace.person(person["person_id"], "stages")),
        "merged": r.scard(keyspace.person(person["person_id"], "merged")),
        "persons": {k: v for k, v in stats.items() if k.startswith("persons:")},
        "merge_log": [e["reason"] for _, e in r.xrange(keyspace.MERGES)],
        "intents": r.scard(keyspace.MERGE_INTENTS),
    }


def test_a_merge_on_the_cluster_gives_what_it_gives_on_one_server(
    redis, config, cluster, cluster_config
):
    """A cookie person merged into an email person: the same profile, identifiers,
    timeline, consents, stages, counts and merge log on the cluster as on one server."""
    _merged(redis, config)
    _merged(cluster, cluster_config)
    one, many = _view(redis), _view(cluster)
    assert many == one
    assert many["same"] and many["pages"] == ["https://acme.de/demo", "https://acme.de/preise"]
    assert many["stages"] == 1 and many["merged"] == 1 and many["intents"] == 0


def test_a_merge_cut_short_is_finished_once(cluster, cluster_config, monkeypatch):
    """A merge that fails after the target took the source's data is finished from its
    intent: the proofs and stages are not doubled, one merge-log entry, one count."""
    browser, lead = _two_persons(cluster, cluster_config)
    proofs = sum(cluster.llen(keyspace.person(p, "consentlog")) for p in (browser, lead))
    before = cluster.hgetall(keyspace.STATS)
    state = load_states(cluster, [browser])[browser]

    def cut(r, plan):
        raise ConnectionError("the worker died here")

    monkeypatch.setattr(merges, "_tombstone", cut)
    entry = {"from": browser, "into": lead, "reason": "test", "at": str(NOW)}
    with pytest.raises(ConnectionError):
        merges.merge_persons(cluster, [(state, lead, entry)])
    assert cluster.scard(keyspace.MERGE_INTENTS) == 1
    monkeypatch.undo()
    assert merges.recover_merges(cluster) == 1
    assert merges.recover_merges(cluster) == 0
    Worker(cluster, cluster_config).start()  # what a restart does: nothing left to do
    assert person_of(cluster, IdKind.UID, "c9")["person_id"] == lead
    assert cluster.hget(keyspace.person(browser), "merged_into") == lead
    assert cluster.llen(keyspace.person(lead, "consentlog")) == proofs
    assert cluster.llen(keyspace.person(lead, "stages")) == 1
    assert [e["reason"] for _, e in cluster.xrange(keyspace.MERGES)] == ["test"]
    after = cluster.hgetall(keyspace.STATS)
    assert int(after["persons:low"]) == int(before["persons:low"]) - 1
    assert cluster.keys("dmp:{dmp}:merge:*") == []


def test_unmerge_on_the_cluster_gives_the_browser_back(cluster, cluster_config):
    """Undoing the merge on the cluster: the cookie leads to the browser again with its
    page views and consent; the lead keeps its email and loses the cookie."""
    browser, lead = _merged(cluster, cluster_config)
    request_id = requests.request_unmerge(cluster, browser)
    _drain(cluster, cluster_config)
    assert requests.report(cluster, request_id)["found"] is True
    back = person_of(cluster, IdKind.UID, "c9")
    assert back["person_id"] == browser and back["tier"] == "low"
    assert len([t for t in back["touchpoints"] if t.get("type") == "page"]) == 2
    assert consent_of(back, "ads", "uid:c9")["granted"] is True
    lead_now = person_of(cluster, IdKind.EMAIL, "lea@acme.de")
    assert lead_now["person_id"] == lead and "uid" not in lead_now["identifiers"]
    assert cluster.llen(keyspace.person(lead, "stages")) == 0
    assert cluster.exists(keyspace.control_plan(request_id)) == 0
    reasons = [e["reason"] for _, e in cluster.xrange(keyspace.MERGES)]
    assert reasons[-1] == "unmerged" and reasons.count("unmerged") == 1


def test_erasure_on_the_cluster_removes_both_persons_and_marks_the_identifiers(
    cluster, cluster_config
):
    """Erasing the merged lead on the cluster: no identifier leads anywhere, no key of
    either person is left, the identifiers are marked erased and the count drops once."""
    browser, lead = _merged(cluster, cluster_config)
    cluster.sadd(keyspace.segment("hot", "members"), lead)
    cluster.sadd(keyspace.person(lead, "segments"), "hot")
    medium = int(cluster.hget(keyspace.STATS, "persons:medium"))
    request_id = requests.request_erasure(cluster, lead, by="dpo")
    _drain(cluster, cluster_config)
    assert requests.report(cluster, request_id)["found"] is True
    assert search_persons(cluster, "lea@acme.de") == []
    assert find_person(cluster, Identifier(IdKind.UID, "c9")) is None
    assert cluster.keys(f"dmp:person:{{{lead}}}*") == []
    assert cluster.keys(f"dmp:person:{{{browser}}}*") == []
    assert not cluster.sismember(keyspace.segment("hot", "members"), lead)
    marked = erasure.erased_before(cluster, [Identifier(IdKind.EMAIL, "lea@acme.de")])
    assert marked == [True]
    assert int(cluster.hget(keyspace.STATS, "persons:medium")) == medium - 1
    assert cluster.xlen(keyspace.ERASURE_LOG) == 1


def _stale_browser(r: redis_lib.Redis, config: Config) -> str:
    """Store a cookie-only person last seen 100 days ago, in segment ``hot``."""
    send_hits(r, make_hit(uid="old", timestamp=NOW - 100 * DAY_MS))
    _drain(r, config)
    pid = person_of(r, IdKind.UID, "old")["person_id"]
    r.sadd(keyspace.segment("hot", "members"), pid)
    r.sadd(keyspace.person(pid, "segments"), "hot")
    return pid


def test_retention_expires_a_cookie_only_person_on_the_cluster(cluster, cluster_config):
    """A cookie-only person unseen for 90 days leaves the cluster: every key of theirs,
    their cookie's link and lookup set; their rows are pending and the count drops."""
    pid = _stale_browser(cluster, cluster_config)
    low = int(cluster.hget(keyspace.STATS, "persons:low"))
    assert retention.expire_anonymous(cluster, 90, NOW) == [pid]
    assert find_person(cluster, Identifier(IdKind.UID, "old")) is None
    assert cluster.keys(f"*{pid}*") == []
    assert not cluster.sismember(keyspace.segment("hot", "members"), pid)
    assert f"person:{pid}" in cluster.smembers(keyspace.ERASURE_PENDING)
    assert int(cluster.hget(keyspace.STATS, "persons:low")) == low - 1
    assert cluster.hlen(keyspace.RETENTION_INTENTS) == 0


def test_an_expiry_cut_short_is_finished_once(cluster, cluster_config, monkeypatch):
    """Retention that dies after the person's own keys went: the next run finishes the
    link, lookup set and pending rows from the intent, and counts them gone once."""
    pid = _stale_browser(cluster, cluster_config)
    low = int(cluster.hget(keyspace.STATS, "persons:low"))

    def die(*_args):
        raise ConnectionError("compaction died here")

    with monkeypatch.context() as patched:
        patched.setattr(retention, "_forget_rest", die)
        with pytest.raises(ConnectionError):
            retention.expire_anonymous(cluster, 90, NOW)
    assert cluster.get(keyspace.identifier("uid", "old")) == pid  # left for the next run
    assert retention.expire_anonymous(cluster, 90, NOW) == []
    assert cluster.get(keyspace.identifier("uid", "old")) is None
    assert not cluster.sismember(keyspace.segment("hot", "members"), pid)
    assert f"person:{pid}" in cluster.smembers(keyspace.ERASURE_PENDING)
    assert int(cluster.hget(keyspace.STATS, "persons:low")) == low - 1
    assert retention.finish_expiries(cluster) == 0


def test_stages_and_search_read_identifiers_across_slots(cluster, cluster_config):
    """On the cluster a CRM import's stages find their persons through links on many
    slots, a recorded stage marks the person for the next build, and search finds them."""
    browser, lead = _two_persons(cluster, cluster_config)
    items = [(Identifier(IdKind.EMAIL, "lea@acme.de"), Stage.MQL, NOW)]
    items.append((Identifier(IdKind.UID, "c9"), Stage.SQL, NOW))
    assert lifecycle.record_imported_stages(cluster, items, "crm") == 2
    assert cluster.smembers(keyspace.MATRIX_TOUCHED) == {browser, lead}
    lifecycle.record_stage(cluster, lead, Stage.SAL, source="ui")
    assert cluster.llen(keyspace.person(lead, "stages")) == 2
    assert search_persons(cluster, "lea@acme.de") == [lead]
    assert search_persons(cluster, "c9") == [browser]
