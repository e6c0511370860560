"""Gunicorn at dmp's edge: its request class, workers and logger.

Gunicorn refuses some requests before any application sees them and answers its own HTML
page. The pixel must always answer its GIF, and dmp's APIs answer problem+json, so
``dmp serve`` runs gunicorn with:

- :class:`EdgeRequest`, gunicorn's HTTP/1 request that on the pixel's path reads raw bytes
  in the target (percent-encoded, as a browser sends them) and control characters in
  header values (as spaces), and that tells the path of a request it refuses;
- :class:`SyncWorker` and :class:`ThreadWorker`, gunicorn's workers answering what is
  still refused: the GIF on the pixel's path (counted as bad_input), problem+json elsewhere;
- :class:`RedactingLogger`, gunicorn's logger, no line of which carries a key or a full IP.

These subclass gunicorn's internals (``http.message.Request``, ``RequestParser.mesg_class``,
``Worker.handle_error``), read in the versions of :data:`TESTED_GUNICORN` (pinned in
pyproject.toml); tests/serve/test_edge.py says so when a gunicorn changes them.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from gunicorn import glogging
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.workers import gthread, sync

from collectors import pixel
from collectors.enrichment import truncate_ip
from dmp.access.apikeys import Scope, key_prefix
from dmp.access.sites import WRITE_KEY_PREFIX
from dmp.web.problems import problem_response

TESTED_GUNICORN = ((27, 0), (28, 0))  # [from, to) of gunicorn.version_info; see pyproject.toml

LIMIT_REQUEST_LINE = 8190  # gunicorn's most; a longer pixel line gets the GIF, unstored
LIMIT_REQUEST_FIELD_SIZE = 32768  # the Cookie header of a site with many cookies fits
LIMIT_REQUEST_FIELDS = 100  # gunicorn's default: browsers send about twenty

_HEAD_BYTES = 512  # of a refused request, read for its path
_NOT_IN_TARGET = re.compile(rb"[^\x21-\x7e]")  # RFC 3986: what must be percent-encoded
# RFC 9110 5.5 keeps these out of header values. CR and LF stay refused: a proxy in front
# may end a line there, and then it and gunicorn would not read the same headers.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAMING = (b"content-length", b"transfer-encoding")  # never guessed at: refused as sent
_LOGGED_ERROR_CHARS = 300


def gunicorn_options(threads: int) -> dict[str, Any]:
    """Return the gunicorn settings of dmp's edge: worker and logger classes, parser, limits."""
    return {
        "worker_class": ThreadWorker if threads > 1 else SyncWorker,
        # Threaded web processes keep connections alive: each listens on a socket of its
        # own (dmp.serve.sockets), given by slot (these hooks; a sync process shares one).
        "pre_fork": give_socket_slot,
        "post_fork": listen_on_slot,
        "nworkers_changed": keep_a_process_per_socket,
        "logger_class": RedactingLogger,
        "http_parser": "python",  # EdgeRequest extends the Python parser, not gunicorn_h1c
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
    }


def give_socket_slot(arbiter: Any, worker: Any) -> None:
    """Gunicorn's ``pre_fork`` (in the master): give a web process about to start the
    listening socket that the fewest live web processes have (the one a dead process
    left), when there is one socket per process (dmp.serve.sockets)."""
    if len(arbiter.LISTENERS) > 1:
        held = Counter(getattr(w, "socket_slot", None) for w in arbiter.WORKERS.values())
        worker.socket_slot = min(range(len(arbiter.LISTENERS)), key=lambda i: (held[i], i))


def listen_on_slot(arbiter: Any, worker: Any) -> None:
    """Gunicorn's ``post_fork`` (in the new web process): listen on its socket only, and
    close this process's copies of the others (they close when their own processes
    stop, not when the slowest one does)."""
    slot = getattr(worker, "socket_slot", None)
    if slot is not None:
        worker.sockets = [arbiter.LISTENERS[slot]]
        for i, listener in enumerate(arbiter.LISTENERS):
            if i != slot:
                listener.close()


