"""Lookup processes: the partner lookup on a port of its own, at the floor of the stack.

An ad tool asks ``GET /api/v1/lookup`` on every bid, within a budget of a few
milliseconds. Gunicorn's threaded workers, which serve the pixel, the tag and the APIs,
parse every request in Python and hand it between threads under one GIL: at 2,000
requests/s on two cores their p99 is tens of milliseconds, ``/healthz``'s too
(BENCHMARKS.md, "Lookup latency"). So ``dmp serve`` also starts processes of their own
for lookups (``--lookup-port``, ``--lookup-processes``; ``dmp lookups`` runs one alone):
each a single-threaded asyncio loop that reads HTTP/1.1 itself (keep-alive, no request
bodies) and answers with the main port's code (:func:`dmp.web.lookup.answer`). They
share their port (SO_REUSEPORT): the kernel spreads the connections among them.

They answer ``GET`` and ``HEAD`` of the lookup and of ``/healthz``, and refuse the rest
as problem+json: 404 for another path, 405 for another method, 400 for a request that is
not HTTP/1.x, carries a body, lacks HTTP/1.1's Host, or could be read otherwise by a
proxy in front (a bare CR or LF, NUL, a repeated Content-Length or Host), 505 for another
HTTP version, 431 for a head over :data:`MAX_HEAD` bytes. A connection idle for
:data:`IDLE_SECONDS`, or one sending far ahead of the answers it reads, is cut off.

Redis is asked with a :data:`REDIS_SECONDS` timeout, and after a failure every lookup is
a 503 at once for :data:`BREAK_SECONDS`: a process answers one request at a time, so a
Redis away or stalled must not make each wait its timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from http import HTTPStatus

import redis
from werkzeug.datastructures import Authorization

from dmp.config import Config
from dmp.web import lookup
from dmp.web.auth import bearer_token
from dmp.web.ops import health
from dmp.web.problems import PRIVATE, Problem, unavailable

log = logging.getLogger(__name__)

MAX_HEAD = 16_384  # bytes of a request's line and headers: a lookup needs a few hundred
MAX_FIELDS = 100
IDLE_SECONDS = 30.0  # a kept-alive connection without a new request is closed
HEALTH_PATH = "/healthz"
_METHOD = re.compile(r"[A-Z]{1,16}")
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form, visible ASCII (RFC 9112 3.2.1)
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_JSON = [("Content-Type", "application/json"), *PRIVATE.items()]
_NOT_IN_VALUE = re.compile(r"[\r\n\x00]")  # a bare CR or LF, or NUL: refused, never read around
_ONCE = {"content-length", "transfer-encoding", "host", "authorization"}
REDIS_SECONDS = 0.5  # a lookup's Redis calls: an ad tool's budget, not the 5 s of others
BREAK_SECONDS = 1.0  # after Redis failed a lookup, answer 503 at once this long
MAX_BUFFER = 4 * MAX_HEAD  # bytes a client may send ahead of the answers it reads
STOP_SECONDS = 5.0  # a stopping process waits this long for answers under way


@dataclass(frozen=True, slots=True)
class Request:
    """A request's head, as far as the lookup processes read it."""

    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names, first wins

    def keeps_alive(self) -> bool:
        """Whether the connection stays open after the answer (HTTP/1.1 unless closed)."""
        said = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return said == "keep-alive"
        return "close" not in said


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: status, headers (no Content-Length or Connection: added when sent)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def encode(self, *, body: bool, close: bool, keep_alive: bool = False) -> bytes:
        """Return the answer as HTTP/1.1 bytes (without the body for HEAD; ``keep_alive``
        says so to an HTTP/1.0 client that asked)."""
        lines = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}"]
        lines += [
            f"{name}: {value}"
            for name, value in self.headers
            if name.lower() not in ("content-length", "connection")
        ]
        lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        elif keep_alive:
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + self.body if body else head


def refusal(status: int, title: str, detail: str, **headers: str) -> Reply:
    """Return a problem+json answer (as dmp.web.problems words it)."""
    return Reply(*lookup.problem_answer(Problem(status, title, detail, headers=headers)))


def health_reply(body: dict, status: int) -> Reply:
    """Return /healthz's answer (``dmp.web.ops.health``)."""
    return Reply(status, _JSON, json.dumps(body).encode())


