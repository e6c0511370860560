"""Listening sockets of dmp's servers, bound before anything starts, and held for its life.

``dmp serve`` binds its ports in the master before the embedded Redis or any child
starts: a port someone else listens on is refused at once (exit 2), and no second
``dmp serve`` can share it later. Each threaded web process and each lookup process then
listens on a socket of its own, all bound to the port with ``SO_REUSEPORT``: the kernel
spreads new connections among them by a hash of each connection's addresses, whichever
process is on the CPU as clients connect. On one shared socket the process on the CPU took them, and
kept-alive ones stayed there (BENCHMARKS.md, "The pixel's connections"). The master holds
every socket, so a web process that dies leaves the connections waiting in its queue to
the one that replaces it (``dmp.serve.edge``: the same socket, by slot). A sync web
process (``--threads 1``) answers one connection at a time and keeps one shared socket:
the next connection goes to whichever is free.

A socket with ``SO_REUSEPORT`` shares its port with any other of the same user that set
it too, so the port is first bound without it: that fails if anyone listens there.
"""

from __future__ import annotations

import socket


def http_url(host: str, port: int) -> str:
    """Return the URL of a server on host:port (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Return a non-blocking socket listening on host:port; with ``reuse_port``, one that
    other sockets with it set (other processes of this user) may listen on too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def port_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """Return ``n`` sockets sharing host:port (SO_REUSEPORT: the kernel spreads new
    connections among them), after making sure no one else listens there (OSError if the
    port is taken, by anyone)."""
    listening_socket(host, port).close()
    return [listening_socket(host, port, reuse_port=True) for _ in range(n)]


def web_sockets(host: str, port: int, processes: int, threads: int) -> list[socket.socket]:
    """Return the listening sockets of ``dmp serve``'s web processes: one each for
    threaded processes, one shared by sync ones or for one process (OSError if the port
    is taken)."""
    if threads > 1 and processes > 1:
        return port_sockets(host, port, processes)
    return [listening_socket(host, port)]
