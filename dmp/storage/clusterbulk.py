"""A Bulk on a Redis Cluster: the batch split by the node serving each command's slot.

Each node gets its share in one write (as :class:`dmp.storage.bulk.Bulk` does on one
server) and the replies are put back in the order the commands were queued, so callers
read them as on a single Redis. A multi-key read or delete (``MGET``, ``DEL``,
``EXISTS``, ``UNLINK``) may name keys of many slots: it is sent key by key and its reply
rebuilt (a list for ``MGET``, a sum for the others); an ``MSET`` is sent pair by pair.
A ``MULTI`` … ``EXEC`` block goes whole to the node of its first key: its keys must
share a slot (hash tags), as Redis Cluster demands of any transaction.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from dmp.storage.replies import read_replies, widen_send_buffer

Arg = str | bytes | int | float
_SPLIT_LIST = frozenset({"MGET"})
_SPLIT_SUM = frozenset({"DEL", "UNLINK", "EXISTS", "TOUCH"})
# What a node answers when a slot is not (or not yet) its own: the command was not run.
# redis-py's parser turns these replies into their own error classes and drops the
# word, so the classes tell them; the words, replies parsed elsewhere.
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
_REDIRECT_ERRORS = (redis.exceptions.AskError, redis.exceptions.TryAgainError)
_REDIRECT_ERRORS += (redis.exceptions.ClusterDownError,)  # AskError covers MovedError


def is_redirect(error: BaseException) -> bool:
    """Return whether an error reply says the slot is served elsewhere (MOVED, ASK) or
    not at the moment (TRYAGAIN, CLUSTERDOWN): the command was not run."""
    return isinstance(error, _REDIRECT_ERRORS) or str(error).startswith(_REDIRECTS)


def _text(value: Arg) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Arg) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def first_key(args: tuple[Arg, ...]) -> bytes | None:
    """Return the key that routes a command (None for MULTI, EXEC and keyless ones)."""
    name = _text(args[0]).upper()
    if name in ("MULTI", "EXEC", "DISCARD", "PING"):
        return None
    if name in ("XREADGROUP", "XREAD"):
        words = [_text(a).upper() for a in args]
        return _bytes(args[words.index("STREAMS") + 1])
    if name in ("EVAL", "EVALSHA", "FCALL"):
        return _bytes(args[3]) if int(args[2]) > 0 else None
    return _bytes(args[1]) if len(args) > 1 else None


class _Route:
    """Where one node's share goes, and what it holds."""

    __slots__ = ("node", "packed", "count")

    def __init__(self, node: Any) -> None:
        self.node, self.packed, self.count = node, [], 0

    def add(self, args: tuple[Arg, ...]) -> int:
        self.packed.append(hiredis.pack_command(args))
        self.count += 1
        return self.count - 1


def send_to_cluster(r: RedisCluster, commands: list[tuple[Arg, ...]]) -> ClusterInFlight:
    """Send each node its share of ``commands`` now; the replies come back in order."""
    routes: dict[str, _Route] = {}

    def route(key: bytes | None) -> _Route:
        node = (
            r.get_default_node()
            if key is None
            else r.nodes_manager.get_node_from_slot(key_slot(key))
        )
        found = routes.get(node.name)
        if found is None:
            found = routes[node.name] = _Route(node)
        return found

    plan: list[tuple[str, list[tuple[_Route, int]]]] = []
    block: _Route | None = None  # the node of the MULTI block being queued
    for i, args in enumerate(commands):
        name = _text(args[0]).upper()
        if name == "MULTI":
            block = route(_block_key(commands, i))
        if block is not None:
            plan.append(("one", [(block, block.add(args))]))
            if name in ("EXEC", "DISCARD"):
                block = None
        elif name in _SPLIT_LIST or name in _SPLIT_SUM:
            one = "GET" if name in _SPLIT_LIST else args[0]
            parts = [(route(_bytes(k)), (one, k)) for k in args[1:]]
            kind = "list" if name in _SPLIT_LIST else "sum"
            plan.append((kind, [(to, to.add(part)) for to, part in parts]))
        elif name == "MSET":  # identifier links of many slots (profiles.BatchWrites)
            pairs = zip(args[1::2], args[2::2], strict=True)
            sets = [(route(_bytes(k)), ("SET", k, v)) for k, v in pairs]
            plan.append(("first", [(to, to.add(part)) for to, part in sets]))
        else:
            to = route(first_key(args))
            plan.append(("one", [(to, to.add(args))]))
    sent: list[tuple[_Route, Any, Any]] = []
    try:
        for to in routes.values():
            pool = r.get_redis_connection(to.node).connection_pool
            conn = pool.get_connection()
            sent.append((to, pool, conn))
            widen_send_buffer(conn)
            conn.send_packed_command([b"".join(to.packed)])
    except BaseException as exc:
        for _, pool, conn in sent:  # what was sent is left unread: never reuse them
            conn.disconnect()
            pool.release(conn)
        if isinstance(exc, OSError):
            raise redis.ConnectionError(f"Redis Cluster connection failed: {exc}") from exc
        raise
    return ClusterInFlight(r, sent, plan)


def _block_key(commands: list[tuple[Arg, ...]], start: int) -> bytes | None:
    """Return the first key inside the MULTI block that begins at ``start``."""
    for args in commands[start + 1 :]:
        if _text(args[0]).upper() in ("EXEC", "DISCARD"):
            return None
        key = first_key(args)
        if key is not None:
            return key
    return None


class ClusterInFlight:
    """A cluster batch sent to its nodes whose replies are not read yet."""

    __slots__ = ("_r", "_sent", "_plan")

    def __init__(self, r: RedisCluster, sent: list[tuple[_Route, Any, Any]], plan: list) -> None:
        self._r, self._sent, self._plan = r, sent, plan

    def wait(self) -> list[Any]:
        """Return the replies in command order (raising the first error after all are read)."""
        sent, self._sent = self._sent, []
        if not sent:
            return []
        by_route: dict[int, list[Any]] = {}
        failure: BaseException | None = None
        for to, pool, conn in sent:  # every node's replies read, even after one failed
            try:
                by_route[id(to)] = read_replies(conn, to.count)
            except BaseException as exc:
                conn.disconnect()
                failure = failure or exc
            finally:
                pool.release(conn)
        if failure is not None:
            if isinstance(failure, OSError):
                raise redis.ConnectionError(f"Redis Cluster connection lost: {failure}")
            raise failure
        replies = [self._build(kind, parts, by_route) for kind, parts in self._plan]
        for reply in _flat_errors(replies):
            if is_redirect(reply):
                self._r.nodes_manager.initialize()  # slots moved: learn the new map
            raise reply
        return replies

    @staticmethod
    def _build(kind: str, parts: list[tuple[_Route, int]], by_route: dict[int, list]) -> Any:
        got = [by_route[id(to)][pos] for to, pos in parts]
        if kind == "one":
            return got[0]
        errors = [g for g in got if isinstance(g, redis.ResponseError)]
        if errors:
            return errors[0]
        if kind == "first":  # MSET's one OK
            return got[0] if got else "OK"
        return got if kind == "list" else sum(got)


def _flat_errors(replies: list[Any]) -> list[redis.ResponseError]:
    return [r for r in replies if isinstance(r, redis.ResponseError)]