class Refused(Exception):
    """A request read no further: the answer, after which the connection is closed."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def parse_head(head: bytes) -> Request:
    """Return the request of a head (its line and header fields, through the blank line),
    or raise Refused."""
    text = head.decode("latin-1")
    line, *fields = text[:-4].split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise Refused(refusal(400, "Bad request", "not an HTTP/1.x request line"))
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Refused(refusal(505, "HTTP version not supported", "speak HTTP/1.1"))
    if len(fields) > MAX_FIELDS:
        raise Refused(refusal(431, "Request header fields too large", "too many header fields"))
    headers: dict[str, str] = {}
    for item in fields:
        name, colon, value = item.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name) or _NOT_IN_VALUE.search(value):
            raise Refused(refusal(400, "Bad request", "a header field is malformed"))
        if name.lower() in headers and name.lower() in _ONCE:
            # Two of these could be read differently by a proxy in front (smuggling).
            raise Refused(refusal(400, "Bad request", f"{name} given twice"))
        headers.setdefault(name.lower(), value.strip(" \t"))
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise Refused(refusal(400, "Bad request", "a lookup takes no request body"))
    if version == "HTTP/1.1" and "host" not in headers:
        raise Refused(refusal(400, "Bad request", "an HTTP/1.1 request needs a Host"))
    path, _, query = target.partition("?")
    return Request(method, path, query, version, headers)


class LookupServer:
    """One lookup process's answers: the lookup and /healthz over one Redis client."""

    def __init__(self, r: redis.Redis, config: Config) -> None:
        self.r, self.config = r, config
        self.catalogue = lookup.Catalogue()
        self.broken_until = 0.0  # monotonic: Redis failed; 503 without asking it until then

    def respond(self, request: Request) -> Reply:
        """Return the answer to a parsed request."""
        if request.path not in (lookup.PATH, HEALTH_PATH):
            return refusal(404, "Not found", f"the lookup processes answer {lookup.PATH} only")
        if request.method not in ("GET", "HEAD"):
            return refusal(405, "Method not allowed", "GET or HEAD", Allow="GET, HEAD")
        if time.monotonic() < self.broken_until:
            # Every request waits for the one under way (one thread): a Redis away or slow
            # must cost each a fast 503, not its timeout.
            if request.path == HEALTH_PATH:
                return health_reply({"status": "unavailable", "redis": "failed a moment ago"}, 503)
            return Reply(*lookup.problem_answer(unavailable()))
        reply = self._answer(request)
        if reply.status == 503:
            self.broken_until = time.monotonic() + BREAK_SECONDS
        return reply

    def _answer(self, request: Request) -> Reply:
        if request.path == HEALTH_PATH:
            return health_reply(*health(self.r))
        token = bearer_token(Authorization.from_header(request.headers.get("authorization")))
        answer = lookup.answer(
            self.r,
            self.config,
            self.catalogue,
            token,
            request.query,
            request.headers.get("host", ""),
        )
        return Reply(answer.status, answer.headers, answer.body)


class Connection(asyncio.Protocol):
    """One client connection: its requests answered in turn as their heads arrive
    (callbacks, no task per request: a lookup costs the loop tens of microseconds).

    While the client does not read its answers (the transport's buffer is full) no more
    requests are answered, and one that sends more than MAX_BUFFER bytes meanwhile is
    cut off; so is one idle for IDLE_SECONDS (its unsent answers dropped).
    """

    def __init__(self, server: LookupServer, open_: set[Connection]) -> None:
        self.server = server
        self.open = open_  # every open connection of the process, for its stop
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._answer_whole_heads()
        if len(self.buffer) > MAX_BUFFER:
            self.abort()  # far ahead of the answers it reads

    def _answer_whole_heads(self) -> None:
        while self.transport is not None and not self.transport.is_closing() and not self.paused:
            while self.buffer[:2] == b"\r\n":  # RFC 9112 2.2: empty lines before a request
                del self.buffer[:2]
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(self.buffer) >= MAX_HEAD:
                    self._close_with(refusal(431, "Request header fields too large", "too long"))
                return  # the rest of the head is still to come
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            try:
                request = parse_head(head)
            except Refused as refused:
                self._close_with(refused.reply)
                return
            keep = request.keeps_alive()
            reply = self.server.respond(request)
            self.transport.write(
                reply.encode(
                    body=request.method != "HEAD",
                    close=not keep,
                    keep_alive=keep and request.version == "HTTP/1.0",
                )
            )
            if not keep:
                self.transport.close()
                return
            self._arm()

    def _close_with(self, reply: Reply) -> None:
        assert self.transport is not None
        self.transport.write(reply.encode(body=True, close=True))
        self.transport.close()

    def _arm(self) -> None:
        """(Re)start the idle timer: a connection without a whole request for
        IDLE_SECONDS is cut off (a head sent byte by byte included)."""
        if self.idle is not None:
            self.idle.cancel()
        if self.transport is not None:
            self.idle = asyncio.get_running_loop().call_later(IDLE_SECONDS, self.abort)

    def abort(self) -> None:
        """Close at once, dropping whatever answers the client has not read."""
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:  # the client does not read its answers
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._answer_whole_heads()  # those that came meanwhile

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.open.discard(self)
        self.transport = None


def run(server: LookupServer, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT; then answer no new connection, cut
    off the open ones after at most STOP_SECONDS and return."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        connections: set[Connection] = set()
        listening = await loop.create_server(lambda: Connection(server, connections), sock=sock)
        await stop.wait()
        listening.close()
        for connection in list(connections):
            connection.abort()
        try:
            await asyncio.wait_for(listening.wait_closed(), STOP_SECONDS)
        except TimeoutError:
            log.warning("lookups: stopped with connections still open")

    asyncio.run(main())
