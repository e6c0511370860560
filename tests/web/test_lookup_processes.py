"""The lookup processes (`dmp lookups`, started by `dmp serve` on its lookup port): the
same answers as the web port's lookup, over keep-alive HTTP/1.1, and every malformed,
oversize or hostile request refused as problem+json while the process keeps serving."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.serve import lookups
from tests.factories import bearer
from tests.served import OwnRedis, free_port, serve_env, stop_process, wait_for
from tests.web.test_lookup import partner, people  # noqa: F401  (fixtures)


def _start(data_dir: Path, redis_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**serve_env(data_dir), "DMP_REDIS_URL": redis_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmp", "lookups", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: _answers(port) or proc.poll() is not None, 30, "dmp lookups to listen")
    assert proc.poll() is None, proc.stdout.read()
    return proc, port


def _answers(port: int) -> bool:
    try:
        return ask(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0] in (200, 503)
    except OSError:
        return False


@pytest.fixture(scope="module")
def port(redis_url: str, tmp_path_factory) -> Iterator[int]:
    """A `dmp lookups` process on the tests' Redis (each test's data flushed as usual)."""
    proc, port = _start(tmp_path_factory.mktemp("lookups"), redis_url)
    yield port
    stop_process(proc)


def read_answer(conn: socket.socket, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer (Content-Length framed; no body for a ``head`` request)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    size = int(headers["content-length"])
    while len(body) < size and not head:
        body += conn.recv(65536)
    return int(line.split(" ")[1]), headers, body


def ask(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes on a new connection; return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(raw)
        return read_answer(conn)


def lookup_request(key: str, query: str, *, method: str = "GET", extra: str = "") -> bytes:
    auth = bearer(key)["Authorization"]
    return (
        f"{method} /api/v1/lookup?{query} HTTP/1.1\r\nHost: dmp.acme.de:8001\r\n"
        f"Authorization: {auth}\r\n{extra}\r\n"
    ).encode()


def test_the_same_answers_as_the_web_port_on_one_kept_alive_connection(
    port,
    client,
    partner,  # noqa: F811
):
    """Consented, unconsented, unknown, hashed email, no key, bad parameter: each answer
    is the web port's, byte for byte, all asked over one connection."""
    hashed = hashlib.sha256(b"jana.roth@acme.de").hexdigest()
    queries = ["uid=c-ads", "uid=c-noads", "uid=nobody", f"email_sha256={hashed}", "uid=a%20b"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for query in queries:
            conn.sendall(lookup_request(partner, query))
            status, headers, body = read_answer(conn)
            web = client.get(
                f"/api/v1/lookup?{query}",
                headers={**bearer(partner), "Host": "dmp.acme.de:8001"},
            )
            assert (status, body) == (web.status_code, web.get_data()), query
            assert headers["content-type"] == web.headers["Content-Type"]
            assert headers["cache-control"] == "no-store"
        conn.sendall(lookup_request("dmp_partner_wrong", "uid=c-ads"))
        status, headers, body = read_answer(conn)
    assert status == 401 and headers["content-type"] == "application/problem+json"
    found = json.loads(ask(port, lookup_request(partner, "uid=c-ads"))[2])
    assert found["data"][0] == {
        "name": "dmp.acme.de",
        "segment": [{"id": "pricing"}, {"id": "product"}],
    }


def test_head_http10_and_health(port, partner):  # noqa: F811
    """HEAD answers the head alone; HTTP/1.0 closes after its answer; /healthz says ok."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(lookup_request(partner, "uid=c-ads", method="HEAD"))
        status, headers, body = read_answer(conn, head=True)
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        conn.sendall(lookup_request(partner, "uid=c-ads"))  # the same connection goes on
        assert read_answer(conn)[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, body = read_answer(conn)
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert headers["connection"] == "close" and conn.recv(10) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        # HTTP/1.0 asking to keep the connection, after an empty line (RFC 9112 2.2).
        conn.sendall(b"\r\nGET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_answer(conn)[1]["connection"] == "keep-alive"
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_answer(conn)[0] == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/v1/lookup?uid=a HTTP/2.0\r\n\r\n", 505),
        (b"GET /api/v1/lookup?uid=a HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET http://evil/api/v1/lookup HTTP/1.1\r\n\r\n", 400),
        (b"GET /api/v1/lookup?uid=\xff\xfe HTTP/1.1\r\n\r\n", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /api/v1/lookup HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
        (b"POST /api/v1/lookup HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 405),
        (b"GET /api/v1/persons HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        (b"GET /api/v1/lookup?uid=a&uid=b HTTP/1.1\r\nHost: t\r\n\r\n", 401),  # no key
        (b"GET /api/v1/lookup HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without a Host
        # What a proxy in front might read otherwise (request smuggling): refused.
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\nContent-Length: 5\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
            400,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ],
)
def test_bad_requests_are_problems_and_the_process_keeps_serving(port, partner, raw, status):  # noqa: F811
    """Malformed, oversize, wrong-method and hostile requests: a problem+json answer (the
    connection closed after a refusal of the request itself), then the next lookup is
    answered."""
    got, headers, body = ask(port, raw)
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == status
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    assert ask(port, lookup_request(partner, "uid=c-ads"))[0] == 200


def test_a_slow_or_silent_client_holds_up_no_one(port, partner):  # noqa: F811
    """A head sent in pieces is answered once whole; meanwhile other clients are."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        request = lookup_request(partner, "uid=c-ads")
        slow.sendall(request[:20])
        assert ask(port, lookup_request(partner, "uid=c-ads"))[0] == 200
        slow.sendall(request[20:])
        assert read_answer(slow)[0] == 200


def test_pipelined_requests_are_answered_in_order(port, partner):  # noqa: F811
    """Two requests sent at once get two answers, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(lookup_request(partner, "uid=c-ads") + lookup_request(partner, "uid=x"))
        first, second = read_answer(conn), read_answer(conn)
    assert json.loads(first[2])["data"] and json.loads(second[2]) == {"data": []}


def test_redis_away_is_503_and_health_says_so(tmp_path):
    """With Redis unreachable the process still answers: 503 problem+json, Retry-After."""
    proc, port = _start(tmp_path / "data", f"redis://127.0.0.1:{free_port()}/0")
    try:
        status, headers, body = ask(port, lookup_request("dmp_partner_x", "uid=a"))
        assert status == 503 and headers["retry-after"] == "5"
        assert headers["content-type"] == "application/problem+json"
        status, _, body = ask(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 503 and json.loads(body)["status"] == "unavailable"
    finally:
        stop_process(proc)


def test_a_taken_port_is_one_line_and_exit_2(tmp_path):
    """`dmp lookups` and `dmp serve --lookup-port` on a port another program holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        for args in (["lookups", "--port", str(taken)], ["serve", "--lookup-port", str(taken)]):
            assert f"cannot listen on 127.0.0.1:{taken}" in refused(args, tmp_path)


def refused(args: list[str], tmp_path: Path) -> str:
    """Run a `dmp` command that must exit 2; return the last line it said."""
    done = subprocess.run(
        [sys.executable, "-m", "dmp", *args],
        env=serve_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (args, done.stderr)
    return done.stderr.strip().splitlines()[-1]


def test_reply_encoding_frames_and_closes():
    """Content-Length is the body's, never a handler's; Connection: close when closing."""
    reply = lookups.Reply(200, [("Content-Length", "999"), ("X-A", "b")], b"{}")
    head = reply.encode(body=False, close=True).decode()
    assert "Content-Length: 2\r\n" in head and "999" not in head
    assert head.endswith("Connection: close\r\n\r\n")


def test_a_client_that_reads_no_answers_is_cut_off(port, partner):  # noqa: F811
    """Pipelined requests without reading the answers: once its answers back up, the
    process stops answering it and cuts it off when it sends on; others are answered."""
    spam = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 100
    with socket.socket() as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.settimeout(5)
        greedy.connect(("127.0.0.1", port))
        with pytest.raises(OSError):  # reset (or its send buffer full: the timeout)
            for _ in range(20_000):
                greedy.sendall(spam)
        assert ask(port, lookup_request(partner, "uid=c-ads"))[0] == 200


def test_a_hung_redis_costs_lookups_a_fast_503(tmp_path, partner):  # noqa: F811
    """Redis stopped (SIGSTOP): the first lookup waits REDIS_SECONDS, the next ones are
    503 at once for BREAK_SECONDS, then lookups are asked again and answered."""
    own = OwnRedis(tmp_path / "redis")
    proc, port = _start(tmp_path / "data", own.url)
    try:
        assert ask(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        with own.hung():
            started = time.monotonic()
            status, headers, _ = ask(port, lookup_request(partner, "uid=c-ads"))
            first = time.monotonic() - started
            assert status == 503 and headers["retry-after"] == "5"
            started = time.monotonic()
            for _ in range(20):
                assert ask(port, lookup_request(partner, "uid=c-ads"))[0] == 503
            assert time.monotonic() - started < first  # not one wait each
        wait_for(
            lambda: ask(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200,
            10,
            "the lookup process to ask Redis again",
        )
    finally:
        stop_process(proc)
        own.stop()


def test_the_port_is_not_shared_with_strangers(port, redis_url, tmp_path):
    """A port a lookup process holds is refused to `dmp serve --lookup-port` and to a
    `dmp lookups`, with or without --reuse-port (it did not offer to share); one that
    offers to share is still refused to `dmp serve`, which wants its port to itself."""
    sharing = subprocess.Popen(
        [sys.executable, "-m", "dmp", "lookups", "--port", str(free_port()), "--reuse-port"],
        env={**serve_env(tmp_path / "other"), "DMP_REDIS_URL": redis_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        shared = int(sharing.args[5])
        wait_for(lambda: _answers(shared), 30, "the sharing process to listen")
        cases = [
            ["serve", "--port", str(free_port()), "--lookup-port", str(port)],
            ["lookups", "--port", str(port)],
            ["lookups", "--port", str(port), "--reuse-port"],
            ["serve", "--port", str(free_port()), "--lookup-port", str(shared)],
        ]
        for args in cases:
            taken = args[args.index("--lookup-port") + 1] if "serve" in args else str(port)
            assert f"cannot listen on 127.0.0.1:{taken}" in refused(args, tmp_path)
    finally:
        stop_process(sharing)
