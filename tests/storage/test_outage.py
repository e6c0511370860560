"""The outage logger: one line when a dependency goes away, one when it is back."""

from __future__ import annotations

import logging
import threading

import pytest

from dmp.storage.outage import Outage


def test_an_outage_logs_one_warning_and_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    """Many failures log one warning with the reason; the first success logs one info line."""
    log = logging.getLogger("test.outage")
    outage = Outage(log, "Redis")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        assert outage.up() is False
        assert outage.down(ConnectionError("refused")) is True
        for _ in range(100):
            assert outage.down(ConnectionError("refused")) is False
        assert outage.is_down and outage.since is not None
        assert outage.up() is True
        assert outage.up() is False
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2
    assert lines[0] == (logging.WARNING, "Redis is unavailable: ConnectionError: refused")
    assert lines[1][0] == logging.INFO and "101 failures" in lines[1][1]
    assert not outage.is_down


def test_threads_sharing_an_outage_log_each_transition_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Eight threads failing at once start one outage; succeeding at once end it once."""
    log = logging.getLogger("test.outage.threads")
    outage = Outage(log, "Redis")
    barrier = threading.Barrier(8)

    def hammer(report) -> None:
        barrier.wait()
        for _ in range(200):
            report()

    with caplog.at_level(logging.INFO, logger="test.outage.threads"):
        for report in (lambda: outage.down("gone"), outage.up):
            threads = [threading.Thread(target=hammer, args=(report,)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert "1600 failures" in caplog.records[1].getMessage()