def keep_a_process_per_socket(arbiter: Any, new: int, old: int | None) -> None:
    """Gunicorn's ``nworkers_changed``: refuse fewer web processes than sockets (a
    ``SIGTTOU``), which would leave a socket the kernel gives connections to and no one
    accepts from."""
    sockets = len(arbiter.LISTENERS)
    if sockets > 1 and old is not None and new < sockets:
        arbiter._num_workers = old  # gunicorn's own field (TESTED_GUNICORN)
        arbiter.log.warning(
            "dmp serve keeps %d web processes, one per listening socket (--workers)", old
        )


class EdgeRequest(Request):
    """Gunicorn's HTTP/1 request, lenient on the pixel's path; a refusal names its path."""

    def __init__(self, cfg: Any, unreader: Any, peer_addr: Any, req_number: int = 1) -> None:
        self._recorder: _HeadRecorder | None = None
        try:
            super().__init__(cfg, unreader, peer_addr, req_number)
        except ParseException as exc:
            head = self._recorder.head if self._recorder else b""
            exc.refused_path = self.path or _path_of(head)  # type: ignore[attr-defined]
            raise

    def parse(self, unreader: Any) -> bytes:
        """Parse as gunicorn does, keeping the first bytes read for a refusal."""
        self._recorder = _HeadRecorder(unreader)
        return super().parse(self._recorder)

    def parse_request_line(self, line_bytes: bytes) -> None:
        """Parse the request line; a pixel target's raw bytes are percent-encoded first."""
        method, _, rest = line_bytes.partition(b" ")
        target, _, version = rest.rpartition(b" ")  # a raw space stays in the target
        if _target_path(target) == pixel.PATH:
            target = _NOT_IN_TARGET.sub(lambda m: b"%%%02X" % m[0][0], target)
            line_bytes = b" ".join((method, target, version))
        super().parse_request_line(line_bytes)

    def parse_headers(self, data: bytes, from_trailer: bool = False) -> list[tuple[str, str]]:
        """Parse header fields; in a pixel request's, control characters become spaces."""
        if self.path == pixel.PATH and not from_trailer and _CONTROL.search(data):
            data = b"\r\n".join(
                line if line.lower().startswith(_FRAMING) else _CONTROL.sub(b" ", line)
                for line in data.split(b"\r\n")
            )
        return super().parse_headers(data, from_trailer)


class _HeadRecorder:
    """A gunicorn unreader that remembers the first bytes read through it."""

    def __init__(self, unreader: Any) -> None:
        self._unreader = unreader
        self.head = b""

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        """Return what gunicorn's reader gives, keeping the request's first bytes."""
        data = self._unreader.read(*args, **kwargs)
        if len(self.head) < _HEAD_BYTES:
            self.head += data[: _HEAD_BYTES - len(self.head)]
        return data

    def unread(self, data: bytes) -> None:
        """Give bytes back to gunicorn's reader."""
        self._unreader.unread(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unreader, name)


def _path_of(head: bytes) -> str:
    """Return the path of the request line that ``head`` starts with ('' if none)."""
    _, _, rest = head.lstrip(b"\r\n").split(b"\r\n", 1)[0].partition(b" ")
    return _target_path(rest.split(b" ", 1)[0])


def _target_path(target: bytes) -> str:
    try:
        return urlsplit(target.decode("latin-1")).path
    except ValueError:  # e.g. an absolute-form target with a bad IPv6 host
        return ""


_REFUSALS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...] = (
    ((InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem), 500, ""),
    (LimitRequestLine, 414, f"the request line is longer than {LIMIT_REQUEST_LINE} bytes"),
    (LimitRequestHeaders, 431, "too many header fields, or one too large"),
    (UnsupportedTransferCoding, 501, "unsupported transfer coding"),
    (ExpectationFailed, 417, "only 100-continue is understood"),
    ((ForbiddenProxyRequest, ssl.SSLError), 403, "not allowed from this address"),
    (ParseException, 400, "the request is not valid HTTP/1.1"),
)


def _refusal(exc: BaseException) -> tuple[int, str]:
    """Return the status and problem detail gunicorn's refusal of ``exc`` stands for."""
    for kinds, status, detail in _REFUSALS:
        if isinstance(exc, kinds):
            return status, detail
    return 500, ""


