"""dmp.storage.keymigration: the keys of an earlier version are renamed once, in place."""

from __future__ import annotations

import pytest

from dmp.access import apikeys, sites, users
from dmp.ingest.worker import status
from dmp.membership import definitions
from dmp.storage import keymigration, keyspace
from tests.factories import apply_segments, make_hit, make_identify, send_hits

SEGMENT = "id: readers\nname: Readers\nwhere: {did: {event: page}}\n"


def _as_version_1(redis) -> list[str]:
    """Give every key the name it had before the hash tags (and drop the version mark);
    return the names it gave."""
    redis.delete(keyspace.KEYSPACE_VERSION)
    given = []
    for key in list(redis.scan_iter(count=1000)):
        old = (
            key.replace(":{dmp}:", ":", 1)
            .replace(":{m:", ":", 1)
            .replace(":{imp:", ":", 1)
            .replace("}:", ":", 1)
            if key.startswith(("dmp:{dmp}:", "dmp:segment:{m:", "dmp:import:{imp:"))
            else key
        )
        if old != key:
            redis.rename(key, old)
            given.append(old)
    return sorted(given)


@pytest.fixture
def installed(redis, config, drain):
    """An installation with a site, keys, a UI user, a segment run and persons."""
    site, write_key = sites.add_site(redis, "Acme GmbH", ["acme.de"])
    admin = apikeys.create_key(redis, apikeys.Scope.ADMIN, "ops")
    users.add_user(redis, "anna@acme.de", "a long passphrase 1", users.Role.ADMIN)
    send_hits(redis, make_hit(uid="c1"), make_identify("erika@acme.de", uid="c1"))
    drain()
    apply_segments(redis, SEGMENT)
    from dmp.membership import runs

    runs.run(redis, config)
    return {"site": site, "write_key": write_key, "admin": admin, "status": status(redis)}


def test_an_installation_of_version_1_works_after_the_renames(redis, installed):
    """Sites, write and API keys, users, segments with their members and the person counts
    are found again under the new names; nothing is left under an old one but the single
    stream's counters, which readers still add in."""
    old_names = _as_version_1(redis)
    assert "dmp:sites" in old_names and "dmp:segment:readers:members" in old_names
    assert (
        sites.get_site(redis, installed["site"].site_id) is None
    )  # the new code does not see them yet
    moved = keymigration.ensure_current(redis)
    assert moved >= 8
    assert sites.get_site(redis, installed["site"].site_id) is not None
    found = sites.SiteCache(redis, 0).site_for_key(installed["write_key"])
    assert found is not None and found.site_id == installed["site"].site_id
    assert apikeys.check_key(redis, installed["admin"], apikeys.Scope.ADMIN)
    assert users.get_user(redis, "anna@acme.de") is not None
    assert [s.definition.id for s in definitions.list_segments(redis)] == ["readers"]
    assert redis.scard(keyspace.segment("readers", "members")) == 1
    assert status(redis)["persons"] == installed["status"]["persons"]
    left = [k for k in redis.scan_iter(count=1000) if k in old_names]
    assert set(left) <= {keyspace.LEGACY_STATS, keyspace.LEGACY_METRICS}
    assert keymigration.ensure_current(redis) == 0  # once


def test_a_key_already_under_its_new_name_is_never_overwritten(redis):
    """Both names present (a process wrote the new one first): the new one stays, the old
    one is left for a person to look at."""
    redis.sadd("dmp:sites", "old-site")
    redis.sadd(keyspace.SITES, "new-site")
    keymigration.ensure_current(redis)
    assert redis.smembers(keyspace.SITES) == {"new-site"}
    assert redis.smembers("dmp:sites") == {"old-site"}


def test_names_of_version_2_that_begin_alike_are_not_renamed(redis):
    """A member set's and an import's new names begin as version 1's segment and import
    keys did: they stay where they are."""
    redis.sadd(keyspace.segment("s1", "members"), "p1")
    redis.sadd(keyspace.imported_rows("crm"), "d1")
    assert list(keymigration.renames(redis)) == []


def test_a_cluster_holding_names_of_version_1_is_refused_with_the_way_out(cluster):
    """On a Redis Cluster an old name cannot be renamed across slots: one clear error
    saying what to do."""
    cluster.sadd("dmp:sites", "acme-gmbh")
    with pytest.raises(keymigration.KeyspaceError, match="single Redis server"):
        keymigration.ensure_current(cluster)


def test_a_new_cluster_is_marked_current(cluster):
    """A Redis Cluster without old names gets the version mark and nothing else."""
    assert keymigration.ensure_current(cluster) == 0
    assert cluster.get(keyspace.KEYSPACE_VERSION) == keymigration.VERSION
