"""dmp's Redis clients: the redis-py internals dmp.storage.bulk reads, and the embedded server's
settings that keep every command within the clients' socket timeout."""

from __future__ import annotations

import socket

import redis as redis_lib

from dmp.storage import redisserver
from dmp.storage.bulk import Bulk


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def test_redis_py_is_a_version_dmp_bulk_was_tested_with(redis: redis_lib.Redis):
    """dmp.storage.bulk reads redis-py's private internals (redis._parsers.hiredis, a connection's
    _sock and _parser._reader): a new redis-py is re-checked, and those are still there."""
    low, high = redisserver.TESTED_REDIS_PY
    assert low <= _version(redis_lib.__version__) < high, (
        f"redis-py {redis_lib.__version__} is outside the range dmp.storage.bulk was tested with "
        f"({redisserver.TESTED_REDIS_PY}): re-read redis/_parsers/hiredis.py and "
        "redis/connection.py, run tests/storage/test_bulk.py, then move the range in "
        "dmp/storage/redisserver.py and pyproject.toml"
    )
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser

    pool = redis.connection_pool
    conn = pool.get_connection()
    try:
        conn.connect()
        assert isinstance(conn._sock, socket.socket), "Connection._sock is no socket"
        parser = conn._parser
        assert isinstance(parser, _HiredisParser), "hiredis is not redis-py's parser"
        assert callable(parser.read_from_socket) and callable(parser._reader.gets)
        assert parser._reader.gets(False) is NOT_ENOUGH_DATA  # nothing asked, nothing read
    finally:
        pool.release(conn)
    bulk = Bulk()
    bulk.add("SET", "k", "v")
    bulk.add("GET", "k")
    assert bulk.execute(redis) == [b"OK", b"v"]


def test_the_embedded_server_frees_big_keys_in_the_background(redis: redis_lib.Redis):
    """A segment run's DEL or RENAME over a set of millions frees it on a Redis thread, so
    that no command keeps a client waiting past its socket timeout."""
    found = redis.config_get("lazyfree-lazy-*")
    assert found["lazyfree-lazy-user-del"] == "yes"
    assert found["lazyfree-lazy-server-del"] == "yes"