class _EdgeWorker:
    """What dmp's workers add to gunicorn's: EdgeRequest, and their own error answers."""

    log: Any
    wsgi: Any

    def init_process(self) -> None:
        """Install dmp's request class in this worker process, then start serving."""
        # Gunicorn has no setting for its request class; this process serves dmp alone.
        RequestParser.mesg_class = EdgeRequest
        super().init_process()  # type: ignore[misc]

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer a request gunicorn refused or failed: the GIF for the pixel, else a problem."""
        path = getattr(exc, "refused_path", None) or getattr(req, "path", None) or ""
        status, detail = _refusal(exc)
        if status >= 500:
            self.log.exception("Error handling request %s", path or "(no path read)")
        else:
            ip = truncate_ip(addr[0]) if isinstance(addr, tuple) and addr else ""
            self.log.warning(
                "Invalid request from ip=%s: %s", ip or "-", str(exc)[:_LOGGED_ERROR_CHARS]
            )
        if path == pixel.PATH:
            self._count_pixel("bad_input" if status < 500 else "error")
            answer = _http_answer(200, pixel.HEADERS, pixel.GIF)
        else:
            problem = problem_response(status, HTTPStatus(status).phrase, detail)
            answer = _http_answer(status, problem.headers.items(), problem.get_data())
        try:
            client.sendall(answer)
        except OSError:
            self.log.debug("Failed to send the answer to a refused request.")

    def _count_pixel(self, outcome: str) -> None:
        deps = getattr(self.wsgi, "extensions", {}).get("dmp")  # the Flask app's (dmp.app)
        if deps is not None:
            deps.appender.count(pixel.COUNTERS[outcome])  # the pixel's own counters


def _http_answer(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1") + body


class SyncWorker(_EdgeWorker, sync.SyncWorker):
    """Gunicorn's sync worker (one thread per process) at dmp's edge."""


class ThreadWorker(_EdgeWorker, gthread.ThreadWorker):
    """Gunicorn's threaded worker at dmp's edge."""


# Key prefixes as sites.add_site (write keys) and apikeys.create_key issue them.
_KEY_PREFIXES = "|".join(
    p.rstrip("_") for p in (WRITE_KEY_PREFIX, *(key_prefix(scope) for scope in Scope))
)
_SECRETS = (
    # Authorization values first: a Basic one is base64, no prefix shows it is a key.
    (
        re.compile(
            r"(?i)(authorization(?:['\"]?\s*[:=,]\s*['\"]?|\s+(?=(?:basic|bearer|token)\s))"
            r"(?:(?:basic|bearer|token)\s+)?)[^\s'\",;\\]+"
        ),
        r"\1[redacted]",
    ),
    (re.compile(rf"\b({_KEY_PREFIXES})_[A-Za-z0-9_-]+"), r"\1_[redacted]"),
    (re.compile(r"(?<=[?&;])k=[^&#\s'\"\\]+"), "k=[redacted]"),
)
# IPv6 before IPv4 (``::ffff:10.1.2.3``); a URL's host (the server's own) is left alone.
_IPV6 = re.compile(
    r"(?<![\w:.\[])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![\w:.])"
)
_IPV4 = re.compile(r"(?<![\w.])(?<!://)\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")


def redact(text: str) -> str:
    """Return ``text`` with keys and their Authorization values redacted, IPs truncated."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    for pattern in (_IPV6, _IPV4):
        text = pattern.sub(lambda m: truncate_ip(m[0]) or m[0], text)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter that redacts the lines another formatter writes."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """Return the inner formatter's line (traceback included), redacted."""
        return redact(self.inner.format(record))


class RedactingLogger(glogging.Logger):
    """Gunicorn's logger whose lines, and dmp's own in the serve processes, are redacted."""

    def setup(self, cfg: Any) -> None:
        """Set gunicorn's handlers up, then redact what they and the root logger's write."""
        super().setup(cfg)
        for log in (self.error_log, self.access_log, logging.getLogger()):
            for handler in log.handlers:
                if not isinstance(handler.formatter, RedactingFormatter):
                    handler.setFormatter(RedactingFormatter(handler.formatter))
