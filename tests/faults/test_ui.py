"""The marketer UI while Redis is away: a page saying so, never a 500 or a traceback, and
the same session working again once Redis is back."""

from __future__ import annotations

from dmp.access.users import Role, add_user
from dmp.app import create_app
from dmp.storage import redisserver
from tests.ui.conftest import PASSWORD, log_in


def test_pages_say_redis_is_away_and_work_again_after(own_redis, own_config) -> None:
    """With Redis killed, a logged-in page and the login page answer 503 pages in the
    user's language; after Redis is started again, the session still works."""
    add_user(redisserver.connect(own_redis.url), "anna@acme.de", PASSWORD, Role.MARKETER)
    app = create_app(own_config)
    app.testing = True
    try:
        client = app.test_client()
        log_in(client, "anna@acme.de")
        own_redis.kill()
        for path in ("/ui/", "/ui/segments/", "/ui/login"):
            res = client.get(path, headers={"Accept-Language": "de"})
            assert res.status_code == 503, (path, res.status_code)
            assert res.mimetype == "text/html" and b"Traceback" not in res.data
            assert "erreicht seine Datenbank gerade nicht" in res.get_data(as_text=True)
        own_redis.start()
        page = client.get("/ui/")
        assert page.status_code == 200 and b"anna@acme.de" in page.data
    finally:
        app.extensions["dmp"].appender.close()
