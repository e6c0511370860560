"""A real Redis Cluster for tests: three masters from Debian's redis-server on loopback.

Each node runs on a free port with its own folder under the test session's temp dir;
``redis-cli --cluster create`` assigns the 16384 slots. The cluster is up once every node
says ``cluster_state:ok`` and agrees on the slots.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

MASTERS = 3


def _free_port() -> int:
    # A cluster node also listens on port + 10000 (the cluster bus): both must be free.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class RedisCluster:
    """Three redis-server processes joined into one cluster; ``url`` is dmp's form."""

    folder: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Return the ``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisCluster:
        """Start the nodes, create the cluster and wait until every slot is served."""
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if not server or not cli:
            raise RuntimeError(
                "redis-server and redis-cli are needed (apt-get install redis-server)"
            )
        for n in range(MASTERS):
            port = _free_port()
            node = self.folder / f"node-{n}"
            node.mkdir(parents=True)
            conf = node / "redis.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        "cluster-enabled yes",
                        "cluster-config-file nodes.conf",
                        "cluster-node-timeout 5000",
                        f"dir {node}",
                        "appendonly no",
                        'save ""',
                        "daemonize no",
                        f"logfile {node / 'redis.log'}",
                        "",
                    ]
                )
            )
            self.procs.append(
                subprocess.Popen(
                    [server, str(conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=node,
                )
            )
            self.ports.append(port)
        for port in self.ports:
            _wait(lambda p=port: redis.Redis(port=p, socket_timeout=1).ping())
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            _wait(lambda p=port: _cluster_ok(p))
        return self

    def flush(self) -> None:
        """Empty every master (FLUSHALL runs per node on a cluster)."""
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=5) as node:
                node.flushall()

    def stop(self) -> None:
        """Stop every node."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
        info = node.execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text


def _wait(ready, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis Cluster did not come up in time")
        time.sleep(0.05)
