"""Reading raw replies off a redis-py connection, and widening its send buffer: what
``dmp.storage.bulk`` (one server) and ``dmp.storage.clusterbulk`` (a cluster's nodes)
share. They read redis-py's private internals as pinned (``TESTED_REDIS_PY``)."""

from __future__ import annotations

import socket
from typing import Any

import hiredis
import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA


def read_replies(conn: Any, count: int) -> list[Any]:
    """Read ``count`` undecoded replies; error replies come back as exceptions.

    With redis-py's hiredis parser the replies are taken straight from its reader (a
    reply costs ~0.3 µs instead of ~3 µs through ``read_response``); otherwise, and for
    anything unusual in the stream (a push message), ``read_response`` does it.
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    replies: list[Any] = []
    if reader is not None and hasattr(parser, "read_from_socket"):
        gets, fill, missing = reader.gets, parser.read_from_socket, NOT_ENOUGH_DATA
        while len(replies) < count:
            reply = gets(False)
            if reply is missing:
                fill()
            elif isinstance(reply, redis.ConnectionError):
                raise reply
            elif _PUSH is not None and isinstance(reply, _PUSH):
                continue  # RESP3 out-of-band message: not an answer to our commands
            else:
                replies.append(reply)
        return replies
    for _ in range(count):
        try:
            replies.append(conn.read_response(disable_decoding=True))
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


_PUSH = getattr(hiredis, "PushNotification", None)


SEND_BUFFER = 4 * 1024 * 1024


def widen_send_buffer(conn: Any) -> None:
    """Let the kernel take a whole batch at once, so sending never waits for Redis to read.

    Linux caps the size at net.core.wmem_max; a batch beyond it still goes, just blocking.
    """
    sock = getattr(conn, "_sock", None)  # redis-py keeps the socket here while connected
    if sock is not None and getattr(conn, "_dmp_wide", None) is not sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        conn._dmp_wide = sock
