"""The web server's edge: what gunicorn refuses still gets the GIF or problem+json, and
no log line carries a key or a full client IP."""

from __future__ import annotations

import contextlib
import inspect
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gunicorn
import polars as pl
import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.http.errors import InvalidHeader, InvalidRequestLine
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.workers.base import Worker

from collectors.pixel import GIF
from dmp.serve import edge
from tests.factories import read_metric
from tests.served import free_port, serve_env

ADMIN_KEY = "dmp_ad_" + "Q" * 32  # shaped like an admin key: it must not reach the log


class Served:
    """A running `dmp serve`: its port, data dir, write key and stderr log file."""

    def __init__(self, port: int, data_dir: Path, key: str, log: Path) -> None:
        self.port, self.data_dir, self.key, self.log = port, data_dir, key, log

    def send(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send raw bytes on a new connection; return the answer's status, headers, body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            try:
                sock.sendall(raw)
            except OSError:
                pass  # the server may answer and close before it read everything
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body

    def pixel(self, query: bytes, *headers: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send a pixel hit with these raw query bytes (after ``k=<key>&``) and headers."""
        target = b"/p.gif?k=" + self.key.encode() + b"&consent=analytics&" + query
        return self.send(_request(target, *headers))

    def stored_urls(self, expected: set[str], timeout: float = 20) -> set[str]:
        """Return the event log's URLs once all ``expected`` are there (or at the timeout)."""
        deadline, urls = time.monotonic() + timeout, set()
        while time.monotonic() < deadline:
            files = list((self.data_dir / "events").glob("*/*.parquet"))
            if files:
                urls = set(pl.concat([pl.read_parquet(f, columns=["url"]) for f in files])["url"])
                if expected <= urls:
                    break
            time.sleep(0.3)
        return urls

    def counter(self, outcome: str) -> float:
        """Return dmp_hits_total for the pixel and this outcome, from /metrics."""
        _, _, body = self.send(_request(b"/metrics"))
        found = read_metric(body.decode(), "dmp_hits_total", collector="pixel", outcome=outcome)
        return found or 0


def _request(target: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: acme.de", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _start(data_dir: Path, log: Path, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "dmp", "serve", "--port", str(port), "--workers", "1"]
    # A free port of their own for the lookup processes: the default (PORT+1) may be
    # another test's, and the warning it gives names 127.0.0.1, which the logs' test
    # below would take for a client's address.
    cmd += ["--lookup-port", str(free_port())]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*cmd, "--threads", str(threads)], env=serve_env(data_dir), stdout=err, stderr=err
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not listening yet
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(_request(b"/healthz"))
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"dmp serve did not start:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # stops the embedded Redis with it
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Run one `dmp serve` (threaded workers) for the module, with a site and its key."""
    tmp = tmp_path_factory.mktemp("webserver")
    data_dir, log = tmp / "data", tmp / "serve.log"
    proc, port = _start(data_dir, log, threads=2)
    added = subprocess.run(
        [sys.executable, "-m", "dmp", "sites", "add", "Acme", "--domain", "acme.de"],
        env=serve_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    yield Served(port, data_dir, added.stdout.strip().splitlines()[-1], log)
    _stop(proc)


def _marker() -> str:
    return uuid.uuid4().hex[:12]


def _assert_gif(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    assert (status, headers["content-type"], body) == (200, "image/gif", GIF)


def test_the_pixel_stores_hits_gunicorn_alone_would_refuse(served: Served):
    """Raw UTF-8 and non-UTF-8 bytes, a space in the query, a NUL in the cookie and a
    20 KB cookie get the GIF and are stored (bad bytes as U+FFFD)."""
    m = [_marker() for _ in range(5)]
    answers = [
        served.pixel(f"url=https://acme.de/{m[0]}-caf".encode() + b"\xc3\xa9"),
        served.pixel(f"url=https://acme.de/{m[1]}-".encode() + b"\xff\xfe"),
        served.pixel(f"url=https://acme.de/{m[2]}-a b".encode()),
        served.pixel(f"url=https://acme.de/{m[3]}".encode(), b"Cookie: dmp_uid=abc\x00def; x=1"),
        served.pixel(f"url=https://acme.de/{m[4]}".encode(), b"Cookie: big=" + b"x" * 20_000),
    ]
    for answer in answers:
        _assert_gif(answer)
    expected = {
        f"https://acme.de/{m[0]}-café",
        f"https://acme.de/{m[1]}-\ufffd\ufffd",
        f"https://acme.de/{m[2]}-a b",
        f"https://acme.de/{m[3]}",
        f"https://acme.de/{m[4]}",
    }
    assert expected <= served.stored_urls(expected)


def test_the_pixel_answers_the_gif_to_requests_too_large_to_store(served: Served):
    """A request line over 8,190 bytes, a 64 KB cookie, 150 headers and a bad header name
    get the GIF, are counted as bad_input, and the server then stores a good hit."""
    time.sleep(1.2)  # counts of earlier tests reach Redis within a second
    before = served.counter("bad_input")
    refused = [
        served.pixel(b"url=https://acme.de/" + b"x" * 9000),
        served.pixel(b"url=https://acme.de/big-cookie", b"Cookie: big=" + b"x" * 65_536),
        served.pixel(b"url=https://acme.de/many", *(b"X-H%d: 1" % i for i in range(150))),
        served.pixel(b"url=https://acme.de/badname", b"Bad Name: 1"),
    ]
    for answer in refused:
        _assert_gif(answer)
        assert answer[1]["connection"] == "close"
    deadline = time.monotonic() + 15
    while served.counter("bad_input") < before + len(refused) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert served.counter("bad_input") == before + len(refused)
    good = f"https://acme.de/{_marker()}"
    _assert_gif(served.pixel(b"url=" + good.encode()))
    assert good in served.stored_urls({good})


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (_request(b"/api/v1/persons?x=" + b"x" * 9000), 414),
        (_request(b"/api/v1/persons", *(b"X-H%d: 1" % i for i in range(150))), 431),
        (_request(b"/api/v1/persons", b"Cookie: big=" + b"x" * 65_536), 431),
        (_request(b"/v1/track", b"X-Note: a\x00b"), 400),
        (_request(b"/api/v1/persons?q=\xff"), 400),
    ],
    ids=["long-line", "150-headers", "64kb-header", "nul-header", "raw-byte-query"],
)
def test_other_paths_answer_problem_json_to_what_gunicorn_refuses(served, raw, status):
    """Beyond the pixel, what gunicorn refuses is answered as problem+json, not HTML."""
    got, headers, body = served.send(raw)
    assert (got, headers["content-type"]) == (status, "application/problem+json")
    assert json.loads(body)["status"] == status


def test_no_log_line_carries_a_key_or_a_full_client_ip(served: Served):
    """Refused requests whose logged lines carry the write key, an admin key and a client
    IP are logged as warnings with ``ip=127.0.0.0``, no key and the IP truncated."""
    key = served.key.encode()
    served.send(_request(b"/v1/track?k=" + key + b"&x=\xff"))
    served.send(_request(b"/p.gif\xff?k=" + key))
    served.send(_request(b"/api/v1/persons", b"Authorization Bearer " + ADMIN_KEY.encode()))
    served.pixel(b"url=https://acme.de/ip", b"X-Forwarded-For 203.0.113.7")
    time.sleep(0.5)
    log = served.log.read_text(errors="replace")
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert any("ip=127.0.0.0" in w and "/v1/track?k=" in w for w in warnings), log
    assert any("/p.gif" in w and "?k=" in w for w in warnings), log
    assert any("Authorization Bearer" in w for w in warnings), log
    assert any("X-Forwarded-For 203.0.113.0" in w for w in warnings), log
    assert served.key not in log and served.key.removeprefix("wk_") not in log
    assert ADMIN_KEY.removeprefix("dmp_ad_") not in log
    assert "203.0.113.7" not in log
    assert not [w for w in warnings if "127.0.0.1" in w]


def test_the_sync_worker_answers_the_gif_too(tmp_path: Path):
    """With one thread per process (gunicorn's sync worker) the pixel still answers the
    GIF to a line over 8,190 bytes and to a NUL in its cookie."""
    proc, port = _start(tmp_path / "data", tmp_path / "serve.log", threads=1)
    try:
        served = Served(port, tmp_path / "data", "wk_none", tmp_path / "serve.log")
        _assert_gif(served.pixel(b"url=https://acme.de/" + b"x" * 9000))
        _assert_gif(served.pixel(b"url=https://acme.de/a", b"Cookie: dmp_uid=a\x00b"))
        status, headers, _ = served.send(_request(b"/healthz?x=" + b"x" * 9000))
        assert (status, headers["content-type"]) == (414, "application/problem+json")
    finally:
        _stop(proc)


def _parse(raw: bytes, mesg_class: type[Request]) -> Request:
    cfg = GunicornConfig()
    cfg.set("http_parser", "python")
    parser = RequestParser(cfg, iter([raw]), ("203.0.113.7", 4242))
    parser.mesg_class = mesg_class
    return next(parser)


def test_gunicorn_is_a_version_dmp_webserver_was_tested_with():
    """dmp.serve.edge subclasses gunicorn's parser and workers: a new gunicorn is re-checked,
    and the hooks it overrides are still there with the arguments it passes."""
    assert edge.TESTED_GUNICORN[0] <= gunicorn.version_info < edge.TESTED_GUNICORN[1], (
        f"gunicorn {gunicorn.__version__} is outside the range dmp.serve.edge was tested "
        f"with ({edge.TESTED_GUNICORN}): re-read gunicorn's http/message.py and "
        "workers/base.py handle_error, run tests/serve/test_edge.py, then move the range "
        "in dmp/serve/edge.py and pyproject.toml"
    )
    hooks = {
        Request.__init__: ["self", "cfg", "unreader", "peer_addr", "req_number"],
        Request.parse: ["self", "unreader"],
        Request.parse_request_line: ["self", "line_bytes"],
        Request.parse_headers: ["self", "data", "from_trailer"],
        Worker.handle_error: ["self", "req", "client", "addr", "exc"],
        Worker.init_process: ["self"],
    }
    for hook, params in hooks.items():
        assert list(inspect.signature(hook).parameters) == params, hook.__qualname__
    assert RequestParser.mesg_class is Request  # the class dmp's workers replace


def test_the_edge_request_reads_what_gunicorn_refuses_on_the_pixel_path_only():
    """Gunicorn refuses raw bytes in a target and a NUL in a header; dmp's request reads
    them on /p.gif (bytes percent-encoded, NUL as a space) and refuses them elsewhere, and
    a bare CR or a control character in a framing header everywhere."""
    raw = b"GET /p.gif?k=a&u=\xc3\xa9\xff b HTTP/1.1\r\nHost: x\r\nCookie: a\x00b\r\n\r\n"
    with pytest.raises(InvalidRequestLine):  # if not, gunicorn changed: re-check webserver
        _parse(raw, Request)
    with pytest.raises(InvalidHeader):
        _parse(raw.replace(b"\xc3\xa9\xff b", b"x"), Request)
    req = _parse(raw, edge.EdgeRequest)
    assert (req.path, req.query) == ("/p.gif", "k=a&u=%C3%A9%FF%20b")
    assert ("COOKIE", "a b") in req.headers
    with pytest.raises(InvalidRequestLine):
        _parse(raw.replace(b"/p.gif", b"/v1/track"), edge.EdgeRequest)
    with pytest.raises(InvalidHeader):
        _parse(raw.replace(b"/p.gif?k=a&u=\xc3\xa9\xff b", b"/v1/track"), edge.EdgeRequest)
    for framing in (b"Cookie: a\rb", b"Content-Length: 0\x00", b"Transfer-Encoding: \x00"):
        with pytest.raises(InvalidHeader):  # where a proxy may read it otherwise: refused
            _parse(raw.replace(b"Cookie: a\x00b", framing), edge.EdgeRequest)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Invalid request from ip=203.0.113.7: x", "Invalid request from ip=203.0.113.0: x"),
        ("from 2001:db8::1234:5678 via ::ffff:10.1.2.3", "from 2001:db8:: via 10.1.2.0"),
        ("'GET /p.gif?k=abc123&url=x'", "'GET /p.gif?k=[redacted]&url=x'"),
        ("key wk_AbC-12_x, dmp_pa_Zz9-", "key wk_[redacted], dmp_pa_[redacted]"),
        ("'Authorization: Basic d2tfeHl6Og=='", "'Authorization: Basic [redacted]'"),
        ("('AUTHORIZATION', 'Bearer abc')", "('AUTHORIZATION', 'Bearer [redacted]')"),
        ("'HTTP_AUTHORIZATION': 'abc'", "'HTTP_AUTHORIZATION': '[redacted]'"),
        ("'Authorization Basic d2tfeHl6Og=='", "'Authorization Basic [redacted]'"),
        ('get("Authorization") or ""', 'get("Authorization") or ""'),
        ("Listening at: http://127.0.0.1:8000 (7)", "Listening at: http://127.0.0.1:8000 (7)"),
        ("05:11:14,123 gunicorn 27.0.1 dmp_uid=x", "05:11:14,123 gunicorn 27.0.1 dmp_uid=x"),
    ],
)
def test_redact_hides_keys_and_truncates_ips(line, expected):
    """Keys, ``k=`` values and Authorization values are redacted; IPs truncated as the
    collectors truncate them; a server's own URL and timestamps are left alone."""
    assert edge.redact(line) == expected
