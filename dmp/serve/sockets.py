"""Listening sockets of dmp's servers, and the check that a port is free before they start.

Every process that answers on a port of ``dmp serve`` listens on a socket of its own bound
with ``SO_REUSEPORT``: the kernel spreads new connections among them by a hash of each
connection's addresses. On one shared socket, whichever process is on the CPU as clients
connect takes their connections, and kept-alive ones stay there (BENCHMARKS.md, "The
pixel's connections, one socket per web process"). A socket with ``SO_REUSEPORT`` shares
its port with any other of the same user that set it too, so the port is first bound
without it: that fails if anyone listens there.
"""

from __future__ import annotations

import socket


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
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def check_free(host: str, port: int) -> None:
    """Raise OSError unless host:port is free: no one listens there, sharing or not."""
    listening_socket(host, port).close()


def port_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """Return ``n`` sockets sharing host:port (SO_REUSEPORT: the kernel spreads new
    connections among them), after making sure no one else listens there (OSError if the
    port is taken, by anyone)."""
    check_free(host, port)
    return [listening_socket(host, port, reuse_port=True) for _ in range(n)]
