"""API keys: shown once, stored as a digest, checked per scope, revoked by id."""

from __future__ import annotations

import pytest

from dmp.access.apikeys import (
    Scope,
    check_key,
    create_key,
    hash_secret,
    key_prefix,
    list_keys,
    revoke_key,
    unshare,
)
from dmp.storage import keyspace


def test_a_key_is_stored_only_as_its_digest(redis) -> None:
    """Redis holds the key's SHA-256 digest and metadata, never the key itself."""
    key = create_key(redis, Scope.ADMIN, "ops")
    assert key.startswith(key_prefix(Scope.ADMIN))
    dump = {k: redis.dump(k) for k in redis.keys("dmp:*")}
    assert not any(key.encode() in (value or b"") for value in dump.values())
    assert redis.hget(keyspace.api_key(hash_secret(key)), "scope") == "admin"


@pytest.mark.parametrize("scope", list(Scope))
def test_a_key_opens_only_its_own_scope(redis, scope: Scope) -> None:
    """check_key accepts a key for its scope and refuses it for every other."""
    audiences = ("hot-leads",) if scope is Scope.PARTNER else ()
    key = create_key(redis, scope, "k", audiences, "acme" if scope is Scope.SERVER else "")
    assert {s for s in Scope if check_key(redis, key, s)} == {scope}


@pytest.mark.parametrize("key", ["", "x" * 201, "dmp_ad_ünïcode", "dmp_ad_unknown"])
def test_keys_that_are_no_ones_are_refused(redis, key: str) -> None:
    """Empty, oversize, non-ASCII and unknown keys are refused without an error."""
    assert not check_key(redis, key, Scope.ADMIN)


def test_only_partner_keys_carry_audiences(redis) -> None:
    """A partner key needs audiences; any other key must not have them."""
    with pytest.raises(ValueError):
        create_key(redis, Scope.PARTNER, "ad tool")
    with pytest.raises(ValueError):
        create_key(redis, Scope.ADMIN, "ops", ("hot-leads",))


def test_revoking_by_id_removes_the_key_and_its_listing(redis) -> None:
    """The id `dmp keys list` shows revokes exactly that key."""
    kept, gone = create_key(redis, Scope.ADMIN, "kept"), create_key(redis, Scope.ADMIN, "gone")
    assert revoke_key(redis, hash_secret(gone)[:12]) == 1
    assert not check_key(redis, gone, Scope.ADMIN) and check_key(redis, kept, Scope.ADMIN)
    assert [k.name for k in list_keys(redis)] == ["kept"]


def test_a_deleted_segment_is_unshared_from_every_partner(redis) -> None:
    """unshare takes the segment out of each partner key that had it, and only it."""
    both = create_key(redis, Scope.PARTNER, "a", ("hot-leads", "pricing"))
    create_key(redis, Scope.PARTNER, "b", ("pricing",))
    assert unshare(redis, "hot-leads") == 1
    shared = {k.name: k.audiences for k in list_keys(redis)}
    assert shared == {"a": ("pricing",), "b": ("pricing",)}
    assert check_key(redis, both, Scope.PARTNER)
