"""Bulk: many Redis commands in one write, for the worker's per-batch reads and writes.

redis-py's pipeline spends about 8 µs of client CPU per command (argument checks,
encoding, response callbacks); hiredis packs a command in about 0.5 µs. The worker sends
thousands of plain commands per batch, so it queues them here as raw RESP and reads the
replies back in order. Replies are undecoded (bytes, ints, lists), as hiredis gives them.

On a Redis Cluster the same batch is split by the node serving each command's slot
(``dmp.storage.clusterbulk``) and the replies are put back in the order of the commands.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.cluster import RedisCluster

from dmp.storage.replies import read_replies, widen_send_buffer


class Bulk:
    """A non-transactional batch of commands sent in one write."""

    __slots__ = ("_packed", "_args")

    def __init__(self) -> None:
        self._packed: list[bytes] = []
        self._args: list[tuple[str | bytes | int | float, ...]] = []  # to route on a cluster

    def __len__(self) -> int:
        return len(self._packed)

    def packed(self) -> bytes:
        """Return the queued commands as one RESP byte string (and forget them)."""
        packed, self._packed, self._args = self._packed, [], []
        return b"".join(packed)

    def add(self, *args: str | bytes | int | float) -> None:
        """Queue one command (name and arguments)."""
        self._packed.append(hiredis.pack_command(args))
        self._args.append(args)

    def execute(self, r: redis.Redis) -> list[Any]:
        """Send every queued command and return their replies in order.

        An error reply raises :class:`redis.ResponseError` after all replies were read,
        so the connection stays usable.
        """
        return self.send(r).wait()

    def send(self, r: redis.Redis) -> InFlight:
        """Send every queued command now; the replies are read by :meth:`InFlight.wait`.

        Redis works through them on its own core while the caller goes on; the
        connection stays reserved until then.
        """
        packed, self._packed = self._packed, []
        commands, self._args = self._args, []
        if isinstance(r, RedisCluster):
            from dmp.storage.clusterbulk import send_to_cluster

            return send_to_cluster(r, commands)  # type: ignore[return-value]
        pool = r.connection_pool
        conn = pool.get_connection()
        widen_send_buffer(conn)
        try:
            if packed:
                conn.send_packed_command([b"".join(packed)])
        except BaseException as exc:
            conn.disconnect()
            pool.release(conn)
            if isinstance(exc, OSError):
                raise redis.ConnectionError(f"Redis connection failed: {exc}") from exc
            raise
        return InFlight(pool, conn, len(packed))


class InFlight:
    """Commands sent but whose replies are not read yet."""

    __slots__ = ("_pool", "_conn", "_count")

    def __init__(self, pool: redis.ConnectionPool, conn: Any, count: int) -> None:
        self._pool, self._conn, self._count = pool, conn, count

    def wait(self) -> list[Any]:
        """Return the replies in order (raising the first error reply after reading all)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return []
        try:
            replies = read_replies(conn, self._count)
        except BaseException as exc:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            if isinstance(exc, OSError):  # a raw socket error: a Redis error like redis-py's
                raise redis.ConnectionError(f"Redis connection lost: {exc}") from exc
            raise
        finally:
            self._pool.release(conn)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies
